"""Open-vocabulary semantic segmentation (OVSS) as the paper measured it (SPEC section 6).

Per image, as the paper's evaluation framework (SegEarth-OV on mmsegmentation) does it: resize the
uint8 image so its long side is 448 (aspect kept; mmcv's size rule and OpenCV's fixed-point
bilinear, :mod:`farslip.eval.imresize`), normalise; slide 224-px windows with stride 112, the last
window snapped to the border (an image side shorter than a window gives windows of that side).
Each window is zero-padded (after normalisation, centred) to a multiple of the patch size and,
unless it already is the model's input size, resized bilinearly to it; its dense ``segearth``
tokens' cosines to the class queries (80 ImageNet templates averaged per synonym) are upsampled
bilinearly from the patch grid to the padded window, the padding is cut off again, and the
windows are averaged where they overlap. The map is upsampled bilinearly to the original size,
scaled by 50, softmaxed over queries, max-pooled over each class's synonyms and argmaxed (the
evaluation takes the class of the best upsampled query logit, which is the same argmax without
building the probability maps). A model whose input is not 224 px keeps this 448 / 224 / 112
geometry (``window_geometry="reference"``); ``"model"`` scales it with the model instead (long
side 2 x its input, windows of its input, stride half of it). Everything after the image tensor
stays on the model's device; only the uint8 label map comes back. mIoU accumulates
intersections and unions over the whole data set. The command line is
``farslip eval segmentation``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import normalize
from tqdm import tqdm

import farslip
from farslip.data.image_files import to_rgb

from .datasets import first, load_label_map, read_class_synonyms, require_dir, require_file, segmentation_pairs
from .encode import Runtime, text_classifier
from .imresize import rescale_size, resize_linear_u8
from .metrics import IoUAccumulator
from .registry import SEGMENTATION, SegmentationFolders, SegmentationLayout, lookup
from .runner import run_datasets

log = logging.getLogger(__name__)

LOGIT_SCALE = 50.0
EXAMPLE_SIDE = 256  # long side of the example images kept for the report
HEADLINE = ("mIoU",)
PathLike = Union[str, Path]


@dataclass(frozen=True)
class Queries:
    """Text queries of a class list: ``weights`` [D, Q] (one column per synonym) and the class
    index of each query, ``query_class`` [Q]."""

    weights: torch.Tensor
    query_class: torch.Tensor
    classes: list[list[str]]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_queries(model, tokenizer, classes: Sequence[Sequence[str]], run: Runtime) -> Queries:
    """One query per synonym, each the normalised mean of its 80 ImageNet-template embeddings."""
    synonyms = [s for names in classes for s in names]
    query_class = torch.tensor([c for c, names in enumerate(classes) for _ in names])
    weights = text_classifier(model, tokenizer, synonyms, OPENAI_IMAGENET_TEMPLATES, run)
    return Queries(weights.to(run.device), query_class, [list(c) for c in classes])


def window_size(model) -> int:
    """The model's input size; the sliding window needs a square one."""
    height, width = (model.visual.image_size,) * 2 if isinstance(model.visual.image_size, int) \
        else model.visual.image_size
    if height != width:
        raise ValueError(f"sliding-window segmentation needs a square model input, got {height}x{width}")
    return int(height)


def patch_size(model) -> int:
    """The model's (square) patch size."""
    size = model.visual.patch_size
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        raise ValueError(f"sliding-window segmentation needs square patches, got {height}x{width}")
    return int(height)


@dataclass(frozen=True)
class Geometry:
    """Long side of the resized image, window side and stride, in pixels."""

    long_side: int
    window: int
    stride: int


REFERENCE_GEOMETRY = Geometry(448, 224, 112)  # the paper's, for every model
WINDOW_GEOMETRIES = ("reference", "model")


def geometry_for(model, mode: str = "reference", long_side: Optional[int] = None) -> Geometry:
    """``"reference"``: 448 / 224 / 112 whatever the model's input (each window is resized to it);
    ``"model"``: long side 2 x the input, windows of the input, stride half of it. ``long_side``
    overrides the long side of either."""
    if mode not in WINDOW_GEOMETRIES:
        raise ValueError(f"unknown window geometry {mode!r}; choose from {', '.join(WINDOW_GEOMETRIES)}")
    size = window_size(model)
    geometry = REFERENCE_GEOMETRY if mode == "reference" else Geometry(2 * size, size, size // 2)
    if long_side is not None:
        if long_side < 1:
            raise ValueError(f"--long-side must be positive, got {long_side}")
        geometry = replace(geometry, long_side=long_side)
    return geometry


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; the last one snapped to the border.

    ``length`` below ``window`` gives one window at 0, ``length`` long.
    """
    count = max(length - window + stride - 1, 0) // stride + 1
    return [min(i * stride, max(length - window, 0)) for i in range(count)]


def window_boxes(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every window over an image, row-major; each window is
    ``min(height, window) x min(width, window)``."""
    return [(y, x) for y in window_starts(height, window, stride) for x in window_starts(width, window, stride)]


def centred_padding(height: int, width: int, patch: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros that make each side a multiple of ``patch``, the odd one
    after (the reference's rule)."""
    across, down = -width % patch, -height % patch
    return across // 2, across - across // 2, down // 2, down - down // 2


def resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side scaled to ``long_side``, aspect kept, rounded half up (as mmcv)."""
    return rescale_size(height, width, (long_side, long_side))


def prepare_image(image: Image.Image, long_side: int) -> torch.Tensor:
    """PIL image -> normalised float tensor [3, h, w] with the long side ``long_side``: the uint8
    pixels resized as OpenCV's INTER_LINEAR (uint8 out, as mmcv's ``imrescale``), then normalised."""
    pixels = np.asarray(to_rgb(image, getattr(image, "filename", None) or "image"))  # 16-bit: scaled, not white
    resized = resize_linear_u8(pixels, resized_size(image.height, image.width, long_side))
    tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float().div_(255)
    return normalize(tensor, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


@torch.no_grad()
def window_logits(model, windows: torch.Tensor, queries: Queries, last_attn: str, run: Runtime) -> torch.Tensor:
    """Cosine of each dense token to each query on the patch grid: [N, Q, grid_h, grid_w], float32
    on the model's device. ``windows`` are model-input-sized."""
    grid_h, grid_w = model.visual.grid_size
    with run.autocast():
        _, tokens = farslip.encode_dense(model, windows.to(run.device, dtype=run.input_dtype),
                                         last_attn=last_attn, need=("tokens",))
    cosine = F.normalize(tokens.float(), dim=-1) @ queries.weights.to(tokens.device)  # [N, P, Q]
    return cosine.transpose(1, 2).reshape(len(windows), -1, grid_h, grid_w)


@dataclass(frozen=True)
class _Windows:
    """The windows of one prepared image: (top, left) of each, their size, and the centred
    padding (left, right, top, bottom) that makes them a multiple of the patch size."""

    boxes: list[tuple[int, int]]
    size: tuple[int, int]
    pad: tuple[int, int, int, int]


def _windows(image: torch.Tensor, window: int, stride: int, patch: int) -> _Windows:
    height, width = image.shape[-2:]
    size = (min(height, window), min(width, window))
    return _Windows(window_boxes(height, width, window, stride), size, centred_padding(*size, patch))


def _model_inputs(image: torch.Tensor, plan: _Windows, input_size: int) -> torch.Tensor:
    """The windows of ``image`` padded and resized to the model's input: [n, 3, S, S]."""
    h, w = plan.size
    crops = torch.stack([image[:, y:y + h, x:x + w] for y, x in plan.boxes])
    if any(plan.pad):
        crops = F.pad(crops, plan.pad)  # zeros after normalisation: the mean colour
    if crops.shape[-2:] != (input_size, input_size):
        crops = F.interpolate(crops, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return crops


def sliding_logits(model, images: Sequence[torch.Tensor], queries: Queries, *, last_attn: str = "segearth",
                   run: Runtime = Runtime(), window: int = REFERENCE_GEOMETRY.window,
                   stride: int = REFERENCE_GEOMETRY.stride) -> list[torch.Tensor]:
    """Query logits [Q, h, w] per prepared image, averaged over overlapping windows, on ``run.device``.

    The windows of all ``images`` go through the model together, ``run.batch_size`` at a time;
    the accumulation stays on the device.
    """
    input_size, patch = window_size(model), patch_size(model)
    device = torch.device(run.device)
    images = [image.to(device, non_blocking=True) for image in images]
    plans = [_windows(image, window, stride, patch) for image in images]
    inputs = torch.cat([_model_inputs(image, plan, input_size) for image, plan in zip(images, plans)])
    grid = torch.cat([window_logits(model, inputs[i:i + run.batch_size], queries, last_attn, run)
                      for i in range(0, len(inputs), run.batch_size)])
    out, cursor = [], 0
    for image, plan in zip(images, plans):
        (h, w), (left, right, top, bottom) = plan.size, plan.pad
        mine = grid[cursor:cursor + len(plan.boxes)]
        cursor += len(plan.boxes)
        upsampled = F.interpolate(mine, size=(top + h + bottom, left + w + right), mode="bilinear",
                                  align_corners=False)[:, :, top:top + h, left:left + w]
        total = torch.zeros(grid.shape[1], *image.shape[-2:], device=device)
        count = torch.zeros(image.shape[-2:], device=device)
        for (y, x), logits in zip(plan.boxes, upsampled):
            total[:, y:y + h, x:x + w] += logits
            count[y:y + h, x:x + w] += 1
        out.append(total / count)
    return out


def class_probabilities(logits: torch.Tensor, queries: Queries, size: tuple[int, int]) -> torch.Tensor:
    """Query logits [Q, h, w] -> class probabilities [C, H, W] at the original ``size``.

    Bilinear upsampling, x50, softmax over the queries, then each class takes the max over its
    synonyms.
    """
    upsampled = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    probs = (LOGIT_SCALE * upsampled).softmax(dim=0)
    query_class = queries.query_class.to(probs.device)
    return torch.stack([probs[query_class == c].amax(dim=0) for c in range(queries.num_classes)])


def predict_labels(logits: torch.Tensor, queries: Queries, size: tuple[int, int]) -> np.ndarray:
    """``class_probabilities(...).argmax(0)`` without materialising the probabilities: x50 and the
    softmax are monotonic per pixel, so the best class is the class of the best query. Computed on
    the logits' device; only the uint8 [H, W] map is copied back."""
    upsampled = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    query_class = queries.query_class.to(upsampled.device, dtype=torch.uint8)
    return query_class[upsampled.argmax(dim=0)].cpu().numpy()


def _image_logits(model, image: Image.Image, queries: Queries, last_attn: str, run: Runtime,
                  long_side: Optional[int], geometry: str) -> torch.Tensor:
    shape = geometry_for(model, geometry, long_side)
    (logits,) = sliding_logits(model, [prepare_image(image, shape.long_side)], queries, last_attn=last_attn, run=run,
                               window=shape.window, stride=shape.stride)
    return logits


def segment_image(model, image: Image.Image, queries: Queries, *, last_attn: str = "segearth",
                  run: Runtime = Runtime(), long_side: Optional[int] = None,
                  window_geometry: str = "reference") -> torch.Tensor:
    """Class probabilities [C, H, W] (on the CPU) of one PIL image at its own size (the evaluation
    protocol)."""
    logits = _image_logits(model, image, queries, last_attn, run, long_side, window_geometry)
    return class_probabilities(logits, queries, (image.height, image.width)).cpu()


def segment_labels(model, image: Image.Image, queries: Queries, *, last_attn: str = "segearth",
                   run: Runtime = Runtime(), long_side: Optional[int] = None,
                   window_geometry: str = "reference") -> np.ndarray:
    """``segment_image(...).argmax(0)`` as uint8 [H, W], without building the probability maps."""
    logits = _image_logits(model, image, queries, last_attn, run, long_side, window_geometry)
    return predict_labels(logits, queries, (image.height, image.width))


class _SegmentationFiles(Dataset):
    """(prepared image, label map, index) per (image, label) pair; decoding runs in the workers."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], long_side: int, reduce_zero_label: bool):
        self.pairs = list(pairs)
        self.long_side = long_side
        self.reduce_zero_label = reduce_zero_label

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, label_path = self.pairs[index]
        try:
            with Image.open(image_path) as image:
                tensor = prepare_image(image, self.long_side)
                size = (image.height, image.width)
        except Exception as err:
            raise RuntimeError(f"cannot read image {image_path}: {err}") from err
        labels = load_label_map(label_path, self.reduce_zero_label)
        if labels.shape != size:
            raise ValueError(f"{label_path}: label map is {labels.shape[1]}x{labels.shape[0]} but its image "
                             f"{image_path} is {size[1]}x{size[0]}")
        return tensor, labels, index


def _groups(loader: Iterable, windows_per_item, budget: int) -> Iterator[list]:
    """Consecutive items whose windows add up to at least ``budget`` (the last group may be smaller)."""
    group, used = [], 0
    for item in loader:
        group.append(item)
        used += windows_per_item(item[0])
        if used >= budget:
            yield group
            group, used = [], 0
    if group:
        yield group


def _thumbnail(image_path: Path, labels: np.ndarray, pred: np.ndarray) -> dict:
    """Small copies of an image, its truth and its prediction for the report's PNGs."""
    with Image.open(image_path) as image:
        scale = min(1.0, EXAMPLE_SIDE / max(image.size))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        rgb = np.asarray(to_rgb(image, str(image_path)).resize(size, Image.BILINEAR))

    def shrink(labels_or_pred: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(labels_or_pred).resize(size, Image.NEAREST))

    return {"file": image_path.name, "image": rgb, "truth": shrink(labels), "prediction": shrink(pred)}


def segment_folder(model, queries: Queries, pairs: Sequence[tuple[Path, Path]], *, reduce_zero_label: bool,
                   last_attn: str, run: Runtime, geometry: Geometry = REFERENCE_GEOMETRY, num_examples: int = 3,
                   desc: str = "segmentation") -> dict:
    """mIoU of ``model`` on (image, label map) ``pairs`` (labels already in the class list's order)."""
    window, stride = geometry.window, geometry.stride
    dataset = _SegmentationFiles(pairs, geometry.long_side, reduce_zero_label)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=run.workers, collate_fn=first,
                        pin_memory=torch.device(run.device).type == "cuda")

    def windows_of(tensor: torch.Tensor) -> int:
        return len(window_boxes(tensor.shape[-2], tensor.shape[-1], window, stride))

    scores = IoUAccumulator(queries.num_classes)
    examples = []
    with tqdm(total=len(dataset), desc=desc, unit="img", leave=False) as bar:
        for group in _groups(loader, windows_of, run.batch_size):
            logits = sliding_logits(model, [item[0] for item in group], queries, last_attn=last_attn, run=run,
                                    window=window, stride=stride)
            for (_, labels, index), image_logits in zip(group, logits):
                pred = predict_labels(image_logits, queries, labels.shape)
                scores.update(pred, labels)
                if len(examples) < num_examples:
                    examples.append(_thumbnail(pairs[index][0], labels, pred))
            bar.update(len(group))
    if scores.out_of_range:
        log.warning("%s: %d labelled pixels outside the %d classes were left out of the mIoU",
                    desc, scores.out_of_range, queries.num_classes)
    names = [c[0] for c in queries.classes]
    return {"mIoU": scores.miou(), "aAcc": scores.pixel_accuracy(),
            "per_class_iou": dict(zip(names, scores.per_class_iou())), "classes": names,
            "num_images": len(dataset), "out_of_range_pixels": scores.out_of_range, "examples": examples,
            "last_attn": last_attn, "long_side": geometry.long_side, "window": window, "stride": stride,
            "model_input": window_size(model), "reduce_zero_label": reduce_zero_label}


# A --seg-dir folder: the converted layout, or UDD5/VDD's <split>/src + <split>/gt.
FOLDER_LAYOUTS = (SegmentationLayout("."), SegmentationLayout(".", "{split}/src", "{split}/gt"))


def _folder_layout(folder: Path, split: str) -> SegmentationFolders:
    candidates = [SegmentationFolders(*layout.paths(folder, split)) for layout in FOLDER_LAYOUTS]
    for found in candidates:
        if found.images.is_dir() and found.labels.is_dir():
            return SegmentationFolders(folder, found.images, found.labels)
    tried = "; ".join(f"{c.images} + {c.labels}" for c in candidates)
    raise FileNotFoundError(f"segmentation folder {folder}: no image and label folders; tried {tried}")


def dataset_present(data_root: PathLike, name: str, split: Optional[str] = None) -> bool:
    """The registered set ``name`` has its image and label folders under ``data_root`` in one of
    its spellings (see :meth:`SegmentationSet.find`)."""
    return SEGMENTATION[name].find(Path(data_root), split) is not None


def evaluate_segmentation(model, tokenizer, data_root: Optional[PathLike], datasets: Optional[Sequence[str]] = None,
                          *, batch_size: int = 64, workers: int = 4, device: str = "cpu", precision: str = "fp32",
                          last_attn: str = "segearth", split: Optional[str] = None,
                          reduce_zero_label: Optional[bool] = None, seg_dir: Optional[PathLike] = None,
                          classes: Optional[PathLike] = None, name: Optional[str] = None, ann_suffix: str = ".png",
                          long_side: Optional[int] = None, window_geometry: str = "reference",
                          num_examples: int = 3, keep_going: bool = False) -> dict:
    """OVSS mIoU of ``model`` on registered sets under ``data_root``, or on one folder ``seg_dir``.

    A registered set is found under ``data_root`` as the registry says (e.g. ``loveDA/img_dir/val``
    + ``loveDA/ann_dir/val``, ``UDD5/val/src`` + ``UDD5/val/gt``; ``split`` defaults per set); its
    folder's ``classes.txt``, when present, overrides the packaged class list. ``seg_dir`` (a
    folder with ``img_dir/<split>`` + ``ann_dir/<split>``, or ``<split>/src`` + ``<split>/gt``;
    any image extension, labels ``<stem><ann_suffix>``) needs ``classes`` (default
    ``seg_dir/classes.txt``); its split defaults to ``val``. ``reduce_zero_label`` None keeps each
    set's convention. ``window_geometry`` and ``long_side``: see :func:`geometry_for`.
    ``batch_size`` counts windows. Returns ``{"datasets": {name: {mIoU, aAcc, per_class_iou,
    examples, ...}}, "failed": {...}, "mean_mIoU"}``; ``examples`` hold small image / truth /
    prediction arrays for the report.
    """
    model.eval()
    run = Runtime(batch_size, workers, device, precision)
    geometry = geometry_for(model, window_geometry, long_side)

    def one(set_name: str) -> dict:
        if seg_dir is not None:
            set_split, zero = split or "val", bool(reduce_zero_label)
            found = _folder_layout(require_dir(Path(seg_dir), f"segmentation folder {set_name}"), set_split)
            class_file = require_file(Path(classes) if classes else found.folder / "classes.txt", f"{set_name} classes")
            img_suffix, suffix = None, ann_suffix
        else:
            if data_root is None:
                raise ValueError("segmentation needs a data root (--data-root / --seg-data-root or FARSLIP_DATA)")
            spec = SEGMENTATION[set_name]
            set_split = split or spec.split
            found = spec.locate(Path(data_root), set_split)
            local = found.folder / "classes.txt"
            class_file = local if local.is_file() else spec.packaged_classes
            img_suffix, suffix = spec.img_suffix, spec.ann_suffix
            zero = spec.reduce_zero_label if reduce_zero_label is None else reduce_zero_label
        log.info("%s: images %s, classes from %s", set_name, found.images, class_file)
        queries = build_queries(model, tokenizer, read_class_synonyms(class_file), run)
        pairs = segmentation_pairs(found.images, found.labels, suffix, img_suffix)
        metrics = segment_folder(model, queries, pairs, reduce_zero_label=zero, last_attn=last_attn, run=run,
                                 geometry=geometry, num_examples=num_examples, desc=set_name)
        return {**metrics, "split": set_split, "class_file": str(class_file), "folder": str(found.folder),
                "window_geometry": window_geometry}

    if seg_dir is not None:
        names = [name or Path(seg_dir).name]
    else:
        names = [lookup(SEGMENTATION, n, "segmentation").name for n in datasets or SEGMENTATION]
    return run_datasets("segmentation", names, one, HEADLINE, keep_going)


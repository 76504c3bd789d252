"""Open-vocabulary semantic segmentation (OVSS) as the paper measured it (SPEC section 6).

Per image: resize so the long side is ``2 * window`` (448 for a 224-px model: the paper's two
windows per side, scaled for other model sizes), bilinear without antialiasing like mmcv's
resize; slide ``window`` = the model's image size with stride ``window // 2``, the last window
snapped to the border (images smaller than a window are zero-padded after normalisation, and the
padding is cropped off again). Each window gives dense ``segearth`` tokens, whose cosines to the
class queries (80 ImageNet templates averaged per synonym) are upsampled bilinearly from the
patch grid to the window and averaged where windows overlap; the map is upsampled bilinearly to
the original size, scaled by 50, softmaxed over queries, max-pooled over each class's synonyms
and argmaxed (the evaluation takes the class of the best upsampled query logit, which is the same
argmax without building the probability maps). mIoU accumulates intersections and unions over
the whole data set.
``python -m farslip.eval.segmentation`` is ``farslip eval segmentation``.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import normalize, pil_to_tensor
from tqdm import tqdm

import farslip

from .datasets import first, load_label_map, read_class_synonyms, require_dir, require_file, segmentation_pairs
from .encode import Runtime, text_classifier
from .metrics import IoUAccumulator
from .registry import SEGMENTATION, lookup
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


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; the last one snapped to the border.

    ``length`` below ``window`` gives one window at 0 (the caller pads the image up to it).
    """
    count = max(length - window + stride - 1, 0) // stride + 1
    return [min(i * stride, max(length - window, 0)) for i in range(count)]


def window_boxes(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every window over an image at least ``window`` pixels each way, row-major."""
    return [(y, x) for y in window_starts(height, window, stride) for x in window_starts(width, window, stride)]


def resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side scaled to ``long_side``, aspect kept, rounded half up (as mmcv)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def prepare_image(image: Image.Image, long_side: int) -> torch.Tensor:
    """PIL image -> normalised float tensor [3, h, w] with the long side ``long_side``."""
    pixels = pil_to_tensor(image.convert("RGB")).float().div_(255).unsqueeze(0)
    size = resized_size(image.height, image.width, long_side)
    resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=False)[0]
    return normalize(resized, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


@torch.no_grad()
def window_logits(model, windows: torch.Tensor, queries: Queries, last_attn: str, run: Runtime) -> torch.Tensor:
    """Cosine of each dense token to each query, upsampled to the window: [N, Q, window, window]."""
    grid_h, grid_w = model.visual.grid_size
    with run.autocast():
        _, tokens = farslip.encode_dense(model, windows.to(run.device, dtype=run.input_dtype),
                                         last_attn=last_attn, need=("tokens",))
    cosine = F.normalize(tokens.float(), dim=-1) @ queries.weights  # [N, P, Q]
    grid = cosine.transpose(1, 2).reshape(len(windows), -1, grid_h, grid_w)
    return F.interpolate(grid, size=windows.shape[-2:], mode="bilinear", align_corners=False)


def sliding_logits(model, images: Sequence[torch.Tensor], queries: Queries, *, last_attn: str = "segearth",
                   run: Runtime = Runtime(), window: Optional[int] = None,
                   stride: Optional[int] = None) -> list[torch.Tensor]:
    """Query logits [Q, h, w] per prepared image, averaged over overlapping windows.

    The windows of all ``images`` go through the model together, ``run.batch_size`` at a time.
    """
    window = window or window_size(model)
    stride = stride or window // 2
    padded, boxes = [], []
    for image in images:
        height, width = image.shape[-2:]
        pad_h, pad_w = max(window - height, 0), max(window - width, 0)
        canvas = F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image
        padded.append(canvas)
        boxes.append(window_boxes(canvas.shape[-2], canvas.shape[-1], window, stride))
    crops = torch.stack([canvas[:, y:y + window, x:x + window] for canvas, image_boxes in zip(padded, boxes)
                         for y, x in image_boxes])
    logits = torch.cat([window_logits(model, crops[i:i + run.batch_size], queries, last_attn, run).cpu()
                        for i in range(0, len(crops), run.batch_size)])
    out, cursor = [], 0
    for image, canvas, image_boxes in zip(images, padded, boxes):
        total = torch.zeros(logits.shape[1], *canvas.shape[-2:])
        count = torch.zeros(canvas.shape[-2:])
        for y, x in image_boxes:
            total[:, y:y + window, x:x + window] += logits[cursor]
            count[y:y + window, x:x + window] += 1
            cursor += 1
        out.append((total / count)[:, : image.shape[-2], : image.shape[-1]])
    return out


def class_probabilities(logits: torch.Tensor, queries: Queries, size: tuple[int, int]) -> torch.Tensor:
    """Query logits [Q, h, w] -> class probabilities [C, H, W] at the original ``size``.

    Bilinear upsampling, x50, softmax over the queries, then each class takes the max over its
    synonyms.
    """
    upsampled = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    probs = (LOGIT_SCALE * upsampled).softmax(dim=0)
    return torch.stack([probs[queries.query_class == c].amax(dim=0) for c in range(queries.num_classes)])


def predict_labels(logits: torch.Tensor, queries: Queries, size: tuple[int, int]) -> np.ndarray:
    """``class_probabilities(...).argmax(0)`` without materialising the probabilities: x50 and the
    softmax are monotonic per pixel, so the best class is the class of the best query. uint8 [H, W]."""
    upsampled = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    return queries.query_class[upsampled.argmax(dim=0)].numpy().astype(np.uint8)


def _image_logits(model, image: Image.Image, queries: Queries, last_attn: str, run: Runtime,
                  long_side: Optional[int]) -> torch.Tensor:
    long_side = long_side or 2 * window_size(model)
    (logits,) = sliding_logits(model, [prepare_image(image, long_side)], queries, last_attn=last_attn, run=run)
    return logits


def segment_image(model, image: Image.Image, queries: Queries, *, last_attn: str = "segearth",
                  run: Runtime = Runtime(), long_side: Optional[int] = None) -> torch.Tensor:
    """Class probabilities [C, H, W] of one PIL image at its own size (the evaluation protocol)."""
    logits = _image_logits(model, image, queries, last_attn, run, long_side)
    return class_probabilities(logits, queries, (image.height, image.width))


def segment_labels(model, image: Image.Image, queries: Queries, *, last_attn: str = "segearth",
                   run: Runtime = Runtime(), long_side: Optional[int] = None) -> np.ndarray:
    """``segment_image(...).argmax(0)`` as uint8 [H, W], without building the probability maps."""
    logits = _image_logits(model, image, queries, last_attn, run, long_side)
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
        rgb = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))

    def shrink(labels_or_pred: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(labels_or_pred).resize(size, Image.NEAREST))

    return {"file": image_path.name, "image": rgb, "truth": shrink(labels), "prediction": shrink(pred)}


def segment_folder(model, queries: Queries, pairs: Sequence[tuple[Path, Path]], *, reduce_zero_label: bool,
                   last_attn: str, run: Runtime, long_side: int, num_examples: int = 3,
                   desc: str = "segmentation") -> dict:
    """mIoU of ``model`` on (image, label map) ``pairs`` (labels already in the class list's order)."""
    window = window_size(model)
    stride = window // 2
    dataset = _SegmentationFiles(pairs, long_side, reduce_zero_label)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=run.workers, collate_fn=first)

    def windows_of(tensor: torch.Tensor) -> int:
        return len(window_boxes(max(tensor.shape[-2], window), max(tensor.shape[-1], window), window, stride))

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
            "last_attn": last_attn, "long_side": long_side, "window": window, "stride": stride,
            "reduce_zero_label": reduce_zero_label}


def dataset_folder(data_root: PathLike, spec) -> Path:
    """The folder of the registered set ``spec`` under ``data_root`` (FileNotFoundError naming it)."""
    return require_dir(Path(data_root) / spec.dir, f"segmentation data set {spec.name}")


def dataset_present(data_root: PathLike, name: str) -> bool:
    """The registered set ``name`` has a folder under ``data_root`` (see :func:`dataset_folder`)."""
    try:
        dataset_folder(data_root, SEGMENTATION[name])
    except FileNotFoundError:
        return False
    return True


def evaluate_segmentation(model, tokenizer, data_root: Optional[PathLike], datasets: Optional[Sequence[str]] = None,
                          *, batch_size: int = 64, workers: int = 4, device: str = "cpu", precision: str = "fp32",
                          last_attn: str = "segearth", split: Optional[str] = None,
                          reduce_zero_label: Optional[bool] = None, seg_dir: Optional[PathLike] = None,
                          classes: Optional[PathLike] = None, name: Optional[str] = None, ann_suffix: str = ".png",
                          long_side: Optional[int] = None, num_examples: int = 3, keep_going: bool = False) -> dict:
    """OVSS mIoU of ``model`` on registered sets under ``data_root``, or on one folder ``seg_dir``.

    A registered set ``<data_root>/<name>/`` reads ``img_dir/<split>`` and ``ann_dir/<split>``
    (``split`` defaults per set) and its class file ``<data_root>/<name>/classes.txt`` when present
    (it overrides the packaged list), else the packaged one. ``seg_dir`` (any folder of that layout)
    needs ``classes`` (default ``seg_dir/classes.txt``); its split defaults to ``val``.
    ``reduce_zero_label`` None keeps each set's convention. ``batch_size`` counts windows.
    Returns ``{"datasets": {name: {mIoU, aAcc, per_class_iou, examples, ...}}, "failed": {...},
    "mean_mIoU"}``; ``examples`` hold small image / truth / prediction arrays for the report.
    """
    model.eval()
    run = Runtime(batch_size, workers, device, precision)
    long_side = long_side or 2 * window_size(model)

    def one(set_name: str) -> dict:
        if seg_dir is not None:
            folder = require_dir(Path(seg_dir), f"segmentation folder {set_name}")
            class_file = require_file(Path(classes) if classes else folder / "classes.txt", f"{set_name} classes")
            set_split, zero, suffix = split or "val", bool(reduce_zero_label), ann_suffix
        else:
            if data_root is None:
                raise ValueError("segmentation needs a data root (--data-root / --seg-data-root or FARSLIP_DATA)")
            spec = SEGMENTATION[set_name]
            folder = dataset_folder(data_root, spec)
            local = folder / "classes.txt"
            class_file = local if local.is_file() else spec.packaged_classes
            set_split, suffix = split or spec.split, spec.ann_suffix
            zero = spec.reduce_zero_label if reduce_zero_label is None else reduce_zero_label
        log.info("%s: classes from %s", set_name, class_file)
        img_dir = require_dir(folder / "img_dir" / set_split, f"{set_name} images")
        ann_dir = require_dir(folder / "ann_dir" / set_split, f"{set_name} label maps")
        queries = build_queries(model, tokenizer, read_class_synonyms(class_file), run)
        metrics = segment_folder(model, queries, segmentation_pairs(img_dir, ann_dir, suffix), reduce_zero_label=zero,
                                 last_attn=last_attn, run=run, long_side=long_side, num_examples=num_examples,
                                 desc=set_name)
        return {**metrics, "split": set_split, "class_file": str(class_file), "folder": str(folder)}

    if seg_dir is not None:
        names = [name or Path(seg_dir).name]
    else:
        names = [lookup(SEGMENTATION, n, "segmentation").name for n in datasets or SEGMENTATION]
    return run_datasets("segmentation", names, one, HEADLINE, keep_going)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m farslip.eval.segmentation ...`` == ``farslip eval segmentation ...``."""
    from .cli import main as cli_main

    return cli_main(["segmentation", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

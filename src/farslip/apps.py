"""`farslip classify` and `farslip segment`: the model on your own images, no benchmark needed.

    farslip classify scene1.jpg scene2.jpg --model FarSLIP1-ViT-B-32 --labels "airport,farmland,harbor"
    farslip classify photos/ --model FarSLIP1-ViT-B-32 --labels labels.txt --json predictions.json
    farslip segment tile.png --model FarSLIP2-ViT-B-16 --classes "building;road;tree,forest;water" --out overlay.png
    farslip segment tiles/ --model FarSLIP2-ViT-B-16 --classes classes.txt --out overlays/ --json -

Both accept every model the library loads (named checkpoints, an architecture or config file with
--pretrained FILE or none, hf-hub:/local-dir: models, the demo's checkpoints), image files and
folders (every image in a folder, sorted by name), and use the evaluation protocols of SPEC
section 6: the two satellite prompts for classification, the sliding-window ``segearth``
inference for segmentation.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, TiffImagePlugin

import farslip

from .atomic import atomic_write
from .cli import HelpFormatter, add_model_args, model_from_args
from .data.image_files import to_rgb
from .errors import add_debug_arg, resolve_device, run_command
from .eval.classification import PROMPTS
from .transforms import eval_transform
from .eval.datasets import IMAGE_EXTENSIONS
from .eval.encode import Runtime, text_classifier
from .eval.report import palette
from .eval.segmentation import build_queries, segment_labels

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory,
# GeoDoubleParams, GeoAsciiParams.
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


def _open(path) -> Image.Image:
    """An image file as RGB (16-bit greyscale scaled to 8 bits, see ``to_rgb``); ValueError naming it."""
    try:
        with Image.open(path) as image:
            return to_rgb(image, str(path))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: refused by Pillow's decompression-bomb guard ({err}); if the image is genuine, "
                         f"cut it into tiles or downscale it first") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def expand_images(items: Sequence[str]) -> list[Path]:
    """Image files as given, and for a folder every image in it (``IMAGE_EXTENSIONS``, sorted by name,
    not recursive); a path that does not exist or a folder without images is a ValueError."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise ValueError(f"image {path}: no such file or folder")
    return paths


def _json_out(target: str, records: list) -> None:
    """Write ``records`` as JSON to a file (atomically) or, for ``-``, to standard output."""
    text = json.dumps(records, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        atomic_write(target, text)


def parse_labels(text: str) -> list[str]:
    """``"a,b,c"`` or a file with one label per line."""
    path = Path(text)
    items = path.read_text(encoding="utf-8").splitlines() if path.is_file() else text.split(",")
    labels = [item.strip() for item in items if item.strip()]
    if len(labels) < 2:
        raise ValueError(f"need at least two labels, got {labels!r}")
    _no_repeats([[label] for label in labels], "--labels", "label")
    return labels


def _no_repeats(classes: list[list[str]], flag: str, what: str) -> None:
    """A name given twice would get two columns of probabilities (or two colours) under one name."""
    seen: set[str] = set()
    for names in classes:
        for name in names:
            if name in seen:
                raise ValueError(f"{flag}: {what} {name!r} is given twice; give each name once")
            seen.add(name)


def parse_classes(text: str) -> list[list[str]]:
    """Classes with synonyms: a file (one class a line, synonyms comma-separated, as the OVSS class
    files) or an inline list with classes separated by ``;`` and synonyms by ``,``."""
    path = Path(text)
    rows = path.read_text(encoding="utf-8").splitlines() if path.is_file() else text.split(";")
    classes = [[s.strip() for s in row.split(",") if s.strip()] for row in rows if row.strip()]
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes!r}")
    _no_repeats(classes, "--classes", "class name")
    return classes


@torch.no_grad()
def classify(model, tokenizer, images: Sequence[Image.Image], labels: Sequence[str], run: Runtime,
             weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Class probabilities [len(images), len(labels)] (CLIP's softmax of the scaled cosines).

    ``weights`` (``text_classifier`` of the labels) may be passed to reuse them across batches.
    """
    if weights is None:
        weights = text_classifier(model, tokenizer, labels, PROMPTS, run)
    transform = eval_transform(model.visual.image_size)
    batch = torch.stack([transform(image) for image in images]).to(run.device, dtype=run.input_dtype)
    with run.autocast():
        features = model.encode_image(batch, normalize=True).float()
    return (model.logit_scale.exp().float() * features @ weights.to(features.device)).softmax(dim=-1).cpu()


def build_classify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farslip classify", description="Zero-shot classification of images "
                                     "against your labels (prompts: " + " | ".join(PROMPTS) + ").",
                                     formatter_class=HelpFormatter)
    parser.add_argument("images", nargs="+", help="image files, or folders (every image in them, sorted by name)")
    parser.add_argument("--labels", required=True, help='comma-separated labels ("airport,farmland,...") or a file, '
                        "one label a line")
    parser.add_argument("--top", type=int, default=5, help="classes printed per image")
    parser.add_argument("--json", default=None,
                        help="also write one record per image (image, prediction, every probability) to this JSON "
                             "file; - writes the JSON to standard output and the table to standard error")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    add_model_args(parser)
    add_debug_arg(parser)
    return parser


def main_classify(argv: Optional[list[str]] = None) -> int:
    parser = build_classify_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_command("farslip classify", args.debug, lambda: _classify(args))


def _classify(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.top < 1:
        raise ValueError(f"--batch-size and --top must be >= 1 (got {args.batch_size}, {args.top})")
    args.device = resolve_device(args.device)
    labels = parse_labels(args.labels)
    paths = expand_images(args.images)
    model, tokenizer = model_from_args(args)
    run = Runtime(batch_size=args.batch_size, workers=0, device=args.device, precision=args.precision)
    weights = text_classifier(model, tokenizer, labels, PROMPTS, run)
    table = sys.stderr if args.json == "-" else sys.stdout
    top = min(args.top, len(labels))
    records = []
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        probs = classify(model, tokenizer, [_open(p) for p in chunk], labels, run, weights=weights)
        for path, row in zip(chunk, probs):
            values, indices = row.topk(top)
            print(path, file=table)
            for value, index in zip(values.tolist(), indices.tolist()):
                print(f"  {100 * value:6.2f}%  {labels[index]}", file=table)
            records.append({"image": str(path), "prediction": labels[int(row.argmax())],
                            "probabilities": dict(zip(labels, row.tolist()))})
    if args.json:
        _json_out(args.json, records)
    return 0


def overlay(image: Image.Image, labels: np.ndarray, classes: Sequence[Sequence[str]], alpha: float = 0.5) -> Image.Image:
    """The image blended with class colours, and a legend (colour, name, share of pixels) on the right."""
    colours = palette(len(classes))
    blended = (np.asarray(image, dtype=np.float32) * (1 - alpha) + colours[labels].astype(np.float32) * alpha)
    font = ImageFont.load_default()
    row_h = 18
    legend_w = 16 + max(int(font.getlength(f"{names[0]} 100.0%")) for names in classes) + 24
    height = max(image.height, row_h * len(classes) + 8)
    canvas = Image.new("RGB", (image.width + legend_w, height), "white")
    canvas.paste(Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    for c, names in enumerate(classes):
        top = 4 + c * row_h
        left = image.width + 8
        draw.rectangle([left, top, left + 12, top + 12], fill=tuple(int(v) for v in colours[c]), outline="black")
        draw.text((left + 18, top), f"{names[0]} {100 * counts[c] / labels.size:.1f}%", fill="black", font=font)
    return canvas


def geotiff_tags(path: Path) -> dict[int, tuple]:
    """The GeoTIFF georeferencing tags of a TIFF file, ``{tag: (type, value)}``; empty for other files."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return {}
    with Image.open(path) as image:
        tags = getattr(image, "tag_v2", None)
        if tags is None:
            return {}
        return {tag: (tags.tagtype[tag], tags[tag]) for tag in GEOTIFF_TAGS if tag in tags}


def save_labels(labels: np.ndarray, path: Path, source: Path) -> bool:
    """Write the class index map (uint8, one band) to ``path``; a GeoTIFF source's georeferencing
    tags go with it when ``path`` is a TIFF. Returns whether georeferencing was written."""
    tags = geotiff_tags(source)
    image = Image.fromarray(labels)
    if path.suffix.lower() in TIFF_SUFFIXES:
        info = TiffImagePlugin.ImageFileDirectory_v2()
        for tag, (kind, value) in tags.items():
            info[tag] = value
            info.tagtype[tag] = kind

        def write(handle) -> None:
            image.save(handle, format="TIFF", tiffinfo=info)

        atomic_write(path, write, durable=False)
        return bool(tags)
    if tags:
        log.warning("%s: the georeferencing of %s is dropped (a %s file cannot hold it); name the label file "
                    "*.tif to keep it", path, source, path.suffix or "suffix-less")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue(), durable=False)
    return False


def write_class_key(path: Path, classes: Sequence[Sequence[str]]) -> Path:
    """``index,class,synonyms,r,g,b``: what each value of a label map means (colours as the overlay's)."""
    colours = palette(len(classes))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "class", "synonyms", "r", "g", "b"])
    for index, names in enumerate(classes):
        writer.writerow([index, names[0], ";".join(names[1:]), *(int(v) for v in colours[index])])
    return atomic_write(path, buffer.getvalue(), durable=False)


def build_segment_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farslip segment", description="Open-vocabulary segmentation of images "
                                     "(sliding windows, dense tokens, 80 ImageNet templates per class name), each "
                                     "written as a colour overlay with a legend; per-image class coverage with --json.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("images", nargs="+", help="image files, or folders (every image in them, sorted by name)")
    parser.add_argument("--classes", required=True, help='a class file (one class a line, synonyms comma-separated) '
                        'or an inline list: classes separated by ";", synonyms by ","')
    parser.add_argument("--out", default=None,
                        help="overlay PNG of a single image, or the folder of <stem>_overlay.png files of several "
                             "(default: overlay.png for one image, overlays/ for several)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    parser.add_argument("--last-attn", default="segearth", choices=farslip.LAST_ATTN_TYPES, help="dense variant")
    parser.add_argument("--long-side", type=int, default=None, help="resize long side (default 448: the paper's 448/224/112 windows)")
    parser.add_argument("--save-labels", default=None,
                        help="also write the class index map (uint8): a file for one image (.png, or .tif to keep a "
                             "GeoTIFF's georeferencing), a folder for several (<stem>_labels.tif for TIFF inputs, "
                             "with their georeferencing, .png otherwise); a class key beside it (<name>.classes.csv, "
                             "labels.classes.csv in a folder) says which class each index is")
    parser.add_argument("--json", default=None,
                        help="write one record per image (size, pixels and share of each class, files written) to "
                             "this JSON file; - writes the JSON to standard output and the table to standard error")
    add_model_args(parser)
    add_debug_arg(parser)
    return parser


def _segment_targets(paths: list[Path], args) -> tuple[list[Path], Optional[list[Path]]]:
    """Overlay (and label map) file per image: the given files for one image, ``<stem>_*`` in folders
    for several (two images with the same stem are refused rather than one overwriting the other)."""
    if len(paths) == 1 and not (args.out and Path(args.out).is_dir()):
        overlays = [Path(args.out or "overlay.png")]
    else:
        stems = [p.stem for p in paths]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise ValueError(f"several images share the name(s) {', '.join(twice)}; their outputs would collide: "
                             f"segment them in separate runs")
        folder = Path(args.out or "overlays")
        overlays = [folder / f"{p.stem}_overlay.png" for p in paths]
    if not args.save_labels:
        return overlays, None
    if len(paths) == 1 and not Path(args.save_labels).is_dir():
        return overlays, [Path(args.save_labels)]
    folder = Path(args.save_labels)
    return overlays, [folder / f"{p.stem}_labels{'.tif' if p.suffix.lower() in TIFF_SUFFIXES else '.png'}"
                      for p in paths]


def main_segment(argv: Optional[list[str]] = None) -> int:
    parser = build_segment_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_command("farslip segment", args.debug, lambda: _segment(args))


def _segment(args: argparse.Namespace) -> int:
    args.device = resolve_device(args.device)
    classes = parse_classes(args.classes)
    paths = expand_images(args.images)
    overlays, label_files = _segment_targets(paths, args)
    model, tokenizer = model_from_args(args)
    run = Runtime(batch_size=16, workers=0, device=args.device, precision=args.precision)
    table = sys.stderr if args.json == "-" else sys.stdout
    with torch.no_grad():
        queries = build_queries(model, tokenizer, classes, run)
    keys = set()
    records = []
    for index, path in enumerate(paths):
        image = _open(path)
        with torch.no_grad():
            labels = segment_labels(model, image, queries, last_attn=args.last_attn, run=run,
                                    long_side=args.long_side)
        picture = overlay(image, labels, classes, args.alpha)
        atomic_write(overlays[index], lambda handle: picture.save(handle, format="PNG"), durable=False)
        record = {"image": str(path), "width": image.width, "height": image.height,
                  "overlay": str(overlays[index])}
        if label_files:
            record["labels"] = str(label_files[index])
            record["georeferenced"] = save_labels(labels, label_files[index], path)
            key = label_files[index].with_suffix(".classes.csv") if len(paths) == 1 \
                else label_files[index].parent / "labels.classes.csv"
            if key not in keys:
                write_class_key(key, classes)
                keys.add(key)
            record["class_key"] = str(key)
        counts = np.bincount(labels.ravel(), minlength=len(classes))
        record["classes"] = {names[0]: {"pixels": int(n), "share": float(n / labels.size)}
                             for names, n in zip(classes, counts)}
        records.append(record)
        print(path, file=table)
        for names, n in sorted(zip(classes, counts), key=lambda item: -item[1]):
            print(f"  {100 * n / labels.size:6.2f}%  {names[0]}", file=table)
        print(f"overlay: {overlays[index]}", file=table)
    if args.json:
        _json_out(args.json, records)
    return 0

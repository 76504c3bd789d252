"""`farslip classify` and `farslip segment`: the model on your own images, no benchmark needed.

    farslip classify scene1.jpg scene2.jpg --model FarSLIP1-ViT-B-32 --labels "airport,farmland,harbor"
    farslip segment tile.png --model FarSLIP2-ViT-B-16 --classes "building;road;tree,forest;water" --out overlay.png

Both accept every model the library loads (named checkpoints, an architecture with --pretrained
FILE, the demo's checkpoints) and use the evaluation protocols of SPEC section 6: the two
satellite prompts for classification, the sliding-window ``segearth`` inference for segmentation.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import farslip

from .data.transforms import eval_transform
from .eval.classification import PROMPTS
from .eval.cli import USER_ERRORS, add_model_args, model_from_args
from .eval.encode import Runtime, text_classifier
from .eval.report import palette
from .eval.segmentation import build_queries, segment_labels

log = logging.getLogger(__name__)


def _open(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def parse_labels(text: str) -> list[str]:
    """``"a,b,c"`` or a file with one label per line."""
    path = Path(text)
    items = path.read_text(encoding="utf-8").splitlines() if path.is_file() else text.split(",")
    labels = [item.strip() for item in items if item.strip()]
    if len(labels) < 2:
        raise ValueError(f"need at least two labels, got {labels!r}")
    return labels


def parse_classes(text: str) -> list[list[str]]:
    """Classes with synonyms: a file (one class a line, synonyms comma-separated, as the OVSS class
    files) or an inline list with classes separated by ``;`` and synonyms by ``,``."""
    path = Path(text)
    rows = path.read_text(encoding="utf-8").splitlines() if path.is_file() else text.split(";")
    classes = [[s.strip() for s in row.split(",") if s.strip()] for row in rows if row.strip()]
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes!r}")
    return classes


@torch.no_grad()
def classify(model, tokenizer, images: Sequence[Image.Image], labels: Sequence[str], run: Runtime) -> torch.Tensor:
    """Class probabilities [len(images), len(labels)] (CLIP's softmax of the scaled cosines)."""
    weights = text_classifier(model, tokenizer, labels, PROMPTS, run)
    transform = eval_transform(model.visual.image_size)
    batch = torch.stack([transform(image) for image in images]).to(run.device, dtype=run.input_dtype)
    with run.autocast():
        features = model.encode_image(batch, normalize=True).float()
    return (model.logit_scale.exp().float() * features @ weights.to(features.device)).softmax(dim=-1).cpu()


def build_classify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farslip classify", description="Zero-shot classification of images "
                                     "against your labels (prompts: " + " | ".join(PROMPTS) + ").",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--labels", required=True, help='comma-separated labels ("airport,farmland,...") or a file, '
                        "one label a line")
    parser.add_argument("--top", type=int, default=5, help="classes printed per image")
    parser.add_argument("--json", default=None, help="also write every probability to this JSON file")
    add_model_args(parser)
    return parser


def main_classify(argv: Optional[list[str]] = None) -> int:
    parser = build_classify_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        labels = parse_labels(args.labels)
        images = [_open(path) for path in args.images]
        model, tokenizer = model_from_args(args)
    except USER_ERRORS as err:
        print(f"farslip classify: error: {err}", file=sys.stderr)
        return 2
    probs = classify(model, tokenizer, images, labels, Runtime(batch_size=64, workers=0, device=args.device,
                                                               precision=args.precision))
    top = min(args.top, len(labels))
    for path, row in zip(args.images, probs):
        values, indices = row.topk(top)
        print(path)
        for value, index in zip(values.tolist(), indices.tolist()):
            print(f"  {100 * value:6.2f}%  {labels[index]}")
    if args.json:
        Path(args.json).write_text(json.dumps({path: dict(zip(labels, row.tolist()))
                                               for path, row in zip(args.images, probs)}, indent=2))
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


def build_segment_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farslip segment", description="Open-vocabulary segmentation of one "
                                     "image (sliding windows, dense tokens, 80 ImageNet templates per class name), "
                                     "written as a colour overlay with a legend.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("image", help="image file")
    parser.add_argument("--classes", required=True, help='a class file (one class a line, synonyms comma-separated) '
                        'or an inline list: classes separated by ";", synonyms by ","')
    parser.add_argument("--out", default="overlay.png", help="output PNG")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    parser.add_argument("--last-attn", default="segearth", choices=farslip.LAST_ATTN_TYPES, help="dense variant")
    parser.add_argument("--long-side", type=int, default=None, help="resize long side (default 448: the paper's 448/224/112 windows)")
    parser.add_argument("--save-labels", default=None, help="also write the class index map as a PNG")
    add_model_args(parser)
    return parser


def main_segment(argv: Optional[list[str]] = None) -> int:
    parser = build_segment_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        classes = parse_classes(args.classes)
        image = _open(args.image)
        model, tokenizer = model_from_args(args)
    except USER_ERRORS as err:
        print(f"farslip segment: error: {err}", file=sys.stderr)
        return 2
    run = Runtime(batch_size=16, workers=0, device=args.device, precision=args.precision)
    with torch.no_grad():
        queries = build_queries(model, tokenizer, classes, run)
        labels = segment_labels(model, image, queries, last_attn=args.last_attn, run=run, long_side=args.long_side)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, labels, classes, args.alpha).save(out)
    if args.save_labels:
        Image.fromarray(labels).save(args.save_labels)
    shares = np.bincount(labels.ravel(), minlength=len(classes)) / labels.size
    for names, share in sorted(zip(classes, shares), key=lambda item: -item[1]):
        print(f"  {100 * share:6.2f}%  {names[0]}")
    print(f"overlay: {out}")
    return 0

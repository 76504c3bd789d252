"""`python scripts/bench.py eval`: evaluation throughput per task on CPU, random weights.

Runs the evaluators' own steps on the synthetic world's sets, per model: the one-off text side
(the classification classifier: 2 prompts per class; the OVSS queries: 80 templates per synonym;
the retrieval captions) and the image side, whose throughput is the number that scales with a
benchmark's size. Image passes are timed after an untimed warm-up pass. Segmentation counts
original images (resized to a long side of 448 and cut into up to 3 x 3 224-px windows, each
resized to the model's input: the reference geometry; ``--window-geometry model`` measures the
geometry scaled with the model instead).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

import farslip
from farslip.atomic import atomic_write
from farslip.data.csv_data import read_labels, read_pairs
from farslip.synth import write_world
from farslip.transforms import eval_transform

from farslip.eval.classification import PROMPTS
from farslip.eval.datasets import read_class_synonyms, read_classnames, segmentation_pairs
from farslip.eval.encode import Runtime, encode_image_files, encode_texts, text_classifier
from farslip.eval.registry import CLASSIFICATION, RETRIEVAL, SEGMENTATION
from farslip.eval.segmentation import WINDOW_GEOMETRIES, build_queries, geometry_for, segment_folder

TASKS = ("classification", "retrieval", "segmentation")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(model, tokenizer, world: Path, task: str, run: Runtime, geometry: str = "reference") -> dict:
    """Text-side seconds and image-side images/s of ``task`` on its first synthetic set."""
    transform = eval_transform(model.visual.image_size)
    if task == "segmentation":
        spec = SEGMENTATION["OpenEarthMap"]
        found = spec.locate(world / "ovss")
        pairs = segmentation_pairs(found.images, found.labels, spec.ann_suffix, spec.img_suffix)
        queries, text_s = _timed(lambda: build_queries(model, tokenizer, read_class_synonyms(found.folder / "classes.txt"),
                                                       run))
        texts = queries.weights.shape[1] * len(OPENAI_IMAGENET_TEMPLATES)

        def images():
            return segment_folder(model, queries, pairs, reduce_zero_label=spec.reduce_zero_label, last_attn="segearth",
                                  run=run, geometry=geometry_for(model, geometry), num_examples=0)
        count = len(pairs)
    else:
        spec = CLASSIFICATION["aid"] if task == "classification" else RETRIEVAL["RSICD"]
        root = world / "benchmarks"
        items = read_labels(str(root / spec.csv))[0] if task == "classification" \
            else read_pairs(str(root / spec.csv), caption_column=spec.caption_key)
        paths = sorted({root / item.path for item in items})
        if task == "classification":
            names = read_classnames(root / spec.classnames)
            _, text_s = _timed(lambda: text_classifier(model, tokenizer, names, PROMPTS, run))
            texts = len(names) * len(PROMPTS)
        else:
            captions = sorted({spec.prefix + item.caption for item in items})
            _, text_s = _timed(lambda: encode_texts(model, tokenizer, captions, run, "texts"))
            texts = len(captions)

        def images():
            return encode_image_files(model, paths, transform, run, "images")
        count = len(paths)
    images()  # warm-up
    _, image_s = _timed(images)
    return {"task": task, "texts": texts, "text_seconds": text_s, "images": count, "image_seconds": image_s,
            "images_per_s": count / image_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py eval", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-Tiny-8,ViT-Small-8,ViT-B-32", help="comma-separated, random weights")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--scale", default="small", choices=("small", "medium"), help="synthetic world size")
    parser.add_argument("--world", default=None,
                        help="folder of an existing synthetic world (farslip synth); default: write one")
    parser.add_argument("--batch-size", type=int, default=32, help="images (segmentation: windows) per forward")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--window-geometry", default="reference", choices=WINDOW_GEOMETRIES,
                        help="segmentation windows: the paper's 448/224/112, or scaled with the model")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    run = Runtime(args.batch_size, args.workers, args.device, args.precision)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(args.world) if args.world else Path(write_world(tmp, scale=args.scale)["root"])
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = farslip.create_model(name, precision=args.precision, device=args.device).eval()
            tokenizer = farslip.get_tokenizer(model)
            for task in args.tasks.split(","):
                rows.append({"model": name, **measure(model, tokenizer, world, task, run, args.window_geometry)})
    print(f"device {args.device}, precision {args.precision}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, workers {args.workers}, world {args.world or args.scale}, "
          f"segmentation windows {args.window_geometry}\n")
    print("| model | task | texts | text side (s) | images | image side (s) | images/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['task']} | {r['texts']} | {r['text_seconds']:.2f} | {r['images']} | "
              f"{r['image_seconds']:.2f} | {r['images_per_s']:.1f} |")
    if args.json:
        atomic_write(args.json, json.dumps(rows, indent=2) + "\n")
    return 0

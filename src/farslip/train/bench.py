"""`python scripts/bench.py train`: training-step throughput, peak memory and FLOPs.

For each model and each method / teacher mode, one :class:`~farslip.train.main.Trainer` runs
full optimiser steps on an in-memory batch with every local view present (the most work a
batch can ask for). Reported per configuration: samples/s, peak memory (CUDA allocator peak on
a GPU; the process's peak RSS so far on CPU, which only grows), the FLOPs one step performs
(forward + backward, counted by ``torch.utils.flop_counter``) and the FLOPs it *needs*: each
encoding a loss uses, counted alone (texts without their padding), times 3 for the student
(forward + backward) and times 1 for the gradient-free teacher. ``done / needed`` near 1
means no wasted encoding. (The counter misses part of ``nn.MultiheadAttention``'s inference
fast path, which the eval-mode teacher takes under ``no_grad``; the teacher is therefore
counted by running it, so both columns undercount it alike.)
The data pipeline has its own benchmark (``scripts/bench.py data``).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import farslip
from farslip.models.text import encode_text

from .args import parse_args
from .main import Trainer
from .step import encode_views

CONFIGS = {
    "vanilla": ["--method", "vanilla"],
    "farslip1/active": ["--method", "farslip1", "--use-imagecrop-aug"],
    "farslip1/ema": ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "ema"],
    "farslip1/frozen": ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "frozen"],
    "farslip2/active": ["--method", "farslip2", "--train-dataset-type", "json"],
    "farslip2/ema": ["--method", "farslip2", "--train-dataset-type", "json", "--distill-type", "ema"],
}


def full_batch(model, batch_size: int, boxes: int, *, crops: bool, objects: bool) -> dict:
    """A batch with every view slot filled (random pixels, boxes, category labels)."""
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    tok = farslip.get_tokenizer(model)
    b, n = batch_size, boxes
    batch = {"image": torch.randn(b, 3, size, size),
             "text": tok([f"a satellite image of scene {i}" for i in range(b)])}
    corner = torch.rand(b, n, 2) * 0.5
    box = torch.cat([corner, corner + 0.5], dim=-1)
    for prefix, wanted in (("crop", crops), ("obj", objects)):
        if wanted:
            batch[prefix] = torch.randn(b * n, 3, size, size)
            batch[f"{prefix}_box"], batch[f"{prefix}_valid"] = box, torch.ones(b, n, dtype=torch.bool)
    if objects:
        labels = torch.randint(0, 8, (b * n,))
        batch["obj_text"] = tok([f"a satellite image of class {int(y)}" for y in labels])
        batch["obj_label"] = labels
    return batch


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def needed_flops(trainer: Trainer, batch: dict) -> int:
    """FLOPs of the encodings the losses use, each counted alone (see the module docstring)."""
    plan, model = trainer.plan, trainer.model
    total = 0

    def forward(images, need):
        return _flops(lambda: encode_views(model, images, need, plan.last_attn))

    with torch.no_grad():
        total += 3 * forward(batch["image"], plan.image_need)
        if plan.global_itc:
            total += 3 * _flops(lambda: encode_text(model, batch["text"]))
        if plan.distill:
            views = batch[plan.distill_views]
            if plan.student_distill:
                total += 3 * forward(views, plan.distill_need)
            else:  # the teacher itself (eval mode: see the module docstring)
                total += _flops(lambda: trainer.teacher.encoder(views))
        if plan.local_itc:
            keep = batch["obj_label"] >= 0
            if plan.local_need:
                total += 3 * forward(batch["obj"][keep], plan.local_need)
            texts = torch.unique(batch["obj_text"][keep], dim=0)
            total += 3 * _flops(lambda: encode_text(model, texts))
    return total


def bench_one(model_name: str, label: str, flags: list[str], args: argparse.Namespace,
              device: torch.device) -> dict:
    data = "bench.json" if "json" in flags else "bench.tar"
    argv = ["--train-data", data, "--root-train-img-dir", ".", "--model", model_name,
            "--pretrained", "none", "--precision", args.precision, "--device", device.type,
            "--batch-size", str(args.batch_size), "--max-boxes", str(args.boxes),
            "--train-num-samples", str(args.batch_size), *flags]
    targs = parse_args(argv)
    targs.rank, targs.world_size, targs.distributed, targs.local_rank = 0, 1, False, 0
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(targs, device, Path(tmp))
    batch = full_batch(trainer.model, args.batch_size, args.boxes,
                       crops=targs.crops, objects=targs.objects)
    batch = {k: v.to(device) for k, v in batch.items()}
    done = _flops(lambda: trainer.train_step(batch))
    need = needed_flops(trainer, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.train_step(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = (time.perf_counter() - start) / args.steps
    return {"model": model_name, "config": label, "device": str(device),
            "batch_size": args.batch_size, "boxes": args.boxes,
            "samples_per_s": args.batch_size / seconds, "step_s": seconds,
            "peak_mib": peak, "gflops_done": done / 1e9, "gflops_needed": need / 1e9,
            "done_over_needed": done / need if need else float("nan")}


def table(rows: list[dict]) -> str:
    head = "| model | config | device | samples/s | step s | peak MiB | GFLOP done | GFLOP needed | done/needed |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['device']} | {r['samples_per_s']:.1f} "
                     f"| {r['step_s']:.3f} | {r['peak_mib']:.0f} | {r['gflops_done']:.2f} "
                     f"| {r['gflops_needed']:.2f} | {r['done_over_needed']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py train", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-Tiny-8,ViT-B-32")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=4, help="local views per image (all valid)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "amp", "amp_bf16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    device = torch.device(args.device)
    rows = []
    for model_name in args.models.split(","):
        for label in args.configs.split(","):
            rows.append(bench_one(model_name, label, CONFIGS[label], args, device))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`farslip demo` (`make demo`): the whole mission end to end on one CPU machine.

1. writes a synthetic remote-sensing world in the real RS5M / MGRS / SkyScript / OVSS formats;
2. stage 1: ``farslip1`` (global ITC + RoI-to-pooled distillation) under ``torchrun`` with two
   processes on the RS5M shards, starting from a random initialisation saved as ``untrained.pt``;
3. stage 2: ``farslip2`` (+ multi-positive region-category ITC) on the MGRS json, starting from
   the stage-1 checkpoint, again under ``torchrun``;
4. zero-shot classification, retrieval and segmentation of the untrained, stage-1 and stage-2
   models through ``farslip.eval`` (the same code as ``farslip eval all``);
5. one table (mean top-1, mean retrieval recall, mean mIoU, with chance levels), a PNG plot of
   it, and a PNG of segmentation overlays side by side.

The demo's hyper-parameters are not the paper's (which fine-tune OpenAI CLIP on GPUs): it trains
a small ViT from scratch, with a learning rate fitting that, so that a few CPU minutes show what
each stage buys.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

import farslip

from .atomic import atomic_write
from .cli import CommandParser
from .errors import add_debug_arg, run_command
from .synth import Scale, write_world
from .eval import evaluate_classification, evaluate_retrieval, evaluate_segmentation, write_report
from .eval.datasets import load_label_map, read_classnames, read_class_synonyms, segmentation_pairs
from .eval.metrics import deduplicate_pairs
from .eval.registry import CLASSIFICATION, RETRIEVAL, SEGMENTATION
from .eval.segmentation import dataset_present

log = logging.getLogger("farslip.demo")

TILE = 160  # height of each overlay tile in pixels
COLUMNS = {"classification": "mean_top1", "retrieval": "mean_mean_recall", "segmentation": "mean_mIoU"}
HEADERS = {"classification": "mean top-1 (%)", "retrieval": "mean recall (%)", "segmentation": "mean mIoU (%)"}


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does; ``full`` is what ``make demo`` runs, ``reduced`` the slow test."""

    scale: Scale
    model: str = "ViT-Small-8"
    nproc: int = 2
    batch_size: int = 32
    stage1_epochs: int = 3
    stage2_epochs: int = 3
    stage1_lr: float = 2e-3
    stage2_lr: float = 5e-5
    stage2_long_text: bool = True  # MGRS captions run past 77 tokens: stage 2 trains Long-CLIP text, as the paper
    warmup: int = 10
    wd: float = 0.1
    seed: int = 0
    eval_batch_size: int = 128
    world_workers: int = 2
    extra_train_flags: tuple = field(default_factory=tuple)


_WORLD = dict(rs5m_shards=2, rs5m_per_shard=400, rs5m_val=16, mgrs=320, skyscript_val=40, ovss=16)
PRESETS = {
    "full": DemoConfig(scale=Scale(**_WORLD, classification=40, retrieval=40)),
    # the slow test: the same training (so the same checkpoints), smaller classification and
    # retrieval sets; training data cut further stops stage 1 from learning segmentation at all
    "reduced": DemoConfig(scale=Scale(**_WORLD, classification=16, retrieval=20)),
}


# ---------------------------------------------------------------- chance levels

def chance_levels(world: dict) -> dict[str, float]:
    """What a model that ranks at random scores, computed exactly from the demo's data.

    Classification: 100 / number of classes. Retrieval: the expected recall@k of a random ranking,
    1 - C(N - p, k) / C(N, k) for a query with p positives among N keys. Segmentation: the IoU
    of a uniformly random labelling, E[I] / E[U] per class from the ground-truth pixel counts.
    """
    bench, ovss = Path(world["benchmarks"]), Path(world["ovss"])
    cls = [100.0 / len(read_classnames(bench / spec.classnames)) for spec in CLASSIFICATION.values()]
    ret = []
    for spec in RETRIEVAL.values():
        frame = pd.read_csv(bench / spec.csv, keep_default_na=False)
        _, _, pairs = deduplicate_pairs(list(frame["filepath"]), list(frame[spec.caption_key]))
        n_img, n_txt = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
        recalls = []
        for column, n_keys in ((0, n_txt), (1, n_img)):  # image->text queries count their captions
            positives = torch.bincount(pairs[:, column]).tolist()
            for k in (min(k, n_keys) for k in (1, 5, 10)):  # the evaluator clamps k to the key count
                recalls.append(100 * float(np.mean([1 - math.comb(n_keys - p, k) / math.comb(n_keys, k)
                                                     for p in positives])))
        ret.append(float(np.mean(recalls)))
    seg = []
    for spec in SEGMENTATION.values():
        found = spec.find(ovss)
        if found is None:
            continue
        classes = read_class_synonyms(found.folder / "classes.txt")
        counts = np.zeros(len(classes))
        for _, ann in segmentation_pairs(found.images, found.labels, spec.ann_suffix, spec.img_suffix):
            labels = load_label_map(ann, spec.reduce_zero_label)
            counts += np.bincount(labels[labels < len(classes)].ravel(), minlength=len(classes))[: len(classes)]
        total, k = counts.sum(), len(classes)
        seg.append(100 * float(np.mean(counts / k / (counts + total / k - counts / k))))
    return {"classification": float(np.mean(cls)), "retrieval": float(np.mean(ret)),
            "segmentation": float(np.mean(seg))}


# ---------------------------------------------------------------- training

def _torchrun(cfg: DemoConfig, out: Path, flags: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}",
           "-m", "farslip.train", *flags]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // cfg.nproc)), PYTHONUNBUFFERED="1")
    log.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=out, env=env)  # the trainer's own log lines and progress go to the console
    if proc.returncode != 0:
        raise RuntimeError(f"training failed (exit {proc.returncode}): {' '.join(cmd)}; see {out / 'logs'}")


def train_stages(cfg: DemoConfig, out: Path, world: dict) -> dict[str, Path]:
    """Stage 1 from ``untrained.pt``, stage 2 from stage 1's last checkpoint; returns the checkpoints."""
    torch.manual_seed(cfg.seed)
    untrained = out / "checkpoints" / "untrained.pt"
    state = farslip.create_model(cfg.model).state_dict()
    atomic_write(untrained, lambda handle: torch.save(state, handle))
    common = ["--model", cfg.model, "--batch-size", str(cfg.batch_size), "--wd", str(cfg.wd),
              "--warmup", str(cfg.warmup), "--workers", "1", "--seed", str(cfg.seed), "--precision", "fp32",
              "--log-every-n-steps", "10", *cfg.extra_train_flags]
    _torchrun(cfg, out, [
        "--name", "stage1", "--train-dataset-name", "RS5M", "--train-data", world["rs5m_train"],
        "--train-dataset-type", "webdataset", "--train-num-samples", str(world["counts"]["rs5m_train"]),
        "--method", "farslip1", "--use-imagecrop-aug", "--local-method", "randomcrops",
        "--loss-type", "global_itc", "distill", "--distill-align", "roi2pooled",
        "--epochs", str(cfg.stage1_epochs), "--lr", str(cfg.stage1_lr), "--pretrained", str(untrained),
        "--val-data", world["skyscript_val_csv"], "--root-val-img-dir", world["benchmarks"], *common])
    stage1 = out / "logs" / "stage1" / "checkpoints" / "epoch_latest.pt"
    _torchrun(cfg, out, [
        "--name", "stage2", "--train-dataset-name", "MGRS", "--train-data", world["mgrs_json"],
        "--root-train-img-dir", world["mgrs_images"], "--train-dataset-type", "json", "--method", "farslip2",
        "--local-method", "randomcrops", "--loss-type", "global_itc", "distill", "local_itc",
        "--distill-align", "roi2pooled", "--local-itc-align", "cls",
        "--epochs", str(cfg.stage2_epochs), "--lr", str(cfg.stage2_lr), "--pretrained", str(stage1),
        "--long-text" if cfg.stage2_long_text else "--no-long-text",
        "--val-data", world["skyscript_val_csv"], "--root-val-img-dir", world["benchmarks"], *common])
    stage2 = out / "logs" / "stage2" / "checkpoints" / "epoch_latest.pt"
    return {"untrained": untrained, "stage 1": stage1, "stage 2": stage2}


# ---------------------------------------------------------------- evaluation and report

def evaluate_model(cfg: DemoConfig, checkpoint: Path, world: dict, out: Path) -> tuple[dict, torch.nn.Module]:
    """The three evaluations of one checkpoint (model created once), written to ``out``."""
    model = farslip.create_model(cfg.model, str(checkpoint)).eval()
    tokenizer = farslip.get_tokenizer(model)
    common = dict(batch_size=cfg.eval_batch_size, workers=0)
    results = {
        "model": {"model": cfg.model, "checkpoint": str(checkpoint)},
        "classification": evaluate_classification(model, tokenizer, world["benchmarks"], **common),
        "retrieval": evaluate_retrieval(model, tokenizer, world["benchmarks"], **common),
        "segmentation": evaluate_segmentation(model, tokenizer, world["ovss"],
                                              [s for s in SEGMENTATION if dataset_present(world["ovss"], s)],
                                              **common),
    }
    write_report(results, out)
    return results, model


def summary_table(scores: dict[str, dict[str, float]], chance: dict[str, float]) -> str:
    lines = ["| model | " + " | ".join(HEADERS.values()) + " |", "|---|" + "---:|" * len(HEADERS)]
    for row, values in scores.items():
        lines.append(f"| {row} | " + " | ".join(f"{values[t]:.2f}" for t in HEADERS) + " |")
    lines.append("| chance | " + " | ".join(f"{chance[t]:.2f}" for t in HEADERS) + " |")
    return "\n".join(lines)


def plot_table(scores: dict[str, dict[str, float]], chance: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HEADERS), figsize=(4 * len(HEADERS), 3.6))
    colours = ["#9e9e9e", "#4c72b0", "#dd8452"]
    for ax, task in zip(axes, HEADERS):
        values = [scores[row][task] for row in scores]
        bars = ax.bar(list(scores), values, color=colours[: len(values)])
        ax.axhline(chance[task], color="black", linestyle="--", linewidth=1, label=f"chance {chance[task]:.1f}")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_title(HEADERS[task])
        ax.set_ylim(0, max(max(values), chance[task]) * 1.2 + 1)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("FarSLIP demo on the synthetic world: what each stage buys")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def _letterbox(image, resample) -> np.ndarray:
    """``image`` scaled to fit a TILE x TILE square, centred on white."""
    scale = TILE / max(image.width, image.height)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    canvas = Image.new("RGB", (TILE, TILE), "white")
    canvas.paste(small, ((TILE - small.width) // 2, (TILE - small.height) // 2))
    return np.asarray(canvas)


def overlays(models: dict[str, torch.nn.Module], world: dict, path: Path, count: int = 3) -> None:
    """image | ground truth | one prediction per model, for the ``count`` images of the first OVSS set
    whose ground truth holds the most classes."""
    from .eval.encode import Runtime
    from .eval.report import palette
    from .eval.segmentation import build_queries, segment_labels

    spec = next(s for s in SEGMENTATION.values() if s.find(Path(world["ovss"])))
    found = spec.locate(Path(world["ovss"]))
    classes = read_class_synonyms(found.folder / "classes.txt")
    colours = palette(len(classes))
    pairs = segmentation_pairs(found.images, found.labels, spec.ann_suffix, spec.img_suffix)
    run = Runtime(batch_size=64, workers=0)
    queries = {row: build_queries(model, farslip.get_tokenizer(model), classes, run) for row, model in models.items()}
    truths = {pair: load_label_map(pair[1], spec.reduce_zero_label) for pair in pairs}
    richest = sorted(pairs, key=lambda pair: -len(np.unique(truths[pair])))[:count]
    rows = []
    for image_path, ann_path in richest:
        image = Image.open(image_path).convert("RGB")
        maps = [colours[truths[(image_path, ann_path)]]]
        for row, model in models.items():
            with torch.no_grad():
                maps.append(colours[segment_labels(model, image, queries[row], run=run)])
        tiles = [_letterbox(image, Image.BICUBIC)] + [_letterbox(Image.fromarray(m), Image.NEAREST) for m in maps]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    canvas = Image.fromarray(grid.astype(np.uint8))
    header = Image.new("RGB", (canvas.width, 16), "white")
    draw = ImageDraw.Draw(header)
    for i, title in enumerate(["image", "ground truth", *models]):
        draw.text((i * (TILE + 4) + 4, 2), title, fill="black")
    legend = Image.new("RGB", (canvas.width, 16), "white")
    draw = ImageDraw.Draw(legend)
    left = 4
    for c, names in enumerate(classes):
        draw.rectangle([left, 3, left + 10, 13], fill=tuple(int(v) for v in colours[c]))
        draw.text((left + 13, 2), names[0], fill="black")
        left += 20 + int(draw.textlength(names[0]))
    full = Image.new("RGB", (canvas.width, canvas.height + 32), "white")
    full.paste(header, (0, 0))
    full.paste(canvas, (0, 16))
    full.paste(legend, (0, 16 + canvas.height))
    atomic_write(path, lambda handle: full.save(handle, format="PNG"))


def run_demo(out: Path, cfg: DemoConfig) -> dict:
    """Run the demo into ``out``; returns the summary (also written to ``out/summary.json``)."""
    started = time.perf_counter()
    out = Path(out).resolve()  # training runs in ``out`` (its logs/ land there): paths must not be relative
    out.mkdir(parents=True, exist_ok=True)
    log.info("1/4 writing the synthetic world")
    world = write_world(out / "world", seed=cfg.seed, scale=cfg.scale, workers=cfg.world_workers,
                        overwrite=True, progress=True)
    log.info("2/4 training stage 1 and stage 2 (torchrun, %d processes)", cfg.nproc)
    checkpoints = train_stages(cfg, out, world)
    log.info("3/4 evaluating %s", ", ".join(checkpoints))
    scores, models = {}, {}
    for row, checkpoint in checkpoints.items():
        results, models[row] = evaluate_model(cfg, checkpoint, world, out / "eval" / row.replace(" ", ""))
        scores[row] = {task: float(results[task][key]) for task, key in COLUMNS.items()}
    log.info("4/4 writing the table, the plot and the overlays")
    chance = chance_levels(world)
    table = summary_table(scores, chance)
    atomic_write(out / "summary.md", table + "\n")
    plot_table(scores, chance, out / "summary.png")
    overlays(models, world, out / "segmentation_overlays.png")
    margins = {row: {task: scores[row][task] - max(scores["untrained"][task], chance[task]) for task in HEADERS}
               for row in ("stage 1", "stage 2")}
    summary = {"config": {**asdict(cfg), "scale": asdict(cfg.scale)}, "scores": scores, "chance": chance,
               "margins_over_untrained_and_chance": margins, "checkpoints": {k: str(v) for k, v in checkpoints.items()},
               "results": {row: str(out / "eval" / row.replace(" ", "") / "results.json") for row in checkpoints},
               "seconds": round(time.perf_counter() - started, 1)}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="farslip demo", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS),
                        help="full: what make demo runs; reduced: the slow test's smaller run (default: full)")
    parser.add_argument("--model", default=None, help="architecture to train (default: ViT-Small-8)")
    parser.add_argument("--nproc", type=int, default=None, help="training processes (default: 2)")
    add_debug_arg(parser)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run_command("farslip demo", args.debug, lambda: _demo(args))


def _demo(args: argparse.Namespace) -> int:
    if args.nproc is not None and args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (got {args.nproc})")
    cfg = PRESETS[args.preset]
    cfg = replace(cfg, **{k: v for k, v in dict(model=args.model, nproc=args.nproc).items() if v is not None})
    out = Path(args.out)
    summary = run_demo(out, cfg)
    print()
    print((out / "summary.md").read_text())
    for row, margin in summary["margins_over_untrained_and_chance"].items():
        print(f"{row} beats max(untrained, chance) by " +
              ", ".join(f"{HEADERS[t]} {v:+.2f}" for t, v in margin.items()))
    print(f"\nfinished in {summary['seconds']:.0f} s. Wrote:")
    for what, path in [("checkpoints", out / "checkpoints" / "untrained.pt"), ("", out / "logs/stage1/checkpoints"),
                       ("", out / "logs/stage2/checkpoints"), ("results", out / "eval" / "*" / "results.json"),
                       ("table", out / "summary.md"), ("plot", out / "summary.png"),
                       ("overlays", out / "segmentation_overlays.png"), ("summary", out / "summary.json")]:
        print(f"  {what:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

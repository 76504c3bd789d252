"""``farslip eval classification|retrieval|segmentation|all``: one model, created once, every data set.

Writes ``results.json`` (every metric, the model and its checkpoint hash, data set sizes,
settings, times), ``results.md`` (tables shaped like the paper's) and segmentation PNGs into
``--output``. A data set that fails is reported with its error and makes the exit status 1;
``--keep-going`` evaluates the remaining sets first.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

import farslip

from .classification import evaluate_classification
from .registry import CLASSIFICATION, RETRIEVAL, SEGMENTATION, TASKS, parse_names
from .report import write_report
from .retrieval import evaluate_retrieval
from .runner import DatasetFailed
from .segmentation import WINDOW_GEOMETRIES, evaluate_segmentation

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "amp", "amp_bf16")
# What a command reports as "error: ..." with exit status 2 instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, farslip.CheckpointError, farslip.CheckpointNotAvailable)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model flags every command that loads a model shares (see :func:`model_from_args`)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True,
                       help="a named checkpoint (FarSLIP1-ViT-B-32, FarSLIP2-ViT-B-16, ...; see `farslip models`) "
                            "or an open_clip architecture (ViT-B-32, ViT-Tiny-8, ...)")
    group.add_argument("--pretrained", default=None,
                       help="weights: a local file, hf-hub:REPO/FILE or an open_clip tag; default: the named "
                            "checkpoint's own file, random weights for a bare architecture")
    group.add_argument("--model-name", default=None, help="label of the model in the tables (default: --model)")
    group.add_argument("--force-quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                       help="QuickGELU activations (default: auto, on for OpenAI-derived weights)")
    group.add_argument("--long-text", action=argparse.BooleanOptionalAction, default=None,
                       help="Long-CLIP 248-token text (default: auto, from the checkpoint)")
    group.add_argument("--unsafe-load", action=argparse.BooleanOptionalAction, default=False,
                       help="allow unrestricted unpickling of a checkpoint that safe loading rejects")
    group.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: the hub's own)")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    group.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="fp32/fp16/bf16 cast the model; amp/amp_bf16 autocast")


def _run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--data-root", default=os.environ.get("FARSLIP_DATA"),
                       help="benchmark root (SkyScript layout; CSV filepaths are relative to it); "
                            "default: $FARSLIP_DATA")
    group.add_argument("--image-root", default=None, help="root of the CSV image paths (default: --data-root)")
    group.add_argument("--batch-size", type=int, default=64, help="images (segmentation: windows) per forward")
    group.add_argument("--workers", type=int, default=4, help="data loader worker processes")
    group.add_argument("--output", default="eval_results", help="folder for results.json, results.md and PNGs")
    group.add_argument("--keep-going", action=argparse.BooleanOptionalAction, default=False,
                       help="evaluate the remaining data sets after one fails (the exit status is still 1)")
    group.add_argument("-v", "--verbose", action=argparse.BooleanOptionalAction, default=False,
                       help="debug logging")


def _segmentation_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("segmentation")
    group.add_argument("--last-attn", default="segearth", choices=farslip.LAST_ATTN_TYPES,
                       help="dense last-block variant")
    group.add_argument("--split", default=None,
                       help="the split folder (img_dir/<split>, or <split>/src for UDD5/VDD; default: each registered set's "
                            "own, val for --seg-dir)")
    group.add_argument("--reduce-zero-label", action=argparse.BooleanOptionalAction, default=None,
                       help="label 0 = ignore, classes from 1 (default: per data set: on for LoveDA, Potsdam, "
                            "Vaihingen; off for --seg-dir)")
    group.add_argument("--window-geometry", default="reference", choices=WINDOW_GEOMETRIES,
                       help="reference: long side 448, 224-px windows, stride 112 for every model, each window "
                            "resized to the model's input (the paper's protocol); model: long side 2 x the model's "
                            "input, windows of its input, stride half of it")
    group.add_argument("--long-side", type=int, default=None,
                       help="resize images to this long side (default: 448, or 2 x the model's input with "
                            "--window-geometry model)")
    group.add_argument("--num-examples", type=int, default=3, help="PNG panels written per data set")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="farslip eval", description=__doc__, formatter_class=fmt)
    sub = parser.add_subparsers(dest="task", required=True, metavar="{classification,retrieval,segmentation,all}")

    cls = sub.add_parser("classification", formatter_class=fmt, help="zero-shot scene classification",
                         description=f"Zero-shot scene classification. Registered: {', '.join(CLASSIFICATION)}.")
    cls.add_argument("--datasets", default=None, help="comma-separated registered names (default: all)")
    cls.add_argument("--csv", default=None, help="evaluate this CSV (filepath,label) instead; relative to --data-root")
    cls.add_argument("--classnames", default=None, help="class list of --csv (default: classnames.txt beside it)")
    cls.add_argument("--name", default=None, help="name of the --csv data set in the report (default: its stem)")

    ret = sub.add_parser("retrieval", formatter_class=fmt, help="zero-shot image-text retrieval",
                         description=f"Zero-shot image-text retrieval. Registered: {', '.join(RETRIEVAL)}.")
    ret.add_argument("--datasets", default=None, help="comma-separated registered names (default: all)")
    ret.add_argument("--csv", default=None, help="evaluate this CSV instead; relative to --data-root")
    ret.add_argument("--caption-key", default="title", help="caption column of --csv")
    ret.add_argument("--caption-prefix", default="", help="text put before every caption of --csv")
    ret.add_argument("--name", default=None, help="name of the --csv data set in the report (default: its stem)")

    seg = sub.add_parser("segmentation", formatter_class=fmt, help="open-vocabulary semantic segmentation",
                         description="Open-vocabulary semantic segmentation: --data-root DIR holds the "
                                     "converted sets as the paper's evaluation framework reads them (e.g. "
                                     "DIR/loveDA/img_dir/val + ann_dir/val, DIR/UDD5/val/src + val/gt; "
                                     "docs/EVALUATION.md lists every path tried); a classes.txt in a set's folder, "
                                     f"when present, overrides the packaged class list. Registered: "
                                     f"{', '.join(SEGMENTATION)}.")
    seg.add_argument("--datasets", default=None, help="comma-separated registered names (default: all)")
    seg.add_argument("--seg-dir", default=None,
                     help="evaluate this folder instead (img_dir/<split> + ann_dir/<split>, or <split>/src + <split>/gt)")
    seg.add_argument("--classes", default=None, help="class file of --seg-dir (default: its classes.txt)")
    seg.add_argument("--ann-suffix", default=".png", help="label map name = image stem + this, for --seg-dir")
    seg.add_argument("--name", default=None, help="name of the --seg-dir data set in the report (default: folder name)")

    every = sub.add_parser("all", formatter_class=fmt, help="the three evaluations on one model",
                           description="Classification, retrieval and segmentation on one model. --data-root holds "
                                       "the SkyScript-layout benchmarks; --seg-data-root the OVSS folders (default: "
                                       "--data-root, so one root may hold both). For the synthetic world of "
                                       "`farslip synth --out W`: --data-root W/benchmarks --seg-data-root W/ovss.")
    every.add_argument("--cls-datasets", default=None, help="classification sets (default: all registered)")
    every.add_argument("--ret-datasets", default=None, help="retrieval sets (default: all registered)")
    every.add_argument("--seg-datasets", default=None, help="segmentation sets (default: all registered)")
    every.add_argument("--seg-data-root", default=None, help="root of the OVSS folders (default: --data-root)")
    every.add_argument("--tasks", default=",".join(TASKS), help="which of the three to run")

    for p in (cls, ret, seg, every):
        add_model_args(p)
        _run_args(p)
    for p in (seg, every):
        _segmentation_args(p)
    return parser


def model_from_args(args: argparse.Namespace):
    """``(model, tokenizer)`` from the flags of :func:`add_model_args`, the model in eval mode."""
    model = farslip.create_model(args.model, args.pretrained, force_quick_gelu=args.force_quick_gelu,
                                 long_text=args.long_text, precision=args.precision, device=args.device,
                                 cache_dir=args.cache_dir, allow_unsafe=args.unsafe_load).eval()
    return model, farslip.get_tokenizer(model)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_file(args: argparse.Namespace) -> Optional[Path]:
    """The local weights file this run loaded, if any (a --pretrained file or a cached hub file)."""
    if args.pretrained and Path(args.pretrained).expanduser().is_file():
        return Path(args.pretrained).expanduser()
    spec = farslip.models.get_spec(args.model)
    source = args.pretrained or (f"hf-hub:{spec.repo}/{spec.filename}" if spec and spec.repo else None)
    if source and source.startswith("hf-hub:"):
        from farslip.models.hub import hub_file, parse_hf_hub

        return Path(hub_file(*parse_hf_hub(source), cache_dir=args.cache_dir))
    return None


def model_info(args: argparse.Namespace, model) -> dict:
    path = checkpoint_file(args)
    return {"label": args.model_name or args.model, "model": args.model, "pretrained": args.pretrained,
            "checkpoint": str(path) if path else None, "checkpoint_sha256": file_sha256(path) if path else None,
            "force_quick_gelu": args.force_quick_gelu, "context_length": int(model.context_length),
            "image_size": list(model.visual.image_size) if not isinstance(model.visual.image_size, int)
            else [model.visual.image_size] * 2,
            "parameters": sum(p.numel() for p in model.parameters())}


def _task_runs(args: argparse.Namespace) -> dict:
    """task -> (function, keyword arguments) for what the subcommand asks."""
    common = dict(batch_size=args.batch_size, workers=args.workers, device=args.device, precision=args.precision,
                  keep_going=args.keep_going)
    seg_common = dict(last_attn=args.last_attn, split=args.split, reduce_zero_label=args.reduce_zero_label,
                      long_side=args.long_side, window_geometry=args.window_geometry,
                      num_examples=args.num_examples) if hasattr(args, "last_attn") else {}
    if args.task == "classification":
        return {"classification": (evaluate_classification, dict(
            data_root=args.data_root, datasets=parse_names(args.datasets, CLASSIFICATION), csv=args.csv,
            classnames=args.classnames, name=args.name, image_root=args.image_root, **common))}
    if args.task == "retrieval":
        return {"retrieval": (evaluate_retrieval, dict(
            data_root=args.data_root, datasets=parse_names(args.datasets, RETRIEVAL), csv=args.csv,
            caption_key=args.caption_key, caption_prefix=args.caption_prefix, name=args.name,
            image_root=args.image_root, **common))}
    if args.task == "segmentation":
        return {"segmentation": (evaluate_segmentation, dict(
            data_root=args.data_root, datasets=parse_names(args.datasets, SEGMENTATION), seg_dir=args.seg_dir,
            classes=args.classes, ann_suffix=args.ann_suffix, name=args.name, **seg_common, **common))}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    runs = {
        "classification": (evaluate_classification, dict(
            data_root=args.data_root, datasets=parse_names(args.cls_datasets, CLASSIFICATION),
            image_root=args.image_root, **common)),
        "retrieval": (evaluate_retrieval, dict(
            data_root=args.data_root, datasets=parse_names(args.ret_datasets, RETRIEVAL),
            image_root=args.image_root, **common)),
        "segmentation": (evaluate_segmentation, dict(
            data_root=args.seg_data_root or args.data_root, datasets=parse_names(args.seg_datasets, SEGMENTATION),
            **seg_common, **common)),
    }
    return {task: runs[task] for task in tasks}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("farslip").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _evaluate(args, argv)
    except USER_ERRORS as err:
        print(f"farslip eval: error: {err}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    """Create the model once, run the asked tasks, write the report; the exit status."""
    runs = _task_runs(args)
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    model, tokenizer = model_from_args(args)
    results: dict = {"model": model_info(args, model), "command": ["farslip", "eval", *argv],
                     "settings": {k: v for k, v in vars(args).items() if k not in ("model", "pretrained")},
                     "started": started.isoformat(timespec="seconds")}
    status = 0
    for task, (evaluate, kwargs) in runs.items():
        try:
            results[task] = evaluate(model, tokenizer, **kwargs)
        except DatasetFailed as err:
            log.error("%s", err)
            results[task] = err.partial
            status = 1
            break
        if results[task]["failed"]:
            status = 1
    results["seconds"] = round(time.perf_counter() - clock, 3)
    written = write_report(results, args.output)
    _print_summary(results, written)
    return status


def _print_summary(results: dict, written: dict) -> None:
    """The headline numbers on stdout (the CLI's result), then where the report went."""
    heads = {"classification": "mean_top1", "retrieval": "mean_mean_recall", "segmentation": "mean_mIoU"}
    for task, key in heads.items():
        if task in results:
            per_set = ", ".join(f"{n} {m[key[5:]]:.2f}" for n, m in results[task]["datasets"].items())
            print(f"{task}: {key} = {results[task][key]:.2f}  ({per_set})")
            for name, error in results[task]["failed"].items():
                print(f"{task}: {name} FAILED: {error}")
    print(f"report: {written['results.json'].parent}")


if __name__ == "__main__":
    sys.exit(main())

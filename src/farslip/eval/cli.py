"""``farslip eval classification|retrieval|segmentation|all|report``: one model, created once, every data set.

Writes ``results.json`` (every metric with its hit counts, the model and its checkpoint hash, data
set sizes, settings, times), ``results.md`` (tables shaped like the paper's) and segmentation PNGs
into ``--output`` (default ``eval_results/<model>``; an existing ``results.json`` is never
replaced silently). A data set that fails is reported with its error and makes the exit status 1;
``--keep-going`` evaluates the remaining sets first. Registered sets that are absent under the
data root are listed and skipped unless named. ``farslip eval report RUN...`` merges several runs
into the paper's multi-row tables.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import farslip
from farslip.cli import CommandParser, add_model_args, model_from_args
from farslip.errors import add_debug_arg, resolve_device, run_command
from farslip.models.factory import LOCAL_DIR, is_random_weights
from farslip.models.registry import HF_HUB

from . import classification, retrieval, segmentation
from .classification import evaluate_classification
from .datasets import resolve_user_path
from .registry import CAPTION_PREFIX, CLASSIFICATION, RETRIEVAL, SEGMENTATION, TASKS, lookup, parse_names
from .report import write_merged_report, write_report
from .retrieval import evaluate_retrieval
from .runner import DatasetFailed, run_datasets
from .segmentation import WINDOW_GEOMETRIES, evaluate_segmentation

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = "eval_results"


def path_rule(flags: str) -> str:
    """The one rule for the paths a user gives (--csv, --classnames), as --help states it."""
    return (f"A relative {flags} path is looked up in the current directory first, then under --data-root (an "
            f"error names both paths tried); image paths inside a CSV are relative to --image-root (default: "
            f"--data-root, else the CSV's folder).")


def _run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--data-root", default=os.environ.get("FARSLIP_DATA"),
                       help="benchmark root (SkyScript layout; CSV filepaths are relative to it); "
                            "default: $FARSLIP_DATA")
    group.add_argument("--image-root", default=None, help="root of the CSV image paths (default: --data-root)")
    group.add_argument("--batch-size", type=int, default=64, help="images (segmentation: windows) per forward")
    group.add_argument("--workers", type=int, default=4, help="data loader worker processes")
    group.add_argument("--output", default=None,
                       help=f"folder for results.json, results.md and PNGs (default: {DEFAULT_OUTPUT_ROOT}/<model>, "
                            f"e.g. {DEFAULT_OUTPUT_ROOT}/FarSLIP1-ViT-B-32, {DEFAULT_OUTPUT_ROOT}/ViT-B-32-openai, "
                            f"{DEFAULT_OUTPUT_ROOT}/ViT-B-32-random)")
    group.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                       help="replace the results.json (and its PNGs) a previous run left in --output")
    group.add_argument("--skip-existing", action=argparse.BooleanOptionalAction, default=False,
                       help="if --output already holds a results.json, leave it and exit 0 without evaluating")
    group.add_argument("--keep-going", action=argparse.BooleanOptionalAction, default=False,
                       help="evaluate the remaining data sets after one fails (the exit status is still 1)")
    group.add_argument("-v", "--verbose", action=argparse.BooleanOptionalAction, default=False,
                       help="debug logging")
    add_debug_arg(group)


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
    parser = CommandParser(prog="farslip eval", description=__doc__)
    sub = parser.add_subparsers(dest="task", required=True,
                                metavar="{classification,retrieval,segmentation,all,report}")
    absent = ("Without --datasets, every registered set present under --data-root is evaluated and the absent "
              "ones are listed in the report; a set named in --datasets must be there.")

    cls = sub.add_parser("classification", help="zero-shot scene classification",
                         description=f"Zero-shot scene classification. Registered: {', '.join(CLASSIFICATION)}. "
                                     f"{absent} {path_rule('--csv or --classnames')}")
    cls.add_argument("--datasets", default=None,
                     help="comma-separated registered names (default: every registered set present)")
    cls.add_argument("--csv", default=None, help="evaluate this CSV (columns filepath,label) instead")
    cls.add_argument("--classnames", default=None, help="class list of --csv (default: classnames.txt beside it)")
    cls.add_argument("--name", default=None, help="name of the --csv data set in the report (default: its stem)")

    ret = sub.add_parser("retrieval", help="zero-shot image-text retrieval",
                         description=f"Zero-shot image-text retrieval. Registered: {', '.join(RETRIEVAL)} (RSICD, "
                                     f"RSITMD and ucmcaptions read the column title with the prefix "
                                     f"{CAPTION_PREFIX!r}; SkyScript reads title_multi_objects without one). A --csv "
                                     f"set reads --caption-key (default title) with --caption-prefix (default none); "
                                     f"for the RSICD-style prefix pass --caption-prefix {CAPTION_PREFIX!r}. "
                                     f"{absent} {path_rule('--csv')}")
    ret.add_argument("--datasets", default=None,
                     help="comma-separated registered names (default: every registered set present)")
    ret.add_argument("--csv", default=None, help="evaluate this CSV (columns filepath + --caption-key) instead")
    ret.add_argument("--caption-key", default="title", help="caption column of --csv")
    ret.add_argument("--caption-prefix", default="",
                     help=f"text put before every caption of --csv (default: none; the registered RSICD, RSITMD and "
                          f"ucmcaptions sets use {CAPTION_PREFIX!r}: pass --caption-prefix {CAPTION_PREFIX!r} "
                          f"for the same)")
    ret.add_argument("--name", default=None, help="name of the --csv data set in the report (default: its stem)")

    seg = sub.add_parser("segmentation", help="open-vocabulary semantic segmentation",
                         description="Open-vocabulary semantic segmentation: --data-root DIR holds the "
                                     "converted sets as the paper's evaluation framework reads them (e.g. "
                                     "DIR/loveDA/img_dir/val + ann_dir/val, DIR/UDD5/val/src + val/gt; "
                                     "docs/EVALUATION.md lists every path tried); a classes.txt in a set's folder, "
                                     f"when present, overrides the packaged class list. Registered: "
                                     f"{', '.join(SEGMENTATION)}. {absent}")
    seg.add_argument("--datasets", default=None,
                     help="comma-separated registered names (default: every registered set present)")
    seg.add_argument("--seg-dir", default=None,
                     help="evaluate this folder instead (img_dir/<split> + ann_dir/<split>, or <split>/src + <split>/gt)")
    seg.add_argument("--classes", default=None, help="class file of --seg-dir (default: its classes.txt)")
    seg.add_argument("--ann-suffix", default=".png", help="label map name = image stem + this, for --seg-dir")
    seg.add_argument("--name", default=None, help="name of the --seg-dir data set in the report (default: folder name)")

    every = sub.add_parser("all", help="the three evaluations on one model",
                           description="Classification, retrieval and segmentation on one model. --data-root holds "
                                       "the SkyScript-layout benchmarks; --seg-data-root the OVSS folders (default: "
                                       "--data-root, so one root may hold both). For the synthetic world of "
                                       "`farslip synth --out W`: --data-root W/benchmarks --seg-data-root W/ovss. "
                                       "Sets not named are evaluated where present and listed as absent otherwise.")
    every.add_argument("--cls-datasets", default=None,
                       help="classification sets (default: every registered set present)")
    every.add_argument("--ret-datasets", default=None, help="retrieval sets (default: every registered set present)")
    every.add_argument("--seg-datasets", default=None,
                       help="segmentation sets (default: every registered set present)")
    every.add_argument("--seg-data-root", default=None, help="root of the OVSS folders (default: --data-root)")
    every.add_argument("--tasks", default=",".join(TASKS), help="which of the three to run")

    for p in (cls, ret, seg, every):
        add_model_args(p)
        _run_args(p)
    for p in (seg, every):
        _segmentation_args(p)

    rep = sub.add_parser("report", help="merge several runs into the paper's tables",
                         description="Merge the results of several `farslip eval` runs (their --output folders or "
                                     "results.json files) into the paper's multi-row tables: one row per run, the "
                                     "paper's data set names as columns, numbers right-aligned, random-weights runs "
                                     "marked. Prints the Markdown; --output also writes report.md and one CSV per "
                                     "table (classification.csv = top-1, classification_top5.csv, retrieval.csv, "
                                     "segmentation.csv; two decimals, the exact values and hit counts stay in each "
                                     "results.json).")
    rep.add_argument("results", nargs="+", help="results folders or results.json files, one table row each")
    rep.add_argument("--output", default=None, help="folder for report.md and the CSVs (default: print only)")
    add_debug_arg(rep)
    return parser


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_info(args: argparse.Namespace, model) -> dict:
    """What the report says about the model: label, weights source (None = random), checkpoint file + hash."""
    path = Path(model.farslip_checkpoint) if getattr(model, "farslip_checkpoint", None) else None
    weights = getattr(model, "farslip_weights", None)
    return {"label": args.model_name or args.model, "model": args.model, "pretrained": args.pretrained,
            "weights": weights, "random_weights": weights is None,
            "checkpoint": str(path) if path else None, "checkpoint_sha256": file_sha256(path) if path else None,
            "force_quick_gelu": args.force_quick_gelu, "context_length": int(model.context_length),
            "image_size": list(model.visual.image_size) if not isinstance(model.visual.image_size, int)
            else [model.visual.image_size] * 2,
            "parameters": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------- where the results go

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def default_output(args: argparse.Namespace) -> Path:
    """``eval_results/<label>[-<weights>]``: one folder per model and weights, decided before loading.

    The weights part is the --pretrained file's stem, tag or ``random``; a named checkpoint or an
    hf-hub:/local-dir: model with its own weights adds nothing.
    """
    model = args.model
    if model.startswith((HF_HUB, LOCAL_DIR)):
        schema, rest = model.split(":", 1)
        model = f"{schema}_{rest.strip('/')}" if model.startswith(HF_HUB) else Path(rest).name
    elif model.lower().endswith(".json"):
        model = Path(model).stem
    label = args.model_name or model
    pretrained = args.pretrained
    own_weights = farslip.models.get_spec(args.model) is not None or args.model.startswith((HF_HUB, LOCAL_DIR))
    if pretrained is None:
        weights = None if own_weights else "random"
    elif is_random_weights(pretrained):
        weights = "random"
    else:
        weights = Path(pretrained.split("/")[-1]).stem if ("/" in pretrained or "." in pretrained) else pretrained
    return Path(DEFAULT_OUTPUT_ROOT) / _slug(f"{label}-{weights}" if weights else label)


def _previous_run(out: Path) -> Optional[dict]:
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remove_previous_examples(out: Path, previous: dict) -> None:
    """Delete the PNGs a replaced results.json listed (only those), so none of them outlives it."""
    for metrics in ((previous.get("segmentation") or {}).get("datasets") or {}).values():
        for rel in metrics.get("examples") or []:
            path = (out / rel).resolve()
            if isinstance(rel, str) and out.resolve() in path.parents and path.suffix == ".png" and path.is_file():
                path.unlink()


# ---------------------------------------------------------------- which data sets run

HEADLINES = {"classification": classification.HEADLINE, "retrieval": retrieval.HEADLINE,
             "segmentation": segmentation.HEADLINE}


def _select(text: Optional[str], table: dict, task: str, root: Optional[str],
            present: Callable[[Path, str], bool]) -> tuple[list[str], list[str]]:
    """(names to evaluate, registered names absent under ``root``) for a --datasets value.

    Named sets are all evaluated (an absent one fails there, with the paths tried); without names,
    the registered sets present under ``root`` are, and the others are returned as absent.
    """
    if text:
        return [lookup(table, n, task).name for n in parse_names(text, table)], []
    if root is None:
        raise ValueError(f"{task} needs a data root (--data-root or $FARSLIP_DATA)")
    found = {name: present(Path(root), name) for name in table}
    return [n for n in table if found[n]], [n for n in table if not found[n]]


def _task_runs(args: argparse.Namespace) -> dict:
    """task -> (function, keyword arguments, absent set names) for what the subcommand asks."""
    common = dict(batch_size=args.batch_size, workers=args.workers, device=args.device, precision=args.precision,
                  keep_going=args.keep_going)
    seg_common = dict(last_attn=args.last_attn, split=args.split, reduce_zero_label=args.reduce_zero_label,
                      long_side=args.long_side, window_geometry=args.window_geometry,
                      num_examples=args.num_examples) if hasattr(args, "last_attn") else {}
    if getattr(args, "csv", None):
        args.csv = str(resolve_user_path(args.csv, args.data_root, "--csv"))
    if getattr(args, "classnames", None):
        args.classnames = str(resolve_user_path(args.classnames, args.data_root, "--classnames"))
    if args.task == "classification":
        if args.csv:
            names, absent = [], []
        else:
            names, absent = _select(args.datasets, CLASSIFICATION, "classification", args.data_root,
                                    classification.dataset_present)
        return {"classification": (evaluate_classification, dict(
            data_root=args.data_root, datasets=names, csv=args.csv, classnames=args.classnames, name=args.name,
            image_root=args.image_root, **common), absent)}
    if args.task == "retrieval":
        if args.csv:
            names, absent = [], []
        else:
            names, absent = _select(args.datasets, RETRIEVAL, "retrieval", args.data_root, retrieval.dataset_present)
        return {"retrieval": (evaluate_retrieval, dict(
            data_root=args.data_root, datasets=names, csv=args.csv, caption_key=args.caption_key,
            caption_prefix=args.caption_prefix, name=args.name, image_root=args.image_root, **common), absent)}
    if args.task == "segmentation":
        if args.seg_dir:
            names, absent = [], []
        else:
            names, absent = _select(args.datasets, SEGMENTATION, "segmentation", args.data_root,
                                    segmentation.dataset_present)
        return {"segmentation": (evaluate_segmentation, dict(
            data_root=args.data_root, datasets=names, seg_dir=args.seg_dir, classes=args.classes,
            ann_suffix=args.ann_suffix, name=args.name, **seg_common, **common), absent)}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"--tasks: unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    seg_root = args.seg_data_root or args.data_root
    select = {
        "classification": lambda: _select(args.cls_datasets, CLASSIFICATION, "classification", args.data_root,
                                          classification.dataset_present),
        "retrieval": lambda: _select(args.ret_datasets, RETRIEVAL, "retrieval", args.data_root,
                                     retrieval.dataset_present),
        "segmentation": lambda: _select(args.seg_datasets, SEGMENTATION, "segmentation", seg_root,
                                        segmentation.dataset_present),
    }
    runs = {}
    for task in tasks:
        names, absent = select[task]()
        if task == "classification":
            runs[task] = (evaluate_classification, dict(data_root=args.data_root, datasets=names,
                                                        image_root=args.image_root, **common), absent)
        elif task == "retrieval":
            runs[task] = (evaluate_retrieval, dict(data_root=args.data_root, datasets=names,
                                                   image_root=args.image_root, **common), absent)
        else:
            runs[task] = (evaluate_segmentation, dict(data_root=seg_root, datasets=names, **seg_common, **common),
                          absent)
    return runs


def _check_something_present(runs: dict, args: argparse.Namespace) -> None:
    """A run where every task found nothing to evaluate is a wrong root, not an empty report."""
    custom = any(getattr(args, flag, None) for flag in ("csv", "seg_dir"))
    if custom or any(kwargs.get("datasets") for _, kwargs, _ in runs.values()):
        return
    roots = sorted({str(kwargs.get("data_root")) for _, kwargs, _ in runs.values()})
    raise FileNotFoundError(f"no registered data set of {', '.join(runs)} is present under {', '.join(roots)} "
                            f"(see docs/EVALUATION.md for the layouts, or `farslip synth --out W` for a synthetic "
                            f"world); name sets with --datasets to see the paths each one is looked up at")


# ---------------------------------------------------------------- the commands

def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("farslip").setLevel(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)

    def body() -> int:
        if args.task == "report":
            return _report(args)
        args.device = resolve_device(args.device)
        return _evaluate(args, argv)

    return run_command("farslip eval", args.debug, body)


def _report(args: argparse.Namespace) -> int:
    """``farslip eval report``: read every results.json, print the merged Markdown, write the files."""
    runs = []
    for item in args.results:
        path = Path(item)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{item}: no results.json there (pass a `farslip eval --output` folder or "
                                    f"its results.json)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: not a results.json ({err})") from err
        if not isinstance(data, dict) or not any(task in data for task in TASKS):
            raise ValueError(f"{path}: holds no classification, retrieval or segmentation results")
        runs.append((path.parent.name, data))
    text, written = write_merged_report(runs, args.output)
    print(text)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    """Check the output folder, create the model once, run the asked tasks, write the report."""
    if args.overwrite and args.skip_existing:
        raise ValueError("--overwrite and --skip-existing contradict each other; pass one")
    out = Path(args.output) if args.output else default_output(args)
    previous = _previous_run(out)
    if previous is not None:
        if args.skip_existing:
            print(f"skipped: {out / 'results.json'} exists (--skip-existing)")
            return 0
        if not args.overwrite:
            what = previous.get("model", {}) if isinstance(previous.get("model"), dict) else {}
            raise FileExistsError(
                f"{out / 'results.json'} already holds the results of a run (model {what.get('label', '?')}, "
                f"started {previous.get('started', '?')}); pass --overwrite to replace it, --skip-existing to keep "
                f"it and exit, or another --output")
    runs = _task_runs(args)
    _check_something_present(runs, args)
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    model, tokenizer = model_from_args(args)
    results: dict = {"model": model_info(args, model), "command": ["farslip", "eval", *argv],
                     "settings": {k: v for k, v in vars(args).items() if k not in ("model", "pretrained")},
                     "started": started.isoformat(timespec="seconds")}
    status = 0
    for task, (evaluate, kwargs, absent) in runs.items():
        if absent:
            log.warning("%s: not evaluated, absent under %s: %s", task, kwargs.get("data_root"), ", ".join(absent))
        try:
            if kwargs.get("datasets") or kwargs.get("csv") or kwargs.get("seg_dir"):
                results[task] = evaluate(model, tokenizer, **kwargs)
            else:  # none of its sets is present: an empty section that lists them
                results[task] = run_datasets(task, [], dict, HEADLINES[task], keep_going=True)
        except DatasetFailed as err:
            log.error("%s", err)
            results[task] = err.partial
            status = 1
        results[task]["absent"] = absent
        if results[task]["failed"]:
            status = 1
        if status and not args.keep_going:
            break
    results["seconds"] = round(time.perf_counter() - clock, 3)
    if previous is not None:
        _remove_previous_examples(out, previous)
    written = write_report(results, out)
    _print_summary(results, written)
    return status


def _print_summary(results: dict, written: dict) -> None:
    """The headline numbers on stdout (the CLI's result), then where the report went."""
    heads = {"classification": "mean_top1", "retrieval": "mean_mean_recall", "segmentation": "mean_mIoU"}
    for task, key in heads.items():
        if task in results and not results[task]["datasets"]:
            print(f"{task}: nothing evaluated")
        elif task in results:
            per_set = ", ".join(f"{n} {m[key[5:]]:.2f}" for n, m in results[task]["datasets"].items())
            print(f"{task}: {key} = {results[task][key]:.2f}  ({per_set})")
        if task in results:
            for name, error in results[task]["failed"].items():
                print(f"{task}: {name} FAILED: {error}")
            if results[task].get("absent"):
                print(f"{task}: absent, not evaluated: {', '.join(results[task]['absent'])}")
    print(f"report: {written['results.json'].parent}")

"""Command-line flags of the trainer (SPEC section 5) and their start-up validation.

The spellings are the seed's (``--train-dataset-name``, ``--EMA-momentum``, ``--w-g`` ...) plus
the stock open_clip training flags. Defaults are the published stage-1 recipe and show in
``--help``; every boolean has a ``--no-`` form; nothing is read from a config file. Settings
that contradict each other are rejected here, before any model or data is built, so a
cluster job fails in seconds rather than after the first batch.
"""
from __future__ import annotations

import argparse
import math
import os

from farslip.cli import HelpFormatter
from farslip.config import LOSS_TYPES, METHOD_LOSSES, SECTIONS, TrainConfig
from farslip.errors import DEVICE_HELP, add_debug_arg, resolve_device

PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "fp32")
from farslip.models.dense import LAST_ATTN_TYPES  # the dense variants are listed once, with their code
REPORTERS = ("tensorboard", "wandb")
DEFAULT_MODEL = "ViT-B-16"
_BOOL = argparse.BooleanOptionalAction


def build_parser() -> argparse.ArgumentParser:
    """The trainer's argparse parser (no validation; see :func:`parse_args`)."""
    p = argparse.ArgumentParser(
        prog="farslip train",
        description="Train FarSLIP (stage 1: farslip1 on RS5M webdataset shards; stage 2: "
        "farslip2 on MGRS-200k json) or plain CLIP fine-tuning (vanilla). Same flags as the "
        "seed's `torchrun -m open_clip_train.main ...`.",
        formatter_class=HelpFormatter,
        usage="farslip train [options]   (farslip train --help lists them all)",  # errors: no 50-line synopsis
    )
    d = p.add_argument_group("data")
    d.add_argument("--train-data", default=None,
                   help="RS5M shards ('/rs5m/{pub11,rs3}-train-{0000..0031}.tar', URLs, 'pipe:' "
                   "specs), an MGRS text_info.json, or a CSV (filepath,title)")
    d.add_argument("--train-dataset-type", default="auto",
                   choices=("auto", "webdataset", "json", "csv"),
                   help="format of --train-data; auto = from the file name (.tar -> webdataset, "
                   ".json -> json, .csv -> csv)")
    d.add_argument("--train-dataset-name", default=None,
                   help="a label for logs and the run name (the seed passes RS5M or MGRS)")
    d.add_argument("--train-num-samples", type=int, default=None,
                   help="samples per epoch for webdataset data (5070186 for all of RS5M)")
    d.add_argument("--root-train-img-dir", default=None,
                   help="image folder that MGRS json / CSV paths are relative to")
    d.add_argument("--dataset-resampled", action=_BOOL, default=False,
                   help="sample webdataset shards with replacement (open_clip's resampling)")
    d.add_argument("--val-data", default=None,
                   help="validation CSV (columns filepath,title), e.g. SkyScript's 5K val set")
    d.add_argument("--root-val-img-dir", default=None,
                   help="image folder that --val-data paths are relative to")
    d.add_argument("--workers", type=int, default=4, help="data loader workers per process")
    d.add_argument("--view-resize", default="torch", choices=("torch", "pil"),
                   help="bicubic resize of the training views: torch's uint8 antialiased kernel "
                   "(faster; PIL's pixels within a tested tolerance, docs/DATA.md) or PIL's "
                   "(the reference's exact pixels)")
    d.add_argument("--batch-size", type=int, default=10, help="images per process per step")

    m = p.add_argument_group("method")
    m.add_argument("--method", default="farslip1", choices=tuple(METHOD_LOSSES),
                   help="farslip1 (stage 1), farslip2 (stage 2) or vanilla CLIP fine-tuning")
    m.add_argument("--loss-type", nargs="+", default=None, choices=LOSS_TYPES,
                   help="loss terms; default per method: "
                   + "; ".join(f"{k}: {' '.join(v)}" for k, v in METHOD_LOSSES.items()))
    m.add_argument("--use-imagecrop-aug", action=_BOOL, default=False,
                   help="build the local crop views (--local-method) for RS5M / CSV data; "
                   "MGRS json data builds them whenever --local-method is randomcrops or grids")
    m.add_argument("--local-method", default="randomcrops",
                   choices=("randomcrops", "grids", "objects"),
                   help="local views: random crops, an MxK grid, or MGRS object boxes")
    m.add_argument("--color-jitter", action=_BOOL, default=None,
                   help="the stage-2 transform on every training view: colour jitter (brightness "
                   "0.4, contrast 0.4, saturation 0.2, hue 0.1) with p 0.8, grayscale with p 0.2; "
                   "default: on for --method farslip2 (the stage-2 recipe), off otherwise")
    m.add_argument("--max-boxes", type=int, default=4, help="local views per image (N)")
    m.add_argument("--min-size", type=int, default=64,
                   help="MGRS objects need area >= min_size^2 pixels")
    m.add_argument("--max-size", type=int, default=1024,
                   help="MGRS objects need area <= max_size^2 pixels")
    m.add_argument("--distill-align", default="roi2pooled",
                   choices=("roi2pooled", "roi2cls", "combined"),
                   help="distillation target per crop: its pooled dense tokens, its CLS, or both")
    m.add_argument("--distill-type", default="active", choices=("active", "ema", "frozen"),
                   help="teacher: the student itself (same step, not detached), an EMA copy, "
                   "or a fixed copy")
    m.add_argument("--EMA-momentum", dest="ema_momentum", type=float, default=0.99,
                   help="EMA teacher momentum m in theta_T <- m theta_T + (1-m) theta_S")
    m.add_argument("--local-itc-align", default="cls", choices=("cls", "pooled", "roi"),
                   help="region feature for local ITC: object crop CLS, its pooled tokens, or "
                   "the RoI feature of the box on the global image's tokens")
    m.add_argument("--mpcl-loss", action=_BOOL, default=True,
                   help="multi-positive region-category loss (off: CLIP loss over valid regions)")
    m.add_argument("--w-g", type=float, default=1.0, help="weight of the global ITC loss")
    m.add_argument("--w-d", type=float, default=0.1, help="weight of the distillation loss")
    m.add_argument("--w-l", type=float, default=1.0, help="weight of the local ITC loss")
    m.add_argument("--last-attn-type", default="segearth", choices=LAST_ATTN_TYPES,
                   help="attention of the dense last block that yields patch tokens")

    mo = p.add_argument_group("model")
    mo.add_argument("--model", default=None,
                    help="open_clip architecture, a farslip tiny config or a named checkpoint; "
                    f"unset (%(default)s): the architecture a --pretrained checkpoint of this "
                    f"trainer records, else {DEFAULT_MODEL}")
    mo.add_argument("--pretrained", default="openai",
                    help="'openai', another open_clip tag, a checkpoint path or name; "
                    "'none' = random init")
    mo.add_argument("--force-quick-gelu", action=_BOOL, default=None,
                    help="QuickGELU activations (default: implied by OpenAI weights, a released "
                    "checkpoint, or what a --pretrained checkpoint of this trainer records)")
    mo.add_argument("--long-text", action=_BOOL, default=None,
                    help="Long-CLIP 248-token text, rows 0..19 of the positions frozen (default: "
                    "follow --pretrained: on for a 248-row checkpoint such as FarSLIP2)")
    mo.add_argument("--grad-checkpointing", action=_BOOL, default=False,
                    help="recompute activations in backward to save memory")
    mo.add_argument("--torchcompile", action=_BOOL, default=False,
                    help="torch.compile the student (and the teacher)")
    mo.add_argument("--unsafe-load", action=_BOOL, default=False,
                    help="allow unrestricted unpickling of --pretrained files (trusted files only)")

    o = p.add_argument_group("optimisation")
    o.add_argument("--lr", type=float, default=1e-6, help="peak learning rate")
    o.add_argument("--wd", type=float, default=1.0, help="AdamW weight decay (matrices only)")
    o.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1")
    o.add_argument("--beta2", type=float, default=0.98, help="AdamW beta2")
    o.add_argument("--eps", type=float, default=1e-6, help="AdamW epsilon")
    o.add_argument("--epochs", type=int, default=1, help="training epochs")
    o.add_argument("--warmup", type=int, default=1000, help="linear warm-up steps")
    o.add_argument("--grad-clip-norm", type=float, default=None, help="clip the gradient norm")
    o.add_argument("--precision", default="amp", choices=PRECISIONS,
                   help="amp = fp16 autocast + GradScaler; amp_bf16 = bf16 autocast")
    o.add_argument("--seed", type=int, default=0, help="random seed (model init, data order)")
    o.add_argument("--max-skipped-steps", type=int, default=50,
                   help="--precision amp: stop when the GradScaler skips this many optimizer "
                   "steps in a row (non-finite fp16 gradients at every loss scale); 0 = never")
    o.add_argument("--check-grads-every", type=int, default=1,
                   help="fp32/amp_bf16: check the gradient norm for NaN/inf every N steps, on the "
                   "device, read at the log interval (one pass over the gradients; free with "
                   "--grad-clip-norm, which computes it anyway: then every step); 0 = never")

    r = p.add_argument_group("distributed")
    r.add_argument("--local-loss", action=_BOOL, default=False,
                   help="contrastive logits only for this rank's rows (use with --gather-with-grad)")
    r.add_argument("--gather-with-grad", action=_BOOL, default=False,
                   help="all-gather features with gradient: exact full-batch gradients")
    r.add_argument("--device", default="auto", help=DEVICE_HELP + " (under torchrun, cuda means each "
                   "rank's own GPU)")
    r.add_argument("--dist-url", default=None, help="torch.distributed init URL (default env://)")
    r.add_argument("--dist-backend", default=None, help="nccl on CUDA, gloo on CPU by default")

    lg = p.add_argument_group("logging and checkpoints")
    lg.add_argument("--logs", "--logs-root", dest="logs", default="./logs/",
                    help="root folder of the runs (under torchrun >= 2.x spell it --logs-root: "
                    "torchrun rejects --logs as an abbreviation of its own --logs-specs)")
    lg.add_argument("--name", default=None,
                    help="run folder under --logs (default: date, model, method, lr, batch)")
    lg.add_argument("--resume", default=None, help="checkpoint path, or 'latest' for this run's")
    lg.add_argument("--save-frequency", type=int, default=1,
                    help="write epoch_N.pt every N epochs (epoch_latest.pt always); 0 = never")
    lg.add_argument("--save-every-n-steps", type=int, default=0,
                    help="also write checkpoints/step_<global step>.pt every N optimizer steps "
                    "inside an epoch, with the data position, so --resume latest continues at the "
                    "next batch; 0 = off, as the published recipe (scripts/stage1.sh and "
                    "stage2.sh pass 1000; see docs/TRAINING.md)")
    lg.add_argument("--keep-checkpoints", type=int, default=None,
                    help="keep the newest K step_*.pt files and delete older ones (epoch_N.pt "
                    "files are never deleted); 0 = keep all; default: 2 when --save-every-n-steps is on")
    lg.add_argument("--val-frequency", type=int, default=1, help="validate every N epochs")
    lg.add_argument("--log-every-n-steps", type=int, default=100, help="log every N steps")
    lg.add_argument("--report-to", nargs="+", default=[], metavar="{tensorboard,wandb,none}",
                    help="also log to TensorBoard and/or wandb (off unless asked; 'none' = no "
                    "reporter; open_clip's comma form 'wandb,tensorboard' works too)")
    lg.add_argument("--wandb-project-name", default="farslip", help="wandb project")
    add_debug_arg(lg)
    return p


def infer_dataset_type(train_data: str) -> str | None:
    """The format a --train-data spec names: webdataset, json, csv, or None if unclear."""
    spec = train_data.strip()
    if spec.startswith("pipe:") or ".tar" in spec:
        return "webdataset"
    lower = spec.lower()
    for ext in ("json", "csv"):
        if lower.endswith("." + ext):
            return ext
    return None


def _flag(dest: str) -> str:
    return "EMA-momentum" if dest == "ema_momentum" else dest.replace("_", "-")


def _report_to(a: argparse.Namespace) -> list[str]:
    """Normalise ``--report-to`` in place (``none`` -> no reporter; commas split); problems."""
    names = [n.strip() for value in a.report_to for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in (*REPORTERS, "none")]
    if unknown:
        return [f"--report-to: unknown reporter {', '.join(map(repr, unknown))} (choose from "
                f"{', '.join(REPORTERS)}, or none)"]
    if "none" in names and len(names) > 1:
        return [f"--report-to none cannot be combined with other reporters (got "
                f"{' '.join(a.report_to)})"]
    if len(set(names)) != len(names):
        return [f"--report-to repeats a reporter: {' '.join(a.report_to)}"]
    a.report_to = [n for n in names if n != "none"]
    return []


def _checks(a: argparse.Namespace) -> list[str]:
    """Every contradiction in ``a`` as a message (empty when the settings are coherent)."""
    bad: list[str] = []
    losses = a.loss_type
    if a.train_data is None:
        bad.append("--train-data is required")
    elif a.train_dataset_type == "auto":
        bad.append(f"cannot tell the format of --train-data {a.train_data!r}; pass "
                   "--train-dataset-type webdataset|json|csv")
    if len(set(losses)) != len(losses):
        bad.append(f"--loss-type repeats a term: {' '.join(losses)}")
    if a.method == "vanilla" and losses != ["global_itc"]:
        bad.append(f"--method vanilla is plain CLIP fine-tuning: --loss-type must be global_itc "
                   f"(got {' '.join(losses)})")
    mgrs = a.train_dataset_type == "json"
    if "local_itc" in losses and a.method != "farslip2":
        bad.append(f"local_itc needs region texts (MGRS, --method farslip2); --method {a.method} "
                   "has none")
    if "local_itc" in losses and not mgrs:
        bad.append("local_itc needs MGRS objects: --train-dataset-type json")
    if a.local_method == "objects" and not mgrs:
        bad.append("--local-method objects needs MGRS json data (--train-dataset-type json)")
    if a.use_imagecrop_aug and "distill" not in losses:
        bad.append("--use-imagecrop-aug builds crop views but no loss uses them "
                   "(add distill to --loss-type)")
    if "distill" in losses and not mgrs and not a.use_imagecrop_aug:
        bad.append("distill needs local views: pass --use-imagecrop-aug for webdataset/CSV data")
    if a.distill_type != "active" and "distill" not in losses:
        bad.append(f"--distill-type {a.distill_type} builds a teacher, but distill is not in "
                   "--loss-type")
    if a.train_dataset_type == "webdataset" and not a.train_num_samples:
        bad.append("webdataset data needs --train-num-samples (the epoch length; 5070186 for "
                   "all of RS5M)")
    if mgrs and a.root_train_img_dir is None:
        bad.append("MGRS json data needs --root-train-img-dir (the global_imgs folder)")
    for flag in ("lr", "wd", "w_g", "w_d", "w_l", "ema_momentum", "beta1", "beta2", "eps",
                 "grad_clip_norm"):
        value = getattr(a, flag)
        if value is not None and not math.isfinite(value):
            bad.append(f"--{_flag(flag)} must be a finite number (got {value})")
    if a.train_num_samples is not None and a.train_num_samples < 1:
        bad.append(f"--train-num-samples must be >= 1 (got {a.train_num_samples})")
    for flag in ("beta1", "beta2"):
        if math.isfinite(getattr(a, flag)) and not 0.0 <= getattr(a, flag) < 1.0:
            bad.append(f"--{flag} must lie in [0, 1) (got {getattr(a, flag)})")
    if a.eps < 0:
        bad.append(f"--eps must be >= 0 (got {a.eps})")
    if a.grad_clip_norm is not None and not a.grad_clip_norm > 0:
        bad.append(f"--grad-clip-norm must be > 0 (got {a.grad_clip_norm})")
    if not 0.0 <= a.ema_momentum <= 1.0:
        bad.append(f"--EMA-momentum must lie in [0, 1] (got {a.ema_momentum})")
    for flag in ("w_g", "w_d", "w_l", "lr", "wd"):
        if getattr(a, flag) < 0:
            bad.append(f"--{_flag(flag)} must be >= 0 (got {getattr(a, flag)})")
    for flag in ("batch_size", "epochs", "max_boxes", "log_every_n_steps", "val_frequency"):
        if getattr(a, flag) < 1:
            bad.append(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(a, flag)})")
    for flag in ("workers", "warmup", "save_frequency", "min_size", "max_skipped_steps",
                 "check_grads_every", "save_every_n_steps"):
        if getattr(a, flag) < 0:
            bad.append(f"--{flag.replace('_', '-')} must be >= 0 (got {getattr(a, flag)})")
    if a.keep_checkpoints is not None:
        if a.keep_checkpoints < 0:
            bad.append(f"--keep-checkpoints must be >= 0 (got {a.keep_checkpoints})")
        elif not a.save_every_n_steps:
            bad.append("--keep-checkpoints rotates step checkpoints, which only "
                       "--save-every-n-steps N writes (epoch_N.pt files are never deleted)")
    if a.max_size < a.min_size:
        bad.append(f"--max-size {a.max_size} is below --min-size {a.min_size}")
    if a.resume not in (None, "latest") and not os.path.isfile(a.resume):
        bad.append(f"--resume: no checkpoint file at {a.resume!r}")
    if a.val_data is not None and not os.path.isfile(a.val_data):
        bad.append(f"--val-data: no file at {a.val_data!r}")
    bad.extend(_report_to(a))
    try:
        a.device = resolve_device(a.device)
    except ValueError as err:
        bad.append(str(err))
    if a.local_loss and not a.gather_with_grad:
        bad.append("--local-loss without --gather-with-grad drops most of the contrastive "
                   "gradient; add --gather-with-grad")
    return bad


def _resolve_model(a: argparse.Namespace) -> list[str]:
    """Set ``--model`` when unset (the --pretrained record, else the default); problems.

    A --pretrained checkpoint of this trainer records its architecture and QuickGELU
    (``farslip.models.record``): an explicit --model or --force-quick-gelu that contradicts it
    is rejected here, at start-up.
    """
    from farslip.models import factory
    from farslip.models.record import check_settings, read_settings
    from farslip.models.registry import get_spec

    if a.model is not None and factory.is_checkpoint_name(a.model):
        return [f"--model {a.model}: a checkpoint goes in --pretrained FILE (its architecture is "
                "then read from it; --model can be left out)"]
    settings = None
    if a.pretrained is not None and os.path.isfile(a.pretrained):
        try:
            settings = read_settings(a.pretrained)
        except Exception as err:  # a malformed record: name the file
            return [f"--pretrained {a.pretrained}: {err}"]
    if a.model is None:
        a.model = settings["arch"] if settings else DEFAULT_MODEL
        return []
    if settings is None:
        return []
    spec = get_spec(a.model)
    try:
        check_settings(settings, a.pretrained, arch=spec.arch if spec else a.model, asked=a.model,
                       force_quick_gelu=a.force_quick_gelu)
    except ValueError as err:
        return [f"--model {a.model} / --pretrained: {err}"]
    return []


def parse_namespace(argv: list[str]) -> argparse.Namespace:
    """The flags, validated, as argparse leaves them (plus the derived fields); exit with
    status 2 and every problem listed if they contradict. :func:`parse_args` turns this into
    the :class:`~farslip.config.TrainConfig` the library takes."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.loss_type is None:
        a.loss_type = list(METHOD_LOSSES[a.method])
    if a.train_dataset_type == "auto" and a.train_data is not None:
        a.train_dataset_type = infer_dataset_type(a.train_data) or "auto"
    problems = _checks(a)
    problems += _resolve_model(a)
    if problems:
        parser.error("\n  " + "\n  ".join(problems))
    mgrs = a.train_dataset_type == "json"
    distill = "distill" in a.loss_type
    a.objects = mgrs and ("local_itc" in a.loss_type or (distill and a.local_method == "objects"))
    a.crops = distill and a.local_method != "objects"
    a.distill_views = "objects" if distill and a.local_method == "objects" else "crops"
    # object crops a loss reads: all for distillation on objects; the labelled ones for MPCL's
    # region loss on crop features; none for RoI features (boxes on the global image only)
    if a.distill_views == "objects" or ("local_itc" in a.loss_type and a.local_itc_align != "roi"
                                        and not a.mpcl_loss):
        a.object_pixels = "all"
    elif "local_itc" in a.loss_type and a.local_itc_align != "roi":
        a.object_pixels = "labelled"
    else:
        a.object_pixels = "none"
    if a.color_jitter is None:  # the stage-2 transform belongs to the stage-2 method
        a.color_jitter = a.method == "farslip2"
    if a.keep_checkpoints is None:
        a.keep_checkpoints = 2
    a.loss_type = tuple(a.loss_type)
    a.report_to = tuple(a.report_to)
    return a  # --pretrained none goes to create_model as is (random weights, also for a named checkpoint)


def config_from_namespace(a: argparse.Namespace) -> TrainConfig:
    """The sections of validated flags (:func:`parse_namespace`); every field must be there."""
    return TrainConfig(**{name: section(**{f: getattr(a, f) for f in section.__dataclass_fields__})
                          for name, section in SECTIONS.items()})


def parse_args(argv: list[str]) -> TrainConfig:
    """Parse and validate the flags once; the run's :class:`~farslip.config.TrainConfig`.

    ``--model`` unset becomes the architecture a --pretrained checkpoint records, else
    ViT-B-16. The derived fields: ``data.crops`` (random-crop or grid views are built),
    ``data.objects`` (MGRS object views and texts are built), ``data.object_pixels`` ("all",
    "labelled" or "none": which object crops some loss reads), ``data.color_jitter`` (the
    stage-2 transform; default by method) and ``method.distill_views`` ("crops" or "objects":
    what distillation aligns).
    """
    return config_from_namespace(parse_namespace(argv))


def flag_defaults() -> dict[str, object]:
    """Every flag's default, by field name (for reading records that lack a later flag)."""
    parser = build_parser()
    return {action.dest: parser.get_default(action.dest) for action in parser._actions
            if action.dest not in ("help",)}

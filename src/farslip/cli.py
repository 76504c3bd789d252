"""The ``farslip`` command: one entry point, one subcommand per job, and the plumbing they share.

Each subcommand lives in its own module and exposes ``main(argv) -> int`` (or ``main_<name>``);
:func:`main` only dispatches, by module name, so ``farslip train --help`` costs no more than
importing the trainer. What every command shares is defined here, once:

- :class:`CommandParser` / :class:`HelpFormatter`: the parser class of every command and
  subcommand (subparsers inherit it) and its ``--help`` that states each default once; a flag that
  every command takes belongs in ``CommandParser``;
- :func:`add_model_args` / :func:`model_from_args`: the model flags of every command that loads a
  model (``eval``, ``classify``, ``segment``), with :func:`add_device_args` (``--device``,
  ``--precision``);
- what a user's mistake gets (``farslip <command>: error: <message>``, exit status 2, the traceback
  only with ``--debug``) and the ``--device`` rule live in :mod:`farslip.errors`, used from here.

The small ``download`` and ``models`` commands over the model library live here too, so that the
model layer holds no command-line code. This module imports nothing of farslip at import time.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from .errors import DEVICE_HELP, add_debug_arg, message, resolve_device, user_errors

# subcommand -> (module, one-line description)
COMMANDS = {
    "train": ("farslip.train.main", "train with farslip1 / farslip2 / vanilla (same flags as the seed)"),
    "eval": ("farslip.eval.cli", "zero-shot classification, retrieval, segmentation, or all three"),
    "download": ("farslip.cli", "download a named checkpoint (e.g. FarSLIP2-ViT-B-16)"),
    "models": ("farslip.cli", "list the named checkpoints and architectures"),
    "synth": ("farslip.synth.world", "write the synthetic remote-sensing world in every real format"),
    "classify": ("farslip.apps", "zero-shot classify images against your labels"),
    "segment": ("farslip.apps", "open-vocabulary segmentation of images or folders, written as overlays"),
    "demo": ("farslip.demo", "the whole pipeline end to end on the synthetic world (CPU)"),
}

PRECISIONS = ("fp32", "fp16", "bf16", "amp", "amp_bf16")


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` that states each option's default once.

    An option whose help text already says ``default`` (e.g. "default: auto, from the
    checkpoint") is shown as written; any other option with a default other than None gets
    ``(default: X)`` appended, as ``ArgumentDefaultsHelpFormatter`` would.
    """

    _SUFFIX = " (default: %(default)s)"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace(self._SUFFIX, "")
        if "default" in text.lower() or "%(default)" in text:
            return text
        if action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return text + self._SUFFIX


class CommandParser(argparse.ArgumentParser):
    """The parser of every farslip command and subcommand: :class:`HelpFormatter` unless another
    formatter is asked for. ``add_subparsers`` makes its subcommands of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


# ---------------------------------------------------------------- model flags

def add_device_args(group) -> None:
    """``--device`` (default ``auto``, :func:`farslip.errors.resolve_device`) and ``--precision`` of
    the commands that run a model (a parser or a group)."""
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    group.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="fp32/fp16/bf16 cast the model; amp/amp_bf16 autocast")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model flags every command that loads a model shares (see :func:`model_from_args`)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True,
                       help="a named checkpoint (FarSLIP1-ViT-B-32, FarSLIP2-ViT-B-16, ...; see `farslip models`), "
                            "an open_clip architecture (ViT-B-32, ViT-Tiny-8, ...), an open_clip model config file "
                            "(path/to/my_model.json), hf-hub:ORG/REPO / local-dir:FOLDER (open_clip_config.json "
                            "+ weights, as open_clip reads them), or a checkpoint file written by `farslip train` "
                            "(it records its architecture, QuickGELU and text length)")
    group.add_argument("--pretrained", default=None,
                       help="weights: a local file, hf-hub:ORG/REPO/FILE, an open_clip tag (openai), or none for "
                            "random weights; default: the named checkpoint's (or hf-hub:/local-dir: model's) own "
                            "weights, random weights for a bare architecture or config file")
    group.add_argument("--model-name", default=None, help="label of the model in the tables (default: --model)")
    group.add_argument("--force-quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                       help="QuickGELU activations (default: auto, on for OpenAI-derived weights)")
    group.add_argument("--long-text", action=argparse.BooleanOptionalAction, default=None,
                       help="Long-CLIP 248-token text (default: auto, from the checkpoint)")
    group.add_argument("--unsafe-load", action=argparse.BooleanOptionalAction, default=False,
                       help="allow unrestricted unpickling of a checkpoint that safe loading rejects")
    group.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: the hub's own)")
    add_device_args(group)


def model_from_args(args: argparse.Namespace):
    """``(model, tokenizer)`` from the flags of :func:`add_model_args`, the model in eval mode."""
    from .models import create_model, get_tokenizer

    model = create_model(args.model, args.pretrained, force_quick_gelu=args.force_quick_gelu,
                         long_text=args.long_text, precision=args.precision,
                         device=resolve_device(args.device),
                         cache_dir=args.cache_dir, allow_unsafe=args.unsafe_load).eval()
    return model, get_tokenizer(model)


# ---------------------------------------------------------------- farslip download / farslip models

def build_download_parser() -> argparse.ArgumentParser:
    from .models.registry import list_names

    parser = CommandParser(
        prog="farslip download",
        description="Download a named checkpoint through the Hugging Face hub cache "
        "(HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE / HF_ENDPOINT are honoured).",
    )
    parser.add_argument("names", nargs="+", help=f"registry names ({', '.join(list_names())}) or OWNER/REPO/FILE")
    parser.add_argument("--to", default=None, help="also copy the file into this folder (e.g. checkpoints/)")
    parser.add_argument("--cache-dir", default=None, help="hub cache folder (default: huggingface_hub's own)")
    add_debug_arg(parser)
    return parser


def main_download(argv: Optional[list[str]] = None) -> int:
    """`farslip download NAME [--to DIR]`: put a released checkpoint in the hub cache (and a folder)."""
    from .models.hub import download

    args = build_download_parser().parse_args(argv)
    status = 0
    for name in args.names:
        try:
            print(download(name, args.to, cache_dir=args.cache_dir))
        except user_errors() as err:
            if args.debug:
                raise
            print(f"farslip download: error: {name}: {message(err)}", file=sys.stderr, flush=True)
            status = 2  # a user-side problem, as every command; the other names are still fetched
    return status


def main_models(argv: Optional[list[str]] = None) -> int:
    """`farslip models`: print the named checkpoints."""
    from .models.registry import REGISTRY

    parser = CommandParser(prog="farslip models", description=main_models.__doc__)
    add_debug_arg(parser)  # accepted as by every command; this one reads no input
    parser.parse_args(argv)
    rows = [("name", "arch", "source", "text ctx", "notes")]
    rows += [(s.name, s.arch, s.source, str(s.context_length), s.note) for s in REGISTRY.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4] + "\n")
    sys.stdout.write("\nAny open_clip architecture (ViT-B-32, ViT-B-16, ...) and the tiny test configs "
                     "ViT-Tiny-8 / ViT-Small-8 work too, with --pretrained FILE | TAG | hf-hub:REPO/FILE.\n")
    return 0


# ---------------------------------------------------------------- the dispatcher

def version() -> str:
    """``farslip X.Y.Z (open_clip A, torch B)``: the one version, stated in farslip/version.py."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    from .version import __version__

    def installed(dist: str) -> str:
        try:
            return dist_version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"farslip {__version__} (open_clip {installed('open_clip_torch')}, torch {installed('torch')})"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: farslip <command> [options]   (farslip <command> --help for details; farslip --version)", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(version())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"farslip: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry = getattr(module, f"main_{name}", None) or module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

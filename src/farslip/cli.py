"""The ``farslip`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module and exposes ``main(argv) -> int``; this file only
dispatches (and holds the help formatter every subcommand shares), so ``farslip train --help``
costs no more than importing the trainer.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line description)
COMMANDS = {
    "train": ("farslip.train.main", "train with farslip1 / farslip2 / vanilla (same flags as the seed)"),
    "eval": ("farslip.eval.cli", "zero-shot classification, retrieval, segmentation, or all three"),
    "download": ("farslip.models.hub", "download a named checkpoint (e.g. FarSLIP2-ViT-B-16)"),
    "models": ("farslip.models.registry", "list the named checkpoints and architectures"),
    "synth": ("farslip.data.synthetic", "write the synthetic remote-sensing world in every real format"),
    "classify": ("farslip.apps", "zero-shot classify images against your labels"),
    "segment": ("farslip.apps", "open-vocabulary segmentation of images or folders, written as overlays"),
    "demo": ("farslip.demo", "the whole pipeline end to end on the synthetic world (CPU)"),
}


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


def version() -> str:
    """``farslip X.Y.Z (open_clip A, torch B)``: the one version, stated in farslip/__init__.py."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    import farslip

    def installed(dist: str) -> str:
        try:
            return dist_version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"farslip {farslip.__version__} (open_clip {installed('open_clip_torch')}, torch {installed('torch')})"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: farslip <command> [options]   (farslip <command> --help for details; farslip --version)", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
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

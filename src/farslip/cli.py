"""The ``farslip`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module and exposes ``main(argv) -> int``; this file only
dispatches, so ``farslip train --help`` costs no more than importing the trainer.
"""
from __future__ import annotations

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
    "segment": ("farslip.apps", "open-vocabulary segmentation of one image, written as an overlay"),
    "demo": ("farslip.demo", "the whole pipeline end to end on the synthetic world (CPU)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: farslip <command> [options]   (farslip <command> --help for details)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
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

"""The reference scripts' command lines, translated to ``farslip eval`` (SPEC section 5).

``python -m tests.test_scene_classification --model-arch ViT-B-32 --model-name FarSLIP1
--force-quick-gelu --pretrained checkpoints/FarSLIP1_ViT-B-32.pt [--use-long-clip]`` (and
``tests.test_retrieval``) keep working from a checkout: ``--model-arch`` becomes ``--model``,
``--model-name`` the table label, ``--use-long-clip`` ``--long-text``; every other option
(``--data-root``, ``--datasets``, ``--batch-size``, ...) passes through unchanged. Where the
reference had hard-coded dataset paths, the data root comes from ``--data-root`` or
``FARSLIP_DATA``.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from ..cli import CommandParser
from .cli import main as cli_main


def seed_parser(task: str) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=f"python -m tests.test_{'scene_classification' if task == 'classification' else task}",
        description=f"The seed's {task} entry point; options not listed here are those of `farslip eval {task}`.",
        add_help=False)
    parser.add_argument("--model-arch", required=True, help="open_clip architecture (ViT-B-32, ViT-B-16, ...)")
    parser.add_argument("--model-name", default=None, help="label of the model in the report (e.g. FarSLIP1)")
    parser.add_argument("--use-long-clip", action=argparse.BooleanOptionalAction, default=None,
                        help="Long-CLIP 248-token text (default: auto from the checkpoint)")
    return parser


def seed_main(task: str, argv: Sequence[str]) -> int:
    """Run ``farslip eval <task>`` from the seed's flags."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        seed_parser(task).print_help()
        print(f"\n--- farslip eval {task} options ---")
        return cli_main([task, "--help"])
    args, rest = seed_parser(task).parse_known_args(argv)
    translated = [task, "--model", args.model_arch]
    if args.model_name:
        translated += ["--model-name", args.model_name]
    if args.use_long_clip is not None:
        translated.append("--long-text" if args.use_long_clip else "--no-long-text")
    return cli_main(translated + rest)

#!/usr/bin/env python
"""Benchmarks: `python scripts/bench.py train|eval|data|model|all [options]`.

Each part is a module of the checkout's `benchmarks/` folder (not installed with the library)
with its own ``main(argv)``; numbers are printed as a Markdown table and written as JSON (see
docs/PERFORMANCE.md for the recorded runs). The library timed is the one Python imports
(installed, or a checkout's `src` on PYTHONPATH).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout holding benchmarks/

PARTS = {
    "train": "benchmarks.train",
    "eval": "benchmarks.eval",
    "data": "benchmarks.data",
    "model": "benchmarks.model",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*PARTS, "all"):
        print(__doc__.strip() + "\n\nparts: " + ", ".join(PARTS) + ", all (each with defaults)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    names = list(PARTS) if argv[0] == "all" else [argv[0]]
    status = 0
    for name in names:
        module = importlib.import_module(PARTS[name])
        status |= int(module.main(argv[1:] if argv[0] != "all" else []) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

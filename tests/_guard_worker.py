"""One rank of the 2-process divergence-guard check (tests/test_train_guard.py, torchrun, gloo).

Runs the real trainer with ``argv[2:]``; on rank 1 only, the distillation term turns NaN from
the third step on (a per-rank term: rank 0's own loss stays finite, its gradients do not after
DDP's averaging). Writes the trainer's exit status to ``<argv[1]>/rank<R>``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from farslip.train import main as train_main

real = train_main.compute_losses
calls = {"n": 0}


def nan_on_rank1(plan, feats, batch, **kw):
    terms = real(plan, feats, batch, **kw)
    calls["n"] += 1
    if kw.get("rank") == 1 and calls["n"] >= 3:
        terms["distill"] = terms["distill"] * float("nan")
        terms["loss"] = terms["loss"] + terms["distill"]
    return terms


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    train_main.compute_losses = nan_on_rank1
    code = train_main.main(sys.argv[2:])
    (out / f"rank{os.environ['RANK']}").write_text(str(code))
    return code


if __name__ == "__main__":
    sys.exit(main())

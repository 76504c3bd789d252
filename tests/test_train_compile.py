"""``--torchcompile`` with and without a teacher: the compiled step computes the eager losses.
Slow: inductor compiles the tiny model for a minute or two on CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from farslip.train.main import Trainer

from ._train_utils import make_args, make_batch


def _losses(tmp: Path, mode: str, compiled: bool) -> list[float]:
    flags = ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", mode, "--lr", "1e-3"]
    args = make_args(*flags, *(["--torchcompile"] if compiled else []), data="x.tar")
    torch.manual_seed(0)
    trainer = Trainer(args, tmp)
    batch = make_batch(trainer.model, objects=False)
    return [trainer.train_step(batch)["loss"].item() for _ in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["active", "ema"])
def test_compiled_step_matches_eager(tmp_path, mode):
    eager = _losses(tmp_path, mode, compiled=False)
    compiled = _losses(tmp_path, mode, compiled=True)
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)

"""Runs the trainer in this process and kills it with SIGKILL at a chosen point (tests only).

    python -m tests._kill_train [--kill-after-step K] [--kill-in-save K] [--step-delay S] -- FLAGS

``--kill-after-step K``: SIGKILL right after optimizer step K (the global step count) has updated
the weights, before anything else happens. ``--kill-in-save K``: the K-th checkpoint ``torch.save`` of this
process writes the first half of its bytes into the file being written, flushes them to disk and
then SIGKILLs the process, i.e. a kill while a checkpoint is being written. ``--step-delay S``
sleeps S seconds after each step, so that a kill from outside lands inside the run. Under torchrun
only rank ``--rank`` (default 0) kills itself. Nothing of the trainer is changed otherwise; the
production code has no test hooks.
"""
from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import time

import torch

from farslip.train import main as train_main


def sigkill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def on_disk(f) -> bool:
    """Whether ``f`` is an open file on disk (not a path, not an in-memory buffer)."""
    try:
        f.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def main(argv: list[str]) -> int:
    split = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--kill-after-step", type=int, default=None)
    p.add_argument("--kill-in-save", type=int, default=None)
    p.add_argument("--step-delay", type=float, default=0.0)
    p.add_argument("--rank", type=int, default=0)
    opts = p.parse_args(argv[:split])
    flags = argv[split + 1:]
    mine = int(os.environ.get("RANK", "0")) == opts.rank

    real_step = train_main.Trainer.train_step

    def train_step(self, batch):
        out = real_step(self, batch)
        if mine and opts.kill_after_step is not None and self.step + 1 == opts.kill_after_step:
            sigkill()
        if opts.step_delay:
            time.sleep(opts.step_delay)
        return out

    train_main.Trainer.train_step = train_step

    real_save = torch.save
    saves = [0]

    def save(obj, f, *args, **kwargs):
        # only checkpoint writes count: into farslip.atomic's open temporary file (torch also
        # calls torch.save into memory buffers, e.g. to pickle storages for torch.distributed)
        if not on_disk(f):
            return real_save(obj, f, *args, **kwargs)
        saves[0] += 1
        if not (mine and saves[0] == opts.kill_in_save):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        sigkill()

    torch.save = save
    return train_main.main(flags)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

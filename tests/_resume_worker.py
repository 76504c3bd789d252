"""One rank of the 2-process resume check (tests/test_train_ddp.py, torchrun, gloo): rank 1
cannot read the --resume file, rank 0 can; both must stop at start-up with the same message
instead of rank 0 going on alone into the next collective. The file reads are replaced here
(rank 0: an empty record; rank 1: a truncated file), so no checkpoint needs to be written."""
from __future__ import annotations

import sys
from pathlib import Path

import farslip
from farslip.errors import UserError
from farslip.train import checkpoint
from farslip.train.args import parse_args
from farslip.train.main import Trainer, init_world


def main(out: str, resume: str) -> int:
    cfg = parse_args(["--train-data", "x.tar", "--train-num-samples", "4", "--method", "vanilla",
                      "--model", "ViT-Tiny-8", "--pretrained", "none", "--device", "cpu", "--precision",
                      "fp32", "--resume", resume, "--dist-backend", "gloo"])
    world = init_world(cfg)
    if world.rank == 0:
        checkpoint.load = lambda path: {"state_dict": {}}
        farslip.load_checkpoint = lambda *args, **kwargs: None
    else:
        def truncated(path):
            raise farslip.CheckpointError(f"{path}: truncated (the test's rank 1)")
        checkpoint.load = truncated
    try:
        Trainer(cfg, Path(out), world)
        text = "no error"
    except UserError as err:
        text = str(err)
    Path(out, f"rank{world.rank}.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

"""Two processes under torchrun (gloo) against one process on the concatenated batch:
global ITC and multi-positive region ITC give the same losses, and the same gradients with
``--gather-with-grad`` (without it, as in open_clip, each rank's gradient covers only its own
features, so DDP's average is the single-process gradient divided by the world size, except
for logit_scale, which every rank's full-batch loss uses directly)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ._ddp_worker import LABELS, losses_and_grads
from ._train_utils import make_batch, tiny_model

ROOT = Path(__file__).resolve().parents[1]


def concat(batches: list[dict]) -> dict:
    return {k: torch.cat([b[k] for b in batches]) if batches[0][k].ndim else batches[0][k]
            for k in batches[0]}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "tests._ddp_worker", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("gather_with_grad", [False, True])
def test_two_ranks_equal_one_process(ranks, gather_with_grad):
    model = tiny_model()
    full = concat([make_batch(model, b=3, seed=10 + r, labels=LABELS[r]) for r in range(2)])
    terms, grads = losses_and_grads(model, full, gather_with_grad=False, rank=0, world=1)
    for rank in ranks:
        got_terms, got_grads = rank[gather_with_grad]
        for name in ("global_itc", "local_itc", "loss"):
            torch.testing.assert_close(got_terms[name], terms[name], rtol=1e-5, atol=1e-6)
        assert int(got_terms["local_rows"]) == int(terms["local_rows"]) == 8
        for name, grad in grads.items():
            # logit_scale enters every rank's (full-batch) loss directly: always exact
            scale = 1.0 if gather_with_grad or name == "logit_scale" else 0.5
            torch.testing.assert_close(got_grads[name], grad * scale, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"{name}: {m}")


def test_two_process_run_of_the_trainer(tmp_path):
    from ._train_utils import MODEL, write_mgrs

    js, imgs = write_mgrs(tmp_path / "mgrs", items=8)
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "farslip.train", "--train-data", js, "--root-train-img-dir", imgs,
           "--method", "farslip2", "--distill-type", "ema", "--model", MODEL,
           "--pretrained", "none", "--device", "cpu", "--precision", "fp32", "--workers", "0",
           "--batch-size", "2", "--epochs", "2", "--log-every-n-steps", "1",
           "--logs-root", str(logs), "--name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (logs / "ddp" / "out.log").read_text()
    assert "world size 2" in log and "2 steps per epoch per rank" in log
    saved = torch.load(logs / "ddp" / "checkpoints" / "epoch_2.pt", weights_only=True)
    assert saved["step"] == 4 and saved["state_dict_teacher"] is not None


def test_a_resume_file_one_rank_cannot_read_stops_every_rank(tmp_path):
    resume = tmp_path / "ckpt.pt"
    resume.write_bytes(b"not read: the worker replaces the reads")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "tests._resume_worker", str(tmp_path), str(resume)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert texts[0] == texts[1] == f"--resume {resume}: {resume}: truncated (the test's rank 1) (rank 1)"

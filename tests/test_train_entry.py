"""Which code runs: the checkout's ``-m open_clip_train.main`` is FarSLIP's trainer while
``open_clip_train.scheduler`` etc. still come from the installed open_clip package; both seed
commands run from the checkout under torchrun, stage 2 from stage 1's checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import farslip
from farslip import cli

from ._train_utils import MODEL, write_mgrs, write_rs5m

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# what the tests add to the seed's flags: tiny model, random init, CPU, no workers
TEST_ONLY = ["--pretrained", "none", "--device", "cpu", "--precision", "fp32", "--workers", "0"]


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_checkout_shim_runs_farslip_and_keeps_installed_helpers():
    code = ("import open_clip_train, open_clip_train.main as m, open_clip_train.scheduler as s, "
            "open_clip_train.distributed as d, farslip.train.main as f; "
            "print(m.__file__); print(s.__file__); print(d.__file__); print(m.main is f.main)")
    out = run(["-c", code]).stdout.split()
    assert Path(out[0]) == ROOT / "open_clip_train" / "main.py"
    for helper in out[1:3]:
        assert "site-packages" in helper and not helper.startswith(str(ROOT / "open_clip_train"))
    assert out[3] == "True"


def test_entry_points_show_the_farslip_flags(capsys):
    assert "--local-itc-align" in run(["-m", "open_clip_train.main", "--help"]).stdout
    assert "--EMA-momentum" in run(["-m", "farslip.train", "--help"]).stdout
    try:
        cli.main(["train", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert "--distill-type" in capsys.readouterr().out


@pytest.mark.slow  # two sequential torchrun launches: ~40 s on two cores
def test_seed_commands_from_the_checkout(tmp_path):
    shards = write_rs5m(tmp_path / "rs5m", shards=1, per_shard=4)
    js, imgs = write_mgrs(tmp_path / "mgrs", items=4)
    logs = str(tmp_path / "logs")
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node=1", "-m", "open_clip_train.main"]
    stage1 = ["--train-dataset-name", "RS5M", "--train-data", shards, "--train-dataset-type",
              "webdataset", "--train-num-samples", "4", "--method", "farslip1",
              "--use-imagecrop-aug", "--local-method", "randomcrops", "--warmup", "1000",
              "--batch-size", "2", "--lr", "1e-6", "--wd", "1.0", "--epochs", "1", "--model",
              MODEL, "--loss-type", "global_itc", "distill", "--distill-align", "roi2pooled"]
    run(torchrun + stage1 + TEST_ONLY + ["--logs-root", logs, "--name", "stage1"])
    ckpt = Path(logs) / "stage1" / "checkpoints" / "epoch_1.pt"
    assert "method: farslip1" in (Path(logs) / "stage1" / "params.txt").read_text()
    stage2 = ["--train-dataset-name", "MGRS", "--root-train-img-dir", imgs, "--train-data", js,
              "--train-dataset-type", "json", "--method", "farslip2", "--local-method",
              "randomcrops", "--warmup", "250", "--batch-size", "2", "--lr", "4e-9", "--wd",
              "1.0", "--epochs", "1", "--model", MODEL, "--loss-type", "global_itc", "distill",
              "local_itc", "--distill-align", "roi2pooled", "--local-itc-align", "cls"]
    run(torchrun + stage2 + TEST_ONLY + ["--pretrained", str(ckpt), "--logs-root", logs,
                                         "--name", "stage2"])
    out2 = Path(logs) / "stage2" / "checkpoints" / "epoch_1.pt"
    assert out2.is_file()
    assert f"pretrained: {ckpt}" in (Path(logs) / "stage2" / "params.txt").read_text()
    first = torch.load(ckpt, weights_only=True)["state_dict"]
    second = torch.load(out2, weights_only=True)["state_dict"]
    # lr 4e-9 for 2 steps: stage 2 ends within a hair of stage 1's weights (not a fresh init)
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)
    farslip.load_checkpoint(farslip.create_model(MODEL), str(out2))

"""Real `farslip train` processes killed with SIGKILL (mid-step, and while a checkpoint is being
written), then resumed with ``--resume latest``: the newest checkpoint always loads, no torn file
is ever picked up, a killed write's temporary file is removed by the next run, and the final
weights, teacher and optimizer state equal those of an uninterrupted run bit for bit, as do the
logged losses, learning rates and bad-sample counts of every step. RS5M webdataset (with a
DataLoader worker and bad samples) and MGRS json in the default suite; two gloo ranks under
torchrun in the slow suite."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from farslip.atomic import stale_temps
from farslip.train import checkpoint

from ._train_utils import MODEL, write_mgrs, write_rs5m

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", MODEL, "--pretrained", "none", "--precision", "fp32", "--device", "cpu",
        "--log-every-n-steps", "1", "--lr", "1e-3", "--warmup", "2"]
STEP_LINE = re.compile(r"\| (epoch \d+ \[\d+/\d+\] step (\d+) \| .*)$")


def env() -> dict:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; afterwards kill whatever of the group is left
    (DataLoader workers of a SIGKILLed trainer, torchrun's other ranks)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def train(flags: list[str]) -> subprocess.CompletedProcess:
    done = run([sys.executable, "-m", "farslip", "train", *flags])
    assert done.returncode == 0, done.stdout[-3000:]
    return done


def killed(flags: list[str], **kill) -> subprocess.CompletedProcess:
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in kill.items()]
    done = run([sys.executable, "-m", "tests._kill_train", *opts, "--", *flags])
    assert done.returncode == -signal.SIGKILL, done.stdout[-3000:]
    return done


def check_folder(ckpts: Path) -> Path:
    """Every complete checkpoint loads with weights_only; returns the one --resume latest takes."""
    for path in ckpts.glob("*.pt"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        assert {"epoch", "step", "state_dict", "optimizer"} <= obj.keys(), path
    newest = checkpoint.resolve("latest", ckpts)
    assert newest is not None and newest.suffix == ".pt" and not newest.name.startswith(".")
    return newest


def step_lines(log: str) -> dict[int, str]:
    """The last logged line of every step (a step redone after a kill is logged again), without
    the throughput, which is the one thing that may differ."""
    lines = {}
    for line in log.splitlines():
        match = STEP_LINE.search(line)
        if match:
            lines[int(match.group(2))] = re.sub(r" \| samples_per_s [^|]*", "", match.group(1))
    return lines


def assert_same_run(full: Path, cut: Path, steps: int, teacher: bool = False) -> None:
    """``teacher``: the run has an EMA/frozen teacher, whose vision tower must match too."""
    a = torch.load(full / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    b = torch.load(cut / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == steps
    assert a["skipped_total"] == b["skipped_total"]
    assert a["model_settings"] == b["model_settings"]
    if teacher:  # the vision tower only (issue 9): no text tower in the teacher's state
        assert a["state_dict_teacher"] is not None and "conv1.weight" in a["state_dict_teacher"]
        assert not any(k.startswith(("visual.", "token_embedding", "ln_final", "text_projection",
                                     "logit_scale")) for k in a["state_dict_teacher"])
    for part in ("state_dict", "state_dict_teacher"):
        if a[part] is None:  # the active teacher has no state
            assert b[part] is None
            continue
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    for rank_a, rank_b in zip(a["rng_ranks"], b["rng_ranks"]):
        assert torch.equal(rank_a["cpu"], rank_b["cpu"]) and rank_a["python"] == rank_b["python"]
    full_lines = step_lines((full / "out.log").read_text())
    assert sorted(full_lines) == list(range(1, steps + 1))
    assert step_lines((cut / "out.log").read_text()) == full_lines
    done = [line for line in (full / "out.log").read_text().splitlines() if "done:" in line]
    assert done[-1].split("| ")[-1] in (cut / "out.log").read_text()


def resumed_from(log: str) -> str:
    return re.findall(r"resumed from (\S+):", log)[-1]


def test_rs5m_killed_mid_step_and_mid_write_resumes_bit_identical(tmp_path):
    shards = write_rs5m(tmp_path / "rs5m", shards=2, per_shard=8, corrupt=True)
    logs = tmp_path / "logs"
    # 12 samples / batch 2 = 6 steps per epoch, 2 epochs; step checkpoints at 2, 4, 8, 10
    flags = TINY + ["--train-data", shards, "--train-num-samples", "12", "--batch-size", "2",
                    "--use-imagecrop-aug", "--distill-type", "ema", "--workers", "1",
                    "--epochs", "2", "--save-every-n-steps", "2", "--keep-checkpoints", "2",
                    "--logs", str(logs)]
    train(flags + ["--name", "full"])
    cut = flags + ["--name", "cut", "--resume", "latest"]
    ckpts = logs / "cut" / "checkpoints"

    killed(cut, kill_after_step=3)  # mid-epoch, between two checkpoints
    assert check_folder(ckpts) == ckpts / "step_2.pt"
    assert not stale_temps(ckpts)

    # resumes at batch 3 of epoch 0; saves step_4, epoch_1 + epoch_latest (step 6), then is
    # killed half-way through writing step_8.pt in epoch 1
    out = killed(cut, kill_in_save=4).stdout
    assert resumed_from(out) == str(ckpts / "step_2.pt")
    temps = stale_temps(ckpts)
    assert [t.name.split(".")[1] for t in temps] == ["step_8"]
    assert check_folder(ckpts) == ckpts / "epoch_latest.pt"  # the torn step_8 is not a candidate
    assert not (ckpts / "step_8.pt").exists()
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["epoch_1.pt", "epoch_latest.pt",
                                                         "step_2.pt", "step_4.pt"]

    out = train(cut).stdout
    assert resumed_from(out) == str(ckpts / "epoch_latest.pt")
    assert f"removed {temps[0]}" in out and not stale_temps(ckpts)
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["epoch_1.pt", "epoch_2.pt",
                                                         "epoch_latest.pt", "step_10.pt",
                                                         "step_8.pt"]  # rotated: newest 2 kept
    assert_same_run(logs / "full", logs / "cut", steps=12, teacher=True)


def test_mgrs_killed_while_writing_a_step_checkpoint_resumes_bit_identical(tmp_path):
    """Stage 2's method (farslip2: global ITC, distillation, region ITC) with an EMA teacher."""
    js, imgs = write_mgrs(tmp_path / "mgrs", items=9, broken=True)
    logs = tmp_path / "logs"
    # 9 items / batch 2 = 4 steps per epoch; one epoch; step checkpoints at 1, 2, 3
    flags = TINY + ["--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2",
                    "--distill-type", "ema", "--batch-size", "2", "--workers", "0",
                    "--epochs", "1", "--save-every-n-steps", "1", "--logs", str(logs)]
    train(flags + ["--name", "full"])
    cut = flags + ["--name", "cut", "--resume", "latest"]
    ckpts = logs / "cut" / "checkpoints"
    killed(cut, kill_in_save=2)  # step_1.pt written, step_2.pt torn
    assert len(stale_temps(ckpts)) == 1
    assert check_folder(ckpts) == ckpts / "step_1.pt"
    out = train(cut).stdout
    assert resumed_from(out) == str(ckpts / "step_1.pt") and "after batch 1 of epoch 0" in out
    assert not stale_temps(ckpts)
    assert_same_run(logs / "full", logs / "cut", steps=4, teacher=True)


@pytest.mark.slow
def test_two_ranks_under_torchrun_killed_and_resumed_bit_identical(tmp_path):
    shards = write_rs5m(tmp_path / "rs5m", shards=4, per_shard=6, corrupt=True)
    logs = tmp_path / "logs"
    # 2 ranks x 1 worker, 20 samples / (2 x 2) = 5 steps per epoch, 2 epochs
    flags = TINY + ["--train-data", shards, "--train-num-samples", "20", "--batch-size", "2",
                    "--use-imagecrop-aug", "--workers", "1", "--epochs", "2",
                    "--save-every-n-steps", "2", "--logs-root", str(logs)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    full = run(torchrun + ["-m", "farslip.train", *flags, "--name", "full"], timeout=600)
    assert full.returncode == 0, full.stdout[-3000:]
    cut = flags + ["--name", "cut", "--resume", "latest"]
    ckpts = logs / "cut" / "checkpoints"

    # rank 0 killed while writing its second step checkpoint (step_4.pt); torchrun stops rank 1
    out = run(torchrun + ["-m", "tests._kill_train", "--kill-in-save=2", "--", *cut], timeout=600)
    assert out.returncode != 0
    assert len(stale_temps(ckpts)) == 1 and check_folder(ckpts) == ckpts / "step_2.pt"

    # the whole job (torchrun and both ranks) killed from outside once step_6.pt exists
    proc = subprocess.Popen(torchrun + ["-m", "tests._kill_train", "--step-delay=0.5", "--", *cut],
                            cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (ckpts / "step_6.pt").exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert check_folder(ckpts) == ckpts / "step_6.pt"

    final = run(torchrun + ["-m", "farslip.train", *cut], timeout=600)
    assert final.returncode == 0, final.stdout[-3000:]
    assert not stale_temps(ckpts)
    assert_same_run(logs / "full", logs / "cut", steps=10)

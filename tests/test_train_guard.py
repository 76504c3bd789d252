"""The divergence guard: a non-finite loss term or gradient stops the run with one message
naming the step, epoch, terms, lr, logit scale and last good checkpoint; non-finite weights are
never saved; GradScaler-skipped steps are counted and a long streak of them stops the run;
the guard's per-step work never synchronises the host."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from open_clip_train.scheduler import cosine_lr

from farslip.train import checkpoint
from farslip.train import main as train_main
from farslip.train.syncs import HostReads
from farslip.train.guard import EXIT_DIVERGED, DivergenceGuard, TrainingDiverged
from farslip.train.main import Trainer

from ._train_utils import MODEL, make_args, make_batch, write_mgrs
from .test_train_run import stage2_flags

ROOT = Path(__file__).resolve().parents[1]
real_compute_losses = train_main.compute_losses


def poison(monkeypatch, *, at: int, term: str = "global_itc", kind: str = "loss", until=None):
    """From call ``at`` (1-based) of compute_losses on (to ``until``), make ``term`` NaN
    (``kind="loss"``) or leave the loss finite but make the gradients NaN (``kind="grad"``:
    0 * sqrt(0) has value 0 and gradient 0 * inf = NaN)."""
    calls = {"n": 0}

    def wrapped(plan, feats, batch, **kw):
        terms = real_compute_losses(plan, feats, batch, **kw)
        calls["n"] += 1
        if calls["n"] >= at and (until is None or calls["n"] <= until):
            if kind == "loss":
                terms[term] = terms[term] * float("nan")
                terms["loss"] = terms["loss"] + terms[term]
            else:
                zero = feats["logit_scale"] - feats["logit_scale"].detach()
                terms["loss"] = terms["loss"] + 0.0 * torch.sqrt(zero)
        return terms

    monkeypatch.setattr(train_main, "compute_losses", wrapped)
    return calls


def _trainer(tmp_path, *flags, data="x.json"):
    args = make_args(*flags, data=data)
    torch.manual_seed(0)
    return Trainer(args, tmp_path)


def _expected_lr(step: int, *, lr: float, warmup: int, total: int) -> float:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    return cosine_lr(opt, lr, warmup, total)(step - 1)  # the schedule is called with steps done


def test_nan_loss_stops_with_the_message_and_saves_nothing_after(tmp_path, monkeypatch, caplog):
    js, imgs = write_mgrs(tmp_path / "mgrs", items=6)  # 3 steps per epoch at batch 2
    flags = stage2_flags(tmp_path, js, imgs, "nan", "--epochs", "3", "--log-every-n-steps", "2")
    poison(monkeypatch, at=4, term="distill")  # step 4 = epoch 1, read at the log of step 5
    assert train_main.main(flags) == EXIT_DIVERGED
    run = tmp_path / "logs" / "nan"
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pt", "epoch_latest.pt"]
    saved = torch.load(ckpts / "epoch_latest.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    log = (run / "out.log").read_text()
    line = [ln for ln in log.splitlines() if "training diverged" in ln]
    assert len(line) == 1, log
    msg = line[0]
    assert "step 4 (epoch 1)" in msg and "non-finite loss terms: distill, loss" in msg
    assert "global_itc" not in msg.split("non-finite loss terms:")[1].split(";")[0]
    assert f"last good checkpoint: {ckpts / 'epoch_1.pt'}" in msg
    number = r"([0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)"
    lr = float(re.search(r"lr " + number, msg).group(1))
    assert lr == pytest.approx(_expected_lr(4, lr=1e-3, warmup=1, total=9), rel=1e-5)
    scale = float(re.search(r"logit scale " + number, msg).group(1))
    assert 1.0 < scale <= 100.0  # exactly the bad step's: test_the_logged_scale_is_the_one...
    assert "Traceback" not in log


def test_nan_at_the_first_step_says_no_checkpoint_yet(tmp_path, monkeypatch):
    js, imgs = write_mgrs(tmp_path / "mgrs", items=6)
    poison(monkeypatch, at=1)
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "first")) == EXIT_DIVERGED
    run = tmp_path / "logs" / "first"
    assert list((run / "checkpoints").iterdir()) == []
    log = (run / "out.log").read_text()
    assert "training diverged at step 1 (epoch 0)" in log
    assert "non-finite loss terms: global_itc, loss" in log
    assert "no checkpoint has been written yet" in log


def test_the_logged_scale_is_the_one_the_bad_step_used(tmp_path, monkeypatch):
    """Logit scale and lr are those of the first bad step, not of the step that read them."""
    tr = _trainer(tmp_path, "--method", "farslip2", "--lr", "1e-2", "--log-every-n-steps", "5")
    batch = make_batch(tr.model)
    tr.train_step(batch)
    tr.step += 1
    used = tr.model.logit_scale.exp().item()
    for group in tr.optimizer.param_groups:
        group["lr"] = 0.0042
    poison(monkeypatch, at=1)
    tr.train_step(batch)  # step 2: NaN
    tr.step += 1
    for group in tr.optimizer.param_groups:
        group["lr"] = 0.5
    tr.train_step(batch)  # step 3: NaN again, other lr
    tr.step += 1
    with pytest.raises(TrainingDiverged) as err:
        tr.ensure_finite(0)
    msg = str(err.value)
    assert "step 2 (epoch 0)" in msg and "lr 0.0042" in msg
    assert f"logit scale {used:.6g}" in msg


def test_nonfinite_gradients_with_a_finite_loss_stop_the_run(tmp_path, monkeypatch):
    tr = _trainer(tmp_path, "--method", "farslip2")
    poison(monkeypatch, at=1, kind="grad")
    terms = tr.train_step(make_batch(tr.model))
    tr.step += 1
    assert all(torch.isfinite(v) for v in terms.values())
    with pytest.raises(TrainingDiverged, match="step 1 .*non-finite gradients \\(loss terms finite\\)"):
        tr.ensure_finite(0)
    with pytest.raises(TrainingDiverged):  # the weights are poisoned: still no save
        tr.save(0)
    assert not (tmp_path / "checkpoints" / "epoch_latest.pt").exists()


def test_without_gradient_checks_the_weights_check_before_saving_catches_it(tmp_path, monkeypatch):
    tr = _trainer(tmp_path, "--method", "farslip2", "--check-grads-every", "0")
    poison(monkeypatch, at=1, kind="grad")
    tr.train_step(make_batch(tr.model))
    tr.step += 1
    assert not torch.isfinite(tr.model.logit_scale).all()
    with pytest.raises(TrainingDiverged, match="the weights hold NaN/inf"):
        tr.ensure_finite(0)


def test_gradient_check_cadence(tmp_path):
    guard = DivergenceGuard(["loss"], torch.device("cpu"), scaler=False, grads_every=3)
    assert [s for s in range(1, 10) if guard.grads_due(s)] == [3, 6, 9]
    assert not DivergenceGuard(["loss"], torch.device("cpu"), scaler=True).grads_due(1)
    assert not DivergenceGuard(["loss"], torch.device("cpu"), scaler=False, grads_every=0).grads_due(1)


def test_a_nonfinite_save_is_impossible(tmp_path):
    good = {"epoch": 1, "step": 1, "optimizer": {}, "state_dict": {"w": torch.ones(3)},
            "state_dict_teacher": {"conv1.weight": torch.ones(2)}}
    checkpoint.save_atomic(good, tmp_path / "a.pt")
    for part, key in (("state_dict", "w"), ("state_dict_teacher", "conv1.weight")):
        bad = {**good, part: {key: torch.tensor([1.0, float("inf"), 2.0])}}
        with pytest.raises(checkpoint.NonFiniteCheckpoint, match=f"{part}.{key}"):
            checkpoint.save_atomic(bad, tmp_path / "a.pt")
        with pytest.raises(checkpoint.NonFiniteCheckpoint):
            checkpoint.save(tmp_path, {**bad, "epoch": 2}, numbered=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_amp_skipped_steps_are_counted(tmp_path):
    """Against an independent count: a step the GradScaler skips leaves the weights unchanged."""
    tr = _trainer(tmp_path, "--method", "farslip2", "--precision", "amp", "--lr", "1e-3",
                  "--max-skipped-steps", "0")
    batch = make_batch(tr.model)
    unchanged = 0
    for _ in range(12):
        before = tr.model.visual.proj.detach().clone()
        tr.train_step(batch)
        tr.step += 1
        unchanged += int(torch.equal(before, tr.model.visual.proj))
    skipped, verdict = tr.divergence.judge(tr.divergence.slots(), world_size=1, epoch=0,
                                           last_checkpoint=None)
    assert verdict is None
    assert unchanged > 0 and skipped == unchanged
    assert tr.divergence.skipped_total == unchanged


def test_amp_skips_in_a_row_stop_the_run(tmp_path, monkeypatch):
    js, imgs = write_mgrs(tmp_path / "mgrs", items=12)  # 6 steps
    flags = stage2_flags(tmp_path, js, imgs, "amp", "--precision", "amp", "--max-skipped-steps",
                         "3", "--log-every-n-steps", "6")
    poison(monkeypatch, at=1, kind="grad")  # finite loss, NaN gradients: every step skipped
    assert train_main.main(flags) == EXIT_DIVERGED
    log = (tmp_path / "logs" / "amp" / "out.log").read_text()
    assert "amp_skipped_steps 6" in log
    assert "GradScaler skipped 3 or more optimizer steps in a row (reached at step 3)" in log
    assert "non-finite loss terms" not in log  # gradients are the scaler's business under amp
    assert list((tmp_path / "logs" / "amp" / "checkpoints").iterdir()) == []


def test_amp_skips_below_the_limit_only_count(tmp_path, monkeypatch):
    tr = _trainer(tmp_path, "--method", "farslip2", "--precision", "amp", "--max-skipped-steps", "3")
    batch = make_batch(tr.model)
    poison(monkeypatch, at=1, until=2, kind="grad")  # two skipped in a row, then finite
    for _ in range(4):
        tr.train_step(batch)
        tr.step += 1
    skipped, verdict = tr.divergence.judge(tr.divergence.slots(), world_size=1, epoch=0,
                                           last_checkpoint=None)
    assert verdict is None and skipped >= 2


def test_the_guard_adds_no_host_sync_per_step(tmp_path):
    tr = _trainer(tmp_path, "--method", "farslip2")
    guard = tr.divergence
    terms = {t: torch.tensor(1.0) for t in guard.terms}
    norm, skipped = torch.tensor(2.0), torch.tensor(True)  # made outside: the counter sees torch.tensor
    with HostReads() as counter:
        for step in range(1, 4):
            guard.observe(step, terms, norm, tr.model.logit_scale, 1e-3)
            guard.observe_skip(step, skipped)
        packed = guard.slots()
    assert counter.total == 0, counter.counts
    with HostReads() as counter:  # the counter does see syncs (an independent check of it)
        float(packed.sum())
    assert counter.total == 1


def test_ddp_ranks_stop_together(tmp_path):
    """A NaN distillation term on rank 1 only: both ranks stop at the same step, exit 3."""
    js, imgs = write_mgrs(tmp_path / "mgrs", items=8)  # 2 steps per epoch per rank
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tests._guard_worker", str(tmp_path / "codes"),
           "--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2",
           "--model", MODEL, "--pretrained", "none", "--device", "cpu", "--precision", "fp32",
           "--workers", "0", "--batch-size", "2", "--epochs", "3", "--log-every-n-steps", "2",
           "--lr", "1e-3", "--warmup", "1", "--logs-root", str(logs), "--name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    codes = {p.name: p.read_text() for p in (tmp_path / "codes").iterdir()}
    assert codes == {"rank0": str(EXIT_DIVERGED), "rank1": str(EXIT_DIVERGED)}, proc.stderr[-3000:]
    log = (logs / "ddp" / "out.log").read_text()
    assert "training diverged at step 3 (epoch 1)" in log
    assert "non-finite loss terms: distill, loss" in log and "non-finite gradients" in log
    assert f"last good checkpoint: {logs / 'ddp' / 'checkpoints' / 'epoch_1.pt'}" in log
    assert torch.load(logs / "ddp" / "checkpoints" / "epoch_latest.pt", weights_only=True)["step"] == 2


def test_step_checkpoints_go_through_the_guard(tmp_path, monkeypatch):
    """NaN weights that no checked loss term or gradient showed (gradient checks off) are caught
    before a step checkpoint is written; the message names the newest step file as the last good
    one, which records the model settings and flags like an epoch checkpoint."""
    js, imgs = write_mgrs(tmp_path / "mgrs", items=8)  # 4 steps per epoch
    flags = stage2_flags(tmp_path, js, imgs, "steps", "--save-every-n-steps", "1",
                         "--check-grads-every", "0", "--log-every-n-steps", "100")
    poison(monkeypatch, at=3, kind="grad")
    assert train_main.main(flags) == EXIT_DIVERGED
    ckpts = tmp_path / "logs" / "steps" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_1.pt", "step_2.pt"]
    log = (tmp_path / "logs" / "steps" / "out.log").read_text()
    assert "the weights hold NaN/inf" in log and "refusing to save" not in log
    assert f"last good checkpoint: {ckpts / 'step_2.pt'}" in log
    saved = torch.load(ckpts / "step_2.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 2 and saved["model_settings"]["arch"] == MODEL
    assert saved["train_config"]["run"]["save_every_n_steps"] == 1


def test_amp_skip_count_and_streak_survive_a_mid_epoch_resume(tmp_path, monkeypatch):
    """Steps 3-5 have NaN fp16 gradients (skipped by the GradScaler); --max-skipped-steps 3. A run
    cut after the step checkpoint at step 4 (two skips in a row so far) and resumed stops like the
    uninterrupted one: the streak reaches 3 at step 5, across the resume, and the skip totals
    logged are the uninterrupted run's (the scaler's own first-step skip included)."""
    js, imgs = write_mgrs(tmp_path / "mgrs", items=10)  # 5 steps per epoch
    flags = ["--precision", "amp", "--max-skipped-steps", "3", "--save-every-n-steps", "4",
             "--log-every-n-steps", "5"]
    calls = poison(monkeypatch, at=3, until=5, kind="grad")
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "full", *flags)) == EXIT_DIVERGED

    calls["n"] = 0  # counts global steps again: the cut run and its resume share the counter
    real_step = Trainer.train_step

    def crash_before_step_5(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt("killed")
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", crash_before_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    step4 = torch.load(tmp_path / "logs" / "cut" / "checkpoints" / "step_4.pt", weights_only=True)
    assert step4["guard"]["streaks"] == [2] and step4["guard"]["skipped_total"] >= 2
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags,
                                        "--resume", "latest")) == EXIT_DIVERGED

    def lines(name):
        log = (tmp_path / "logs" / name / "out.log").read_text().splitlines()
        steps = [re.sub(r" \| samples_per_s [^|]*", "", ln.split(" | INFO | ")[1])
                 for ln in log if re.search(r"\] step \d+ \|", ln)]
        stop = [ln.split("farslip train: ")[1] for ln in log if "training diverged" in ln
                or "GradScaler skipped" in ln]
        return steps, stop

    (full_steps, full_stop), (cut_steps, cut_stop) = lines("full"), lines("cut")
    assert "amp_skipped_steps_total" in full_steps[-1] and full_steps[-1] == cut_steps[-1]
    assert full_steps[-1].startswith("epoch 0 [5/5] step 5 ")
    assert len(full_stop) == 1 and "in a row (reached at step 5)" in full_stop[0]
    assert cut_stop == [full_stop[0].replace("/full/", "/cut/")]

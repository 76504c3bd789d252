"""Whole runs of the trainer in-process on tiny data written in the real formats: checkpoints,
logs, validation, bad samples skipped and counted, kill-and-resume, stage 2 from stage 1, and
contradictory flags rejected at start-up."""
from __future__ import annotations

import json
import re
from pathlib import Path

import open_clip
import pytest
import torch

import farslip
from farslip.train import main as train_main
from farslip.train.main import Trainer

from ._train_utils import MODEL, write_mgrs, write_rs5m, write_val_csv

COMMON = ["--model", MODEL, "--pretrained", "none", "--precision", "fp32", "--device", "cpu",
          "--workers", "0", "--log-every-n-steps", "1", "--lr", "1e-3", "--warmup", "1"]


def stage1_flags(tmp: Path, shards: str, name: str, *extra: str) -> list[str]:
    return COMMON + ["--train-dataset-name", "RS5M", "--train-data", shards,
                     "--train-dataset-type", "webdataset", "--train-num-samples", "10",
                     "--method", "farslip1", "--use-imagecrop-aug", "--local-method",
                     "randomcrops", "--batch-size", "2", "--epochs", "1", "--loss-type",
                     "global_itc", "distill", "--distill-align", "roi2pooled",
                     "--logs", str(tmp / "logs"), "--name", name, *extra]


def stage2_flags(tmp: Path, js: str, imgs: str, name: str, *extra: str) -> list[str]:
    return COMMON + ["--train-dataset-name", "MGRS", "--root-train-img-dir", imgs,
                     "--train-data", js, "--train-dataset-type", "json", "--method", "farslip2",
                     "--local-method", "randomcrops", "--batch-size", "2", "--epochs", "1",
                     "--loss-type", "global_itc", "distill", "local_itc", "--distill-align",
                     "roi2pooled", "--local-itc-align", "cls",
                     "--logs", str(tmp / "logs"), "--name", name, *extra]


def test_stage1_then_stage2_with_bad_samples(tmp_path):
    shards = write_rs5m(tmp_path / "rs5m", corrupt=True)
    val = write_val_csv(tmp_path / "val")
    assert train_main.main(stage1_flags(tmp_path, shards, "s1", "--val-data", val)) == 0
    run = tmp_path / "logs" / "s1"
    ckpt = run / "checkpoints" / "epoch_1.pt"
    assert ckpt.is_file() and (run / "checkpoints" / "epoch_latest.pt").is_file()
    log = (run / "out.log").read_text()
    # 10 good samples of 12 are all read: the corrupt JPEG and the caption-less one are skipped
    assert "skipped_total 2" in log
    assert "distill" in log and "samples_per_s" in log
    assert "train_data: " in (run / "params.txt").read_text()
    record = json.loads((run / "val.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and record["num_samples"] == 6
    assert 0.0 <= record["image_to_text_R@1"] <= record["image_to_text_R@5"] <= 1.0

    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and saved["step"] == 5 and saved["name"] == "s1"
    assert not any(k.startswith("module.") for k in saved["state_dict"])
    assert farslip.load_checkpoint(farslip.create_model(MODEL), str(ckpt)) is not None
    stock = open_clip.create_model(MODEL)  # the config is registered by `import farslip`
    stock.load_state_dict(saved["state_dict"], strict=True)

    js, imgs = write_mgrs(tmp_path / "mgrs", broken=True)
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "s2", "--pretrained", str(ckpt))) == 0
    run2 = tmp_path / "logs" / "s2"
    assert (run2 / "checkpoints" / "epoch_1.pt").is_file()
    log2 = (run2 / "out.log").read_text()
    assert "skipped_total 1" in log2  # the missing image (the object-less item still trains)
    local = [float(x) for x in re.findall(r"local_itc ([0-9.e+-]+)", log2)]
    rows = [float(x) for x in re.findall(r"local_rows ([0-9.e+-]+)", log2)]
    assert local and rows and max(local) > 0 and max(rows) > 0


def test_stage2_starts_from_the_given_weights(tmp_path, monkeypatch):
    model = farslip.create_model(MODEL)
    with torch.no_grad():
        model.visual.proj.fill_(0.125)
    src = tmp_path / "start.pt"
    torch.save({"state_dict": model.state_dict()}, src)
    js, imgs = write_mgrs(tmp_path / "mgrs")
    seen = {}
    real_init = Trainer.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        seen["proj"] = self.model.visual.proj.detach().clone()

    monkeypatch.setattr(Trainer, "__init__", spy)
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "s2", "--pretrained", str(src))) == 0
    assert torch.all(seen["proj"] == 0.125)


def _final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "epoch_latest.pt", map_location="cpu",
                      weights_only=True)


def test_kill_and_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    """EMA teacher, so the teacher state must round-trip too (the active one has none)."""
    js, imgs = write_mgrs(tmp_path / "mgrs", items=6)
    flags = ["--epochs", "2", "--distill-type", "ema"]
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "full", *flags)) == 0

    real_epoch = Trainer.train_epoch

    def crash_in_epoch_1(self, data, epoch, *a, **kw):
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        return real_epoch(self, data, epoch, *a, **kw)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags))
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    assert _final_state(tmp_path / "logs" / "cut")["epoch"] == 1
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags,
                                        "--resume", "latest")) == 0
    full, cut = _final_state(tmp_path / "logs" / "full"), _final_state(tmp_path / "logs" / "cut")
    assert full["step"] == cut["step"] == 2 * 3
    for part in ("state_dict", "state_dict_teacher"):
        for key, value in full[part].items():
            assert torch.equal(value, cut[part][key]), (part, key)
    assert full["optimizer"]["state"].keys() == cut["optimizer"]["state"].keys()


def test_mid_epoch_resume_from_a_step_checkpoint_reproduces_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """MGRS json (sampler offset) with a bad item and an EMA teacher; the run stops inside epoch 1,
    after the step checkpoint at step 6 (batch 2 of 4); a changed layout is refused."""
    js, imgs = write_mgrs(tmp_path / "mgrs", items=9, broken=True)
    flags = ["--epochs", "2", "--distill-type", "ema", "--save-every-n-steps", "3"]
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "full", *flags)) == 0

    real_step = Trainer.train_step

    def crash_before_step_8(self, batch):
        if self.step == 7:
            raise KeyboardInterrupt("killed")
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", crash_before_step_8)
    with pytest.raises(KeyboardInterrupt):
        train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    ckpts = tmp_path / "logs" / "cut" / "checkpoints"
    step6 = torch.load(ckpts / "step_6.pt", weights_only=True)
    assert step6["epoch"] == 1 and step6["position"]["epoch"] == 1
    assert step6["position"]["batches"] == 2 and step6["position"]["kind"] == "sampler"
    capsys.readouterr()
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags, "--resume", "latest",
                                        "--seed", "1")) == 2  # a user error: one line
    assert "seed 0 in the checkpoint, 1 in this run" in capsys.readouterr().err
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "cut", *flags,
                                        "--resume", "latest")) == 0
    log = (tmp_path / "logs" / "cut" / "out.log").read_text()
    assert "continuing after batch 2 of epoch 1" in log
    full, cut = _final_state(tmp_path / "logs" / "full"), _final_state(tmp_path / "logs" / "cut")
    assert full["step"] == cut["step"] == 8 and full["skipped_total"] == cut["skipped_total"] >= 1
    for part in ("state_dict", "state_dict_teacher"):
        for key, value in full[part].items():
            assert torch.equal(value, cut[part][key]), (part, key)
    for index, state in full["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, cut["optimizer"]["state"][index][key]), (index, key)


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    js, imgs = write_mgrs(tmp_path / "mgrs")
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "again")) == 0
    capsys.readouterr()
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "again")) == 2  # a user error
    err = capsys.readouterr().err
    assert "farslip train: error: run folder" in err and "--resume latest" in err and "Traceback" not in err


@pytest.mark.parametrize("flags,message", [
    (["--method", "farslip1", "--loss-type", "global_itc", "local_itc", "--train-data", "a.tar"],
     "local_itc needs region texts"),
    (["--method", "farslip1", "--train-data", "a.tar"], "distill needs local views"),
    (["--method", "farslip2", "--local-itc-align", "combined", "--train-data", "a.json"],
     "invalid choice: 'combined'"),
    (["--method", "farslip1", "--use-imagecrop-aug", "--local-method", "objects",
      "--train-data", "a.tar"], "--local-method objects needs MGRS json"),
    (["--method", "vanilla", "--loss-type", "global_itc", "distill", "--train-data", "a.tar"],
     "vanilla is plain CLIP"),
    (["--method", "vanilla", "--distill-type", "ema", "--train-data", "a.tar"],
     "builds a teacher"),
    (["--method", "farslip2", "--train-data", "a.json"], "needs --root-train-img-dir"),
    (["--method", "vanilla", "--train-data", "a.tar"], "needs --train-num-samples"),
    (["--method", "vanilla", "--train-data", "data.parquet"], "cannot tell the format"),
    (["--method", "vanilla", "--train-data", "a.csv", "--local-loss"], "--gather-with-grad"),
    (["--method", "vanilla", "--train-data", "a.csv", "--EMA-momentum", "1.5"], "EMA-momentum"),
    (["--method", "vanilla", "--train-data", "a.csv", "--resume", "nope.pt"], "no checkpoint file"),
    (["--method", "vanilla", "--train-data", "a.csv", "--keep-checkpoints", "3"],
     "only --save-every-n-steps N writes"),
    (["--method", "vanilla", "--train-data", "a.csv", "--save-every-n-steps", "-1"],
     "--save-every-n-steps must be >= 0"),
])
def test_contradictory_flags_fail_at_start_up(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_shows_defaults_and_off_switches(capsys):
    with pytest.raises(SystemExit):
        train_main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo the help's line wrapping
    for needle in ("--no-mpcl-loss", "--no-use-imagecrop-aug", "--no-force-quick-gelu",
                   "--no-long-text", "--EMA-momentum", "(default: openai)", "(default: 0.1)",
                   "(default: segearth)", "(default: roi2pooled)",
                   "0 = off, as the published recipe", "see docs/TRAINING.md) (default: 0)",
                   "0 = keep all; default: 2 when --save-every-n-steps is on",
                   "0 = never (default: 50)"):
        assert needle in text, needle


def test_report_to_without_the_package_fails_before_training(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    js, imgs = write_mgrs(tmp_path / "mgrs")
    assert train_main.main(stage2_flags(tmp_path, js, imgs, "tb", "--report-to", "tensorboard")) == 2
    assert "farslip train: error: --report-to tensorboard needs the tensorboard package (pip install tensorboard)" \
        in capsys.readouterr().err
    assert not (tmp_path / "logs" / "tb" / "checkpoints" / "epoch_latest.pt").exists()

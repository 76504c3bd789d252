"""Start-up validation of numbers NaN slips past (`< 0` is False for NaN) and ``--report-to``."""
from __future__ import annotations

import pytest

from farslip.train import main as train_main
from farslip.train.args import parse_args

BASE = ["--method", "vanilla", "--train-data", "a.csv"]


@pytest.mark.parametrize("flags,message", [
    (["--lr", "nan"], "--lr must be a finite number (got nan)"),
    (["--lr", "inf"], "--lr must be a finite number (got inf)"),
    (["--lr=-1e-6"], "--lr must be >= 0 (got -1e-06)"),
    (["--wd", "nan"], "--wd must be a finite number"),
    (["--w-g", "nan"], "--w-g must be a finite number"),
    (["--eps", "inf"], "--eps must be a finite number"),
    (["--beta2", "1.0"], "--beta2 must lie in [0, 1)"),
    (["--grad-clip-norm", "0"], "--grad-clip-norm must be > 0"),
    (["--grad-clip-norm", "nan"], "--grad-clip-norm must be a finite number"),
    (["--train-num-samples", "-5"], "--train-num-samples must be >= 1 (got -5)"),
    (["--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
    (["--epochs", "0"], "--epochs must be >= 1 (got 0)"),
    (["--max-skipped-steps", "-1"], "--max-skipped-steps must be >= 0"),
    (["--check-grads-every", "-2"], "--check-grads-every must be >= 0"),
    (["--report-to", "none", "tensorboard"], "--report-to none cannot be combined"),
    (["--report-to", "wandb,none"], "--report-to none cannot be combined"),
    (["--report-to", "tensorbord"], "unknown reporter 'tensorbord'"),
    (["--report-to", "wandb", "wandb"], "--report-to repeats a reporter"),
    (["--report-to"], "--report-to: expected at least one argument"),
])
def test_bad_numbers_and_reporters_fail_at_start_up(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main.main(BASE + flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_webdataset_with_negative_samples_is_not_taken_as_given(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--method", "vanilla", "--train-data", "a.tar", "--train-num-samples", "-1"])
    assert "--train-num-samples must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("flags,want", [
    ([], []),
    (["--report-to", "none"], []),
    (["--report-to", "tensorboard"], ["tensorboard"]),
    (["--report-to", "wandb", "tensorboard"], ["wandb", "tensorboard"]),
    (["--report-to", "wandb,tensorboard"], ["wandb", "tensorboard"]),  # open_clip's spelling
])
def test_report_to(flags, want):
    assert parse_args(BASE + flags).run.report_to == tuple(want)


def test_help_names_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        train_main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-skipped-steps" in text and "(default: 50)" in text
    assert "--check-grads-every" in text
    assert "unset (None): the architecture a --pretrained checkpoint of this trainer records, else ViT-B-16" in text
    assert "{tensorboard,wandb,none}" in text

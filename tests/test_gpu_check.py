"""``scripts/gpu_check.sh --dry-run``: the prepared accelerator check runs every part on the CPU
(the same code as on a GPU, at tiny size) and writes its results; a broken part fails here.

The check itself runs where a GPU is lent (``scripts/gpu_check.sh``, no flag); this module is
what keeps it working in between.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "FARSLIP_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return proc, out, results


def test_every_part_runs_and_the_results_are_written(dry_run):
    proc, out, results = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    gpu_check = _module()
    assert results["dry_run"] is True
    assert list(results["parts"]) == list(gpu_check.PARTS)
    bad = {k: v for k, v in results["parts"].items() if v["status"] != "ok"}
    assert not bad, json.dumps(bad, indent=1)[-3000:]
    md = (out / "results.md").read_text()
    assert md.startswith("# gpu_check results (dry run, CPU)")
    for name in gpu_check.PARTS:
        assert f"| {name} | ok |" in md


def test_the_cuda_tests_ran_on_the_cpu(dry_run):
    _, _, results = dry_run
    tests = results["parts"]["tests"]
    assert tests["device"] == "cpu"
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
                                "tests/test_cuda.py", "-p", "no:cacheprovider"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    count = sum(1 for line in collected.stdout.splitlines() if "::" in line)
    assert count >= 10 and tests["counts"] == {"passed": count}


def test_steps_of_each_method_and_precision(dry_run):
    _, _, results = dry_run
    rows = results["parts"]["steps"]["rows"]
    got = {(r["method"], r["precision"], r["device"]) for r in rows}
    assert got == {(m, p, "cpu") for m in ("vanilla", "farslip1", "farslip2")
                   for p in ("fp32", "amp", "amp_bf16")}
    for r in rows:
        assert all(math.isfinite(v) for v in r["losses"].values()), r
        if r["precision"] == "fp32":
            assert r["abs_diff_vs_fp32_cpu"]["loss"] == 0.0
        else:  # the mixed-precision losses are near, not equal, to fp32's
            assert 0.0 < r["abs_diff_vs_fp32_cpu"]["loss"] < 0.1, r
        # a prepared step reads nothing on the host, but the GradScaler's found_inf (fp16 amp)
        assert r["host_reads_per_step"] == (1 if r["precision"] == "amp" else 0), r["host_reads_by_op"]
        assert r["cuda_syncs_per_step"] is None  # only counted on CUDA
    assert {r["method"]: set(r["losses"]) for r in rows if r["precision"] == "fp32"} == {
        "vanilla": {"loss", "global_itc"},
        "farslip1": {"loss", "global_itc", "distill"},
        "farslip2": {"loss", "global_itc", "distill", "local_itc", "local_rows"}}


def test_one_process_and_torchrun_training_runs(dry_run):
    _, out, results = dry_run
    single, torchrun = results["parts"]["single"], results["parts"]["torchrun"]
    assert single["backend"] == "none" and torchrun["backend"] == "gloo"
    for part in (single, torchrun):
        assert part["steps_logged"] >= 1 and part["samples_per_s_last"] > 0
    assert len(list((out / "runs").glob("*/checkpoints/epoch_1.pt"))) == 2


def test_throughput_loader_and_eval_rows(dry_run):
    _, _, results = dry_run
    parts = results["parts"]
    train = parts["train"]["rows"]
    assert [r["config"] for r in train] == _module().TRAIN_CONFIGS.split(",")
    for r in train:
        assert r["samples_per_s"] > 0 and r["host_reads_per_step"] == 0 and r["mfu_vs_bf16_peak"] > 0
    assert {(r["pipeline"], r["workers"]) for r in parts["data"]["rows"]} == {
        (p, w) for p in ("rs5m-multicrop", "mgrs-objects") for w in (0, 1)}
    assert {r["task"] for r in parts["eval"]["rows"]} == {"classification", "retrieval", "segmentation"}
    assert all(r["images_per_s"] > 0 for r in parts["eval"]["rows"])
    estimate = parts["estimate"]["rows"]
    assert len(estimate) == len(train)
    for r in estimate:
        assert r["cores_needed"] == pytest.approx(r["gpu_samples_per_s"] / r["per_core_samples_per_s"])


def test_a_spent_budget_starts_no_part_and_fails(tmp_path, capsys):
    gpu_check = _module()
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "0", "--parts", "env,eval"]) == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert {k: v["status"] for k, v in results["parts"].items()} == {
        "env": "not run: the time budget was spent", "eval": "not run: the time budget was spent"}
    assert "not ok: env, eval" in capsys.readouterr().out


def test_an_unknown_part_is_refused(tmp_path, capsys):
    assert _module().main(["--dry-run", "--out", str(tmp_path), "--parts", "env,warp"]) == 2
    assert "unknown parts warp" in capsys.readouterr().err

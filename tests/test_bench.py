"""The benchmark sub-commands that the GPU check does not run (``scripts/bench.py train syncs |
optimizer``, ``data kernels``) still run, and what they count holds: a prepared step reads no
tensor value, the unprepared farslip2 step does."""
from __future__ import annotations

import re

from benchmarks import data as data_bench
from benchmarks import train as train_bench
from farslip.synth import write_world


def _rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("|---") and len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def test_train_syncs_counts_none_in_a_prepared_step(capsys):
    assert train_bench.main(["syncs", "--configs", "vanilla,farslip2/active,farslip2/roi", "--batch-size", "2",
                             "--device", "cpu"]) == 0
    rows = _rows(capsys.readouterr().out)
    for config in ("vanilla", "farslip2/active", "farslip2/roi"):
        prepared, guard, _, unprepared, _ = rows[config]
        assert prepared == "0" and guard == "0", rows[config]
    assert int(rows["farslip2/active"][3]) > 0 and "unique" in rows["farslip2/active"][4]


def test_train_optimizer_times_both_updates(capsys):
    assert train_bench.main(["optimizer", "--models", "ViT-Tiny-8", "--repeat", "1", "--device", "cpu"]) == 0
    cells = _rows(capsys.readouterr().out)["ViT-Tiny-8"]
    assert float(cells[0]) > 0 and float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[3]) > 0


def test_data_kernels_time_each_pair(tmp_path, capsys):
    write_world(tmp_path / "world", scale="tiny")
    assert data_bench.main(["kernels", "--world", str(tmp_path / "world"), "--images", "2", "--repeat", "1",
                            "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert len([k for k in rows if "->" in k]) == 4
    for cells in (v for k, v in rows.items() if "->" in k):
        assert all(float(c) >= 0 for c in cells) and float(cells[2]) > 0
    assert re.search(r"2 MGRS scenes \(\d+ px\)", out)

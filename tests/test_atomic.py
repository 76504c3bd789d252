"""The one atomic-write helper: modes follow the umask, failures leave the old file, stale temps go,
and every writer of the project (checkpoints, results, downloads, the synthetic world) uses it."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
import torch

from farslip.atomic import atomic_write, remove_stale_temps, stale_temps, temp_name
from farslip.eval.report import write_report
from farslip.train import checkpoint


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask_like_a_plain_open(tmp_path, mask, expected):
    with umask(mask):
        atomic_write(tmp_path / "a.bin", b"abc")
        with open(tmp_path / "plain.bin", "wb") as handle:  # what open() / torch.save(path) give
            handle.write(b"abc")
        torch.save({"x": 1}, tmp_path / "torch.pt")
    assert mode(tmp_path / "a.bin") == expected == mode(tmp_path / "plain.bin") == mode(tmp_path / "torch.pt")


def test_payload_kinds_and_parent_creation(tmp_path):
    atomic_write(tmp_path / "d" / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "d" / "t.txt", "héllo")
    atomic_write(tmp_path / "d" / "f.bin", lambda handle: handle.write(b"from a function"), durable=False)
    assert (tmp_path / "d" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "d" / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "d" / "f.bin").read_bytes() == b"from a function"
    assert stale_temps(tmp_path / "d") == []


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "results.json"
    atomic_write(target, "old")

    def explode(handle):
        handle.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_stale_temps_are_found_and_removed_only_for_their_target(tmp_path):
    target = tmp_path / "epoch_latest.pt"
    left = temp_name(target)  # what a writer killed before its rename leaves
    left.write_bytes(b"torn")
    other = temp_name(tmp_path / "epoch_3.pt")
    other.write_bytes(b"torn too")
    keep = tmp_path / "notes.tmp"  # not one of ours: no leading dot + target name
    keep.write_bytes(b"user file")
    assert stale_temps(tmp_path, "epoch_latest.pt") == [left]
    assert set(stale_temps(tmp_path)) == {left, other}
    assert set(remove_stale_temps(tmp_path)) == {left, other}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp"]


def test_checkpoints_and_results_come_out_with_the_umask_mode(tmp_path):
    with umask(0o022):
        checkpoint.save_atomic({"epoch": 1}, tmp_path / "ckpt.pt")
        written = write_report({"model": {"label": "m"}}, tmp_path / "eval")
    assert mode(tmp_path / "ckpt.pt") == 0o644
    assert mode(written["results.json"]) == 0o644 and mode(written["results.md"]) == 0o644

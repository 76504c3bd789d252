"""Training checkpoints: atomic replacement, ``--resume`` resolution, safe loading."""
from __future__ import annotations

import pytest
import torch

import farslip
from farslip.train import checkpoint


class Evil:
    """An arbitrary class: unpickling it must be refused."""


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "epoch_latest.pt"
    checkpoint.save_atomic({"epoch": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_latest.pt"]  # no temp file left


def test_save_writes_numbered_and_latest(tmp_path):
    payload = {"epoch": 3, "step": 30, "state_dict": {"w": torch.ones(2)}, "optimizer": {}}
    paths = checkpoint.save(tmp_path, payload, numbered=True)
    assert [p.name for p in paths] == ["epoch_3.pt", "epoch_latest.pt"]
    assert checkpoint.load(paths[0])["step"] == 30
    assert [p.name for p in checkpoint.save(tmp_path, payload, numbered=False)] == ["epoch_latest.pt"]


def test_resolve_latest_and_paths(tmp_path):
    assert checkpoint.resolve("latest", tmp_path) is None  # a fresh run
    (tmp_path / "epoch_latest.pt").write_bytes(b"x")
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "epoch_latest.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoint.resolve(str(tmp_path / "nope.pt"), tmp_path)


def test_load_rejects_weights_only_files_and_pickled_objects(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save({"visual.proj": torch.ones(2)}, bare)
    with pytest.raises(ValueError, match="not a farslip training checkpoint"):
        checkpoint.load(bare)

    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "step": 1, "state_dict": {}, "optimizer": Evil()}, evil)
    with pytest.raises(farslip.UnsafeCheckpointError,
                       match=r"evil\.pt: refused to unpickle .*Evil.*not written by farslip train"):
        checkpoint.load(evil)


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    first = torch.rand(3)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)

"""Training checkpoints: atomic replacement, ``--resume`` resolution, safe loading."""
from __future__ import annotations

import os
import stat

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


def _ckpt(step: int, epoch: int = 0) -> dict:
    return {"epoch": epoch, "step": step, "state_dict": {"w": torch.full((2,), float(step))},
            "optimizer": {}}


def test_resolve_latest_and_paths(tmp_path):
    assert checkpoint.resolve("latest", tmp_path) is None  # a fresh run
    checkpoint.save(tmp_path, _ckpt(6, epoch=1), numbered=False)
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "epoch_latest.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoint.resolve(str(tmp_path / "nope.pt"), tmp_path)


def test_latest_is_the_newest_by_recorded_step(tmp_path):
    for step in (2, 4):
        checkpoint.save_step(tmp_path, _ckpt(step), keep=0)
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "step_4.pt"  # no epoch file yet
    checkpoint.save(tmp_path, _ckpt(6, epoch=1), numbered=True)
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "epoch_latest.pt"
    checkpoint.save_step(tmp_path, _ckpt(8, epoch=1), keep=0)
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "step_8.pt"
    # at equal steps the epoch file wins (it starts the next epoch); a torn temp is never a candidate
    checkpoint.save(tmp_path, _ckpt(8, epoch=2), numbered=False)
    (tmp_path / ".step_10.pt.0123456789ab.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "step_x.pt").write_bytes(b"not ours")
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "epoch_latest.pt"
    assert [s for s, _ in checkpoint.step_files(tmp_path)] == [2, 4, 8]


def test_latest_takes_a_numbered_epoch_file_newer_than_epoch_latest(tmp_path):
    """A kill between writing epoch_2.pt and epoch_latest.pt: the numbered file is the newest."""
    checkpoint.save(tmp_path, _ckpt(6, epoch=1), numbered=True)
    checkpoint.save_step(tmp_path, _ckpt(10, epoch=1), keep=0)
    checkpoint.save_atomic(_ckpt(12, epoch=2), tmp_path / "epoch_2.pt")
    (tmp_path / "epoch_3.pt.bak").write_bytes(b"not ours")
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "epoch_2.pt"
    checkpoint.save(tmp_path, _ckpt(12, epoch=2), numbered=False)  # equal steps: epoch_latest.pt
    assert checkpoint.resolve("latest", tmp_path) == tmp_path / "epoch_latest.pt"


def test_unreadable_latest_is_named(tmp_path):
    (tmp_path / "epoch_latest.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="epoch_latest.pt"):
        checkpoint.resolve("latest", tmp_path)


def test_step_checkpoints_rotate_and_epoch_files_stay(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoint.save(tmp_path, _ckpt(3, epoch=1), numbered=True)
        for step in range(1, 6):
            checkpoint.save_step(tmp_path, _ckpt(step), keep=2)
    finally:
        os.umask(old)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch_1.pt", "epoch_latest.pt", "step_4.pt", "step_5.pt"]
    # the mode torch.save(obj, path) gives under umask 022, for step and epoch files alike
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o644}
    assert checkpoint.load(tmp_path / "step_5.pt")["step"] == 5
    for step in range(6, 9):
        checkpoint.save_step(tmp_path, _ckpt(step), keep=0)  # 0 keeps all
    assert [s for s, _ in checkpoint.step_files(tmp_path)] == [4, 5, 6, 7, 8]


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


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    checkpoint.save_atomic({"rng": checkpoint.rng_state()}, tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), np.random.rand(3))
    state = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]
    checkpoint.set_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(again[0], first[0]) and again[1] == first[1]
    assert np.array_equal(again[2], first[2])
    checkpoint.set_rng_state({"cpu": state["cpu"]})  # an older checkpoint: torch only
    assert torch.equal(torch.rand(3), first[0])


def test_layout_problems_name_every_difference():
    from types import SimpleNamespace

    from farslip.config import World
    from farslip.train import resume

    from ._train_utils import make_args

    cfg = make_args("--batch-size", "10", "--method", "vanilla", data="x.tar")
    world = World(rank=1, world_size=2)
    stream = SimpleNamespace(stream_workers=4, num_batches=100)  # the two fields of a DataInfo read
    position = resume.DataPosition(3, 7, {0: (20, 2), 2: (21, 2)})
    state = resume.position_state(position, cfg, world, stream, [[[1, 1]] * 4, position.stream_list(4)])
    assert state["streams"][1] == [[20, 2], [0, 0], [21, 2], [0, 0]]
    assert resume.layout_problems(state, cfg, world, stream) == []
    fewer = SimpleNamespace(stream_workers=2, num_batches=100)
    assert resume.layout_problems(state, cfg, World(), fewer) == [
        "world_size 2 in the checkpoint, 1 in this run", "workers 4 in the checkpoint, 2 in this run"]
    assert resume.layout_problems(state, cfg.replace("run", seed=3), world, stream) == [
        "seed 0 in the checkpoint, 3 in this run"]
    sampler = SimpleNamespace(stream_workers=0, num_batches=100)
    assert "kind 'stream' in the checkpoint, 'sampler' in this run" in resume.layout_problems(
        state, cfg, world, sampler)

"""Mid-epoch resume of the training loaders: a loader pointed at batch c of an epoch gives exactly
the batches c, c+1, ... of an uninterrupted epoch (webdataset streams with their per-worker raw
positions, MGRS json through the sampler offset), counts each bad sample once, decodes none of
the samples it passes over, and leaves the other epochs whole."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from farslip.data import rs5m
from farslip.data.rs5m import POSITION_KEY, StreamStart
from farslip.data.train_data import get_train_data

from ._data_utils import char_tokenizer, make_args, with_views, write_shards
from ._train_utils import write_mgrs

# 22 samples in batches of 2: 11 batches, over 2 workers 6 + 5 (uneven), more than one pass
NUM_SAMPLES, BATCH = 22, 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("shards"))
    # bad samples in each shard: an undecodable image, a missing caption, a truncated image
    write_shards(folder, 4, 5, corrupt={"s0k001", "s2k003"}, no_caption={"s1k000"}, truncated={"s3k004"})
    return os.path.join(folder, "shard-{0000..0003}.tar")


def stream(spec: str, workers: int, epoch: int = 0, resampled: bool = False):
    args = make_args(train_data=spec, train_num_samples=NUM_SAMPLES, batch_size=BATCH, workers=workers,
                     dataset_resampled=resampled)
    return get_train_data(with_views(args, crops=True, objects=False), char_tokenizer, 32, epoch=epoch)


def positions(batches: list[dict], workers: int) -> list[tuple[int, int]]:
    """(taken, made) per worker after ``batches``: what the trainer keeps from the batches."""
    last = {}
    for batch in batches:
        worker, taken, made = batch[POSITION_KEY].tolist()
        last[worker] = (taken, made)
    return [last.get(w, (0, 0)) for w in range(workers)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("workers,resampled", [(0, False), (2, False), (0, True)])
def test_stream_resumes_at_the_next_batch(shards, workers, resampled):
    full = list(stream(shards, workers, resampled=resampled).dataloader)
    assert len(full) == 11
    total_skipped = sum(int(b["skipped"]) for b in full)
    assert total_skipped >= (1 if resampled else 4)  # without resampling a pass and a bit: all 4 bad ones
    for c in (1, 4, 7, 10) if workers == 0 else (3, 8):
        info = stream(shards, workers, resampled=resampled)
        info.resume_at(0, c, positions(full[:c], max(workers, 1)))
        rest = list(info.dataloader)
        assert_same(rest, full[c:])
        # bad samples before the position were counted by the consumed batches, the rest now
        assert sum(int(b["skipped"]) for b in full[:c] + rest) == total_skipped
    # the next epoch is whole and the same as a loader built for it
    info.set_epoch(1)
    assert_same(list(info.dataloader), list(stream(shards, workers, epoch=1, resampled=resampled).dataloader))


def test_passed_over_samples_are_not_decoded(shards, monkeypatch):
    calls = []
    real = rs5m.decode_sample

    def counting(sample):
        calls.append(sample["__key__"])
        return real(sample)

    monkeypatch.setattr(rs5m, "decode_sample", counting)
    full = list(stream(shards, 0).dataloader)
    taken_end = full[-1][POSITION_KEY].tolist()[1]
    assert len(calls) == taken_end  # every raw sample drawn is decoded once in a whole epoch
    c = 6
    (taken_c, made_c), = positions(full[:c], 1)
    assert made_c == c
    calls.clear()
    info = stream(shards, 0)
    info.resume_at(0, c, [(taken_c, made_c)])
    assert len(list(info.dataloader)) == 11 - c
    assert len(calls) == taken_end - taken_c  # only what the remaining batches needed


def test_stream_start_must_describe_the_loader(shards):
    with pytest.raises(ValueError, match="made 3 batches but 4"):
        StreamStart(0, 4, (5, 3), (2, 1))
    info = stream(shards, 0)
    with pytest.raises(ValueError, match="one position per worker"):
        info.resume_at(0, 2, [(2, 1), (2, 1)])
    with pytest.raises(ValueError, match="cannot resume after batch 11"):
        info.resume_at(0, 11, [(30, 11)])


@pytest.mark.parametrize("workers", [0, 2])
def test_mgrs_sampler_starts_at_its_offset(tmp_path, workers):
    js, imgs = write_mgrs(Path(tmp_path), items=11, broken=True)
    args = make_args(train_data=js, train_dataset_type="json", method="farslip2", root_train_img_dir=imgs,
                     batch_size=2, workers=workers)

    def loader():
        return get_train_data(with_views(args, crops=True, objects=True), char_tokenizer, 32, epoch=2)

    full = list(loader().dataloader)
    assert len(full) == 5
    for c in (1, 3):
        info = loader()
        info.resume_at(2, c)
        assert len(info.dataloader) == 5 - c
        assert_same(list(info.dataloader), full[c:])
    info.set_epoch(3)  # only the resumed epoch is cut
    other = loader()
    other.set_epoch(3)
    assert_same(list(info.dataloader), list(other.dataloader))

"""RS5M webdataset stream: epoch length, shard split over ranks and workers, order, skips, specs."""
from __future__ import annotations

import os

import pytest
import torch

from farslip.data.image_files import DataError
from farslip.data.rs5m import expand_shards
from farslip.data.train_data import get_train_data

from ._data_utils import char_tokenizer, decode_text, make_args, with_views, write_shard, write_shards


def keys_of(info) -> list[str]:
    return [decode_text(t).split()[-1] for batch in info.dataloader for t in batch["text"]]


def loader(folder, *, seed=0, rank=0, world_size=1, **kwargs):
    args = make_args(train_data=os.path.join(folder, "shard-{0000..0003}.tar"), **kwargs)
    return get_train_data(with_views(args, crops=True, objects=False), char_tokenizer, 32, seed=seed, rank=rank,
                          world_size=world_size)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("rs5m"))
    return folder, [k for keys in write_shards(folder, 4, 6) for k in keys]


def test_expand_shards_braces_and_double_colon_lists():
    assert expand_shards("/d/{a,b}-train-{0000..0001}.tar::/e/x.tar") == [
        "/d/a-train-0000.tar", "/d/a-train-0001.tar", "/d/b-train-0000.tar", "/d/b-train-0001.tar", "/e/x.tar"]
    assert expand_shards("pipe:cat /d/s-{0..1}.tar") == ["pipe:cat /d/s-0.tar", "pipe:cat /d/s-1.tar"]


def test_batches_have_the_contract_shapes(shards):
    folder, _ = shards
    batch = next(iter(loader(folder, train_num_samples=24, batch_size=3).dataloader))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["crop"].shape == (12, 3, 32, 32)
    assert batch["crop_box"].shape == (3, 4, 4) and batch["crop_valid"].all()
    assert ((batch["crop_box"] >= 0) & (batch["crop_box"] <= 1)).all()
    assert batch["skipped"].item() == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_train_num_samples_sets_epoch_length(shards, workers):
    folder, _ = shards
    info = loader(folder, train_num_samples=7, batch_size=2, workers=workers)
    assert info.num_batches == 4 and info.num_samples == 8 and len(info.dataloader) == 4
    assert len(list(info.dataloader)) == 4
    info = loader(folder, train_num_samples=40, batch_size=2, world_size=2, workers=workers)
    assert info.num_batches == 10  # ceil(40 / (2 * 2)); more than one pass over this rank's shards
    assert len(keys_of(info)) == 20


@pytest.mark.parametrize("workers", [0, 2])
def test_one_epoch_sees_every_sample_once(shards, workers):
    folder, keys = shards
    info = loader(folder, train_num_samples=24, batch_size=3, workers=workers)
    assert sorted(keys_of(info)) == sorted(keys)


def test_two_ranks_read_disjoint_samples(shards):
    folder, keys = shards
    seen = [keys_of(loader(folder, train_num_samples=24, batch_size=3, world_size=2, rank=r)) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 12
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(keys)


def test_order_is_deterministic_per_seed_and_epoch(shards):
    folder, _ = shards
    first = loader(folder, train_num_samples=24, batch_size=3)
    again = loader(folder, train_num_samples=24, batch_size=3)
    for a, b in zip(first.dataloader, again.dataloader):
        assert all(torch.equal(a[k], b[k]) for k in a)
    order0 = keys_of(first)
    first.set_epoch(1)
    order1 = keys_of(first)
    assert order0 != order1 and sorted(order0) == sorted(order1)
    # a run resumed at epoch 1 builds its loader with epoch=1: it must see epoch 1's order
    args = make_args(train_data=os.path.join(folder, "shard-{0000..0003}.tar"), train_num_samples=24, batch_size=3)
    assert keys_of(get_train_data(with_views(args, crops=True, objects=False), char_tokenizer, 32, epoch=1)) == order1
    assert keys_of(loader(folder, train_num_samples=24, batch_size=3, seed=1)) != order0


def test_resampled_shards_give_the_epoch_length(shards):
    folder, keys = shards
    info = loader(folder, train_num_samples=10, batch_size=2, dataset_resampled=True)
    seen = keys_of(info)
    assert len(seen) == 10 and set(seen) <= set(keys)


def test_corrupt_jpeg_and_missing_caption_are_skipped_and_counted(tmp_path):
    keys = [f"k{i}" for i in range(7)]
    write_shard(str(tmp_path / "faulty-0000.tar"), keys, corrupt={"k1"}, truncated={"k6"}, no_caption={"k4"})
    # 6 samples = one full pass over the 4 good ones (every bad one met) and 2 of the next pass
    args = make_args(train_data=str(tmp_path / "faulty-0000.tar"), train_num_samples=6, batch_size=2)
    info = get_train_data(with_views(args, crops=True, objects=False), char_tokenizer, 32)
    batches = list(info.dataloader)
    assert [b["image"].shape[0] for b in batches] == [2, 2, 2]  # the rest of each batch is intact
    assert 3 <= sum(int(b["skipped"]) for b in batches) <= 6
    first_pass = [decode_text(t).split()[-1] for b in batches[:2] for t in b["text"]]
    assert sorted(first_pass) == ["k0", "k2", "k3", "k5"]


def test_unreadable_data_and_bad_settings_fail_clearly(tmp_path, shards):
    folder, _ = shards
    with pytest.raises(ValueError, match="train-num-samples"):
        loader(folder, train_num_samples=None)
    with pytest.raises(ValueError, match="cannot be split"):
        loader(folder, train_num_samples=8, world_size=4, workers=2)
    args = make_args(train_data=str(tmp_path / "nothing-{0..1}.tar"), train_num_samples=4)
    with pytest.raises(DataError, match=r"2 of 2 shard\(s\) do not exist, e\.g\. .*nothing-0\.tar"):
        get_train_data(with_views(args, crops=False, objects=False), char_tokenizer, 32)
    for i in range(2):  # shards that exist but are not tar files
        (tmp_path / f"garbage-{i}.tar").write_bytes(b"not a tar file at all" * 40)
    args = make_args(train_data=str(tmp_path / "garbage-{0..1}.tar"), train_num_samples=4)
    with pytest.raises(DataError, match=r"no sample could be read from the 2 shards .*garbage-"):
        next(iter(get_train_data(with_views(args, crops=False, objects=False), char_tokenizer, 32).dataloader))
    with pytest.raises(ValueError, match="object views"):
        get_train_data(with_views(make_args(train_data=folder, train_num_samples=4), crops=False, objects=True), char_tokenizer, 32)
    with pytest.raises(ValueError, match="local-method"):
        loader(folder, train_num_samples=4, local_method="objects")


def test_persistent_workers_follow_set_epoch(shards):
    folder, _ = shards
    info = loader(folder, train_num_samples=24, batch_size=3, workers=2)
    epoch0 = keys_of(info)
    info.set_epoch(1)
    epoch1 = keys_of(info)
    args = make_args(train_data=os.path.join(folder, "shard-{0000..0003}.tar"), train_num_samples=24, batch_size=3,
                     workers=2)
    assert epoch1 == keys_of(get_train_data(with_views(args, crops=True, objects=False), char_tokenizer, 32, epoch=1))
    assert epoch0 != epoch1

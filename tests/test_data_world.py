"""The loaders on the synthetic world's real-format data, with the real tokenizer of a tiny model."""
from __future__ import annotations

import json

import pytest

import farslip
from farslip.synth import write_world
from farslip.data.train_data import get_train_data, get_val_data

from ._data_utils import make_args, with_views


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"), seed=0, scale="small")


@pytest.fixture(scope="module")
def tokenizer():
    return farslip.get_tokenizer("ViT-Tiny-8")


def test_rs5m_world_epoch_covers_every_sample_with_two_workers(world, tokenizer):
    n = world["counts"]["rs5m_train"]
    args = make_args(train_data=world["rs5m_train"], train_num_samples=n, batch_size=4, workers=2)
    info = get_train_data(with_views(args, crops=True, objects=False), tokenizer, 32)
    batches = list(info.dataloader)
    assert len(batches) == info.num_batches == n // 4
    assert all(b["text"].shape == (4, 77) for b in batches)
    images = {image.numpy().tobytes() for b in batches for image in b["image"]}
    assert len(images) == n  # every sample exactly once (captions may repeat across scenes, images do not)


def test_rs5m_world_faulty_shard_is_skipped_and_counted(world, tokenizer):
    # the faulty shard has 4 samples, 2 of them bad: 3 good samples need one full pass
    args = make_args(train_data=world["rs5m_faulty"], train_num_samples=3, batch_size=1)
    batches = list(get_train_data(with_views(args, crops=True, objects=False), tokenizer, 32).dataloader)
    assert len(batches) == 3 and all(b["image"].shape[0] == 1 for b in batches)
    assert sum(int(b["skipped"]) for b in batches) >= 2


def test_mgrs_world_missing_image_and_objectless_item(world, tokenizer):
    args = make_args(train_data=world["mgrs_faulty_json"], root_train_img_dir=world["mgrs_faulty_images"],
                     train_dataset_type="json", method="farslip2", batch_size=1)
    batches = list(get_train_data(with_views(args, crops=True, objects=True), tokenizer, 32).dataloader)
    assert len(batches) == 4 and sum(int(b["skipped"]) for b in batches) == 1
    counts = [int(b["obj_valid"].sum()) for b in batches]
    assert 0 in counts and max(counts) > 0  # the object-less item still gives its global pair
    assert all(b["obj"].shape[0] == b["obj_text"].shape[0] == c for b, c in zip(batches, counts))


def test_mgrs_world_and_val_csv(world, tokenizer):
    args = make_args(train_data=world["mgrs_json"], root_train_img_dir=world["mgrs_images"],
                     train_dataset_type="json", method="farslip2", batch_size=4,
                     val_data=world["skyscript_val_csv"], root_val_img_dir=world["benchmarks"])
    info = get_train_data(with_views(args, crops=False, objects=True), tokenizer, 32)
    batches = list(info.dataloader)
    assert len(batches) == info.num_batches == world["counts"]["mgrs"] // 4
    assert sum(int(b["obj_valid"].sum()) for b in batches) > len(batches)  # most scenes have usable objects
    assert all("crop" not in b and (b["obj_label"] >= -1).all() for b in batches)
    val = get_val_data(args, 32, tokenizer)
    assert val.num_samples == world["counts"]["skyscript_val"]
    assert sum(b["image"].shape[0] for b in val.dataloader) == val.num_samples


def test_data_bench_runs_on_the_world(world, tmp_path, capsys):
    from benchmarks.data import main

    out = tmp_path / "data.json"
    assert main(["--world", world["root"], "--workers", "0", "--batches", "2", "--image-size", "32",
                 "--batch-size", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["pipeline"] for r in rows] == ["rs5m-multicrop", "mgrs-objects"]
    assert all(r["samples"] == 8 and r["samples_per_s"] > 0 for r in rows)
    assert rows[0]["local_views"] == 8 * 4  # N = 4 random crops per image
    assert "| rs5m-multicrop | torch | - | 0 |" in capsys.readouterr().out

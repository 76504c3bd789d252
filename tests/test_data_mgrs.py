"""MGRS json: bbox parsing, clipping, size filter, cap at N, region texts/labels, caption fallback, loader."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from farslip.data.image_files import BadSample
from farslip.data.mgrs import MgrsItems, clip_box, item_caption, parse_bbox, region_text, select_regions
from farslip.data.train_data import get_train_data
from farslip.data.views import ViewMaker, seeded

from ._data_utils import char_tokenizer, decode_text, image_array, make_args, with_views, write_images, write_json


def obj(x1, y1, x2, y2, category="tree", category_id=3, W=100, H=80):
    return {"bbox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "W": W, "H": H},
            "category": category, "category_id": category_id}


def test_parse_bbox_values_in_order_vs_explicit_keys():
    # values in order x1, y1, x2, y2, W, H, whatever the keys are called
    assert parse_bbox({"a": 1, "b": 2, "c": 30, "d": 40, "e": 100, "f": 80}) == (1, 2, 30, 40, 100, 80)
    # explicit keys win over their order in the dict
    assert parse_bbox({"y2": 40, "H": 80, "x1": 1, "W": 100, "x2": 30, "y1": 2}) == (1, 2, 30, 40, 100, 80)
    assert parse_bbox({"xmax": 30, "ymin": 2, "xmin": 1, "ymax": 40}) == (1, 2, 30, 40, None, None)
    assert parse_bbox([1, 2, 30, 40]) == (1, 2, 30, 40, None, None)
    with pytest.raises(ValueError):
        parse_bbox({"x1": 1, "y1": 2})
    with pytest.raises(ValueError):
        parse_bbox("1,2,3,4")


def test_clip_box_to_image_and_rescale_to_actual_size():
    assert clip_box((-10, 5, 120, 90, 100, 80), 100, 80) == (0, 5, 100, 80)
    # annotated on a 100 x 80 image, stored at 50 x 40: coordinates halve
    assert clip_box((10, 20, 60, 40, 100, 80), 50, 40) == (5, 10, 30, 20)
    assert clip_box((10, 20, 60, 40, None, None), 50, 40) == (10, 20, 50, 40)


def test_area_filter_min_and_max_after_clipping():
    objects = [
        obj(0, 0, 9, 11),      # area 99 < 10^2: dropped
        obj(0, 0, 10, 10),     # area 100: kept
        obj(0, 0, 20, 20),     # area 400 = 20^2: kept
        obj(0, 0, 20, 21),     # area 420 > 20^2: dropped
        obj(95, 0, 120, 20),   # clipped to 5 x 20 = 100: kept
        obj(-50, 0, 5, 19),    # clipped to 5 x 19 = 95: dropped
    ]
    with seeded(0):
        kept = select_regions(objects, 100, 80, max_boxes=10, min_size=10, max_size=20)
    assert sorted(r.box for r in kept) == sorted([(0, 0, 10, 10), (0, 0, 20, 20), (95, 0, 100, 20)])
    with seeded(0):
        unbounded = select_regions(objects, 100, 80, max_boxes=10, min_size=10, max_size=None)
    assert len(unbounded) == 4


def test_cap_at_n_with_shuffled_choice():
    objects = [obj(i, 0, i + 10, 10, category=f"c{i}", category_id=i) for i in range(0, 90, 10)]
    choices = []
    for seed in range(6):
        with seeded(seed):
            picked = select_regions(objects, 100, 80, max_boxes=4, min_size=5, max_size=None)
        assert len(picked) == 4 and len({r.label for r in picked}) == 4
        choices.append(tuple(r.label for r in picked))
    assert len(set(choices)) > 1  # shuffled, not always the first four


def test_region_text_and_labels():
    assert region_text({"category": "storage tank", "category_id": 7}) == ("a satellite image of storage tank", 7)
    assert region_text({"cap": "a red roof next to a pool"}) == ("a red roof next to a pool", -1)
    with pytest.raises(ValueError):
        region_text({"bbox": [0, 0, 1, 1]})


def test_caption_fallback():
    assert item_caption({"global_caption": "g", "detailed_caption": "d"}) == "g"
    assert item_caption({"global_caption": " ", "detailed_caption": "d", "brief_caption": "b"}) == "d"
    assert item_caption({"brief_caption": "b"}) == "b"
    with pytest.raises(BadSample):
        item_caption({"segment": []})


def test_malformed_object_is_ignored_not_fatal():
    objects = [{"bbox": "junk", "category": "x", "category_id": 1}, {"bbox": [0, 0, 20, 20]}, obj(0, 0, 20, 20)]
    with seeded(0):
        picked = select_regions(objects, 100, 80, max_boxes=4, min_size=10, max_size=None)
    assert [(r.box, r.label) for r in picked] == [((0, 0, 20, 20), 3)]


def test_object_views_are_the_clipped_box_pixels(tmp_path):
    array = image_array(1, 100, 80)
    Image.fromarray(array).save(tmp_path / "a.png")
    write_json(tmp_path / "t.json", [{"global_filepath": "a.png", "global_caption": "g",
                                      "segment": [obj(10, 20, 50, 60), obj(-5, 30, 40, 95, "cap")]}])
    item = MgrsItems(str(tmp_path / "t.json"), max_boxes=4, min_size=10, max_size=None)[0]
    sample = ViewMaker(lambda im: torch.from_numpy(np.asarray(im).copy()))(
        Image.open(tmp_path / "a.png"), item.caption, seed=0, regions=item.regions
    )
    scale = torch.tensor([100, 80, 100, 80])
    got = {tuple((b * scale).round().long().tolist()): v for b, v in zip(sample["obj_box"], sample["obj"])}
    expected = {(10, 20, 50, 60): array[20:60, 10:50], (0, 30, 40, 80): array[30:80, 0:40]}
    assert got.keys() == expected.keys()
    for box, pixels in expected.items():
        assert torch.equal(got[box], torch.from_numpy(pixels))


def _world(tmp_path):
    """Six items: objects of every kind, an object-less item, a missing image, a caption-less item."""
    write_images(str(tmp_path / "imgs"), [f"{i}.png" for i in range(6)], size=(128, 96))
    items = [
        {"global_filepath": "0.png", "global_caption": "zero",
         "segment": [obj(0, 0, 70, 70, "field", 1, 128, 96), {"bbox": [60, 0, 128, 90, 128, 96], "cap": "a pond"}]},
        {"global_filepath": "1.png", "detailed_caption": "one", "segment": []},
        {"global_filepath": "missing.png", "global_caption": "gone", "segment": []},
        {"global_filepath": "3.png", "global_caption": "three",
         "segment": [obj(0, 0, 64 + i, 65, "house", 2, 128, 96) for i in range(6)]},
        {"global_filepath": "4.png", "brief_caption": "four", "segment": [obj(0, 0, 10, 10, "tiny", 9, 128, 96)]},
        {"global_filepath": "5.png", "segment": [obj(0, 0, 70, 70, "field", 1, 128, 96)]},
    ]
    write_json(tmp_path / "text_info.json", items)
    return make_args(train_data=str(tmp_path / "text_info.json"), train_dataset_type="json", method="farslip2",
                     root_train_img_dir=str(tmp_path / "imgs"), batch_size=2, min_size=64, max_size=1024)


def test_mgrs_loader_objects_crops_and_bad_items(tmp_path):
    args = _world(tmp_path)
    info = get_train_data(with_views(args, crops=True, objects=True), char_tokenizer, 32)
    assert info.num_batches == 3 and info.num_samples == 6
    seen, skipped, rows = [], 0, {}
    for batch in info.dataloader:
        assert batch["image"].shape == (2, 3, 32, 32)  # bad items are replaced: batches stay full
        assert batch["crop"].shape == (8, 3, 32, 32) and batch["crop_valid"].all()
        n_obj = int(batch["obj_valid"].sum())
        assert batch["obj"].shape == (n_obj, 3, 32, 32) and batch["obj_text"].shape[0] == n_obj
        assert batch["obj_label"].shape == (n_obj,)
        texts = [decode_text(t) for t in batch["obj_text"]]
        start = 0
        for b, caption in enumerate(decode_text(t) for t in batch["text"]):
            count = int(batch["obj_valid"][b].sum())
            assert batch["obj_valid"][b, :count].all()  # valid slots first, then padding
            rows[caption] = (texts[start:start + count], batch["obj_label"][start:start + count].tolist())
            assert (batch["obj_box"][b, count:] == 0).all()
            start += count
            seen.append(caption)
        skipped += int(batch["skipped"])
    assert skipped == 2  # the missing image and the caption-less item
    assert "gone" not in seen and len(seen) == 6
    assert sorted(rows["zero"][1]) == [-1, 1]
    assert sorted(rows["zero"][0]) == ["a pond", "a satellite image of field"]
    assert rows["one"] == ([], []) and rows["four"] == ([], [])  # global pair kept, no object
    assert rows["three"] == (["a satellite image of house"] * 4, [2] * 4)  # capped at N = 4


def test_mgrs_loader_is_independent_of_worker_count(tmp_path):
    args = _world(tmp_path)
    batches = []
    for workers in (0, 2):
        info = get_train_data(with_views(args, workers=workers, crops=True, objects=True), char_tokenizer, 32,
                              epoch=3)
        batches.append(list(info.dataloader))
    for a, b in zip(*batches):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same epoch reached by set_epoch on a loader built at epoch 0 (persistent workers too)
    info = get_train_data(with_views(args, workers=2, crops=True, objects=True), char_tokenizer, 32)
    list(info.dataloader)
    info.set_epoch(3)
    for a, b in zip(batches[0], info.dataloader):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_mgrs_rejects_non_list_json(tmp_path):
    write_json(tmp_path / "t.json", {"items": []})
    with pytest.raises(ValueError, match="JSON list"):
        MgrsItems(str(tmp_path / "t.json"))
    assert not os.path.exists(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="missing.json"):
        MgrsItems(str(tmp_path / "missing.json"))

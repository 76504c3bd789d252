"""Local views: grid layout, random-crop boxes, pixels of each view, per-sample seeding."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from farslip.data.transforms import squash_transform
from farslip.data.views import (
    ViewMaker, grid_boxes, grid_shape, normalise_boxes, random_crop_boxes, sample_seed, seeded,
)

from ._data_utils import image_array


def raw_pixels(image: Image.Image) -> torch.Tensor:
    """A 'transform' that keeps the exact pixels, so views can be compared with array slices."""
    return torch.from_numpy(np.asarray(image).copy())


@pytest.mark.parametrize("n", range(1, 41))
def test_grid_shape_is_largest_divisor_not_above_sqrt(n):
    divisors_below_root = [d for d in range(1, n + 1) if n % d == 0 and d * d <= n]
    rows, cols = grid_shape(n)
    assert rows == divisors_below_root[-1]
    assert rows * cols == n and rows <= cols


def test_grid_shape_hand_examples():
    assert [grid_shape(n) for n in (1, 2, 4, 6, 7, 9, 12)] == [(1, 1), (1, 2), (2, 2), (2, 3), (1, 7), (3, 3), (3, 4)]


def test_grid_boxes_row_major_hand_example():
    # 100 x 60 image, 6 cells -> 2 rows x 3 columns; edges 0, 33, 67, 100 and 0, 30, 60.
    assert grid_boxes(100, 60, 6) == [
        (0, 0, 33, 30), (33, 0, 67, 30), (67, 0, 100, 30),
        (0, 30, 33, 60), (33, 30, 67, 60), (67, 30, 100, 60),
    ]


@pytest.mark.parametrize("width,height,n", [(97, 61, 4), (50, 50, 6), (31, 77, 8), (40, 23, 5)])
def test_grid_boxes_tile_the_image_exactly_once(width, height, n):
    cover = np.zeros((height, width), dtype=int)
    for x1, y1, x2, y2 in grid_boxes(width, height, n):
        cover[y1:y2, x1:x2] += 1
    assert (cover == 1).all()


def test_random_crop_boxes_respect_scale_ratio_and_image():
    image = Image.new("RGB", (200, 200))
    with seeded(123):
        boxes = [b for _ in range(100) for b in random_crop_boxes(image, 4)]
    assert len(boxes) == 400
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 200
        # w, h are rounded to whole pixels: allow one pixel of slack on each side
        assert 0.3 * 200 * 200 <= (w + 1) * (h + 1) and (w - 1) * (h - 1) <= 0.7 * 200 * 200
        assert (w - 1) / (h + 1) <= 4 / 3 and 3 / 4 <= (w + 1) / (h - 1)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) / 40000 for b in boxes]
    assert min(areas) < 0.4 and max(areas) > 0.6  # the whole scale range is used


def test_normalise_boxes_hand_example():
    got = normalise_boxes([(10, 20, 50, 40), (0, 0, 100, 80)], 100, 80)
    assert torch.allclose(got, torch.tensor([[0.1, 0.25, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]]))


@pytest.mark.parametrize("method", ["randomcrops", "grids"])
def test_crop_views_are_the_box_pixels_of_the_original(method):
    width, height = 90, 70
    array = image_array(7, width, height)
    sample = ViewMaker(raw_pixels, crop_method=method, max_boxes=4)(Image.fromarray(array), "cap", seed=5)
    assert torch.equal(sample["image"], torch.from_numpy(array))
    assert len(sample["crop"]) == 4 and sample["crop_box"].shape == (4, 4)
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    for view, box in zip(sample["crop"], sample["crop_box"]):
        x1, y1, x2, y2 = (box.double() * scale).round().long().tolist()
        assert torch.equal(view, torch.from_numpy(array[y1:y2, x1:x2]))


def test_views_depend_only_on_the_sample_seed_and_leave_global_rng_alone():
    image = Image.fromarray(image_array(3, 64, 48))
    make = ViewMaker(squash_transform(32, jitter=True), crop_method="randomcrops", max_boxes=4)
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    first = make(image, "c", seed=sample_seed(0, 1, "key"))
    assert torch.equal(torch.rand(3), expected_next)  # the loader did not consume the global stream
    again = make(image, "c", seed=sample_seed(0, 1, "key"))
    other = make(image, "c", seed=sample_seed(0, 2, "key"))
    assert torch.equal(first["crop_box"], again["crop_box"]) and torch.equal(first["image"], again["image"])
    assert all(torch.equal(a, b) for a, b in zip(first["crop"], again["crop"]))
    assert not torch.equal(first["crop_box"], other["crop_box"])


def test_stage2_jitter_is_drawn_independently_per_view():
    flat = Image.new("RGB", (64, 64), (90, 140, 60))  # every grid cell has the same pixels
    jittered = ViewMaker(squash_transform(32, jitter=True), crop_method="grids", max_boxes=9)(flat, "c", seed=1)
    plain = ViewMaker(squash_transform(32), crop_method="grids", max_boxes=9)(flat, "c", seed=1)
    assert all(torch.equal(plain["crop"][0], v) for v in plain["crop"][1:])
    # a jitter shared by all views would leave one distinct colour; p(no jitter, no grey) = 0.16 per view
    assert len({tuple(v.mean(dim=(1, 2)).tolist()) for v in jittered["crop"] + [jittered["image"]]}) >= 5


def test_sample_seed_is_stable_across_processes_and_distinguishes_parts():
    code = "from farslip.data.views import sample_seed; print(sample_seed(0, 1, 'a'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(other.stdout) == sample_seed(0, 1, "a")
    assert len({sample_seed(0, e, k) for e in range(3) for k in "abc"}) == 9
    assert 0 <= sample_seed("x") < 2**63

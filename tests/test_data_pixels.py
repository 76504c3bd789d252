"""uint8 training views (farslip.data.pixels, farslip.data.jitter) against the reference path:
torchvision's PIL transforms with ToTensor + Normalize (``squash_transform``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from farslip.data.jitter import adjust_hue, apply_jitter, draw_jitter
from farslip.data.pixels import SquashViews
from farslip.synth.scene import render_scene
from farslip.data.transforms import (COLOR_JITTER, COLOR_JITTER_P, GRAYSCALE_P, normalize_uint8,
                                     normalize_views, squash_transform)
from farslip.data.views import ViewMaker, Region, random_crop_boxes, seeded

from ._data_utils import image_array


def scenes(count: int = 4) -> list[Image.Image]:
    """Aerial-looking images of several sizes (the synthetic world's renderer)."""
    return [Image.fromarray(render_scene(7, "pixels-test", i, profile="mgrs").image) for i in range(count)]


def test_uint8_then_normalise_equals_totensor_normalize_bit_for_bit():
    array = image_array(3, 45, 31)
    reference = T.Compose([T.ToTensor(), T.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                     (0.26862954, 0.26130258, 0.27577711))])
    x = torch.from_numpy(array).permute(2, 0, 1)
    assert torch.equal(normalize_uint8(x), reference(Image.fromarray(array)))
    batch = {"image": x[None].contiguous(), "crop": torch.zeros(0, 3, 31, 45, dtype=torch.uint8),
             "obj": torch.ones(2, 3, 4, 4)}  # float views are left alone
    out = normalize_views(batch)
    assert torch.equal(out["image"][0], normalize_uint8(x)) and out["crop"].dtype == torch.float32
    assert out["obj"] is batch["obj"]


@pytest.mark.parametrize("factor", [0.1, -0.1, 0.0371, -0.0042, 0.0, 0.5, -0.5])
def test_table_hue_shift_equals_torchvision_on_images(factor):
    for image in scenes(2) + [Image.fromarray(image_array(1, 64, 48))]:
        want = TF.adjust_hue(image, factor)
        assert np.array_equal(np.asarray(adjust_hue(image, factor)), np.asarray(want))


def test_table_hue_shift_equals_torchvision_on_every_colour():
    index = np.arange(1 << 24, dtype=np.uint32)
    every = np.stack([index >> 16, (index >> 8) & 255, index & 255], -1).astype(np.uint8)
    image = Image.fromarray(every.reshape(4096, 4096, 3))
    assert np.array_equal(np.asarray(adjust_hue(image, 0.0737)), np.asarray(TF.adjust_hue(image, 0.0737)))


def test_jitter_draws_and_pixels_equal_torchvision():
    reference = T.Compose([T.RandomApply([T.ColorJitter(**COLOR_JITTER)], p=COLOR_JITTER_P),
                           T.RandomGrayscale(p=GRAYSCALE_P)])
    image = scenes(1)[0].resize((40, 40))
    kinds = set()
    for seed in range(60):
        with seeded(seed):
            want = np.asarray(reference(image))
            after_want = torch.rand(1)
        with seeded(seed):
            draw = draw_jitter()
            got = np.asarray(apply_jitter(image, draw))
            after_got = torch.rand(1)
        assert np.array_equal(got, want), seed
        assert torch.equal(after_got, after_want)  # the same draws, so the stream goes on alike
        kinds.add((draw.order is not None, draw.gray))
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}


@pytest.mark.parametrize("jitter", [False, True])
def test_pil_views_equal_the_reference_transform_bit_for_bit(jitter):
    reference = squash_transform(48, jitter=jitter)
    fast = SquashViews(48, jitter=jitter, resize="pil")
    for k, image in enumerate(scenes(3)):
        with seeded(k):
            boxes = [None] + random_crop_boxes(image, 3)
        for i, box in enumerate(boxes):
            with seeded(100 + i):
                want = reference(image if box is None else image.crop(box))
            with seeded(100 + i):
                got = fast.render(fast.source(image), box, fast.draw())
            assert got.dtype == torch.uint8 and torch.equal(normalize_uint8(got), want)


# The documented tolerance of --view-resize torch (see farslip.data.pixels)
MAX_DIFF, FRAC_DIFF, FRAC_ABOVE_1, MEAN_DIFF, BIAS = 12, 0.1, 1e-3, 0.1, 0.01


@pytest.mark.parametrize("size", [224, 64])
def test_torch_resize_is_within_the_documented_tolerance_of_pil(size):
    diffs = []
    torch_views, pil_views = SquashViews(size, resize="torch"), SquashViews(size, resize="pil")
    for k, image in enumerate(scenes(4)):
        with seeded(k):
            boxes = [None] + random_crop_boxes(image, 4)
        for box in boxes:
            a = torch_views.render(torch_views.source(image), box, None)
            b = pil_views.render(pil_views.source(image), box, None)
            assert a.shape == b.shape == (3, size, size) and a.dtype == torch.uint8
            diffs.append((a.int() - b.int()).flatten())
    signed = torch.cat(diffs).float()
    d = signed.abs()
    assert signed.mean().abs() <= BIAS  # rounding differences, not a shift
    assert d.max() <= MAX_DIFF and (d > 0).float().mean() <= FRAC_DIFF
    assert (d > 1).float().mean() <= FRAC_ABOVE_1 and d.mean() <= MEAN_DIFF
    assert d.max() >= 1  # it is a different kernel: the test would notice if it became PIL's


def test_torch_views_are_jittered_as_their_resized_pixels():
    """With jitter, a torch-resized view is the drawn jitter of exactly its resized pixels."""
    plain, jittered = SquashViews(48, resize="torch"), SquashViews(48, jitter=True, resize="torch")
    for k, image in enumerate(scenes(3)):
        with seeded(k):
            box = random_crop_boxes(image, 1)[0]
        torch.manual_seed(k)
        draw = jittered.draw()
        resized = plain.render(plain.source(image), box, None)
        want = apply_jitter(Image.fromarray(resized.permute(1, 2, 0).contiguous().numpy()), draw)
        got = jittered.render(jittered.source(image), box, draw)
        assert torch.equal(got, torch.from_numpy(np.array(want)).permute(2, 0, 1))


def _sample(views, image, object_pixels="all"):
    regions = [Region((0, 0, 70, 60), "a satellite image of pond", 3),
               Region((20, 10, 90, 100), "a red roof next to a road", -1),
               Region((5, 30, 80, 95), "a satellite image of road", 1)]
    maker = ViewMaker(views, crop_method="randomcrops", max_boxes=4, object_pixels=object_pixels)
    return maker(image, "caption", seed=11, regions=lambda w, h: list(regions))


def test_view_maker_with_pil_views_equals_the_reference_and_skipping_keeps_the_rest():
    image = scenes(1)[0]
    want = _sample(squash_transform(32, jitter=True), image)
    got = _sample(SquashViews(32, jitter=True, resize="pil"), image)
    assert torch.equal(normalize_uint8(got["image"]), want["image"])
    for kind in ("crop", "obj"):
        assert len(got[kind]) == len(want[kind])
        assert all(torch.equal(normalize_uint8(g), w) for g, w in zip(got[kind], want[kind]))
    for key in ("crop_box", "obj_box"):
        assert torch.equal(got[key], want[key])
    labelled = _sample(SquashViews(32, jitter=True, resize="pil"), image, "labelled")
    assert labelled["obj_rows"] == [0, 2] and len(labelled["obj"]) == 2
    assert all(torch.equal(labelled["obj"][i], got["obj"][r]) for i, r in enumerate(labelled["obj_rows"]))
    assert labelled["obj_label"] == got["obj_label"] and torch.equal(labelled["obj_box"], got["obj_box"])
    none = _sample(SquashViews(32, jitter=True, resize="pil"), image, "none")
    assert none["obj"] == [] and none["obj_rows"] == [] and none["obj_text"] == got["obj_text"]
    assert torch.equal(none["crop"][-1], got["crop"][-1])

"""uint8 training views (farslip.data.pixels, farslip.data.jitter) against the reference path:
torchvision's PIL transforms with ToTensor + Normalize (``squash_transform``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from farslip.data import jitter as jitter_module
from farslip.data.jitter import JitterDraw, adjust_hue, apply_jitter, draw_jitter, jitter_planes, planes_match_pil
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


# ---- the jitter on uint8 planes (jitter_planes) against PIL's ----

def _planes(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


def test_numpy_blend_equals_pil_blend_on_every_pair_of_8_bit_values():
    """PIL's Image.blend(a, b, f) for all 65536 (a, b): the ends of the jitter's ranges, 1 +- one
    float32 step, outside them (0, 2, 3.7: a clip at both ends) and random factors."""
    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    factors = [0.6, 1.4, 0.8, 1.2, 0.9, 1.1, 1.0, 0.0, 2.0, 3.7, float(np.nextafter(np.float32(1), 0)),
               float(np.nextafter(np.float32(1), 2)), 1 + 1e-9] + list(np.random.default_rng(3).uniform(0.55, 1.45, 40))
    for f in factors:
        want = np.asarray(Image.blend(Image.fromarray(a), Image.fromarray(b), float(f)))
        got = jitter_module._blend(b.astype(np.float32), a.astype(np.float32), float(f))
        assert np.array_equal(got, want), f
        black = jitter_module._blend(b.astype(np.float32), None, float(f))  # base None = black
        assert np.array_equal(black, np.asarray(Image.blend(Image.new("L", (256, 256)), Image.fromarray(b), float(f))))


def test_numpy_luma_equals_pil_convert_L_on_every_colour():
    index = np.arange(1 << 24, dtype=np.uint32)
    for chunk in np.split(index, 16):  # 2^20 colours at a time
        rgb = np.stack([chunk >> 16, (chunk >> 8) & 255, chunk & 255]).astype(np.uint8)  # [3, n]
        want = np.asarray(Image.fromarray(np.ascontiguousarray(rgb.T).reshape(1024, 1024, 3)).convert("L"))
        got = jitter_module._luma(rgb.astype(np.float32), np.empty(chunk.size, np.float32))
        assert np.array_equal(got.reshape(1024, 1024).astype(np.uint8), want)


def test_planes_hue_equals_torchvision_on_every_colour():
    index = np.arange(1 << 24, dtype=np.uint32)
    for k, chunk in enumerate(np.split(index, 16)):
        rgb = np.stack([chunk >> 16, (chunk >> 8) & 255, chunk & 255]).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(rgb.T).reshape(1024, 1024, 3))
        factor = (0.0737, -0.1, 0.1, -0.031)[k % 4]
        want = np.asarray(TF.adjust_hue(image, factor)).reshape(-1, 3).T
        assert np.array_equal(jitter_module._hue(rgb.astype(np.float32), factor), want), factor


def _all_draws():
    """Every order of the four adjustments (with and without grey), with factors across the
    ranges, plus grey alone and no change."""
    import itertools
    rng = np.random.default_rng(5)
    draws = []
    for i, order in enumerate(itertools.permutations(range(4))):
        factors = (float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.8, 1.2)),
                   float(rng.uniform(-0.1, 0.1)))
        if i < 4:  # the ends of the ranges
            factors = ((0.6, 1.4, 0.8, -0.1), (1.4, 0.6, 1.2, 0.1), (1.4, 1.4, 1.2, 0.0), (0.6, 0.6, 0.8, 0.05))[i]
        draws.append(JitterDraw(order, factors, i % 3 == 0))
    return draws + [JitterDraw(None, None, True), JitterDraw(None, None, False)]


def test_jitter_planes_equals_apply_jitter_and_torchvision():
    images = scenes(2) + [Image.fromarray(image_array(2, 57, 41)), Image.fromarray(image_array(4, 224, 224)),
                          Image.new("RGB", (16, 9), (200, 30, 90))]  # one colour: contrast's mean is exact
    for image in images:
        for draw in _all_draws():
            want = np.asarray(apply_jitter(image, draw))
            got = jitter_planes(_planes(image), draw)
            assert got.dtype == np.uint8 and got.shape == (3, image.height, image.width)
            assert np.array_equal(got.transpose(1, 2, 0), want), draw
            # strided input (the HWC array seen as planes) gives the same
            assert np.array_equal(jitter_planes(np.asarray(image).transpose(2, 0, 1), draw), got)
    reference = T.Compose([T.RandomApply([T.ColorJitter(**COLOR_JITTER)], p=COLOR_JITTER_P),
                           T.RandomGrayscale(p=GRAYSCALE_P)])
    image = scenes(1)[0].resize((64, 48))
    for seed in range(40):  # the draws and pixels of torchvision itself
        with seeded(seed):
            want = np.asarray(reference(image))
        with seeded(seed):
            got = jitter_planes(_planes(image), draw_jitter())
        assert np.array_equal(got.transpose(1, 2, 0), want), seed


def test_jitter_planes_leaves_unchanged_planes_alone():
    planes = _planes(scenes(1)[0])
    assert jitter_planes(planes, JitterDraw(None, None, False)) is planes


def test_planes_fall_back_to_pil_where_the_arithmetic_differs(monkeypatch, caplog):
    """A platform whose PIL rounds otherwise (simulated: a blend in float64) is caught by the
    start-up check, which sends jitter_planes through PIL: still PIL's pixels."""
    assert planes_match_pil()
    image = Image.fromarray(image_array(9, 40, 30))
    draw = JitterDraw((2, 0, 3, 1), (1.37, 0.61, 1.19, 0.07), False)
    want = np.asarray(apply_jitter(image, draw))
    exact = jitter_module._blend

    def float64_blend(x, base, factor):  # rounds differently from PIL at some pixels
        y = x.astype(np.float64)
        if base is not None:
            y = base + factor * (y - base)
        else:
            y = factor * y
        x[...] = np.clip(np.floor(y), 0, 255)
        return x

    monkeypatch.setattr(jitter_module, "_blend", float64_blend)
    jitter_module.planes_match_pil.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="farslip.data.jitter"):
            assert not planes_match_pil()
        assert "does not reproduce this PIL" in caplog.text
        assert np.array_equal(jitter_planes(_planes(image), draw).transpose(1, 2, 0), want)
        # the broken kernel would have differed (the check is not vacuous)
        assert not np.array_equal(jitter_module._jitter_planes(_planes(image), draw).transpose(1, 2, 0), want)
    finally:
        monkeypatch.setattr(jitter_module, "_blend", exact)
        jitter_module.planes_match_pil.cache_clear()
    assert planes_match_pil()

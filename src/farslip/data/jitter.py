"""The stage-2 colour jitter with its randomness drawn apart from its pixels (SPEC section 3).

``RandomApply([ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)`` then ``RandomGrayscale(p=0.2)``, as
torchvision runs them on a PIL image, split in two:

* :func:`draw_jitter` makes exactly torchvision's random draws, in its order, from torch's
  global CPU generator, so a view whose pixels are not needed can still consume its share of
  the sample's random stream (the other views keep their pixels);
* :func:`apply_jitter` applies them to a PIL image: brightness, contrast, saturation and
  grayscale through torchvision's own PIL functions; the hue shift through two lookup tables
  that hold PIL's own RGB->HSV and HSV->RGB conversions of every 8-bit colour
  (:func:`hue_tables`), which is what ``adjust_hue`` computes (convert to HSV, add to H modulo
  256, convert back) without its per-pixel floating-point conversions;
* :func:`jitter_planes` applies them to uint8 planes [3, H, W] (what the torch resize gives),
  with no PIL image in between: the same pixels as :func:`apply_jitter`, computed with numpy
  as PIL computes them. PIL's ``Image.blend(a, b, f)``, behind brightness (a = black),
  contrast (a = the grey of the image's mean luma, rounded) and saturation (a = the luma),
  is ``a + f * (b - a)`` in float32 (``f`` cast to float) truncated to 0..255; its luma is
  ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``. Here both run in float32 on whole numbers
  (every partial sum of the luma is below 2^24, so exact), and the hue shift uses the same
  tables. About 2x faster per jittered view (``scripts/bench.py data kernels``). Whether this
  platform's PIL rounds alike (a build that fuses PIL's multiply-add would not, at rare
  pixels) is checked once per process (:func:`planes_match_pil`); where it does not,
  :func:`jitter_planes` goes through :func:`apply_jitter` instead.

The tables take 128 MiB and a few seconds to build, once per process; building them before
the loader forks its workers (``get_train_data`` does) shares them.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import ColorJitter

from .transforms import COLOR_JITTER, COLOR_JITTER_P, GRAYSCALE_P

logger = logging.getLogger(__name__)

_RANGES = ColorJitter(**COLOR_JITTER)  # torchvision's own reading of the ranges


@dataclass(frozen=True)
class JitterDraw:
    """One view's jitter: ``order`` of (brightness, contrast, saturation, hue) ids and their
    factors when the colour jitter applies (else None), and whether it turns grey."""

    order: Optional[tuple[int, ...]]
    factors: Optional[tuple[float, float, float, float]]
    gray: bool


def draw_jitter() -> JitterDraw:
    """torchvision's draws for one view, same calls in the same order (RandomApply, then
    ColorJitter.get_params, then RandomGrayscale)."""
    order = factors = None
    if not COLOR_JITTER_P < torch.rand(1):
        order = tuple(int(i) for i in torch.randperm(4))
        factors = tuple(float(torch.empty(1).uniform_(lo, hi)) for lo, hi in
                        (_RANGES.brightness, _RANGES.contrast, _RANGES.saturation, _RANGES.hue))
    return JitterDraw(order, factors, bool(torch.rand(1) < GRAYSCALE_P))


@functools.lru_cache(maxsize=1)
def hue_tables() -> tuple[np.ndarray, np.ndarray]:
    """PIL's conversions of all 2^24 colours, as uint32 tables: ``hsv[b<<16|g<<8|r] =
    h<<16|s<<8|v`` (indexed like an RGBX pixel read as a little-endian uint32, without X) and
    ``rgbx[h<<16|s<<8|v]`` = the RGB colour as the 4 bytes R, G, B, X."""
    index = np.arange(1 << 24, dtype=np.uint32)
    every = np.empty((1 << 24, 3), dtype=np.uint8)
    every[:, 0], every[:, 1], every[:, 2] = index >> 16, index >> 8, index
    every = every.reshape(4096, 4096, 3)
    # as RGB, `every` holds colour r<<16|g<<8|b at position `index`; its HSV, reordered below
    hsv = np.asarray(Image.fromarray(every, "RGB").convert("HSV")).reshape(-1, 3).astype(np.uint32)
    packed = (hsv[:, 0] << 16) | (hsv[:, 1] << 8) | hsv[:, 2]
    r, g, b = index >> 16, (index >> 8) & 0xFF, index & 0xFF
    table = np.empty(1 << 24, dtype=np.uint32)
    table[(b << 16) | (g << 8) | r] = packed
    rgbx = np.asarray(Image.fromarray(every, "HSV").convert("RGBX")).reshape(-1, 4)
    return table, np.ascontiguousarray(rgbx).view("<u4").reshape(-1)


def _hue_shift(factor: float) -> int:
    """adjust_hue's wrap-around shift of H (0..255) for ``factor``."""
    if not -0.5 <= factor <= 0.5:
        raise ValueError(f"hue factor {factor} is not in [-0.5, 0.5]")
    return int(np.int32(factor * 255).astype(np.uint8))


def adjust_hue(image: Image.Image, factor: float) -> Image.Image:
    """``torchvision.transforms.functional.adjust_hue`` of an RGB PIL image, by table lookup."""
    shift = _hue_shift(factor)
    hsv, rgbx = hue_tables()
    pixels = np.asarray(image.convert("RGBX")).view("<u4")[..., 0]  # x<<24 | b<<16 | g<<8 | r
    moved = (hsv[pixels & 0xFFFFFF] + (shift << 16)) & 0xFFFFFF
    return Image.frombytes("RGB", image.size, rgbx[moved].tobytes(), "raw", "RGBX")


def apply_jitter(image: Image.Image, draw: JitterDraw) -> Image.Image:
    """The drawn jitter on an RGB PIL image (torchvision's ColorJitter / RandomGrayscale)."""
    if draw.order is not None:
        brightness, contrast, saturation, hue = draw.factors
        for fn in draw.order:
            if fn == 0:
                image = TF.adjust_brightness(image, brightness)
            elif fn == 1:
                image = TF.adjust_contrast(image, contrast)
            elif fn == 2:
                image = TF.adjust_saturation(image, saturation)
            else:
                image = adjust_hue(image, hue)
    if draw.gray:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    return image


# ---- the same jitter on uint8 planes [3, H, W] (module docstring) ----

_F = np.float32


def _luma(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """PIL's RGB -> L of float32 planes [3, n] of whole numbers 0..255, into ``out`` [n]:
    ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``, exact in float32 (every partial sum is a
    whole number below 2^24; the shift is a multiplication by 2^-16, exact, and a floor)."""
    np.multiply(x[0], _F(19595), out=out)
    out += x[1] * _F(38470)
    out += x[2] * _F(7471)
    out += _F(0x8000)
    out *= _F(1.0 / 65536)
    return np.floor(out, out=out)


def _blend(x: np.ndarray, base, factor: float) -> np.ndarray:
    """``Image.blend(base, x, factor)`` in place on float32 whole numbers: ``base + f * (x -
    base)`` with f = float32(factor), each operation rounded to float32 as PIL's C does, then
    truncated (a floor: only values that the clip sets to 0 can be negative) and clipped to
    0..255. A ``base`` of None is black (0): x - 0 and + 0 change nothing, so they are left out."""
    if base is not None:
        x -= base
    x *= _F(factor)
    if base is not None:
        x += base
    np.floor(x, out=x)
    return np.clip(x, 0, 255, out=x)


def _hue(x: np.ndarray, factor: float) -> np.ndarray:
    """:func:`adjust_hue` of float32 planes [3, n]: the two table lookups, new planes."""
    shift = _hue_shift(factor)
    hsv, rgbx = hue_tables()
    index = x[2] * _F(256)  # (b * 256 + g) * 256 + r: whole numbers below 2^24, exact in float32
    index += x[1]
    index *= _F(256)
    index += x[0]
    # take(mode="wrap") of int32 indices is the quickest gather here (every index is in range)
    moved = np.take(hsv, index.astype(np.int32), mode="wrap")
    moved += np.uint32(shift << 16)
    moved &= np.uint32(0xFFFFFF)
    rgb = np.take(rgbx, moved.view(np.int32), mode="wrap")  # r | g<<8 | b<<16 | x<<24
    out = np.empty_like(x)
    np.bitwise_and(rgb, 0xFF, out=moved)
    out[0] = moved
    np.right_shift(rgb, 8, out=moved)
    out[1] = np.bitwise_and(moved, 0xFF, out=moved)
    np.right_shift(rgb, 16, out=moved)
    out[2] = np.bitwise_and(moved, 0xFF, out=moved)
    return out


def _jitter_planes(planes: np.ndarray, draw: JitterDraw) -> np.ndarray:
    _, h, w = planes.shape
    n = h * w
    x = np.empty((3, h, w), np.float32)
    np.copyto(x, planes)  # any strides (a transposed HWC array too)
    x = x.reshape(3, n)
    luma = np.empty(n, np.float32)
    if draw.order is not None:
        brightness, contrast, saturation, hue = draw.factors
        for fn in draw.order:
            if fn == 0:  # ImageEnhance.Brightness: blend with black
                _blend(x, None, brightness)
            elif fn == 1:  # ImageEnhance.Contrast: blend with the grey of int(mean luma + 0.5)
                total = int(_luma(x, luma).sum(dtype=np.float64))  # whole numbers: an exact sum
                _blend(x, _F(int(total / n + 0.5)), contrast)
            elif fn == 2:  # ImageEnhance.Color: blend with the luma
                _blend(x, _luma(x, luma), saturation)
            else:
                x = _hue(x, hue)
    if draw.gray:  # rgb_to_grayscale(num_output_channels=3): the luma in every channel
        x[:] = _luma(x, luma)
    return x.astype(np.uint8).reshape(3, h, w)


def jitter_planes(planes: np.ndarray, draw: JitterDraw) -> np.ndarray:
    """:func:`apply_jitter` of uint8 planes [3, H, W] (an RGB image's channels; any strides):
    the same pixels, as a new C-contiguous uint8 [3, H, W] array (or ``planes`` itself when
    the draw changes nothing). Goes through PIL where :func:`planes_match_pil` is False."""
    if draw.order is None and not draw.gray:
        return planes
    if not planes_match_pil():
        image = Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(p)) for p in planes])
        return np.ascontiguousarray(np.asarray(apply_jitter(image, draw)).transpose(2, 0, 1))
    return _jitter_planes(planes, draw)


# factors of the check: the ends of the jitter's ranges, 1 +- a little, and random ones inside
_CHECK_FACTORS = (0.6, 1.4, 0.9999999, 1.0000001, 0.75, 1.25)


@functools.lru_cache(maxsize=1)
def planes_match_pil() -> bool:
    """Whether :func:`jitter_planes`'s arithmetic gives this PIL's pixels, checked once per
    process (tens of ms): the blend of every (base, value) pair of 8-bit numbers for factors
    across the jitter's ranges, the luma of random colours, and whole jitters of a random image
    in every order. False (with a warning) sends :func:`jitter_planes` through PIL."""
    rng = np.random.default_rng(20240613)
    base, value = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    factors = list(_CHECK_FACTORS) + list(rng.uniform(0.6, 1.4, 26))
    problems = []
    for f in factors:
        want = np.asarray(Image.blend(Image.fromarray(base), Image.fromarray(value), float(f)))
        got = _blend(value.astype(np.float32), base.astype(np.float32), float(f))
        if not np.array_equal(want, got):
            problems.append(f"blend with factor {f!r}")
            break
    colours = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    colours[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3],
                      [254, 255, 253], [128, 128, 127]]
    planes = np.ascontiguousarray(colours.transpose(2, 0, 1))
    luma = _luma(planes.reshape(3, -1).astype(np.float32), np.empty(64 * 64, np.float32))
    if not np.array_equal(luma.reshape(64, 64).astype(np.uint8), np.asarray(Image.fromarray(colours).convert("L"))):
        problems.append("luma")
    image = Image.fromarray(colours)
    for k, order in enumerate(((0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1))):
        draw = JitterDraw(order, (0.6 + 0.2 * k, 1.4 - 0.2 * k, 0.7 + 0.15 * k, 0.1 - 0.06 * k), k % 2 == 1)
        if not np.array_equal(_jitter_planes(planes, draw).transpose(1, 2, 0), np.asarray(apply_jitter(image, draw))):
            problems.append(f"the jitter {draw}")
    if problems:
        logger.warning("the numpy colour jitter does not reproduce this PIL's pixels (%s): using PIL's, which is "
                       "slower", "; ".join(problems))
    return not problems

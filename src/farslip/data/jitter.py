"""The stage-2 colour jitter with its randomness drawn apart from its pixels (SPEC section 3).

``RandomApply([ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)`` then ``RandomGrayscale(p=0.2)``, as
torchvision runs them on a PIL image, split in two:

* :func:`draw_jitter` makes exactly torchvision's random draws, in its order, from torch's
  global CPU generator, so a view whose pixels are not needed can still consume its share of
  the sample's random stream (the other views keep their pixels);
* :func:`apply_jitter` applies them: brightness, contrast, saturation and grayscale through
  torchvision's own PIL functions; the hue shift through two lookup tables that hold PIL's
  own RGB->HSV and HSV->RGB conversions of every 8-bit colour (:func:`hue_tables`), which is
  what ``adjust_hue`` computes (convert to HSV, add to H modulo 256, convert back) without
  its per-pixel floating-point conversions: the same pixels, about 3x faster
  (``scripts/bench.py data kernels``).

The tables take 128 MiB and a few seconds to build, once per process; building them before
the loader forks its workers (``get_train_data`` does) shares them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import ColorJitter

from .transforms import COLOR_JITTER, COLOR_JITTER_P, GRAYSCALE_P

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


def adjust_hue(image: Image.Image, factor: float) -> Image.Image:
    """``torchvision.transforms.functional.adjust_hue`` of an RGB PIL image, by table lookup."""
    if not -0.5 <= factor <= 0.5:
        raise ValueError(f"hue factor {factor} is not in [-0.5, 0.5]")
    hsv, rgbx = hue_tables()
    pixels = np.asarray(image.convert("RGBX")).view("<u4")[..., 0]  # x<<24 | b<<16 | g<<8 | r
    shift = int(np.int32(factor * 255).astype(np.uint8))  # adjust_hue's wrap-around shift of H
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

"""Land-cover backgrounds of the synthetic scenes, drawn with whole-array numpy operations.

Each ``*_ground`` function returns (rgb uint8 [H, W, 3], land uint8 [H, W], info) where
``land`` holds indices into ``LAND_COVERS`` and ``info`` carries the geometry that the object
layout needs (river course, runway band, shoreline). Every scene class gets a ground with its own
dominant colour and texture, which is what makes scene classification learnable at 32 px.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .vocab import LAND_COVERS

FARMLAND, WOODLAND, SAND, WATER, GRASS, PAVEMENT = (LAND_COVERS.index(n) for n in LAND_COVERS)

Ground = tuple[np.ndarray, np.ndarray, dict]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random grid of ``cell``-px spacing, bicubic-upsampled."""
    cell = max(2, int(cell))
    gh, gw = height // cell + 3, width // cell + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    up = Image.fromarray(grid, mode="F").resize((gw * cell, gh * cell), Image.BICUBIC)
    return np.clip(np.asarray(up)[cell:cell + height, cell:cell + width], 0.0, 1.0)


_RAMP = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]


def blend(a: tuple, b: tuple, t: np.ndarray) -> np.ndarray:
    """Per-pixel interpolation between two colours, uint8 [H, W, 3]: a where t = 0, b where t = 1.

    Goes through a 256-entry colour table (t quantised to 1/255), several times cheaper than
    interpolating three float channels per pixel.
    """
    a_ = np.asarray(a, dtype=np.float32)
    table = (a_ + (np.asarray(b, dtype=np.float32) - a_) * _RAMP + 0.5).astype(np.uint8)
    return table[np.clip(t * 255.0 + 0.5, 0, 255).astype(np.uint8)]


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width]
    return xs.astype(np.float32), ys.astype(np.float32)


def _grass(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    return blend((92, 136, 60), (128, 164, 84), smooth_noise(rng, h, w, 20 * s))


def farmland_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Parcels of parallel crop stripes, each parcel with its own direction and palette."""
    palette = np.array([(206, 186, 92), (126, 168, 62), (156, 122, 78), (178, 196, 96),
                        (98, 142, 52)], dtype=np.uint8)
    xs, ys = _grid(h, w)
    split_x = int(w * rng.uniform(0.3, 0.7))
    split_y = int(h * rng.uniform(0.3, 0.7))
    parcel = (xs >= split_x).astype(np.int64) + 2 * (ys >= split_y).astype(np.int64)
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    for p in range(4):
        angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
        period = rng.uniform(8, 18) * s
        colours = palette[rng.choice(len(palette), size=2, replace=False)]
        stripe = np.floor((xs * np.cos(angle) + ys * np.sin(angle)) / period).astype(np.int64) % 2
        sel = parcel == p
        rgb[sel] = colours[stripe[sel]]
    # Narrow dirt tracks between the parcels.
    track = (np.abs(xs - split_x) < 2 * s) | (np.abs(ys - split_y) < 2 * s)
    rgb[track] = (150, 130, 100)
    land = np.full((h, w), FARMLAND, dtype=np.uint8)
    return rgb, land, {}


def forest_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Dark blotchy canopy with a few light-green clearings."""
    coarse = smooth_noise(rng, h, w, 26 * s)
    fine = smooth_noise(rng, h, w, 6 * s)
    rgb = blend((18, 58, 24), (58, 104, 42), 0.6 * coarse + 0.4 * fine)
    land = np.full((h, w), WOODLAND, dtype=np.uint8)
    clearing = coarse > 0.86
    rgb[clearing] = _grass(rng, h, w, s)[clearing]
    land[clearing] = GRASS
    return rgb, land, {}


def desert_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Orange sand with wavy dune ridges."""
    xs, ys = _grid(h, w)
    angle = rng.uniform(0, np.pi)
    wavelength = rng.uniform(18, 34) * s
    warp = 4.0 * smooth_noise(rng, h, w, 40 * s)
    ridge = 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / wavelength + warp)
    rgb = blend((224, 186, 124), (182, 136, 84), ridge ** 3)
    return rgb, np.full((h, w), SAND, dtype=np.uint8), {}


def _water(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    return blend((28, 64, 132), (44, 96, 168), smooth_noise(rng, h, w, 30 * s))


def lake_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """A large irregular blue lake with a sandy shore, in grassland."""
    xs, ys = _grid(h, w)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    ax, ay = w * rng.uniform(0.3, 0.42), h * rng.uniform(0.3, 0.42)
    dist = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 + 0.5 * (smooth_noise(rng, h, w, 30 * s) - 0.5)
    rgb = _grass(rng, h, w, s)
    land = np.full((h, w), GRASS, dtype=np.uint8)
    shore = dist < 1.15
    rgb[shore] = (196, 178, 132)
    land[shore] = SAND
    water = dist < 1.0
    rgb[water] = _water(rng, h, w, s)[water]
    land[water] = WATER
    return rgb, land, {}


def river_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """A winding river band across grassland, vertical or horizontal.

    ``info``: ``vertical`` (bool), ``centre`` (river centre per row, or per column when
    horizontal) and ``half_width``.
    """
    vertical = bool(rng.random() < 0.5)
    length, across = (h, w) if vertical else (w, h)
    t = np.arange(length, dtype=np.float32)
    centre = across * rng.uniform(0.35, 0.65) + across * rng.uniform(0.04, 0.1) * np.sin(
        2 * np.pi * t / (length * rng.uniform(0.8, 1.6)) + rng.uniform(0, 2 * np.pi))
    half = across * rng.uniform(0.08, 0.13)
    xs, ys = _grid(h, w)
    along, pos = (ys, xs) if vertical else (xs, ys)
    offset = np.abs(pos - centre[along.astype(np.int64)])
    rgb = _grass(rng, h, w, s)
    land = np.full((h, w), GRASS, dtype=np.uint8)
    bank = offset < half + 3 * s
    rgb[bank] = (150, 140, 100)
    land[bank] = SAND
    water = offset < half
    rgb[water] = _water(rng, h, w, s)[water]
    land[water] = WATER
    return rgb, land, {"vertical": vertical, "centre": centre, "half_width": float(half)}


def residential_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Light-gray pavement with lawns."""
    rgb = blend((164, 164, 158), (186, 184, 176), smooth_noise(rng, h, w, 10 * s))
    land = np.full((h, w), PAVEMENT, dtype=np.uint8)
    lawn = smooth_noise(rng, h, w, 40 * s) > 0.55
    rgb[lawn] = _grass(rng, h, w, s)[lawn]
    land[lawn] = GRASS
    return rgb, land, {}


def parking_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Dark asphalt with white bay lines; ``info`` gives the bay grid for the car layout."""
    rgb = blend((58, 60, 64), (80, 82, 86), smooth_noise(rng, h, w, 8 * s))
    bay_w = int(round(16 * s))
    bay_h = int(round(30 * s))
    aisle = int(round(22 * s))
    xs, ys = _grid(h, w)
    row_pitch = bay_h + aisle
    in_row = (ys % row_pitch) < bay_h
    line = in_row & ((xs % bay_w) < max(1, int(s)))
    rgb[line] = (228, 228, 228)
    land = np.full((h, w), PAVEMENT, dtype=np.uint8)
    return rgb, land, {"bay_w": bay_w, "bay_h": bay_h, "row_pitch": row_pitch}


def concrete_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Pale beige concrete of a tank farm."""
    rgb = blend((196, 188, 166), (214, 206, 184), smooth_noise(rng, h, w, 14 * s))
    return rgb, np.full((h, w), PAVEMENT, dtype=np.uint8), {}


def airport_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Dry grass crossed by a dark runway, with a pale apron beside it.

    ``info``: ``vertical`` and the apron rectangle ``apron`` (x0, y0, x1, y1, inclusive).
    """
    rgb = blend((132, 150, 96), (150, 164, 110), smooth_noise(rng, h, w, 24 * s))
    land = np.full((h, w), GRASS, dtype=np.uint8)
    vertical = bool(rng.random() < 0.5)
    across = w if vertical else h
    width = int(across * rng.uniform(0.12, 0.16))
    start = int(across * rng.uniform(0.08, 0.2))
    if rng.random() < 0.5:
        start = across - start - width
    xs, ys = _grid(h, w)
    pos, along = (xs, ys) if vertical else (ys, xs)
    runway = (pos >= start) & (pos < start + width)
    rgb[runway] = (74, 74, 80)
    land[runway] = PAVEMENT
    mid = start + width / 2
    dashes = (np.abs(pos - mid) < max(1.0, s)) & ((along // (14 * s)) % 2 == 0)
    rgb[dashes] = (236, 236, 236)
    # The apron fills the larger side of the runway, leaving a grass strip between.
    gap = int(10 * s)
    lo, hi = (start + width + gap, across - 4) if start < across / 2 else (4, start - gap)
    apron_pos = (pos >= lo) & (pos <= hi)
    rgb[apron_pos] = blend((168, 168, 164), (182, 182, 178), smooth_noise(rng, h, w, 12 * s))[apron_pos]
    land[apron_pos] = PAVEMENT
    apron = (lo, 0, hi, h - 1) if vertical else (0, lo, w - 1, hi)
    return rgb, land, {"vertical": vertical, "apron": apron}


def harbor_ground(rng: np.random.Generator, h: int, w: int, s: float) -> Ground:
    """Open water on one side, a paved quay on the other (``info['water_side']``)."""
    side = str(rng.choice(["left", "right", "top", "bottom"]))
    xs, ys = _grid(h, w)
    frac = rng.uniform(0.45, 0.6)
    water = {"left": xs < w * frac, "right": xs >= w * (1 - frac),
             "top": ys < h * frac, "bottom": ys >= h * (1 - frac)}[side]
    rgb = blend((136, 136, 134), (160, 158, 154), smooth_noise(rng, h, w, 12 * s))
    land = np.full((h, w), PAVEMENT, dtype=np.uint8)
    rgb[water] = _water(rng, h, w, s)[water]
    land[water] = WATER
    return rgb, land, {"water_side": side}

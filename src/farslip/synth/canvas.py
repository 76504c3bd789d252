"""Aligned drawing layers for one synthetic scene: RGB image, semantic mask, instance ids.

Every object is drawn with the same primitive on all three layers, so its pixels in the masks
are exactly its painted body. The instance layer is padded by a margin on every side: an object
that hangs over the image border is drawn whole there, and its annotation box is the tight box
of its instance pixels on the padded layer. That box therefore extends beyond the image exactly
as far as the object does, which is how real annotations of clipped objects look.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# A drawing primitive: ("rect", (x0, y0, x1, y1)), ("ellipse", (x0, y0, x1, y1)),
# ("rrect", (x0, y0, x1, y1, radius)) or ("poly", ((x, y), ...)), integer image coordinates,
# both corners inclusive as in PIL.
Shape = tuple[str, tuple]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Placed:
    """An object drawn on the canvas: its instance id and its tight box (x1, y1, x2, y2).

    The box uses pixel-edge coordinates: the object covers columns x1 .. x2 - 1 and rows
    y1 .. y2 - 1, and any of them may lie outside the image.
    """

    instance: int
    box: tuple[int, int, int, int]


def shape_extent(shapes: Sequence[Shape]) -> tuple[int, int, int, int]:
    """Inclusive bounding corners (x0, y0, x1, y1) of a group of primitives."""
    xs: list[float] = []
    ys: list[float] = []
    for kind, spec in shapes:
        if kind == "poly":
            xs += [p[0] for p in spec]
            ys += [p[1] for p in spec]
        else:
            xs += [spec[0], spec[2]]
            ys += [spec[1], spec[3]]
    return int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, fill, offset: int) -> None:
    kind, spec = shape
    if kind == "poly":
        draw.polygon([(x + offset, y + offset) for x, y in spec], fill=fill)
        return
    x0, y0, x1, y1 = (v + offset for v in spec[:4])
    if kind == "rect":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif kind == "ellipse":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind == "rrect":
        draw.rounded_rectangle((x0, y0, x1, y1), radius=spec[4], fill=fill)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


class Canvas:
    """RGB image, land-cover map, semantic mask and padded instance layer of one scene."""

    def __init__(self, rgb: np.ndarray, land: np.ndarray, margin: int) -> None:
        self.height, self.width = land.shape
        self.margin = margin
        self.land = land
        self.rgb = Image.fromarray(rgb)
        self.semantic = Image.fromarray(land.copy())
        self.instances = Image.new("L", (self.width + 2 * margin, self.height + 2 * margin), 0)
        self._rgb = ImageDraw.Draw(self.rgb)
        self._sem = ImageDraw.Draw(self.semantic)
        self._inst = ImageDraw.Draw(self.instances)
        # Boxes already taken (padded coordinates): hard obstacles, and roads that cars may use.
        pad_shape = (self.height + 2 * margin, self.width + 2 * margin)
        self._taken = np.zeros(pad_shape, dtype=bool)
        self._roads = np.zeros(pad_shape, dtype=bool)
        self.count = 0

    def paint(self, shapes: Sequence[Shape], colour: RGB) -> None:
        """Paint primitives on the RGB layer only (shadows, markings, details)."""
        for shape in shapes:
            _draw(self._rgb, shape, colour, 0)

    def is_free(self, extent: tuple[int, int, int, int], gap: int, allowed_land: Sequence[int],
                on_roads: bool = False) -> bool:
        """Whether an object with inclusive ``extent`` fits: inside the padded canvas, clear of
        other objects by ``gap`` px (roads count only unless ``on_roads``), and over allowed land
        wherever it is inside the image."""
        m = self.margin
        x0, y0, x1, y1 = extent
        if x0 + m < 0 or y0 + m < 0 or x1 + m >= self._taken.shape[1] or y1 + m >= self._taken.shape[0]:
            return False
        window = (slice(max(0, y0 + m - gap), y1 + m + gap + 1), slice(max(0, x0 + m - gap), x1 + m + gap + 1))
        if self._taken[window].any() or (not on_roads and self._roads[window].any()):
            return False
        inside = self.land[max(0, y0):max(0, y1 + 1), max(0, x0):max(0, x1 + 1)]
        if inside.size == 0:
            return False
        allowed = np.zeros(256, dtype=bool)
        allowed[list(allowed_land)] = True
        return bool(allowed[inside].all())

    def add(self, shapes: Sequence[Shape], colour: RGB, semantic_id: int, road: bool = False) -> Placed:
        """Draw an object's body on all layers and return its instance id and tight box."""
        if self.count >= 255:
            raise ValueError("a scene holds at most 255 objects (uint8 instance ids)")
        self.count += 1
        m = self.margin
        for shape in shapes:
            _draw(self._rgb, shape, colour, 0)
            _draw(self._sem, shape, semantic_id, 0)
            _draw(self._inst, shape, self.count, m)
        x0, y0, x1, y1 = shape_extent(shapes)
        left, top = max(0, x0 + m - 2), max(0, y0 + m - 2)
        window = np.asarray(self.instances.crop((left, top, x1 + m + 3, y1 + m + 3))) == self.count
        rows = np.flatnonzero(window.any(axis=1))
        cols = np.flatnonzero(window.any(axis=0))
        if rows.size == 0:
            raise ValueError(f"object {self.count} left no pixels (extent {x0, y0, x1, y1})")
        box = (left + int(cols[0]) - m, top + int(rows[0]) - m, left + int(cols[-1]) + 1 - m,
               top + int(rows[-1]) + 1 - m)
        target = self._roads if road else self._taken
        target[box[1] + m:box[3] + m, box[0] + m:box[2] + m] = True
        return Placed(self.count, box)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(RGB uint8 [H, W, 3], semantic uint8 [H, W], instances uint8 [H, W]) of the image area."""
        m = self.margin
        inst = np.asarray(self.instances)[m:m + self.height, m:m + self.width]
        return np.asarray(self.rgb).copy(), np.asarray(self.semantic).copy(), inst.copy()

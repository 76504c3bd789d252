"""Shapes of the synthetic object categories.

A builder takes the generator, a centre (cx, cy) and the scene's scale ``s`` (1.0 for a 256 px
scene) and returns a ``Design``: the body primitives (the object's pixels in every mask), the
colour name of the body, a shadow painted before it and details painted over it on the RGB
layer only. Sizes at ``s = 1`` are chosen so that typical buildings, tanks, airplanes, ships and
tennis courts are at least 64 x 64 px (kept by the stage-2 ``--min-size 64`` filter), while
cars, trees and many pools are smaller, as in real annotations.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .canvas import RGB, Shape
from .vocab import CATEGORY_COLOURS, COLOURS

SHADOW: RGB = (44, 46, 44)


@dataclass
class Design:
    """One object ready to draw (see module docstring)."""

    body: list[Shape]
    colour: str
    shadow: list[Shape] = field(default_factory=list)
    details: list[tuple[list[Shape], RGB]] = field(default_factory=list)


def shade(colour: str, factor: float) -> RGB:
    """A named colour scaled towards black (< 1) or white (> 1)."""
    rgb = np.asarray(COLOURS[colour], dtype=np.float32)
    out = rgb * factor if factor <= 1 else rgb + (255 - rgb) * (factor - 1)
    return tuple(int(v) for v in np.clip(out, 0, 255))


def pick_colour(rng: np.random.Generator, category: str) -> str:
    """One of the category's colour names (``CATEGORY_COLOURS``), drawn from ``rng``."""
    choices = CATEGORY_COLOURS[category]
    return choices[int(rng.integers(len(choices)))]


def size(rng: np.random.Generator, lo: float, hi: float, s: float) -> int:
    """A length drawn in [lo, hi) px at scale 1, times the scene scale ``s``, at least 2 px."""
    return max(2, int(round(rng.uniform(lo, hi) * s)))


def _rect(cx: int, cy: int, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0 = cx - w // 2, cy - h // 2
    return x0, y0, x0 + w - 1, y0 + h - 1


def shift(shapes: list[Shape], dx: int, dy: int) -> list[Shape]:
    """The primitives moved by (dx, dy) px (shadows)."""
    out: list[Shape] = []
    for kind, spec in shapes:
        if kind == "poly":
            out.append((kind, tuple((x + dx, y + dy) for x, y in spec)))
        else:
            out.append((kind, (spec[0] + dx, spec[1] + dy, spec[2] + dx, spec[3] + dy) + tuple(spec[4:])))
    return out


def _poly(points: np.ndarray, cx: int, cy: int, angle: float) -> Shape:
    """Rotate local (x, y) points by ``angle`` about the origin, move to (cx, cy), round."""
    c, s_ = np.cos(angle), np.sin(angle)
    rot = points @ np.array([[c, s_], [-s_, c]], dtype=np.float64)
    return "poly", tuple((int(round(x + cx)), int(round(y + cy))) for x, y in rot)


def building(rng: np.random.Generator, cx: int, cy: int, s: float) -> Design:
    """A flat rectangle roof with a darker ridge line and a shadow to the lower right."""
    colour = pick_colour(rng, "building")
    w, h = size(rng, 60, 104, s), size(rng, 56, 96, s)
    box = _rect(cx, cy, w, h)
    body = [("rect", box)]
    t = max(1, int(2 * s))
    ridge = (box[0] + 3, cy - t, box[2] - 3, cy + t) if w >= h else (cx - t, box[1] + 3, cx + t, box[3] - 3)
    d = max(2, int(5 * s))
    return Design(body, colour, shift(body, d, d), [([("rect", ridge)], shade(colour, 0.7))])


def storage_tank(rng: np.random.Generator, cx: int, cy: int, s: float, diameter: int | None = None) -> Design:
    """A round white tank with a gray ring on its roof and a crescent shadow."""
    colour = pick_colour(rng, "storage tank")
    d = diameter if diameter is not None else size(rng, 56, 92, s)
    box = _rect(cx, cy, d, d)
    body = [("ellipse", box)]
    inset = max(2, d // 7)
    ring = ("ellipse", (box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset))
    inner = ("ellipse", (box[0] + 2 * inset, box[1] + 2 * inset, box[2] - 2 * inset, box[3] - 2 * inset))
    off = max(2, int(4 * s))
    return Design(body, colour, shift(body, off, off),
                  [([ring], (176, 176, 176)), ([inner], shade(colour, 0.97))])


def car(rng: np.random.Generator, cx: int, cy: int, s: float, vertical: bool | None = None) -> Design:
    """A small rounded rectangle with a dark windscreen."""
    colour = pick_colour(rng, "car")
    length, width = size(rng, 20, 26, s), size(rng, 10, 13, s)
    if vertical is None:
        vertical = bool(rng.random() < 0.5)
    w, h = (width, length) if vertical else (length, width)
    box = _rect(cx, cy, w, h)
    body = [("rrect", box + (max(1, min(w, h) // 4),))]
    if vertical:
        screen = (box[0] + 2, box[1] + h // 5, box[2] - 2, box[1] + h // 5 + max(1, h // 6))
    else:
        screen = (box[0] + w // 5, box[1] + 2, box[0] + w // 5 + max(1, w // 6), box[3] - 2)
    return Design(body, colour, [], [([("rect", screen)], (34, 38, 48))])


def airplane(rng: np.random.Generator, cx: int, cy: int, s: float) -> Design:
    """Fuselage, swept wings and tailplane, heading in one of eight directions."""
    colour = pick_colour(rng, "airplane")
    span = size(rng, 70, 124, s)
    length = span * rng.uniform(0.9, 1.05)
    f = 0.07 * span
    fuselage = np.array([(-f, -length / 2), (f, -length / 2), (f, length / 2), (-f, length / 2)])
    wings = np.array([(-span / 2, 0.12 * length), (-f, -0.12 * length), (f, -0.12 * length),
                      (span / 2, 0.12 * length), (span / 2, 0.2 * length), (-span / 2, 0.2 * length)])
    tail = np.array([(-0.2 * span, 0.48 * length), (0, 0.36 * length), (0.2 * span, 0.48 * length),
                     (0.2 * span, 0.52 * length), (-0.2 * span, 0.52 * length)])
    angle = float(rng.integers(8)) * np.pi / 4
    body = [_poly(part, cx, cy, angle) for part in (fuselage, wings, tail)]
    off = max(3, int(8 * s))
    return Design(body, colour, shift(body, off, off), [])


def ship(rng: np.random.Generator, cx: int, cy: int, s: float) -> Design:
    """A pointed hull with a gray superstructure, at any heading."""
    colour = pick_colour(rng, "ship")
    length = size(rng, 64, 124, s)
    half = length * rng.uniform(0.12, 0.16)
    hull = np.array([(0, -length / 2), (half, -length / 2 + 2 * half), (half, length / 2),
                     (-half, length / 2), (-half, -length / 2 + 2 * half)])
    deck = np.array([(-0.6 * half, 0.1 * length), (0.6 * half, 0.1 * length),
                     (0.6 * half, 0.35 * length), (-0.6 * half, 0.35 * length)])
    angle = rng.uniform(0, np.pi)
    return Design([_poly(hull, cx, cy, angle)], colour, [], [([_poly(deck, cx, cy, angle)], (110, 110, 116))])


def swimming_pool(rng: np.random.Generator, cx: int, cy: int, s: float) -> Design:
    """A cyan rounded rectangle with a lighter inner basin."""
    w, h = size(rng, 44, 72, s), size(rng, 32, 54, s)
    if rng.random() < 0.5:
        w, h = h, w
    box = _rect(cx, cy, w, h)
    inset = max(2, int(3 * s))
    inner = (box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset, max(1, int(4 * s)))
    return Design([("rrect", box + (max(1, int(6 * s)),))], "cyan", [],
                  [([("rrect", inner)], shade("cyan", 1.25))])


def tree(rng: np.random.Generator, cx: int, cy: int, s: float) -> Design:
    """A round dark-green crown with a highlight and a shadow."""
    d = size(rng, 18, 42, s)
    box = _rect(cx, cy, d, d)
    hl = max(2, d // 3)
    highlight = ("ellipse", (box[0] + d // 5, box[1] + d // 5, box[0] + d // 5 + hl, box[1] + d // 5 + hl))
    off = max(2, d // 5)
    body = [("ellipse", box)]
    return Design(body, "dark green", shift(body, off, off), [([highlight], (58, 120, 56))])


def tennis_court(rng: np.random.Generator, cx: int, cy: int, s: float) -> Design:
    """A green or blue court with white boundary lines and a net."""
    colour = pick_colour(rng, "tennis court")
    w, h = size(rng, 44, 56, s), size(rng, 84, 104, s)
    vertical = bool(rng.random() < 0.5)
    if not vertical:
        w, h = h, w
    x0, y0, x1, y1 = _rect(cx, cy, w, h)
    i, t = max(2, int(4 * s)), max(1, int(s))
    lines = [("rect", (x0 + i, y0 + i, x1 - i, y0 + i + t)), ("rect", (x0 + i, y1 - i - t, x1 - i, y1 - i)),
             ("rect", (x0 + i, y0 + i, x0 + i + t, y1 - i)), ("rect", (x1 - i - t, y0 + i, x1 - i, y1 - i))]
    net = (x0 + i, cy - t, x1 - i, cy + t) if vertical else (cx - t, y0 + i, cx + t, y1 - i)
    lines.append(("rect", net))
    return Design([("rect", (x0, y0, x1, y1))], colour, [], [(lines, (240, 240, 240))])


def road(width: int, height: int, vertical: bool, start: int, thickness: int, s: float) -> Design:
    """A gray band across the whole image with a dashed white centre line."""
    if vertical:
        body = [("rect", (start, 0, start + thickness - 1, height - 1))]
    else:
        body = [("rect", (0, start, width - 1, start + thickness - 1))]
    mid, dash, t = start + thickness // 2, max(4, int(10 * s)), max(1, int(s))
    length = height if vertical else width
    marks: list[Shape] = []
    for a in range(0, length, 2 * dash):
        marks.append(("rect", (mid - t, a, mid + t - 1, a + dash - 1) if vertical else (a, mid - t, a + dash - 1, mid + t - 1)))
    return Design(body, "gray", [], [(marks, (232, 232, 224))])


BUILDERS = {
    "building": building,
    "storage tank": storage_tank,
    "car": car,
    "airplane": airplane,
    "ship": ship,
    "swimming pool": swimming_pool,
    "tree": tree,
    "tennis court": tennis_court,
}

"""Sampling and rendering of one synthetic scene with its complete ground truth.

``render_scene(seed, stream, index)`` is a pure function: the generator is seeded from
(seed, stream, index) alone, so a scene never depends on how many others were drawn before it,
in which process, or in which order. That is what makes ``--workers`` byte-neutral.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import objects as obj
from . import textures as tex
from .canvas import Canvas, shape_extent
from .vocab import COLOURS, LAND_COVERS, OBJECT_CATEGORIES, SCENE_CLASSES

# Image sizes (width, height) per use. Training and MGRS scenes vary in size and aspect ratio;
# MGRS leans large so that most real objects pass the stage-2 64 px box filter.
SIZE_PROFILES: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((128, 128), (192, 192), (256, 256), (256, 192), (192, 256), (320, 240), (240, 320),
              (256, 256)),
    "mgrs": ((256, 256), (320, 320), (384, 384), (512, 512), (384, 256), (256, 384), (512, 384),
             (320, 240), (192, 192), (128, 128)),
    "bench": ((192, 192), (224, 224), (256, 256), (256, 192), (192, 256)),
    "ovss": ((256, 256), (320, 256), (256, 320), (384, 384), (448, 320)),
}

MARGIN = 160  # padding of the instance layer: more than half the largest object at s = 1.6
SEMANTIC_OFFSET = len(LAND_COVERS)  # semantic id of object category c = offset + its index


@dataclass(frozen=True)
class SceneObject:
    """An object's ground truth. ``box`` = (x1, y1, x2, y2) in pixel edges (covers columns
    x1 .. x2 - 1), tight around its pixels, possibly beyond the image; ``instance`` is its value
    in ``Scene.instances``."""

    category: str
    box: tuple[int, int, int, int]
    colour: str
    instance: int

    @property
    def category_id(self) -> int:
        return OBJECT_CATEGORIES.index(self.category)


@dataclass
class Scene:
    """A rendered scene: the image and everything that is true about it."""

    scene_class: str
    image: np.ndarray  # [H, W, 3] uint8
    semantic: np.ndarray  # [H, W] uint8, indices into SEMANTIC_CLASSES
    instances: np.ndarray  # [H, W] uint8, 0 = no object, k = the object with instance k
    objects: list[SceneObject]
    info: dict

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def stream_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of ``stream`` (a name such as "rs5m-train")."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode("utf-8")), int(index)])


class _Layout:
    """Places objects on a canvas and records their ground truth."""

    def __init__(self, rng: np.random.Generator, canvas: Canvas, s: float) -> None:
        self.rng, self.canvas, self.s = rng, canvas, s
        self.objects: list[SceneObject] = []

    def draw(self, category: str, design: obj.Design, road: bool = False) -> None:
        c = self.canvas
        if design.shadow:
            c.paint(design.shadow, obj.SHADOW)
        colour = obj.shade("gray", 0.8) if category == "road" else COLOURS[design.colour]
        placed = c.add(design.body, colour, SEMANTIC_OFFSET + OBJECT_CATEGORIES.index(category), road=road)
        for shapes, rgb in design.details:
            c.paint(shapes, rgb)
        self.objects.append(SceneObject(category, placed.box, design.colour, placed.instance))

    def scatter(self, category: str, count: int, land: tuple[int, ...], region: tuple[int, int, int, int] | None = None,
                gap: int = 3, on_roads: bool = False, builder: Callable[..., obj.Design] | None = None,
                attempts: int = 12) -> None:
        """Try to place ``count`` objects with centres in ``region`` (x0, y0, x1, y1 inclusive,
        default the whole image, so objects near a border may hang over it)."""
        build = builder or obj.BUILDERS[category]
        x0, y0, x1, y1 = region or (0, 0, self.canvas.width - 1, self.canvas.height - 1)
        for _ in range(count):
            for _ in range(attempts):
                cx, cy = int(self.rng.integers(x0, x1 + 1)), int(self.rng.integers(y0, y1 + 1))
                design = build(self.rng, cx, cy, self.s)
                if self.canvas.is_free(shape_extent(design.body), gap, land, on_roads):
                    self.draw(category, design)
                    break

    def roads(self, count: int) -> list[tuple[bool, int, int]]:
        """Up to ``count`` straight roads (the first horizontal or vertical, the next crossing
        it), returned as (vertical, start, thickness)."""
        out = []
        vertical = bool(self.rng.random() < 0.5)
        for _ in range(count):
            across = self.canvas.width if vertical else self.canvas.height
            thickness = obj.size(self.rng, 16, 26, self.s)
            start = int(self.rng.integers(int(0.2 * across), int(0.8 * across) - thickness))
            self.draw("road", obj.road(self.canvas.width, self.canvas.height, vertical, start, thickness, self.s), road=True)
            out.append((vertical, start, thickness))
            vertical = not vertical
        return out

    def cars_on(self, roads: list[tuple[bool, int, int]], count: int) -> None:
        """Cars driving along the given roads."""
        for _ in range(count):
            vertical, start, thickness = roads[int(self.rng.integers(len(roads)))]
            if vertical:
                region = (start + 2, 0, start + thickness - 3, self.canvas.height - 1)
            else:
                region = (0, start + 2, self.canvas.width - 1, start + thickness - 3)
            self.scatter("car", 1, ALL_LAND, region, gap=2, on_roads=True,
                         builder=lambda rng, cx, cy, s: obj.car(rng, cx, cy, s, vertical=vertical))


F, WATER, GRASS, PAVE = tex.FARMLAND, tex.WATER, tex.GRASS, tex.PAVEMENT
ALL_LAND = tuple(range(len(LAND_COVERS)))
DRY_LAND = tuple(i for i in ALL_LAND if i != WATER)


def _farmland(lay: _Layout, info: dict) -> None:
    if lay.rng.random() < 0.4:
        lay.roads(1)
    lay.scatter("tree", int(lay.rng.integers(0, 5)), (F,))


def _forest(lay: _Layout, info: dict) -> None:
    if lay.rng.random() < 0.4:
        lay.roads(1)


def _desert(lay: _Layout, info: dict) -> None:
    if lay.rng.random() < 0.3:
        lay.roads(1)


def _lake(lay: _Layout, info: dict) -> None:
    lay.scatter("ship", int(lay.rng.integers(0, 4)), (WATER,), gap=6)
    lay.scatter("tree", int(lay.rng.integers(0, 6)), (GRASS,))


def _river(lay: _Layout, info: dict) -> None:
    c, rng, s = lay.canvas, lay.rng, lay.s
    if rng.random() < 0.8:
        length = c.height if info["vertical"] else c.width
        at = int(rng.integers(int(0.2 * length), int(0.8 * length)))
        thickness = obj.size(rng, 26, 38, s)  # most bridges pass the 64 x 64 px region filter
        lo = int(info["centre"][at: at + thickness].min() - info["half_width"] - obj.size(rng, 14, 26, s))
        hi = int(info["centre"][at: at + thickness].max() + info["half_width"] + obj.size(rng, 14, 26, s))
        rect = (lo, at, hi, at + thickness - 1) if info["vertical"] else (at, lo, at + thickness - 1, hi)
        colour = obj.pick_colour(rng, "bridge")
        body = [("rect", rect)]
        d = max(2, int(5 * s))
        lay.draw("bridge", obj.Design(body, colour, obj.shift(body, d, d), []))
    lay.scatter("tree", int(rng.integers(0, 6)), (GRASS,))
    lay.scatter("ship", int(rng.integers(0, 2)), (WATER,), gap=4)


def _residential(lay: _Layout, info: dict) -> None:
    rng = lay.rng
    roads = lay.roads(1 + int(rng.random() < 0.4)) if rng.random() < 0.8 else []
    lay.scatter("building", int(rng.integers(3, 9)), (GRASS, PAVE), gap=4)
    lay.scatter("swimming pool", int(rng.integers(0, 4)), (GRASS, PAVE))
    if rng.random() < 0.25:
        lay.scatter("tennis court", 1, (GRASS, PAVE), gap=4)
    lay.scatter("tree", int(rng.integers(2, 7)), (GRASS,))
    if roads:
        lay.cars_on(roads, int(rng.integers(2, 7)))


def _parking(lay: _Layout, info: dict) -> None:
    c, rng, s = lay.canvas, lay.rng, lay.s
    fill = rng.uniform(0.4, 0.8)
    for top in range(0, c.height - info["bay_h"] + 1, info["row_pitch"]):
        for left in range(0, c.width - info["bay_w"] + 1, info["bay_w"]):
            if rng.random() < fill and c.count < 250:
                design = obj.car(rng, left + info["bay_w"] // 2 + 1, top + info["bay_h"] // 2, s, vertical=True)
                if c.is_free(shape_extent(design.body), 0, ALL_LAND):
                    lay.draw("car", design)


def _tanks(lay: _Layout, info: dict) -> None:
    c, rng, s = lay.canvas, lay.rng, lay.s
    roads = lay.roads(1) if rng.random() < 0.5 else []
    d = obj.size(rng, 52, 84, s)
    pitch = int(d * rng.uniform(1.25, 1.5))
    ox, oy = int(rng.integers(d // 2, pitch)), int(rng.integers(d // 2, pitch))
    for cy in range(oy, c.height + d // 3, pitch):
        for cx in range(ox, c.width + d // 3, pitch):
            if rng.random() < 0.85:
                design = obj.storage_tank(rng, cx, cy, s, diameter=d)
                if c.is_free(shape_extent(design.body), 2, DRY_LAND):
                    lay.draw("storage tank", design)
    lay.scatter("building", int(rng.integers(0, 3)), DRY_LAND, gap=4)
    if roads:
        lay.cars_on(roads, int(rng.integers(0, 3)))


def _airport(lay: _Layout, info: dict) -> None:
    rng = lay.rng
    lay.scatter("airplane", int(rng.integers(1, 5)), (PAVE,), region=info["apron"], gap=6, attempts=20)
    lay.scatter("building", int(rng.random() < 0.5), (PAVE,), region=info["apron"], gap=4)
    lay.scatter("car", int(rng.integers(0, 4)), (PAVE,), region=info["apron"])


def _harbor(lay: _Layout, info: dict) -> None:
    rng = lay.rng
    lay.scatter("ship", int(rng.integers(2, 7)), (WATER,), gap=6, attempts=20)
    lay.scatter("storage tank", int(rng.integers(0, 4)), (PAVE,), gap=3)
    lay.scatter("building", int(rng.integers(0, 3)), (PAVE,), gap=4)
    lay.scatter("car", int(rng.integers(0, 4)), (PAVE,))


# scene class -> (ground texture, object layout)
SCENE_RECIPES: dict[str, tuple[Callable, Callable]] = {
    "farmland": (tex.farmland_ground, _farmland),
    "forest": (tex.forest_ground, _forest),
    "desert": (tex.desert_ground, _desert),
    "lake": (tex.lake_ground, _lake),
    "river": (tex.river_ground, _river),
    "residential area": (tex.residential_ground, _residential),
    "parking lot": (tex.parking_ground, _parking),
    "storage tanks": (tex.concrete_ground, _tanks),
    "airport": (tex.airport_ground, _airport),
    "harbor": (tex.harbor_ground, _harbor),
}
assert set(SCENE_RECIPES) == set(SCENE_CLASSES)


def render_scene(seed: int, stream: str, index: int, scene_class: str | None = None,
                 profile: str = "train") -> Scene:
    """Render scene ``index`` of ``stream``; the class is drawn at random unless given."""
    rng = stream_rng(seed, stream, index)
    if scene_class is None:
        scene_class = SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
    elif scene_class not in SCENE_RECIPES:
        raise ValueError(f"unknown scene class {scene_class!r}; choose from {SCENE_CLASSES}")
    sizes = SIZE_PROFILES[profile]
    width, height = sizes[int(rng.integers(len(sizes)))]
    s = float(np.clip(min(width, height) / 256.0, 0.5, 1.6))
    ground, layout = SCENE_RECIPES[scene_class]
    rgb, land, info = ground(rng, height, width, s)
    canvas = Canvas(rgb, land, MARGIN)
    lay = _Layout(rng, canvas, s)
    layout(lay, info)
    image, semantic, instances = canvas.arrays()
    # Sensor noise over everything (not in the masks).
    noisy = image.astype(np.int16) + rng.integers(-5, 6, size=image.shape, dtype=np.int16)
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    info = {"scale": s, **{k: v for k, v in info.items() if k in ("vertical", "water_side")}}
    return Scene(scene_class, image, semantic, instances, lay.objects, info)

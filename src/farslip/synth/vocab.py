"""The synthetic world's vocabulary: scene classes, object categories, land covers, colours.

These constants are the ground-truth label spaces of every synthetic data set. Tests, the demo
and the benchmarks import them rather than re-typing names, so one edit here changes the world
and all of its consumers together. Order matters: indices are written to disk (integer class
labels, ``category_id``, label maps).
"""
from __future__ import annotations

# Scene classes: each has its own global colour and texture so a tiny CLIP can tell them apart
# at 32 px. Several names contain spaces on purpose (real benchmark class names do).
SCENE_CLASSES: tuple[str, ...] = (
    "farmland",
    "forest",
    "desert",
    "lake",
    "river",
    "residential area",
    "parking lot",
    "storage tanks",
    "airport",
    "harbor",
)

# Object categories; ``category_id`` in the MGRS annotations is the index in this tuple.
OBJECT_CATEGORIES: tuple[str, ...] = (
    "building",
    "storage tank",
    "car",
    "airplane",
    "ship",
    "swimming pool",
    "tree",
    "tennis court",
    "road",
    "bridge",
)

# Land covers painted by the scene backgrounds (the "stuff" under the objects).
LAND_COVERS: tuple[str, ...] = ("farmland", "woodland", "sand", "water", "grass", "pavement")

# Per-pixel classes of the ground-truth mask: land covers first, then object categories.
SEMANTIC_CLASSES: tuple[str, ...] = LAND_COVERS + OBJECT_CATEGORIES

# Plural forms used in captions (English plurals that a "+s" would get wrong).
PLURALS: dict[str, str] = {
    "bridge": "bridges",
    "building": "buildings",
    "car": "cars",
    "airplane": "airplanes",
    "ship": "ships",
    "swimming pool": "swimming pools",
    "storage tank": "storage tanks",
    "tree": "trees",
    "tennis court": "tennis courts",
    "road": "roads",
}

# Named colours (RGB). Object instances carry one of these names so captions can say it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (196, 58, 46),
    "orange": (222, 128, 48),
    "gray": (128, 128, 128),
    "blue": (52, 92, 186),
    "white": (236, 236, 232),
    "black": (30, 30, 34),
    "silver": (184, 188, 194),
    "yellow": (226, 204, 64),
    "green": (62, 150, 70),
    "dark green": (26, 82, 34),
    "cyan": (40, 196, 222),
    "beige": (212, 196, 160),
}

# Colours an instance of each category may take (first one is the most common).
CATEGORY_COLOURS: dict[str, tuple[str, ...]] = {
    "building": ("red", "red", "orange", "gray", "blue"),
    "storage tank": ("white", "white", "silver"),
    "car": ("white", "black", "red", "blue", "silver", "yellow"),
    "airplane": ("white", "white", "silver"),
    "ship": ("white", "white", "gray", "red"),
    "swimming pool": ("cyan",),
    "tree": ("dark green",),
    "tennis court": ("green", "blue"),
    "road": ("gray",),
    "bridge": ("beige", "gray"),
}

# 3 x 3 position words, row-major from the top-left cell.
POSITIONS: tuple[str, ...] = (
    "upper left", "top", "upper right",
    "left", "center", "right",
    "lower left", "bottom", "lower right",
)

NUMBER_WORDS: tuple[str, ...] = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
)

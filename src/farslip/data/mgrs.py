"""MGRS-200k: ``text_info.json`` items -> image path, global caption and object regions (SPEC section 3).

An item is ``{"global_filepath", "global_caption", "detailed_caption", "brief_caption",
"segment": [{"bbox": {...}, "category", "category_id"} | {"bbox": {...}, "cap"}]}``. Per item:
the caption is ``global_caption``, falling back to ``detailed_caption`` and then
``brief_caption``; objects are shuffled, clipped to the image, kept when
``min_size**2 <= area (<= max_size**2)`` and taken until ``max_boxes``. A category object's text
is ``a satellite image of {category}`` with its ``category_id`` as label; a free-text object
(``cap``) has label -1 (no category). Items are parsed lazily, so one malformed item costs one
skipped sample, not the run.

Every object that is looked at and not kept is counted by reason (:data:`DROP_REASONS`: malformed,
inverted or empty, outside the image, below ``--min-size``, above ``--max-size``); the counts travel
with each training batch (``dropped_boxes``) and the trainer logs their sum once per epoch. A
malformed object is also named in a warning.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import torch

from .image_files import BadSample, FileItem
from .views import Region

logger = logging.getLogger(__name__)

CAPTION_KEYS = ("global_caption", "detailed_caption", "brief_caption")
CATEGORY_TEMPLATE = "a satellite image of {}"
FREE_TEXT_LABEL = -1
# Explicit bbox key spellings accepted, in (x1, y1, x2, y2) order.
BOX_KEYS = (("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"))

# Why an object was not kept, in the order of the ``dropped_boxes`` counts of a batch.
DROP_REASONS = ("malformed", "inverted or empty (x2 <= x1 or y2 <= y1)", "outside the image", "below --min-size",
                "above --max-size")

# (x1, y1, x2, y2, W, H): box corners and the image size they refer to (None when not given).
ParsedBox = tuple[float, float, float, float, Optional[float], Optional[float]]


def parse_bbox(bbox: Any) -> ParsedBox:
    """Read an MGRS ``bbox``: a dict with explicit corner keys, else values in order x1, y1, x2, y2[, W, H].

    A list/tuple in the same order is accepted too. Raises ValueError on anything else.
    """
    if isinstance(bbox, Mapping):
        size = (bbox.get("W"), bbox.get("H"))
        for keys in BOX_KEYS:
            if all(k in bbox for k in keys):
                corners = [bbox[k] for k in keys]
                break
        else:
            values = list(bbox.values())
            corners, size = values[:4], (values[4:6] + [None, None])[:2]
    elif isinstance(bbox, (list, tuple)):
        values = list(bbox)
        corners, size = values[:4], (values[4:6] + [None, None])[:2]
    else:
        raise ValueError(f"bbox must be a dict or a list, got {type(bbox).__name__}")
    if len(corners) < 4:
        raise ValueError(f"bbox needs x1, y1, x2, y2; got {bbox!r}")
    x1, y1, x2, y2 = (float(v) for v in corners)
    w, h = (None if v is None else float(v) for v in size)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, *(v for v in (w, h) if v is not None))):
        raise ValueError(f"bbox holds a NaN or infinite value: {bbox!r}")
    return x1, y1, x2, y2, w, h


def region_text(obj: Mapping) -> tuple[str, int]:
    """(text, label) of one object: category prompt + category_id, or free-text ``cap`` + -1."""
    category = obj.get("category")
    if category:
        return CATEGORY_TEMPLATE.format(category), int(obj.get("category_id", FREE_TEXT_LABEL))
    cap = obj.get("cap")
    if cap:
        return str(cap), FREE_TEXT_LABEL
    raise ValueError("object has neither 'category' nor 'cap'")


def item_caption(item: Mapping) -> str:
    """The item's training caption: the first non-empty of global, detailed, brief caption."""
    for key in CAPTION_KEYS:
        text = item.get(key)
        if isinstance(text, str) and text.strip():
            return text
    raise BadSample(f"no caption (none of {', '.join(CAPTION_KEYS)} is set)")


def clip_box(parsed: ParsedBox, width: int, height: int) -> tuple[float, float, float, float]:
    """Box in the pixels of a ``width`` x ``height`` image (rescaled if W, H differ), clipped to it."""
    x1, y1, x2, y2, w, h = parsed
    sx = width / w if w else 1.0
    sy = height / h if h else 1.0
    return (
        min(max(x1 * sx, 0.0), width), min(max(y1 * sy, 0.0), height),
        min(max(x2 * sx, 0.0), width), min(max(y2 * sy, 0.0), height),
    )


def select_regions(
    objects: Sequence[Mapping],
    width: int,
    height: int,
    max_boxes: int,
    min_size: float,
    max_size: Optional[float],
    name: str = "item",
    dropped: Optional[Counter] = None,
) -> list[Region]:
    """Shuffle ``objects``, clip each box, keep it if its area passes the size filter, stop at ``max_boxes``.

    Shuffles with torch's global CPU generator: call under the sample's
    :func:`~farslip.data.views.seeded`. Malformed objects are logged and ignored. Each object looked
    at and not kept adds one to ``dropped[reason]`` (reasons: :data:`DROP_REASONS`).
    """
    dropped = Counter() if dropped is None else dropped
    picked: list[Region] = []
    for i in torch.randperm(len(objects)).tolist():
        if len(picked) == max_boxes:
            break
        try:
            parsed = parse_bbox(objects[i]["bbox"])
            text, label = region_text(objects[i])
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("%s: ignoring object %d: %s", name, i, exc)
            dropped[DROP_REASONS[0]] += 1
            continue
        if parsed[2] <= parsed[0] or parsed[3] <= parsed[1]:
            dropped[DROP_REASONS[1]] += 1
            continue
        x1, y1, x2, y2 = clip_box(parsed, width, height)
        box = (round(x1), round(y1), round(x2), round(y2))
        if not (box[2] > box[0] and box[3] > box[1]):
            dropped[DROP_REASONS[2]] += 1  # nothing of it (not a whole pixel) lies inside the image
            continue
        area = (x2 - x1) * (y2 - y1)
        if area < min_size**2:
            dropped[DROP_REASONS[3]] += 1
        elif max_size is not None and area > max_size**2:
            dropped[DROP_REASONS[4]] += 1
        else:
            picked.append(Region(box, text, label))
    return picked


class RegionSelection:
    """The :data:`~farslip.data.views.RegionPicker` of one item: :func:`select_regions` of its
    objects, keeping the counts of the objects it dropped (``dropped``) from its last call."""

    def __init__(self, objects: Sequence[Mapping], max_boxes: int, min_size: float, max_size: Optional[float],
                 name: str) -> None:
        self.objects, self.max_boxes, self.min_size, self.max_size, self.name = \
            objects, max_boxes, min_size, max_size, name
        self.dropped: Counter = Counter()

    def __call__(self, width: int, height: int) -> list[Region]:
        self.dropped = Counter()
        return select_regions(self.objects, width, height, self.max_boxes, self.min_size, self.max_size,
                              self.name, self.dropped)


class MgrsItems(Sequence):
    """The items of an MGRS ``text_info.json`` as :class:`FileItem` (paths relative to the image root)."""

    def __init__(
        self, json_path: str, max_boxes: int = 4, min_size: float = 64, max_size: Optional[float] = 1024,
        objects: bool = True,
    ) -> None:
        try:
            with open(json_path, encoding="utf-8") as f:
                self.items = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"cannot read MGRS annotations {json_path}: not valid JSON ({exc}); a truncated or "
                             "interrupted copy? Fetch it again") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read MGRS annotations {json_path}: {exc}") from exc
        if not isinstance(self.items, list):
            raise ValueError(f"{json_path}: expected a JSON list of items (MGRS text_info.json), got a JSON "
                             f"{type(self.items).__name__}")
        if not self.items:
            raise ValueError(f"{json_path}: the list of items is empty")
        self.json_path = json_path
        self.max_boxes, self.min_size, self.max_size = max_boxes, min_size, max_size
        self.objects = objects

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> FileItem:
        item = self.items[index]
        name = f"{self.json_path} item {index}"
        if not isinstance(item, Mapping) or not item.get("global_filepath"):
            raise BadSample(f"{name}: no 'global_filepath'")
        try:
            caption = item_caption(item)
        except BadSample as exc:
            raise BadSample(f"{name}: {exc}") from None
        regions = None
        if self.objects:
            segment = item.get("segment") or []
            if not isinstance(segment, list):
                raise BadSample(f"{name}: 'segment' is not a list")
            regions = RegionSelection(segment, self.max_boxes, self.min_size, self.max_size, name)
        return FileItem(item["global_filepath"], caption, regions)


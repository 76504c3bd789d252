"""MGRS-200k: ``text_info.json`` items -> image path, global caption and object regions (SPEC section 3).

An item is ``{"global_filepath", "global_caption", "detailed_caption", "brief_caption",
"segment": [{"bbox": {...}, "category", "category_id"} | {"bbox": {...}, "cap"}]}``. Per item:
the caption is ``global_caption``, falling back to ``detailed_caption`` and then
``brief_caption``; objects are shuffled, clipped to the image, kept when
``min_size**2 <= area (<= max_size**2)`` and taken until ``max_boxes``. A category object's text
is ``a satellite image of {category}`` with its ``category_id`` as label; a free-text object
(``cap``) has label -1 (no category). Items are parsed lazily, so one malformed item costs one
skipped sample, not the run.
"""
from __future__ import annotations

import functools
import json
import logging
import math
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
) -> list[Region]:
    """Shuffle ``objects``, clip each box, keep it if its area passes the size filter, stop at ``max_boxes``.

    Shuffles with torch's global CPU generator: call under the sample's
    :func:`~farslip.data.views.seeded`. Malformed objects are logged and ignored.
    """
    picked: list[Region] = []
    for i in torch.randperm(len(objects)).tolist():
        if len(picked) == max_boxes:
            break
        try:
            x1, y1, x2, y2 = clip_box(parse_bbox(objects[i]["bbox"]), width, height)
            text, label = region_text(objects[i])
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("%s: ignoring object %d: %s", name, i, exc)
            continue
        area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
        if area < min_size**2 or (max_size is not None and area > max_size**2):
            continue
        box = (round(x1), round(y1), round(x2), round(y2))
        if box[2] > box[0] and box[3] > box[1]:
            picked.append(Region(box, text, label))
    return picked


class MgrsItems(Sequence):
    """The items of an MGRS ``text_info.json`` as :class:`FileItem` (paths relative to the image root)."""

    def __init__(
        self, json_path: str, max_boxes: int = 4, min_size: float = 64, max_size: Optional[float] = 1024,
        objects: bool = True,
    ) -> None:
        try:
            with open(json_path, encoding="utf-8") as f:
                self.items = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read MGRS annotations {json_path}: {exc}") from exc
        if not isinstance(self.items, list):
            raise ValueError(f"{json_path}: expected a JSON list of items, got {type(self.items).__name__}")
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
            regions = functools.partial(
                select_regions, segment,
                max_boxes=self.max_boxes, min_size=self.min_size, max_size=self.max_size, name=name,
            )
        return FileItem(item["global_filepath"], caption, regions)


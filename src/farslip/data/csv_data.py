"""Image-text CSV files (``filepath,title``): SkyScript-style validation sets and ``--train-dataset-type csv``.

The separator is a comma unless the header line holds a tab (open_clip's CSV default). Image
paths are relative to an image root (``--root-val-img-dir`` / ``--root-train-img-dir``), or to
the CSV's own folder when no root is given.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import pandas as pd

from .image_files import FileItem

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "filepath"
CAPTION_COLUMN = "title"


def read_pairs(
    csv_path: str, image_column: str = IMAGE_COLUMN, caption_column: str = CAPTION_COLUMN
) -> list[FileItem]:
    """The (image path, caption) rows of ``csv_path``; rows with an empty path or caption are dropped
    with a warning that counts them (:func:`read_pairs_counted` also returns the counts)."""
    return read_pairs_counted(csv_path, image_column, caption_column)[0]


def read_pairs_counted(
    csv_path: str, image_column: str = IMAGE_COLUMN, caption_column: str = CAPTION_COLUMN
) -> tuple[list[FileItem], dict]:
    """(items, rows) of ``csv_path``: ``rows`` = ``{"read": N, "used": M, "dropped": {why: count}}``.

    A row whose ``image_column`` or ``caption_column`` is empty (or only spaces) cannot be used and is
    dropped (why: ``empty <column>``; a row with both empty counts under the image column), with one
    warning naming the file, the counts and the first data row numbers (1 = the row after the header).
    """
    try:
        with open(csv_path, encoding="utf-8") as f:
            header = f.readline()
        if not header.strip():
            raise ValueError(f"{csv_path} is empty: expected a header line with columns {image_column!r} and "
                             f"{caption_column!r}, then one row per image")
        table = pd.read_csv(csv_path, sep="\t" if "\t" in header else ",", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read CSV {csv_path}: {exc}") from exc
    missing = [c for c in (image_column, caption_column) if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {missing}; found {list(table.columns)}")
    no_path = (table[image_column].str.strip() == "").to_numpy()
    no_caption = (table[caption_column].str.strip() == "").to_numpy() & ~no_path
    dropped = {why: int(mask.sum()) for why, mask in ((f"empty {image_column}", no_path),
                                                        (f"empty {caption_column}", no_caption)) if mask.any()}
    keep = ~(no_path | no_caption)
    rows = {"read": int(len(table)), "used": int(keep.sum()), "dropped": dropped}
    if dropped:
        numbers = [i + 1 for i in range(len(table)) if not keep[i]]
        shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
        logger.warning("%s: dropped %d of %d rows (%s; data rows %s)", csv_path, len(numbers), len(table),
                       ", ".join(f"{n} with an {why}" for why, n in dropped.items()), shown)
    if not keep.any():
        raise ValueError(f"{csv_path}: no rows with both {image_column!r} and {caption_column!r}")
    table = table[keep]
    items = [FileItem(path, caption) for path, caption in zip(table[image_column], table[caption_column])]
    return items, rows


def image_root(csv_path: str, root: Optional[str]) -> str:
    """The folder the CSV's image paths are relative to: ``root``, else the CSV's folder."""
    return root if root else os.path.dirname(os.path.abspath(csv_path))


def check_files(items: list[FileItem], root: str, csv_path: str) -> None:
    """Raise FileNotFoundError naming the missing images of ``csv_path`` (validation must be complete)."""
    missing = [it.path for it in items if not os.path.isfile(os.path.join(root, it.path))]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{csv_path}: {len(missing)} image(s) not found under {root}: {shown}")

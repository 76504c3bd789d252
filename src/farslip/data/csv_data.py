"""Image CSV files: image-text pairs (``filepath,title``: SkyScript-style validation and retrieval
sets, ``--train-dataset-type csv``) and labelled images (``filepath,label``: classification sets).

The separator is a comma unless the header line holds a tab (open_clip's CSV default). Image
paths are relative to an image root (``--root-val-img-dir`` / ``--root-train-img-dir``), or to
the CSV's own folder when no root is given.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from .image_files import FileItem

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "filepath"
CAPTION_COLUMN = "title"
LABEL_COLUMN = "label"  # classification CSVs: each image's class, as a name or an index


@dataclass(frozen=True)
class LabelledImage:
    """One row of a classification CSV: an image path and its class label (a name or an index)."""

    path: str
    label: str


def read_pairs(
    csv_path: str, image_column: str = IMAGE_COLUMN, caption_column: str = CAPTION_COLUMN
) -> list[FileItem]:
    """The (image path, caption) rows of ``csv_path``; rows with an empty path or caption are dropped
    with a warning that counts them (:func:`read_pairs_counted` also returns the counts)."""
    return read_pairs_counted(csv_path, image_column, caption_column)[0]


def read_pairs_counted(
    csv_path: str, image_column: str = IMAGE_COLUMN, caption_column: str = CAPTION_COLUMN
) -> tuple[list[FileItem], dict]:
    """(items, rows) of ``csv_path``; ``rows`` as :func:`read_rows` counts them."""
    pairs, rows = read_rows(csv_path, image_column, caption_column)
    return [FileItem(path, caption) for path, caption in pairs], rows


def read_labels(
    csv_path: str, image_column: str = IMAGE_COLUMN, label_column: str = LABEL_COLUMN
) -> tuple[list[LabelledImage], dict]:
    """(images, rows) of a classification CSV: the (image path, class label) rows with both columns
    non-empty, and ``rows`` as :func:`read_rows` counts them."""
    pairs, rows = read_rows(csv_path, image_column, label_column)
    return [LabelledImage(path, label) for path, label in pairs], rows


def read_rows(csv_path: str, image_column: str, text_column: str) -> tuple[list[tuple[str, str]], dict]:
    """``(image path, text)`` of every row of ``csv_path`` with both columns non-empty, in file order,
    and ``rows`` = ``{"read": N, "used": M, "dropped": {why: count}}``.

    A row whose ``image_column`` or ``text_column`` is empty (or only spaces) cannot be used and is
    dropped (why: ``empty <column>``; a row with both empty counts under the image column), with one
    warning naming the file, the counts and the first data row numbers (1 = the row after the header).
    A ValueError names the file when it is unreadable or empty, lacks a column, or has no usable row.
    """
    try:
        with open(csv_path, encoding="utf-8") as f:
            header = f.readline()
        if not header.strip():
            raise ValueError(f"{csv_path} is empty: expected a header line with columns {image_column!r} and "
                             f"{text_column!r}, then one row per image")
        table = pd.read_csv(csv_path, sep="\t" if "\t" in header else ",", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read CSV {csv_path}: {exc}") from exc
    missing = [c for c in (image_column, text_column) if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {missing}; found {list(table.columns)}")
    no_path = (table[image_column].str.strip() == "").to_numpy()
    no_text = (table[text_column].str.strip() == "").to_numpy() & ~no_path
    dropped = {why: int(mask.sum()) for why, mask in ((f"empty {image_column}", no_path),
                                                        (f"empty {text_column}", no_text)) if mask.any()}
    keep = ~(no_path | no_text)
    rows = {"read": int(len(table)), "used": int(keep.sum()), "dropped": dropped}
    if dropped:
        numbers = [i + 1 for i in range(len(table)) if not keep[i]]
        shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
        logger.warning("%s: dropped %d of %d rows (%s; data rows %s)", csv_path, len(numbers), len(table),
                       ", ".join(f"{n} with an {why}" for why, n in dropped.items()), shown)
    if not keep.any():
        raise ValueError(f"{csv_path}: no rows with both {image_column!r} and {text_column!r}")
    table = table[keep]
    return list(zip(table[image_column], table[text_column])), rows


def image_root(csv_path: str, root: Optional[str]) -> str:
    """The folder the CSV's image paths are relative to: ``root``, else the CSV's folder."""
    return root if root else os.path.dirname(os.path.abspath(csv_path))


def check_files(items: list[FileItem], root: str, csv_path: str) -> None:
    """Raise FileNotFoundError naming the missing images of ``csv_path`` (validation must be complete)."""
    missing = [it.path for it in items if not os.path.isfile(os.path.join(root, it.path))]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{csv_path}: {len(missing)} image(s) not found under {root}: {shown}")

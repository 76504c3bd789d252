"""Byte-exact, deterministic, atomic writers for the synthetic world's file formats.

Determinism: tar members carry a fixed mtime, uid/gid 0 and no user names, in sorted order;
JSON is written with fixed separators and key order; CSVs with ``\\n`` line endings; JPEG,
PNG and TIFF with fixed encoder settings (identical bytes for the same Pillow/libjpeg/zlib build).
Every file is written to a temporary name in its folder and renamed into place, so an
interrupted run never leaves a half-written file under a final name.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write

TAR_MTIME = 1_700_000_000  # fixed member timestamp (2023-11-14), so tars hash the same every run
JPEG_QUALITY = 92


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """Baseline JPEG bytes of an RGB uint8 array (4:2:0, fixed quality, no optimisation)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)
    return buf.getvalue()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB [H, W, 3] or single-channel [H, W] uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_tiff(array: np.ndarray) -> bytes:
    """Uncompressed baseline TIFF bytes of an RGB [H, W, 3] or single-channel [H, W] uint8 array
    (what Pillow reads without libtiff)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="TIFF", compression="raw")
    return buf.getvalue()


def encode_image(array: np.ndarray, suffix: str) -> bytes:
    """``array`` encoded as the file type its name ``suffix`` says (``.tif``, ``.png``, ``.jpg``)."""
    kind = suffix.lower().rsplit(".", 1)[-1]
    if kind in ("tif", "tiff"):
        return encode_tiff(array)
    if kind == "png":
        return encode_png(array)
    if kind in ("jpg", "jpeg"):
        return encode_jpeg(array)
    raise ValueError(f"no encoder for {suffix!r}")


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through :func:`farslip.atomic.atomic_write`, without fsync (the world
    is thousands of small files that can be regenerated from the seed)."""
    atomic_write(path, data, durable=False)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Indented UTF-8 JSON, keys in insertion order (the MGRS bbox order x1, y1, x2, y2, W, H)."""
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A comma-separated file with a header row, quoting only where needed, ``\\n`` line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A ustar archive of (name, data) members, sorted by name, with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members, key=lambda m: m[0]):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = TAR_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

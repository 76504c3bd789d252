"""Atomic file writes: the one helper every writer of the project goes through.

A file is written under a temporary name in its own folder (``.<name>.<random>.tmp``), flushed,
optionally ``fsync``-ed, and renamed over the final name, so a reader never sees a torn file and a
crash (even ``kill -9``) leaves either the old file or the new one. The temporary file is created
with mode 0o666 and the process umask applied by the kernel, exactly as ``open(path, "w")`` or
``torch.save(obj, path)`` would create it (0644 under umask 022), unlike ``tempfile.mkstemp``
(always 0600). A killed writer can leave a temporary file behind: :func:`remove_stale_temps`
deletes them (the trainer calls it when a run starts).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Union

TEMP_SUFFIX = ".tmp"
Payload = Union[bytes, str, Callable[[BinaryIO], None]]


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (hidden, random, ending in ``.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems / platforms cannot open a folder: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, os.PathLike], payload: Payload, *, durable: bool = True) -> Path:
    """Write ``payload`` (bytes, text as UTF-8, or ``fn(binary_file)``) to ``path`` atomically.

    ``durable`` also ``fsync``-s the file and its folder, so the new file survives a power loss
    (checkpoints, results); many small generated files may skip it. Parent folders are created.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(payload):
                payload(handle)
            else:
                handle.write(payload.encode("utf-8") if isinstance(payload, str) else payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def stale_temps(folder: Union[str, os.PathLike], name: str = "*") -> list[Path]:
    """Temporary files that :func:`atomic_write` left in ``folder`` for targets matching ``name``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".{name}.*{TEMP_SUFFIX}") if p.is_file())


def remove_stale_temps(folder: Union[str, os.PathLike], name: str = "*") -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder``; returns what was removed.

    Only call it where no other process is writing into ``folder`` at the same time.
    """
    removed = []
    for path in stale_temps(folder, name):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed

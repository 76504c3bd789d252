"""Training checkpoints: atomic writes and resume (``epoch_N.pt``, ``epoch_latest.pt``).

A checkpoint holds ``epoch`` (epochs completed), ``step`` (optimizer steps taken), ``name``,
``state_dict`` (the model's own keys, no ``module.`` prefix, so it loads with
``farslip.load_checkpoint`` and in stock open_clip), ``optimizer``, ``scaler``,
``state_dict_teacher`` (the teacher's vision tower), the RNG states, ``model_settings`` (what
rebuilds the model: ``farslip.models.record``) and ``train_args`` (the trainer's flags). Every
field is a tensor, number, string or plain container, so :func:`load` reads it with
``torch.load(weights_only=True)``. A payload whose weights hold a NaN or inf is never written.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..atomic import atomic_write
from .guard import nonfinite_keys

log = logging.getLogger(__name__)
LATEST = "epoch_latest.pt"
WEIGHT_KEYS = ("state_dict", "state_dict_teacher")  # checked for NaN/inf before every write


class NonFiniteCheckpoint(ValueError):
    """A checkpoint's weights hold NaN or inf: it is not written."""


def check_finite(obj: Any) -> None:
    """Raise :class:`NonFiniteCheckpoint` naming the keys if ``obj``'s weights are non-finite."""
    if not isinstance(obj, dict):
        return
    bad = [f"{part}.{key}" for part in WEIGHT_KEYS if isinstance(obj.get(part), dict)
           for key in nonfinite_keys(obj[part])]
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise NonFiniteCheckpoint(f"refusing to save non-finite weights: {', '.join(bad[:5])}{more}")


def plain_args(args: Any) -> dict[str, Any]:
    """The trainer's flags as plain data (str/int/float/bool/None and lists of them)."""
    plain = (str, int, float, bool, type(None))
    out = {}
    for key, value in sorted(vars(args).items()):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, plain) for v in value):
            value = list(value)
        if isinstance(value, plain) or isinstance(value, list):
            out[key] = value
    return out


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`farslip.atomic.atomic_write` (temporary file, fsync, rename).

    A crash mid-write leaves the previous file intact instead of a truncated one; the file's mode
    follows the umask, as ``torch.save(obj, path)`` would give. A dict whose ``state_dict`` or
    ``state_dict_teacher`` holds a NaN/inf is refused (:class:`NonFiniteCheckpoint`) before
    anything is written.
    """
    check_finite(obj)
    atomic_write(path, lambda handle: torch.save(obj, handle))


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU and, when present, CUDA) to put in a checkpoint."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Optional[dict[str, Any]]) -> None:
    if not state:
        return
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: str | os.PathLike, payload: dict[str, Any], *, numbered: bool) -> list[Path]:
    """Write ``epoch_latest.pt`` (and ``epoch_<epoch>.pt`` when ``numbered``) atomically."""
    folder = Path(folder)
    paths = [folder / LATEST]
    if numbered:
        paths.insert(0, folder / f"epoch_{payload['epoch']}.pt")
    for path in paths:
        save_atomic(payload, path)
    log.info("saved checkpoint %s", ", ".join(str(p) for p in paths))
    return paths


def resolve(resume: str, folder: str | os.PathLike) -> Optional[Path]:
    """The file ``--resume`` names: a path, or ``latest`` = ``<folder>/epoch_latest.pt``.

    ``latest`` with no checkpoint yet returns None (a fresh run); a missing explicit path is
    an error naming it.
    """
    if resume == "latest":
        path = Path(folder) / LATEST
        return path if path.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint file at {path}")
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``) onto the CPU.

    A file that is empty, truncated, a folder or not a checkpoint at all is a
    :class:`~farslip.models.checkpoint.CheckpointError` naming it (the sniffing of
    :func:`farslip.models.checkpoint.read_file`), a pickle holding other Python objects an
    :class:`~farslip.models.checkpoint.UnsafeCheckpointError` (never unpickled: this trainer's
    checkpoints need no unsafe loading); model weights without the training state are a
    ValueError that says to pass them as --pretrained.
    """
    from farslip.models.checkpoint import UnsafeCheckpointError, read_file

    try:
        obj = read_file(path)
    except UnsafeCheckpointError as err:  # farslip train writes only tensors and plain data
        reason = str(err).split("refused to unpickle ", 1)[-1].split(". Only if you trust", 1)[0]
        raise UnsafeCheckpointError(f"{path}: refused to unpickle {reason}; it was not written by farslip train, "
                                    "whose checkpoints load safely: --resume takes only those") from err
    keys = ("epoch", "step", "state_dict", "optimizer")
    missing = [k for k in keys if k not in obj] if isinstance(obj, dict) else list(keys)
    if missing:
        raise ValueError(f"{path} is not a farslip training checkpoint (missing {missing}); "
                         "use --pretrained to start from model weights")
    return obj

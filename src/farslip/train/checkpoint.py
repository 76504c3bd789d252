"""Training checkpoints: atomic writes and resume (``epoch_N.pt``, ``epoch_latest.pt``, ``step_N.pt``).

A checkpoint holds ``epoch`` (epochs completed), ``step`` (optimizer steps taken), ``name``,
``state_dict`` (the model's own keys, no ``module.`` prefix, so it loads with
``farslip.load_checkpoint`` and in stock open_clip), ``optimizer``, ``scaler``,
``state_dict_teacher`` (the teacher's vision tower), ``skipped_total`` (bad samples skipped so
far, all ranks), ``guard`` (the divergence guard's counters: GradScaler-skipped steps so far and
each rank's current streak), the RNG states (``rng``: rank 0's; ``rng_ranks``: every rank's),
``model_settings`` (what rebuilds the model: ``farslip.models.record``), ``train_config`` (the
run's :class:`~farslip.config.TrainConfig` as plain data, by section; :func:`train_config` reads
it back, and also the flat ``train_args`` that checkpoints of earlier versions hold) and, in a step checkpoint written inside an epoch, ``position`` (where the data
stands, see :mod:`farslip.train.resume`). Every field is a tensor, number, string or plain
container, so :func:`load` reads it with ``torch.load(weights_only=True)``. A payload whose
weights hold a NaN or inf is never written.

``step_<global step>.pt`` files come from ``--save-every-n-steps``; :func:`save_step` keeps the
newest ``--keep-checkpoints`` of them. Numbered epoch files are never deleted. ``--resume
latest`` takes the newest complete file by the step it records (:func:`resolve`); a write that
was killed leaves only a hidden ``.<name>.<random>.tmp`` file, which no name here matches.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..atomic import atomic_write
from ..config import TrainConfig
from .args import flag_defaults
from .guard import nonfinite_keys

log = logging.getLogger(__name__)
LATEST = "epoch_latest.pt"
STEP_FILE = re.compile(r"step_(\d+)\.pt")
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")
CONFIG_KEY, OLD_CONFIG_KEY = "train_config", "train_args"  # the run's settings (old: flat flags)
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


def train_config(ckpt: dict[str, Any]) -> TrainConfig:
    """The :class:`~farslip.config.TrainConfig` a loaded checkpoint records.

    This version writes ``train_config`` (by section); earlier ones wrote ``train_args``, every
    flag flat (plus derived and per-process fields, which are ignored). A flag added since then
    takes its default, except ``color_jitter``, which then follows the earlier rule (on for MGRS
    json data). A checkpoint with neither record raises ``ValueError``.
    """
    if isinstance(ckpt.get(CONFIG_KEY), dict):
        return TrainConfig.from_record(ckpt[CONFIG_KEY])
    old = ckpt.get(OLD_CONFIG_KEY)
    if not isinstance(old, dict):
        raise ValueError(f"the checkpoint records no training settings ({CONFIG_KEY} or {OLD_CONFIG_KEY})")
    defaults = flag_defaults()
    defaults["color_jitter"] = old.get("train_dataset_type") == "json"
    return TrainConfig.from_record(old, defaults)


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
    """This process's RNG states: torch CPU (and CUDA when present), python ``random``, numpy.

    Plain types only (numpy's MT19937 key as an int64 tensor), for ``weights_only`` loading.
    """
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    version, internal, gauss = random.getstate()
    state["python"] = [version, list(internal), gauss]
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state["numpy"] = {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return state


def set_rng_state(state: Optional[dict[str, Any]]) -> None:
    """Restore what :func:`rng_state` returned (older checkpoints hold only the torch states)."""
    if not state:
        return
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))


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


def step_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """The ``step_<N>.pt`` files in ``folder`` as (N, path), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := STEP_FILE.fullmatch(p.name)) and p.is_file()]
    return sorted(found)


def save_step(folder: str | os.PathLike, payload: dict[str, Any], keep: int) -> Path:
    """Write ``step_<payload step>.pt`` atomically, then delete all but the newest ``keep`` step
    files (``keep`` 0 keeps all). Epoch files are not touched."""
    folder = Path(folder)
    path = folder / f"step_{payload['step']}.pt"
    save_atomic(payload, path)
    removed = []
    if keep > 0:
        for _, old in step_files(folder)[:-keep]:
            old.unlink(missing_ok=True)
            removed.append(old.name)
    log.info("saved checkpoint %s%s", path, f" (removed {', '.join(removed)})" if removed else "")
    return path


def recorded_step(path: str | os.PathLike) -> int:
    """The ``step`` a checkpoint records, read without loading its tensors (memory-mapped)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(obj["step"])
    except Exception as exc:
        raise ValueError(f"cannot read the step of checkpoint {path} ({type(exc).__name__}: {exc}); "
                         "move the file away or pass --resume with another checkpoint") from exc


def newest(folder: str | os.PathLike) -> Optional[Path]:
    """The newest checkpoint in ``folder`` by the step it records, or None if there is none.

    Candidates: ``step_N.pt`` (step N, from the name), ``epoch_latest.pt`` and ``epoch_N.pt``
    (their recorded step, read memory-mapped: a run killed between writing ``epoch_N.pt`` and
    ``epoch_latest.pt`` leaves the newer state in the numbered file). At equal steps an epoch
    file wins (it starts the next epoch), ``epoch_latest.pt`` first. Temporary files of a killed
    write match none of these names.
    """
    folder = Path(folder)
    candidates = [(step, 0, path) for step, path in step_files(folder)]
    for path in folder.glob("epoch_*.pt") if folder.is_dir() else ():
        if path.is_file() and (path.name == LATEST or EPOCH_FILE.fullmatch(path.name)):
            candidates.append((recorded_step(path), 2 if path.name == LATEST else 1, path))
    return max(candidates)[2] if candidates else None


def resolve(resume: str, folder: str | os.PathLike) -> Optional[Path]:
    """The file ``--resume`` names: a path, or ``latest`` = the newest checkpoint in ``folder``
    (:func:`newest`).

    ``latest`` with no checkpoint yet returns None (a fresh run); a missing explicit path is
    an error naming it.
    """
    if resume == "latest":
        return newest(folder)
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

"""What a checkpoint records about its model, so that its path alone rebuilds it.

Every checkpoint the trainer writes holds ``model_settings`` (plain types, so
``torch.load(weights_only=True)`` reads it)::

    {"arch": "ViT-B-16", "quick_gelu": True, "context_length": 248, "image_size": [224, 224],
     "farslip_version": "0.1.0"}

``farslip.create_model(path)`` and ``create_model(arch, pretrained=path)`` read it with
:func:`read_settings`; a file without it (a bare state dict, a released file, safetensors)
loads exactly as before.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .checkpoint import CheckpointError

SETTINGS_KEY = "model_settings"


def model_settings(model: nn.Module) -> dict[str, Any]:
    """The settings that rebuild ``model`` (built by ``farslip.create_model``), as plain data."""
    from open_clip.transformer import QuickGELU

    from ..version import __version__

    arch = getattr(model, "farslip_arch", None)
    if not isinstance(arch, str):
        raise ValueError("the model was not built by farslip.create_model: its architecture is unknown")
    size = model.visual.image_size
    size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    return {"arch": arch,
            "quick_gelu": any(isinstance(m, QuickGELU) for m in model.modules()),
            "context_length": int(model.context_length),
            "image_size": size,
            "farslip_version": str(__version__)}


def _valid(settings: Any, source: str) -> dict[str, Any]:
    ok = (isinstance(settings, dict) and isinstance(settings.get("arch"), str)
          and isinstance(settings.get("quick_gelu"), bool)
          and isinstance(settings.get("context_length"), int)
          and isinstance(settings.get("image_size"), (list, tuple))
          and len(settings["image_size"]) == 2
          and all(isinstance(s, int) for s in settings["image_size"]))
    if not ok:
        raise CheckpointError(f"{source}: malformed {SETTINGS_KEY!r} entry {settings!r} (expected arch, "
                              "quick_gelu, context_length, image_size)")
    return dict(settings)


def read_settings(path: Union[str, Path]) -> Optional[dict[str, Any]]:
    """The ``model_settings`` a checkpoint file records, or None when it records none.

    Memory-maps the file, so reading the record of a multi-GB training checkpoint reads no
    tensor data. Files that safe loading refuses, and safetensors files, record nothing here
    (loading the weights then says what is wrong).
    """
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix == ".safetensors":
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        return None
    except (RuntimeError, EOFError, ValueError):  # the legacy (pre-zip) format cannot be memory-mapped
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable file records nothing; the weights loader names it
            return None
    if not isinstance(obj, dict) or SETTINGS_KEY not in obj:
        return None
    return _valid(obj[SETTINGS_KEY], str(path))


def check_settings(settings: dict[str, Any], path: Union[str, Path], *, arch: Optional[str] = None,
                   asked: Optional[str] = None, force_quick_gelu: Optional[bool] = None) -> None:
    """Raise ValueError if an explicit architecture or QuickGELU contradicts ``settings``.

    ``arch`` is the architecture the caller's model name stands for, ``asked`` that name as
    the user wrote it (a registry name stands for its architecture).
    """
    if arch is not None and arch != settings["arch"]:
        named = f"{asked!r} (architecture {arch})" if asked and asked != arch else repr(arch)
        raise ValueError(f"model {named} contradicts {path}, which records architecture "
                         f"{settings['arch']!r}; drop the model name (the checkpoint says it) or pass "
                         "the checkpoint that fits")
    if force_quick_gelu is not None and bool(force_quick_gelu) != settings["quick_gelu"]:
        raise ValueError(f"force_quick_gelu={bool(force_quick_gelu)} (--{'' if force_quick_gelu else 'no-'}"
                         f"force-quick-gelu) contradicts {path}, which was trained with quick_gelu="
                         f"{settings['quick_gelu']}; drop the flag (the checkpoint says it)")

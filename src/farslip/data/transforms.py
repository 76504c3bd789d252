"""Image transforms of the FarSLIP recipe (SPEC sections 3 and 6), as the data loaders use them.

The transforms are defined in :mod:`farslip.transforms`, below the model layer (which returns
them from ``create_model_and_transforms`` and does not import the data layer); this module
re-exports them for the loaders. The training loaders hand over uint8 views; the trainer
normalises them on the device with :func:`normalize_views` (bit-identical to ``ToTensor`` +
``Normalize``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from ..transforms import COLOR_JITTER, COLOR_JITTER_P, GRAYSCALE_P, Size, eval_transform, squash_transform

_MEAN_STD: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The OpenAI mean/std as [3, 1, 1] float32 on ``device``, copied there once per process."""
    if device not in _MEAN_STD:
        mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(OPENAI_DATASET_STD, dtype=torch.float32).view(-1, 1, 1)
        _MEAN_STD[device] = (mean.to(device), std.to(device))
    return _MEAN_STD[device]


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images [.., 3, H, W] -> ``Normalize(mean, std)(ToTensor(x))`` as float32, on x's device.

    The same float32 operations in the same order as ``ToTensor`` + ``Normalize`` (divide by
    255, subtract the mean, divide by the std): bit-identical to normalising on the CPU.
    """
    mean, std = _mean_std(x.device)
    return x.to(torch.float32).div_(255).sub_(mean).div_(std)


def normalize_views(batch: dict, keys: Sequence[str] = ("image", "crop", "obj")) -> dict:
    """``batch`` with its uint8 views (as the training loader makes them) normalised on their
    device by :func:`normalize_uint8`; float views are left alone. A quarter of the bytes
    travel through the loader and the host-to-device copy."""
    out = dict(batch)
    for key in keys:
        x = out.get(key)
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
            out[key] = normalize_uint8(x)
    return out


__all__ = ["COLOR_JITTER", "COLOR_JITTER_P", "GRAYSCALE_P", "Size", "eval_transform", "squash_transform",
           "normalize_uint8", "normalize_views"]

"""Image transforms of the FarSLIP recipe (SPEC sections 3 and 6).

Training views are *squash*-resized (no crop: a local view must keep exactly the pixels of its
box), evaluation follows CLIP (shortest side, centre crop). Both end in the OpenAI mean/std.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

Size = Union[int, Sequence[int]]

# Stage-2 photometric augmentation (SPEC section 3), applied independently per view.
COLOR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
COLOR_JITTER_P = 0.8
GRAYSCALE_P = 0.2


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _to_rgb(image):
    return image.convert("RGB") if image.mode != "RGB" else image


def _finish() -> list[Callable]:
    return [T.ToTensor(), T.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)]


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


def squash_transform(image_size: Size, jitter: bool = False) -> T.Compose:
    """PIL image -> normalised tensor, resized to exactly ``image_size`` (aspect not kept).

    ``jitter=True`` adds the stage-2 colour jitter (p 0.8) and random grayscale (p 0.2).
    """
    steps: list[Callable] = [_to_rgb, T.Resize(_pair(image_size), interpolation=InterpolationMode.BICUBIC)]
    if jitter:
        steps += [T.RandomApply([T.ColorJitter(**COLOR_JITTER)], p=COLOR_JITTER_P), T.RandomGrayscale(p=GRAYSCALE_P)]
    return T.Compose(steps + _finish())


def eval_transform(image_size: Size) -> T.Compose:
    """CLIP evaluation transform: shortest side to ``image_size`` (bicubic), centre crop, normalise."""
    size = _pair(image_size)
    return T.Compose(
        [_to_rgb, T.Resize(min(size), interpolation=InterpolationMode.BICUBIC), T.CenterCrop(size)] + _finish()
    )

"""Image transforms of the FarSLIP recipe (SPEC sections 3 and 6).

Training views are *squash*-resized (no crop: a local view must keep exactly the pixels of its
box), evaluation follows CLIP (shortest side, centre crop). Both end in the OpenAI mean/std.
They live here, below both the model layer (``create_model_and_transforms`` returns them) and
the data layer (the loaders apply them; ``farslip.data.transforms`` re-exports them).
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

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

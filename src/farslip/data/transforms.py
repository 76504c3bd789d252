"""Image transforms of the FarSLIP recipe (SPEC sections 3 and 6), as the data loaders use them.

The transforms are defined in :mod:`farslip.transforms`, below the model layer (which returns
them from ``create_model_and_transforms`` and does not import the data layer); this module
re-exports them for the loaders.
"""
from __future__ import annotations

from ..transforms import COLOR_JITTER, COLOR_JITTER_P, GRAYSCALE_P, Size, eval_transform, squash_transform

__all__ = ["COLOR_JITTER", "COLOR_JITTER_P", "GRAYSCALE_P", "Size", "eval_transform", "squash_transform"]

"""The OVSS pre-processing resize, pixel for pixel as the paper's evaluation framework does it.

mmsegmentation's ``Resize(scale=(448, 448), keep_ratio=True)`` calls mmcv's ``imrescale``: the
new size follows mmcv's ``rescale_size`` rule (scale factor ``min(long / max(h, w), short /
min(h, w))``, each side ``int(side * factor + 0.5)``) and the pixels come from OpenCV's
``cv2.resize(..., INTER_LINEAR)`` on the uint8 image, which returns uint8. OpenCV computes that in
fixed point, not in floating point:

* per output column ``x``: ``f = float32((x + 0.5) * (1 / (dst / src)) - 0.5)``, ``s = floor(f)``,
  ``f -= s``; a column left of the first or right of the last source pixel centre takes that
  pixel alone (``s`` clamped, ``f = 0``); the two weights are ``round(2048 * (1 - f))`` and
  ``round(2048 * f)`` (11 fractional bits, ``INTER_RESIZE_COEF_BITS``; round half to even);
* rows the same, except that the two source rows are clamped to the image while the weights are
  kept;
* a row pass sums ``pixel * weight`` exactly in integers, and the column pass rounds the two
  products back to 8 bits as ``((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2``.

(An exact 2x reduction, which OpenCV routes to its area filter, gives the same numbers: both are
the rounded mean of 2 x 2 pixels.) :func:`resize_linear_u8` is that computation, vectorised;
``tests/test_eval_imresize.py`` checks it against a slow per-pixel re-computation.
"""
from __future__ import annotations

import numpy as np

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS  # 2048


def rescale_size(height: int, width: int, scale: tuple[int, int] = (448, 448)) -> tuple[int, int]:
    """(h, w) after mmcv's keep-ratio rescale to ``scale`` (long edge ``max(scale)``, short edge at
    most ``min(scale)``); each side ``int(side * factor + 0.5)``. ``(448, 448)``: long side 448."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def _taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First and second source index and their 11-bit weights for each of ``dst`` outputs."""
    scale = 1.0 / (dst / src)  # OpenCV keeps the inverse scale and inverts it
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f).astype(np.int64)
    f = f - first.astype(np.float32)
    if clamp_weights:  # columns: a tap outside the image becomes one pixel with full weight
        outside = (first < 0) | (first >= src - 1)
        f[outside] = 0.0
        first = np.clip(first, 0, src - 1)
    second = np.clip(first + 1, 0, src - 1)
    first = np.clip(first, 0, src - 1)
    w0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    return first, second, w0, w1


def resize_linear_u8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)`` for a uint8 [H, W] or
    [H, W, C] array; ``size`` is (h, w). Returns uint8."""
    if image.dtype != np.uint8:
        raise TypeError(f"resize_linear_u8 needs a uint8 image, got {image.dtype}")
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    if image.shape[:2] == (height, width):
        return image.copy()
    planar = image.ndim == 2
    pixels = image[:, :, None] if planar else image
    x0, x1, a0, a1 = _taps(pixels.shape[1], width, clamp_weights=True)
    y0, y1, b0, b1 = _taps(pixels.shape[0], height, clamp_weights=False)
    rows = np.unique(np.concatenate([y0, y1]))
    source = pixels[rows].astype(np.int64)
    # row pass: exact integer sums, [rows, width, C]
    horizontal = source[:, x0] * a0[None, :, None] + source[:, x1] * a1[None, :, None]
    where = np.searchsorted(rows, np.stack([y0, y1]))
    top, bottom = horizontal[where[0]] >> 4, horizontal[where[1]] >> 4
    out = (((b0[:, None, None] * top) >> 16) + ((b1[:, None, None] * bottom) >> 16) + 2) >> 2
    out = out.astype(np.uint8)
    return out[:, :, 0] if planar else out

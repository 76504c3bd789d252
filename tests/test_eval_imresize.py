"""The OVSS resize: mmcv's size rule and OpenCV's uint8 INTER_LINEAR, against a slow re-computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from farslip.eval.imresize import rescale_size, resize_linear_u8


def _round_half_even_f32(value: np.float32) -> int:
    """cvRound of a float: nearest integer, ties to even."""
    low = math.floor(float(value))
    rest = float(value) - low
    if rest > 0.5 or (rest == 0.5 and low % 2 == 1):
        return low + 1
    return low


def _tap(d: int, src: int, dst: int, is_column: bool) -> tuple[int, int, int, int]:
    """OpenCV's per-output source index pair and 11-bit weights, one output at a time."""
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    f = np.float32((d + 0.5) * scale - 0.5)
    s = math.floor(f)
    f = np.float32(f - np.float32(s))
    if is_column and (s < 0 or s >= src - 1):
        f = np.float32(0.0)
        s = min(max(s, 0), src - 1)
    i0 = min(max(s, 0), src - 1)
    i1 = min(max(s + 1, 0), src - 1)
    w0 = _round_half_even_f32(np.float32(np.float32(1.0) - f) * np.float32(2048))
    w1 = _round_half_even_f32(f * np.float32(2048))
    return i0, i1, w0, w1


def opencv_linear_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV INTER_LINEAR on uint8, pixel by pixel in Python integers: row sums with 11-bit column
    weights, then ``((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2``."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    pixels = image.reshape(src_h, src_w, -1).astype(int)
    out = np.zeros((height, width, pixels.shape[2]), dtype=np.uint8)
    columns = [_tap(x, src_w, width, True) for x in range(width)]
    for y in range(height):
        r0, r1, b0, b1 = _tap(y, src_h, height, False)
        for x, (c0, c1, a0, a1) in enumerate(columns):
            for c in range(pixels.shape[2]):
                top = int(pixels[r0, c0, c]) * a0 + int(pixels[r0, c1, c]) * a1
                bottom = int(pixels[r1, c0, c]) * a0 + int(pixels[r1, c1, c]) * a1
                out[y, x, c] = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2
    return out.reshape((height, width) + image.shape[2:])


def _smooth_image(rng, height, width, channels=3) -> np.ndarray:
    """A photo-like image (smooth gradients plus noise) so that rounding, not noise, decides."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = 127 + 90 * np.sin(yy[..., None] / 7.0 + np.arange(channels)) * np.cos(xx[..., None] / 5.0)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_hand_worked_row():
    # [0, 255] to 4 columns: centres map to -0.25 (clamped), 0.25, 0.75, 1.25 (clamped);
    # 0.25 -> weights 1536/512: 255*512 = 130560, >>4 = 8160, *2048 >>16 = 255, (255+2)>>2 = 64;
    # 0.75 -> 255*1536 = 391680, >>4 = 24480, *2048 >>16 = 765, (765+2)>>2 = 191.
    row = np.array([[0, 255]], dtype=np.uint8)
    assert resize_linear_u8(row, (1, 4)).tolist() == [[0, 64, 191, 255]]
    # where the fixed point truncates and the float rule rounds: [[2, 171], [134, 165]] to 4 x 4,
    # pixel (1, 1) sits at source (0.25, 0.25), float value 68.625 -> 69. OpenCV: rows
    # 2*1536 + 171*512 = 90624 (>>4 5664) and 134*1536 + 165*512 = 290304 (>>4 18144);
    # (1536*5664)>>16 = 132, (512*18144)>>16 = 141; (132 + 141 + 2) >> 2 = 68.
    square = np.array([[2, 171], [134, 165]], dtype=np.uint8)
    assert resize_linear_u8(square, (4, 4))[1, 1] == 68


@pytest.mark.parametrize("src,dst", [
    ((37, 53), (29, 41)),    # non-integer downscale
    ((40, 30), (20, 15)),    # exact 2x (OpenCV's area path: the same rounded 2x2 mean)
    ((36, 45), (12, 15)),    # exact 3x
    ((17, 23), (41, 60)),    # upscale
    ((25, 7), (44, 12)),     # a narrow image to the OVSS rule's size
    ((1, 9), (3, 20)),       # a single row
    ((31, 31), (31, 31)),    # identity
])
def test_matches_the_slow_reference(src, dst):
    rng = np.random.default_rng(sum(src) * 7 + sum(dst))
    image = _smooth_image(rng, *src)
    np.testing.assert_array_equal(resize_linear_u8(image, dst), opencv_linear_reference(image, *dst))
    gray = image[:, :, 1].copy()
    np.testing.assert_array_equal(resize_linear_u8(gray, dst), opencv_linear_reference(gray, *dst))


def test_differs_from_float_resize_rounded():
    """What the exact rule fixes: a float bilinear resize, rounded, flips some pixel values."""
    rng = np.random.default_rng(5)
    image = _smooth_image(rng, 60, 52)
    size = rescale_size(60, 52, (45, 45))
    exact = resize_linear_u8(image, size)
    floated = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=size, mode="bilinear",
                            align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    differ = (exact != floated).mean()
    assert 0 < differ < 0.2
    assert np.abs(exact.astype(int) - floated.astype(int)).max() == 1


def test_rescale_size_is_mmcv_rule():
    assert rescale_size(1024, 1024) == (448, 448)
    assert rescale_size(256, 70) == (448, 123)        # 70 * 1.75 = 122.5 -> int(123.0)
    assert rescale_size(2160, 3840) == (252, 448)      # UAVid
    assert rescale_size(500, 333) == (448, 298)        # 333 * 0.896 = 298.37
    assert rescale_size(896, 5) == (448, 3)            # 2.5 rounds half up (Python's round gives 2)
    assert rescale_size(100, 100) == (448, 448)        # upscale
    assert rescale_size(300, 200, (448, 224)) == (336, 224)  # the short edge limits


def test_rejects_what_it_cannot_do():
    with pytest.raises(TypeError, match="uint8"):
        resize_linear_u8(np.zeros((4, 4), dtype=np.float32), (2, 2))
    with pytest.raises(ValueError, match="0x2"):
        resize_linear_u8(np.zeros((4, 4), dtype=np.uint8), (2, 0))


def test_matches_opencv_itself():
    """The paper's framework calls ``cv2.resize(..., INTER_LINEAR)`` on uint8 pixels: the same
    pixels, down and up, grey and RGB, smooth and noisy, on mmcv's sizes and arbitrary ones."""
    import cv2  # opencv-python-headless, a test requirement
    rng = np.random.default_rng(7)
    for trial in range(120):
        height, width = (int(v) for v in rng.integers(2, 600, size=2))
        shape = (height, width, 3) if trial % 2 else (height, width)
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if trial % 3 == 0:  # smooth gradients, where rounding differences would show
            image = (np.cumsum(image.astype(np.int64), axis=0) % 256).astype(np.uint8)
        size = rescale_size(height, width) if trial % 4 < 2 else tuple(int(v) for v in rng.integers(1, 800, size=2))
        expected = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        got = resize_linear_u8(image, size)
        assert got.shape == expected.shape and got.dtype == np.uint8
        assert np.array_equal(got, expected), (shape, size)

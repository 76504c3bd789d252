"""Region features: RoI-Align over the dense token map (SPEC section 2)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

Grid = Union[int, Sequence[int]]


def token_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """[B, P, D] row-major tokens -> [B, D, gh, gw]."""
    gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    batch, count, dim = tokens.shape
    if count != gh * gw:
        raise ValueError(f"{count} tokens do not form a {gh}x{gw} grid")
    return tokens.transpose(1, 2).reshape(batch, dim, gh, gw)


def _to_grid(boxes: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """[K, 4] normalised xyxy -> token-grid units (Python-scalar products: no tensor to copy in)."""
    if gh == gw:
        return boxes * gw
    return torch.stack((boxes[:, 0] * gw, boxes[:, 1] * gh, boxes[:, 2] * gw, boxes[:, 3] * gh), dim=1)


BOX_SLACK = 1e-4  # normalised coordinates may overshoot [0, 1] by rounding, not more


def check_boxes(boxes: Sequence[torch.Tensor]) -> None:
    """ValueError unless every box is a normalised (x1, y1, x2, y2) with 0 <= x1 <= x2 <= 1 (and y).

    Pixel boxes (values above 1) and inverted boxes would silently give features of another
    region; the error says which image and box. (One host sync: the training step, whose boxes
    the data pipeline builds normalised, skips it.)
    """
    for image, b in enumerate(boxes):
        b = b.reshape(-1, 4)
        if b.numel() == 0:
            continue
        outside = (b < -BOX_SLACK) | (b > 1 + BOX_SLACK)
        inverted = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if bool(outside.any()) or bool(inverted.any()):
            row = int((outside.any(dim=1) | inverted).nonzero()[0])
            what = "outside [0, 1] (pixel coordinates? divide by the image width/height)" if bool(
                outside[row].any()) else "inverted (x2 < x1 or y2 < y1)"
            raise ValueError(f"roi_features: box {row} of image {image} is {what}: {b[row].tolist()}; "
                             "boxes are normalised (x1, y1, x2, y2) in [0, 1] of the image")


def roi_features(
    tokens: torch.Tensor,
    boxes: Union[Sequence[torch.Tensor], torch.Tensor],
    grid: Grid,
    image_index: Optional[torch.Tensor] = None,
    *,
    check: bool = True,
) -> torch.Tensor:
    """L2-normalised region features [sum n_i, D], image-major.

    ``boxes`` holds, per image, an [n_i, 4] tensor of normalised (x1, y1, x2, y2) in [0, 1]
    (a [B, n, 4] tensor is read as B lists of n). Each box is scaled to the g x g token grid and
    RoI-aligned to g x g bins (``aligned=True``, adaptive sampling); the bins are averaged.
    With ``image_index`` [K], ``boxes`` is one packed [K, 4] tensor and row k belongs to image
    ``image_index[k]`` (what the trainer prepares on the host: nothing here depends on values).
    ``check`` validates the boxes first (:func:`check_boxes`; it reads values, so the training
    step, whose boxes the data pipeline builds normalised, passes ``check=False``).
    """
    fmap = token_map(tokens, grid)
    gh, gw = fmap.shape[-2:]
    if image_index is not None:
        packed = boxes.reshape(-1, 4)
        if image_index.shape[0] != packed.shape[0]:
            raise ValueError(f"{image_index.shape[0]} image indices for {packed.shape[0]} boxes")
        if check:  # per image, so that the error names the image and its box
            check_boxes([packed[image_index == i] for i in range(fmap.shape[0])])
        index = image_index.to(device=fmap.device, dtype=fmap.dtype)[:, None]
        packed = _to_grid(packed.to(device=fmap.device, dtype=fmap.dtype), gh, gw)
        rois: Union[torch.Tensor, list[torch.Tensor]] = torch.cat([index, packed], dim=1)
    else:
        if len(boxes) != fmap.shape[0]:
            raise ValueError(f"{len(boxes)} box sets for {fmap.shape[0]} images")
        if check:
            check_boxes(boxes)
        rois = [_to_grid(b.to(device=fmap.device, dtype=fmap.dtype).reshape(-1, 4), gh, gw) for b in boxes]
    pooled = roi_align(fmap, rois, output_size=(gh, gw), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return F.normalize(pooled.mean(dim=(2, 3)), dim=-1)

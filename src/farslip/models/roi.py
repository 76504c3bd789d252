"""Region features: RoI-Align over the dense token map (SPEC section 2)."""
from __future__ import annotations

from typing import Sequence, Union

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


def roi_features(
    tokens: torch.Tensor,
    boxes: Union[Sequence[torch.Tensor], torch.Tensor],
    grid: Grid,
) -> torch.Tensor:
    """L2-normalised region features [sum n_i, D], image-major.

    ``boxes`` holds, per image, an [n_i, 4] tensor of normalised (x1, y1, x2, y2) in [0, 1]
    (a [B, n, 4] tensor is read as B lists of n). Each box is scaled to the g x g token grid and
    RoI-aligned to g x g bins (``aligned=True``, adaptive sampling); the bins are averaged.
    """
    fmap = token_map(tokens, grid)
    gh, gw = fmap.shape[-2:]
    scale = torch.tensor([gw, gh, gw, gh], dtype=fmap.dtype, device=fmap.device)
    scaled = [b.to(device=fmap.device, dtype=fmap.dtype).reshape(-1, 4) * scale for b in boxes]
    if len(scaled) != fmap.shape[0]:
        raise ValueError(f"{len(scaled)} box sets for {fmap.shape[0]} images")
    pooled = roi_align(fmap, scaled, output_size=(gh, gw), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return F.normalize(pooled.mean(dim=(2, 3)), dim=-1)

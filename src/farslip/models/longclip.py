"""Long-CLIP text positions (SPEC section 2): 77 -> 248 rows, first ``keep`` rows untouched.

A stretched table keeps rows 0..keep-1, interpolates 4 rows between each later pair of rows, and
extrapolates 4 rows past the last one, so 20 + 56*4 + 4 = 248 for the standard table.
"""
from __future__ import annotations

import torch
from torch import nn

KEEP = 20
STRETCH = 4


def stretch_positional_embedding(table: torch.Tensor, keep: int = KEEP, ratio: int = STRETCH) -> torch.Tensor:
    """Stretch an [L, W] positional table to [keep + (L - keep) * ratio, W] (77 -> 248 by default)."""
    if table.ndim != 2 or table.shape[0] <= keep + 1:
        raise ValueError(f"expected an [L, W] table with L > {keep + 1}, got {tuple(table.shape)}")
    head = table[:keep]
    frac = torch.arange(ratio, dtype=table.dtype, device=table.device).div(ratio)[None, :, None]  # r / 4
    left, right = table[keep:-1, None], table[keep + 1:, None]
    middle = (left * (1 - frac) + right * frac).flatten(0, 1)  # ((4 - r) E[i] + r E[i+1]) / 4
    tail = table[-1] + frac[0] * (table[-1] - table[-2])  # E[-1] + r (E[-1] - E[-2]) / 4
    return torch.cat([head, middle, tail], dim=0)


def causal_mask(length: int, device=None) -> torch.Tensor:
    """The additive causal mask open_clip's text transformer expects."""
    return torch.full((length, length), float("-inf"), device=device).triu_(1)


def is_long_text(model: nn.Module) -> bool:
    return getattr(model, "context_length", 77) > 77


def enable_long_text(model: nn.Module, keep: int = KEEP) -> nn.Module:
    """Turn a 77-token model into a 248-token one by stretching its own table (in place)."""
    old = model.positional_embedding
    if old.shape[0] != 77:
        raise ValueError(f"enable_long_text expects a 77-row table, found {old.shape[0]} rows")
    stretched = stretch_positional_embedding(old.detach().float(), keep).to(old.dtype)
    model.positional_embedding = nn.Parameter(stretched, requires_grad=old.requires_grad)
    model.context_length = stretched.shape[0]
    model.register_buffer("attn_mask", causal_mask(stretched.shape[0], device=old.device), persistent=False)
    model.farslip_long_keep = keep
    return model


class FrozenRows:
    """Keep rows ``0..keep-1`` of the text positional table fixed while the rest trains.

    Gradients of the frozen rows are zeroed by a hook (so optimiser moments stay zero) and
    ``restore()``, called after each optimiser step, undoes decoupled weight decay exactly.
    """

    def __init__(self, model: nn.Module, keep: int | None = None):
        self.keep = int(keep if keep is not None else getattr(model, "farslip_long_keep", KEEP))
        self.param = model.positional_embedding
        self.saved = self.param.detach()[: self.keep].clone()
        self._handle = self.param.register_hook(self._zero_frozen)

    def _zero_frozen(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.keep] = 0
        return grad

    @torch.no_grad()
    def restore(self) -> None:
        self.param[: self.keep].copy_(self.saved)

    def remove(self) -> None:
        self._handle.remove()

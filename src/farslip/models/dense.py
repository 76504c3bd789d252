"""Dense patch tokens from a stock open_clip vision tower (SPEC section 2).

The blocks before the last run once; the last block then runs as (a) the normal block, giving the
CLS embedding exactly as ``model.encode_image``, and/or (b) a dense variant that replaces it by an
attention only, giving one projected token per patch. Each branch runs only when asked for.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LAST_ATTN_TYPES = ("segearth", "clearclip", "sclip", "maskclip", "vanilla")
# Self-attention terms summed by each variant: softmax(a x x^T) v for x in the tuple.
_SELF_TERMS = {"segearth": "qkv", "sclip": "qk", "clearclip": "q"}
NEEDS = ("cls", "tokens")


def _visual(model: nn.Module) -> nn.Module:
    visual = getattr(model, "visual", model)
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError("dense tokens are defined for ViTs without an attentional pooler")
    if not hasattr(visual, "transformer") or not hasattr(visual.transformer, "resblocks"):
        raise TypeError(f"{type(visual).__name__} is not an open_clip VisionTransformer")
    return visual


def _run(fn, x: torch.Tensor, use_ckpt: bool) -> torch.Tensor:
    """``fn(x)``, through activation checkpointing when the tower has it switched on."""
    return checkpoint(fn, x, use_reentrant=False) if use_ckpt else fn(x)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # [B, L, C] -> [B, h, L, d]


def dense_block(block: nn.Module, x: torch.Tensor, last_attn: str = "segearth") -> torch.Tensor:
    """The dense replacement of ``block`` applied to its input residual stream ``x`` [B, L, C]."""
    attn: nn.MultiheadAttention = block.attn
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (_split_heads(t, attn.num_heads) for t in qkv.chunk(3, dim=-1))
    if last_attn == "maskclip":
        out = v
    elif last_attn == "vanilla":
        out = F.scaled_dot_product_attention(q, k, v)
    elif last_attn in _SELF_TERMS:
        # softmax(a x x^T) v summed (not averaged) over the variant's terms, each one fused SDPA
        # call; stacking the terms into a single call measured no faster (scripts/bench.py model)
        terms = [dict(q=q, k=k, v=v)[name] for name in _SELF_TERMS[last_attn]]
        out = sum(F.scaled_dot_product_attention(t, t, v) for t in terms)
    else:
        raise ValueError(f"unknown last_attn {last_attn!r}; choose from {', '.join(LAST_ATTN_TYPES)}")
    out = attn.out_proj(out.transpose(1, 2).flatten(2))
    if last_attn != "maskclip":
        return out
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _project(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def encode_dense(
    model: nn.Module,
    images: torch.Tensor,
    last_attn: str = "segearth",
    need: Iterable[str] = NEEDS,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """CLS embedding [B, D] (== ``model.encode_image``) and dense tokens [B, P, D] (unnormalised).

    ``need`` names the outputs to compute: ``("cls",)``, ``("tokens",)`` or both; the other is None.
    Tokens are row-major over the patch grid, class token dropped, after ``ln_post`` and ``proj``.
    """
    need = tuple(need)
    if not need or set(need) - set(NEEDS):
        raise ValueError(f"need must name some of {NEEDS}, got {need}")
    if last_attn not in LAST_ATTN_TYPES:
        raise ValueError(f"unknown last_attn {last_attn!r}; choose from {', '.join(LAST_ATTN_TYPES)}")
    visual = _visual(model)
    transformer = visual.transformer
    if not getattr(transformer, "batch_first", True):
        raise NotImplementedError("encode_dense expects a batch-first transformer (open_clip >= 2.24)")
    use_ckpt = bool(getattr(transformer, "grad_checkpointing", False)) and torch.is_grad_enabled()

    x = visual._embeds(images)
    *early, last = transformer.resblocks
    for block in early:
        x = _run(block, x, use_ckpt)

    cls = tokens = None
    if "cls" in need:
        pooled, _ = visual._pool(_run(last, x, use_ckpt))
        cls = pooled @ visual.proj if visual.proj is not None else pooled
    if "tokens" in need:
        dense = _run(lambda t: dense_block(last, t, last_attn), x, use_ckpt)
        tokens = _project(visual, dense[:, 1:])  # drop the class token
    return cls, tokens

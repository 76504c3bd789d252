"""Text features without the padding: ``encode_text(model, tokens)`` == ``model.encode_text``.

CLIP's text tower is causal and pools the end-of-text token, so the positions after the last
end-of-text token of a batch influence nothing that is returned. Captions are usually far
shorter than the context (77, or 248 for Long-CLIP), so the tower runs on the batch trimmed to
its longest caption: same features, a fraction of the work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn


def _trimmable(model: nn.Module) -> bool:
    return (getattr(model, "text_pool_type", None) == "argmax" and getattr(model, "attn_mask", None) is not None
            and hasattr(model, "token_embedding") and hasattr(model, "positional_embedding"))


def trimmable(model: nn.Module) -> bool:
    """Whether :func:`encode_text` may drop the positions after the last end-of-text token."""
    return _trimmable(model)


def used_length(tokens: torch.Tensor) -> int:
    """Positions that matter: up to the last end-of-text token (the highest id in each row).

    Reads the tokens' values: on a GPU this waits for the device (a host sync), so the trainer
    trims on the host before the batch moves (``trim_tokens``) and passes ``length``.
    """
    return int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else tokens.shape[-1]


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens[:, :used_length(tokens)]``: the same features from :func:`encode_text`, less to move."""
    return tokens[:, :used_length(tokens)]


def encode_text(model: nn.Module, tokens: torch.Tensor, normalize: bool = False,
                length: int | None = None) -> torch.Tensor:
    """``model.encode_text(tokens)``, computed on the batch trimmed to its longest caption.

    ``length`` (at least the used length, e.g. ``tokens.shape[-1]`` of tokens already cut by
    :func:`trim_tokens`) skips reading the tokens to find it. Falls back to
    ``model.encode_text`` for towers that are not causal with argmax pooling.
    """
    if not _trimmable(model):
        return model.encode_text(tokens, normalize=normalize)
    length = used_length(tokens) if length is None else min(int(length), tokens.shape[-1])
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens, "argmax")
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x, dim=-1) if normalize else x

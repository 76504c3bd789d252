"""FarSLIP's loss terms as pure functions over features (SPEC section 4).

The global image-text loss is open_clip's own ``ClipLoss`` (built by :func:`global_itc_loss`);
this module adds what FarSLIP needs on top of it:

* :func:`distill_loss` -- patch-to-patch (or patch-to-CLS) self-distillation,
  ``1 - mean_i <r_i, target_i>``;
* :func:`multi_positive_loss` -- the multi-positive region-category contrastive loss (MPCL):
  rows sharing a category are all positives of each other;
* :func:`clip_rows_loss` -- the plain symmetric CLIP loss over a set of rows;
* :func:`region_itc_loss` -- the local (region) ITC: pads each rank's regions to a fixed
  number of rows, gathers them across ranks like ``ClipLoss`` does, drops the padding and
  applies one of the two losses above.

All inputs are expected L2-normalised where the SPEC says so; nothing here touches a model.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss, gather_features

__all__ = [
    "global_itc_loss",
    "distill_loss",
    "multi_positive_loss",
    "clip_rows_loss",
    "region_itc_loss",
]


def global_itc_loss(*, local_loss: bool = False, gather_with_grad: bool = False, rank: int = 0,
                    world_size: int = 1) -> ClipLoss:
    """open_clip's CLIP loss, negatives gathered across ranks (labels cached between steps)."""
    return ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, cache_labels=True,
                    rank=rank, world_size=world_size)


def distill_loss(regions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - mean_i <regions_i, targets_i>`` for row-aligned, L2-normalised features [M, D].

    With no rows (every image lost its crops) the loss is an exact zero that still depends
    on ``regions``, so backward and DDP's gradient bookkeeping see the usual graph.
    """
    if regions.shape != targets.shape:
        raise ValueError(f"distill_loss: regions {tuple(regions.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape")
    if regions.shape[0] == 0:
        return regions.sum() * 0.0
    return 1.0 - (regions * targets).sum(dim=-1).mean()


def _mpcl_rows(v: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
               logit_scale: torch.Tensor) -> torch.Tensor:
    """MPCL over rows that all carry a category label (at least one row)."""
    same = (y[:, None] == y[None, :]).to(v.dtype)
    target = same / same.sum(dim=1, keepdim=True)
    logits_v = logit_scale * v @ t.T
    logits_t = logit_scale * t @ v.T
    loss_v = F.cross_entropy(logits_v, target)
    loss_t = F.cross_entropy(logits_t, target)
    return (loss_v + loss_t) / 2


def multi_positive_loss(regions: torch.Tensor, texts: torch.Tensor, labels: torch.Tensor,
                        logit_scale: torch.Tensor) -> torch.Tensor:
    """Multi-positive contrastive loss over rows with a category label (label >= 0).

    Rows with label -1 (free-text regions) are dropped. Logits ``s V T^T`` and ``s T V^T``;
    the target distribution of row i puts equal mass on every row j with ``y_j == y_i``;
    the loss is the mean of the two soft cross-entropies. No labelled row gives 0, not NaN.
    (Dropping rows reads the labels: a host sync on a GPU; the trainer drops them on the host.)
    """
    keep = labels >= 0
    if not bool(keep.any()):
        return (regions.sum() + texts.sum()) * 0.0
    return _mpcl_rows(regions[keep], texts[keep], labels[keep], logit_scale)


def _masked_rows_loss(regions: torch.Tensor, texts: torch.Tensor, labels: torch.Tensor,
                      rows: torch.Tensor, logit_scale: torch.Tensor, mpcl: bool) -> torch.Tensor:
    """MPCL (``mpcl``) or the CLIP loss over the rows marked by ``rows`` [R], without dropping
    the others: their logits are masked out and their losses weighted 0, so no shape depends
    on the labels (no host sync). Equals the loss over the kept rows up to rounding."""
    if mpcl:
        same = (labels[:, None] == labels[None, :]) & rows[:, None] & rows[None, :]
    else:
        same = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device) & rows[:, None]
    weight = same.to(regions.dtype)
    target = weight / weight.sum(dim=1, keepdim=True).clamp_min(1)
    count = rows.sum().clamp_min(1)
    total = 0.0
    for logits in (logit_scale * regions @ texts.T, logit_scale * texts @ regions.T):
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16 -> fp32
        logits = logits.masked_fill(~rows[None, :], torch.finfo(logits.dtype).min)
        total = total + (-(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)).sum() / count
    return total / 2


def clip_rows_loss(regions: torch.Tensor, texts: torch.Tensor,
                   logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss where row i of ``regions`` matches row i of ``texts``; 0 if empty."""
    if regions.shape[0] == 0:
        return (regions.sum() + texts.sum()) * 0.0
    logits = logit_scale * regions @ texts.T
    target = torch.arange(regions.shape[0], device=regions.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _scatter_rows(rows: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """Place ``rows`` at ``index`` of a zero tensor with ``total`` rows (differentiable)."""
    out = rows.new_zeros((total,) + tuple(rows.shape[1:]))
    return out.index_copy(0, index, rows)


def region_itc_loss(regions: torch.Tensor, texts: torch.Tensor, labels: torch.Tensor,
                    valid: torch.Tensor, logit_scale: torch.Tensor, *, mpcl: bool = True,
                    gather_with_grad: bool = False, rank: int = 0, world_size: int = 1,
                    slot_index: Optional[torch.Tensor] = None,
                    labelled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ITC between region features and region texts across the gathered batch.

    ``regions``/``texts`` [M, D] and ``labels`` [M] hold this rank's valid regions in
    image-major order; ``valid`` [B, N] marks which of the N slots per image they fill
    (``slot_index`` [M], the flat slot of each row, may be given instead of being read from
    ``valid``). Each rank pads to B*N rows so that ``all_gather`` sees equal shapes (B is equal
    on all ranks), gathers exactly like open_clip's ``ClipLoss`` (with or without gradient
    through the gather), and computes MPCL (``mpcl=True``) or the CLIP loss over the valid
    rows, the padding masked out. ``labelled=True`` promises that every label is >= 0 (the
    trainer drops free-text rows on the host), so a single rank needs no data-dependent step.
    Returns the loss and the number of rows it was computed over (all ranks; a 0-d tensor
    on the features' device, so that reading it is left to the caller).
    """
    if world_size > 1:
        slots = valid.numel()
        index = valid.reshape(-1).nonzero().squeeze(1) if slot_index is None else slot_index
        pad_v = _scatter_rows(regions, index, slots)
        pad_t = _scatter_rows(texts, index, slots)
        pad_y = torch.full((slots,), -2, dtype=labels.dtype, device=labels.device)
        pad_y = pad_y.index_copy(0, index, labels)
        regions, texts = gather_features(pad_v, pad_t, local_loss=False,
                                         gather_with_grad=gather_with_grad, rank=rank,
                                         world_size=world_size)
        all_y = [torch.empty_like(pad_y) for _ in range(world_size)]
        dist.all_gather(all_y, pad_y)
        labels = torch.cat(all_y)
        rows = labels >= 0 if mpcl else labels != -2  # -2 marks padding; -1 a free-text region
        return _masked_rows_loss(regions, texts, labels, rows, logit_scale, mpcl), rows.sum()
    count = torch.full((), labels.shape[0], dtype=torch.long, device=regions.device)
    if not mpcl:
        return clip_rows_loss(regions, texts, logit_scale), count
    if not labelled:
        return multi_positive_loss(regions, texts, labels, logit_scale), (labels >= 0).sum()
    if labels.shape[0] == 0:
        return (regions.sum() + texts.sum()) * 0.0, count
    return _mpcl_rows(regions, texts, labels, logit_scale), count

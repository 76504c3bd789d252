"""One training step's computation for farslip1, farslip2 and vanilla (SPEC section 4).

Split in two so that DDP sees every parameter use and tests can check each loss term:

* :class:`StudentFeatures` -- an ``nn.Module`` whose ``forward(batch)`` runs everything the
  student encodes (wrap *it* in DDP). It computes only what some loss uses: the global image's
  CLS and/or dense tokens, the caption, the distillation views only when the student is its
  own teacher (``active``), the object crops only for the labelled rows a region loss keeps,
  and each distinct region text once.
* :func:`compute_losses` -- turns those features (and the teacher's targets) into the loss
  terms and their weighted sum.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

import farslip
from farslip import losses
from farslip.models.text import encode_text

Batch = Mapping[str, torch.Tensor]
# --distill-align -> outputs of the distillation views it compares against
DISTILL_NEEDS = {"roi2pooled": ("tokens",), "roi2cls": ("cls",), "combined": ("cls", "tokens")}
# --local-itc-align -> outputs of the object crops ("roi" reads the global image's tokens)
LOCAL_NEEDS = {"cls": ("cls",), "pooled": ("tokens",), "roi": ()}


@dataclass(frozen=True)
class Plan:
    """What one step encodes and which losses it computes, fixed at start-up."""

    global_itc: bool
    distill: bool
    local_itc: bool
    image_need: tuple[str, ...]      # outputs of the global image
    distill_views: str               # batch prefix of the distillation views: "crop" or "obj"
    distill_need: tuple[str, ...]
    student_distill: bool            # the student encodes the distillation views (active)
    local_need: tuple[str, ...]      # outputs of object crops for local ITC (empty for roi)
    local_align: str
    distill_align: str
    mpcl: bool
    last_attn: str

    @property
    def obj_need(self) -> tuple[str, ...]:
        """Outputs the student needs from the object crops (both losses may share them)."""
        need = set(self.local_need if self.local_itc else ())
        if self.student_distill and self.distill_views == "obj":
            need |= set(self.distill_need)
        return tuple(sorted(need))


def make_plan(args: argparse.Namespace) -> Plan:
    """The :class:`Plan` for validated trainer flags (see ``farslip.train.args``)."""
    terms = set(args.loss_type)
    distill, local_itc = "distill" in terms, "local_itc" in terms
    image_need = set()
    if "global_itc" in terms:
        image_need.add("cls")
    if distill or (local_itc and args.local_itc_align == "roi"):
        image_need.add("tokens")
    return Plan(
        global_itc="global_itc" in terms,
        distill=distill,
        local_itc=local_itc,
        image_need=tuple(sorted(image_need)),
        distill_views="obj" if args.distill_views == "objects" else "crop",
        distill_need=DISTILL_NEEDS[args.distill_align],
        student_distill=distill and args.distill_type == "active",
        local_need=LOCAL_NEEDS[args.local_itc_align],
        local_align=args.local_itc_align,
        distill_align=args.distill_align,
        mpcl=args.mpcl_loss,
        last_attn=args.last_attn_type,
    )


def encode_views(model: nn.Module, images: torch.Tensor, need: tuple[str, ...],
                 last_attn: str) -> dict[str, torch.Tensor]:
    """Normalised ``cls`` and/or ``pooled`` (mean dense token) features of ``images``.

    With ``need == ("cls",)`` this is the stock ``encode_image``; ``tokens`` (raw dense tokens)
    is returned too when they were computed, for RoI features on the same images.
    """
    if images.shape[0] == 0:  # a batch whose images all lost their views: nothing to encode
        empty = images.new_zeros((0, model.visual.output_dim))
        out = {"cls": empty} if "cls" in need else {}
        if "tokens" in need:
            grid = model.visual.grid_size
            out.update(tokens=images.new_zeros((0, grid[0] * grid[1], empty.shape[1])),
                       pooled=empty)
        return out
    if tuple(need) == ("cls",):
        return {"cls": F.normalize(model.encode_image(images), dim=-1)}
    cls, tokens = farslip.encode_dense(model, images, last_attn=last_attn, need=need)
    out = {"tokens": tokens, "pooled": F.normalize(tokens.mean(dim=1), dim=-1)}
    if cls is not None:
        out["cls"] = F.normalize(cls, dim=-1)
    return out


class ViewEncoder(nn.Module):
    """``encode_views`` of a fixed model and outputs as a module call (so it can be compiled)."""

    def __init__(self, model: nn.Module, need: tuple[str, ...], last_attn: str):
        super().__init__()
        self.model, self.need, self.last_attn = model, tuple(need), last_attn

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return encode_views(self.model, images, self.need, self.last_attn)


def encode_texts_once(model: nn.Module, texts: torch.Tensor) -> torch.Tensor:
    """Normalised text features of ``texts`` [M, L], each distinct row encoded once."""
    if texts.shape[0] == 0:
        return model.logit_scale.new_zeros((0, model.visual.output_dim))
    unique, inverse = torch.unique(texts, dim=0, return_inverse=True)
    return F.normalize(encode_text(model, unique), dim=-1)[inverse]


def local_keep(batch: Batch, plan: Plan) -> torch.Tensor:
    """Which object rows enter the region loss: labelled ones for MPCL, all otherwise."""
    labels = batch["obj_label"]
    return labels >= 0 if plan.mpcl else torch.ones_like(labels, dtype=torch.bool)


class StudentFeatures(nn.Module):
    """Everything the student encodes for one batch, as one module call (for DDP)."""

    def __init__(self, model: nn.Module, plan: Plan):
        super().__init__()
        self.model = model
        self.plan = plan

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        plan, model = self.plan, self.model
        out: dict[str, torch.Tensor] = {"logit_scale": model.logit_scale.exp()}
        if plan.image_need:
            image = encode_views(model, batch["image"], plan.image_need, plan.last_attn)
            out.update({name: image[key] for name, key in (("image", "cls"), ("tokens", "tokens"))
                        if key in image})
        if plan.global_itc:
            out["text"] = F.normalize(encode_text(model, batch["text"]), dim=-1)
        if plan.student_distill and plan.distill_views == "crop":
            crops = encode_views(model, batch["crop"], plan.distill_need, plan.last_attn)
            out.update({f"distill_{k}": v for k, v in crops.items() if k != "tokens"})
        if plan.obj_need or plan.local_itc:
            out.update(self._objects(batch))
        return out

    def _objects(self, batch: Batch) -> dict[str, torch.Tensor]:
        plan, model = self.plan, self.model
        out: dict[str, torch.Tensor] = {}
        keep = local_keep(batch, plan) if plan.local_itc else None
        shared = plan.student_distill and plan.distill_views == "obj"
        if shared:  # every object crop feeds distillation; local ITC reuses its rows
            objs = encode_views(model, batch["obj"], plan.obj_need, plan.last_attn)
            out.update({f"distill_{k}": v for k, v in objs.items() if k != "tokens"})
        if plan.local_itc:
            if plan.local_align != "roi":
                key = "cls" if plan.local_align == "cls" else "pooled"
                if shared:
                    out["region"] = objs[key][keep]
                else:
                    out["region"] = encode_views(model, batch["obj"][keep], plan.local_need,
                                                 plan.last_attn)[key]
            out["region_text"] = encode_texts_once(model, batch["obj_text"][keep])
        return out


def _boxes(batch: Batch, prefix: str, valid: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
    """Per-image [n_i, 4] boxes of the valid slots of ``<prefix>_box``."""
    valid = batch[f"{prefix}_valid"] if valid is None else valid
    return [b[v] for b, v in zip(batch[f"{prefix}_box"], valid)]


def compute_losses(plan: Plan, feats: Mapping[str, torch.Tensor], batch: Batch, *,
                   grid, weights: Mapping[str, float], clip_loss: Optional[nn.Module] = None,
                   targets: Optional[Mapping[str, torch.Tensor]] = None,
                   gather_with_grad: bool = False, rank: int = 0,
                   world_size: int = 1) -> dict[str, torch.Tensor]:
    """Loss terms ``global_itc`` / ``distill`` / ``local_itc`` and ``loss`` = their weighted sum.

    ``targets`` are the teacher's distillation targets (``distill_pooled`` / ``distill_cls``)
    for ``ema``/``frozen``; with the ``active`` teacher they are read from ``feats``.
    ``weights`` maps each term to its weight (``--w-g``/``--w-d``/``--w-l``). The result also
    holds ``local_rows``, the number of region rows the local loss saw (all ranks).
    """
    scale = feats["logit_scale"]
    terms: dict[str, torch.Tensor] = {}
    if plan.global_itc:
        terms["global_itc"] = clip_loss(feats["image"], feats["text"], scale)
    if plan.distill:
        src = feats if plan.student_distill else targets
        regions = farslip.roi_features(feats["tokens"], _boxes(batch, plan.distill_views), grid, check=False)
        parts = []
        if "tokens" in plan.distill_need:
            parts.append(losses.distill_loss(regions, src["distill_pooled"]))
        if "cls" in plan.distill_need:
            parts.append(losses.distill_loss(regions, src["distill_cls"]))
        terms["distill"] = sum(parts) / len(parts)
    extra: dict[str, torch.Tensor] = {}
    if plan.local_itc:
        keep = local_keep(batch, plan)
        slots = batch["obj_valid"].clone()
        slots[batch["obj_valid"]] = keep
        if plan.local_align == "roi":
            regions = farslip.roi_features(feats["tokens"], _boxes(batch, "obj", slots), grid, check=False)
        else:
            regions = feats["region"]
        loss, rows = losses.region_itc_loss(
            regions, feats["region_text"], batch["obj_label"][keep], slots, scale,
            mpcl=plan.mpcl, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)
        terms["local_itc"] = loss
        extra["local_rows"] = torch.tensor(rows)
    key = {"global_itc": "w_g", "distill": "w_d", "local_itc": "w_l"}
    terms["loss"] = sum(weights[key[name]] * value for name, value in terms.items())
    return {**terms, **extra}

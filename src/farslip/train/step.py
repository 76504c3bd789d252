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

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

import farslip
from farslip import losses
from farslip.config import MethodConfig
from farslip.models.text import encode_text, trim_tokens, trimmable

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


def make_plan(method: MethodConfig) -> Plan:
    """The :class:`Plan` of a run's method settings (``TrainConfig.method``)."""
    if not isinstance(method, MethodConfig):
        raise TypeError(f"make_plan takes a farslip.config.MethodConfig, not {type(method).__name__}")
    args = method
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


# ------------------------------------------------------------------ host-side bookkeeping
def _flat_rows(valid: torch.Tensor) -> torch.Tensor:
    """Flat slot index (b * N + n) of each valid slot, image-major: the order of the view rows."""
    return valid.reshape(-1).nonzero().squeeze(1)


def _trim(tokens: torch.Tensor, model: Optional[nn.Module]) -> torch.Tensor:
    return trim_tokens(tokens) if model is not None and trimmable(model) else tokens


def prepare_batch(batch: Batch, plan: Plan, model: Optional[nn.Module]) -> dict:
    """The batch plus everything the step would otherwise read from tensor values.

    Call it on the CPU batch, before it moves to the device (the trainer does): on a GPU each
    value read inside the step (a text's used length, the rows a mask keeps, the distinct
    region texts) stops the host until the device catches up. Added keys:

    * ``text`` trimmed to its used length (identical text features, less to move);
    * ``<views>_roi_index`` / ``<views>_roi_box`` [M] / [M, 4]: image and box of each
      distillation view, packed for RoI-Align;
    * for local ITC, per region row that enters the loss (labelled rows under MPCL):
      ``region_rows`` (its object row), ``region_slot`` (flat slot b * N + n),
      ``region_image``, ``region_box``, ``region_label``; the distinct region texts
      ``region_text`` [U, L'] (trimmed) and ``region_text_index`` [K]; and ``region_pixels``
      (its row of ``obj``) where that is not simply every row of ``obj`` in order;
    * ``prepared``: True.

    ``model`` tells whether its text tower may be trimmed (None: texts are left as they are).

    ``obj`` may hold pixels for only some object rows: ``obj_rows`` then names the object row
    of each (the loader leaves out crops no loss looks at); a step that needs pixels the
    batch lacks is an error here, not a wrong loss later.
    """
    out = dict(batch)
    if plan.global_itc:
        out["text"] = _trim(batch["text"], model)
    if plan.distill:
        prefix = plan.distill_views
        slots = _flat_rows(batch[f"{prefix}_valid"])
        n = batch[f"{prefix}_valid"].shape[1]
        out[f"{prefix}_roi_index"] = torch.div(slots, n, rounding_mode="floor")
        out[f"{prefix}_roi_box"] = batch[f"{prefix}_box"].reshape(-1, 4)[slots]
    needs_all_obj = plan.distill and plan.distill_views == "obj"
    if "obj" in batch and "obj_rows" in batch and needs_all_obj:
        rows = batch["obj_rows"]
        if rows.shape[0] != batch["obj_label"].shape[0]:
            raise ValueError("distillation on object views needs the pixels of every object, but the "
                             f"batch holds {rows.shape[0]} of {batch['obj_label'].shape[0]}")
    if plan.local_itc:
        labels = batch["obj_label"]
        rows = ((labels >= 0).nonzero().squeeze(1) if plan.mpcl
                else torch.arange(labels.shape[0], device=labels.device))
        slots = _flat_rows(batch["obj_valid"])[rows]
        n = batch["obj_valid"].shape[1]
        out.update(region_rows=rows, region_slot=slots, region_label=labels[rows],
                   region_image=torch.div(slots, n, rounding_mode="floor"),
                   region_box=batch["obj_box"].reshape(-1, 4)[slots])
        texts = batch["obj_text"][rows]
        if texts.shape[0]:
            unique, inverse = torch.unique(texts, dim=0, return_inverse=True)
        else:
            unique, inverse = texts, torch.zeros(0, dtype=torch.long, device=texts.device)
        out["region_text"], out["region_text_index"] = _trim(unique, model), inverse
        if plan.local_align != "roi":
            pixels = _pixel_rows(batch, rows)
            if pixels is not None:
                out["region_pixels"] = pixels
    out["prepared"] = True
    return out


def _pixel_rows(batch: Batch, rows: torch.Tensor) -> Optional[torch.Tensor]:
    """Rows of ``obj`` holding the pixels of object rows ``rows`` (None: all of ``obj``, in order)."""
    total, device = batch["obj_label"].shape[0], rows.device
    have = batch.get("obj_rows")
    if have is None:
        if batch["obj"].shape[0] != total:
            raise ValueError(f"the batch has {batch['obj'].shape[0]} object crops for {total} objects "
                             "and no obj_rows saying which")
        have = torch.arange(total, device=device)
    where = torch.full((total,), -1, dtype=torch.long, device=device)
    where[have] = torch.arange(have.shape[0], device=device)
    pixels = where[rows]
    if bool((pixels < 0).any()):
        raise ValueError("the local ITC needs object crops the batch does not hold (the loader was "
                         "built for another --local-itc-align / --mpcl-loss)")
    if pixels.shape[0] == batch["obj"].shape[0] and torch.equal(pixels, torch.arange(pixels.shape[0], device=device)):
        return None
    return pixels


def _select(x: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
    return x if index is None else x.index_select(0, index)


class StudentFeatures(nn.Module):
    """Everything the student encodes for one batch, as one module call (for DDP).

    Give it a batch from :func:`prepare_batch` (on the host): then no step reads a tensor's
    values. An unprepared batch is prepared here, on whatever device it lives.
    """

    def __init__(self, model: nn.Module, plan: Plan):
        super().__init__()
        self.model = model
        self.plan = plan

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        plan, model = self.plan, self.model
        if not batch.get("prepared"):
            batch = prepare_batch(batch, plan, model)
        out: dict[str, torch.Tensor] = {"logit_scale": model.logit_scale.exp()}
        if plan.image_need:
            image = encode_views(model, batch["image"], plan.image_need, plan.last_attn)
            out.update({name: image[key] for name, key in (("image", "cls"), ("tokens", "tokens"))
                        if key in image})
        if plan.global_itc:
            text = batch["text"]
            out["text"] = F.normalize(encode_text(model, text, length=text.shape[-1]), dim=-1)
        if plan.student_distill and plan.distill_views == "crop":
            crops = encode_views(model, batch["crop"], plan.distill_need, plan.last_attn)
            out.update({f"distill_{k}": v for k, v in crops.items() if k != "tokens"})
        if plan.obj_need or plan.local_itc:
            out.update(self._objects(batch))
        return out

    def _objects(self, batch: Batch) -> dict[str, torch.Tensor]:
        plan, model = self.plan, self.model
        out: dict[str, torch.Tensor] = {}
        shared = plan.student_distill and plan.distill_views == "obj"
        if shared:  # every object crop feeds distillation; local ITC reuses its rows
            objs = encode_views(model, batch["obj"], plan.obj_need, plan.last_attn)
            out.update({f"distill_{k}": v for k, v in objs.items() if k != "tokens"})
        if plan.local_itc:
            if plan.local_align != "roi":
                key = "cls" if plan.local_align == "cls" else "pooled"
                if shared:  # objs has a row per object crop
                    out["region"] = _select(objs[key], batch.get("region_pixels"))
                else:
                    crops = _select(batch["obj"], batch.get("region_pixels"))
                    out["region"] = encode_views(model, crops, plan.local_need, plan.last_attn)[key]
            texts = batch["region_text"]
            if texts.shape[0] == 0:
                out["region_text"] = model.logit_scale.new_zeros((0, model.visual.output_dim))
            else:
                feats = F.normalize(encode_text(model, texts, length=texts.shape[-1]), dim=-1)
                out["region_text"] = feats.index_select(0, batch["region_text_index"])
        return out


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
    if not batch.get("prepared"):
        batch = prepare_batch(batch, plan, None)
    scale = feats["logit_scale"]
    terms: dict[str, torch.Tensor] = {}
    if plan.global_itc:
        terms["global_itc"] = clip_loss(feats["image"], feats["text"], scale)
    if plan.distill:
        src = feats if plan.student_distill else targets
        prefix = plan.distill_views
        regions = farslip.roi_features(feats["tokens"], batch[f"{prefix}_roi_box"], grid,
                                       image_index=batch[f"{prefix}_roi_index"], check=False)
        parts = []
        if "tokens" in plan.distill_need:
            parts.append(losses.distill_loss(regions, src["distill_pooled"]))
        if "cls" in plan.distill_need:
            parts.append(losses.distill_loss(regions, src["distill_cls"]))
        terms["distill"] = sum(parts) / len(parts)
    extra: dict[str, torch.Tensor] = {}
    if plan.local_itc:
        if plan.local_align == "roi":
            regions = farslip.roi_features(feats["tokens"], batch["region_box"], grid,
                                           image_index=batch["region_image"], check=False)
        else:
            regions = feats["region"]
        loss, rows = losses.region_itc_loss(
            regions, feats["region_text"], batch["region_label"], batch["obj_valid"], scale,
            mpcl=plan.mpcl, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size,
            slot_index=batch["region_slot"], labelled=plan.mpcl)
        terms["local_itc"] = loss
        extra["local_rows"] = rows
    key = {"global_itc": "w_g", "distill": "w_d", "local_itc": "w_l"}
    terms["loss"] = sum(weights[key[name]] * value for name, value in terms.items())
    return {**terms, **extra}

"""The training step as it was before the host-side bookkeeping (``prepare_batch``): boolean
masks and value reads on the device, per-image box lists. Kept as the reference that the
sync-free step must reproduce bit for bit."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import farslip
from farslip import losses
from farslip.train.step import encode_views


def _texts_once(model, texts):
    if texts.shape[0] == 0:
        return model.logit_scale.new_zeros((0, model.visual.output_dim))
    unique, inverse = torch.unique(texts, dim=0, return_inverse=True)
    return F.normalize(farslip.encode_text(model, unique), dim=-1)[inverse]


def old_features(model, plan, batch):
    out = {"logit_scale": model.logit_scale.exp()}
    if plan.image_need:
        image = encode_views(model, batch["image"], plan.image_need, plan.last_attn)
        out.update({n: image[k] for n, k in (("image", "cls"), ("tokens", "tokens")) if k in image})
    if plan.global_itc:
        out["text"] = F.normalize(farslip.encode_text(model, batch["text"]), dim=-1)
    if plan.student_distill and plan.distill_views == "crop":
        crops = encode_views(model, batch["crop"], plan.distill_need, plan.last_attn)
        out.update({f"distill_{k}": v for k, v in crops.items() if k != "tokens"})
    if plan.obj_need or plan.local_itc:
        labels = batch["obj_label"]
        keep = labels >= 0 if plan.mpcl else torch.ones_like(labels, dtype=torch.bool)
        shared = plan.student_distill and plan.distill_views == "obj"
        if shared:
            objs = encode_views(model, batch["obj"], plan.obj_need, plan.last_attn)
            out.update({f"distill_{k}": v for k, v in objs.items() if k != "tokens"})
        if plan.local_itc:
            if plan.local_align != "roi":
                key = "cls" if plan.local_align == "cls" else "pooled"
                out["region"] = (objs[key][keep] if shared else
                                 encode_views(model, batch["obj"][keep], plan.local_need, plan.last_attn)[key])
            out["region_text"] = _texts_once(model, batch["obj_text"][keep])
    return out


def _boxes(batch, prefix, valid=None):
    valid = batch[f"{prefix}_valid"] if valid is None else valid
    return [b[v] for b, v in zip(batch[f"{prefix}_box"], valid)]


def old_losses(plan, feats, batch, *, grid, weights, clip_loss, targets=None):
    scale = feats["logit_scale"]
    terms = {}
    if plan.global_itc:
        terms["global_itc"] = clip_loss(feats["image"], feats["text"], scale)
    if plan.distill:
        src = feats if plan.student_distill else targets
        regions = farslip.roi_features(feats["tokens"], _boxes(batch, plan.distill_views), grid)
        parts = []
        if "tokens" in plan.distill_need:
            parts.append(losses.distill_loss(regions, src["distill_pooled"]))
        if "cls" in plan.distill_need:
            parts.append(losses.distill_loss(regions, src["distill_cls"]))
        terms["distill"] = sum(parts) / len(parts)
    rows = None
    if plan.local_itc:
        labels = batch["obj_label"]
        keep = labels >= 0 if plan.mpcl else torch.ones_like(labels, dtype=torch.bool)
        slots = batch["obj_valid"].clone()
        slots[batch["obj_valid"]] = keep
        if plan.local_align == "roi":
            regions = farslip.roi_features(feats["tokens"], _boxes(batch, "obj", slots), grid)
        else:
            regions = feats["region"]
        y = labels[keep]
        if plan.mpcl:
            terms["local_itc"] = losses.multi_positive_loss(regions, feats["region_text"], y, scale)
            rows = int((y >= 0).sum())
        else:
            terms["local_itc"] = losses.clip_rows_loss(regions, feats["region_text"], scale)
            rows = int(y.shape[0])
    key = {"global_itc": "w_g", "distill": "w_d", "local_itc": "w_l"}
    terms["loss"] = sum(weights[key[n]] * v for n, v in terms.items())
    return terms, rows

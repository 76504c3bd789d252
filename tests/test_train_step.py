"""The training step: every loss term against a slow per-sample reference, each method and
align/teacher option runs one optimiser step, and the step computes only what a loss uses."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import farslip
from farslip.train.main import Trainer, param_groups
from farslip.train.step import StudentFeatures, compute_losses, make_plan
from farslip.train.teacher import Teacher

from ._train_utils import make_args, make_batch, ref_clip, ref_distill, ref_mpcl, tiny_model


def _trainer(tmp_path: Path, *flags: str, **kw) -> Trainer:
    args = make_args(*flags, **kw)
    torch.manual_seed(0)
    return Trainer(args, tmp_path)


def _terms(args, model, batch, teacher=None):
    plan = make_plan(args.method)
    feats = StudentFeatures(model, plan)(batch)
    targets = teacher.targets(batch, plan) if teacher is not None else None
    return compute_losses(plan, feats, batch, grid=model.visual.grid_size,
                          weights={"w_g": args.method.w_g, "w_d": args.method.w_d, "w_l": args.method.w_l},
                          clip_loss=farslip.losses.global_itc_loss(), targets=targets)


# ---------------------------------------------------------------- per-sample references
def _unit(x):
    return F.normalize(x, dim=-1)


@torch.no_grad()
def ref_global(model, batch) -> float:
    u = _unit(model.encode_image(batch["image"]))
    t = torch.cat([_unit(model.encode_text(batch["text"][i:i + 1])) for i in range(len(u))])
    return ref_clip(u.double(), t.double(), float(model.logit_scale.exp()))


@torch.no_grad()
def ref_distill_term(model, batch, prefix: str, align: str, last_attn: str = "segearth") -> float:
    views, k = batch[prefix], 0
    regions, pooled, cls = [], [], []
    for b in range(batch["image"].shape[0]):
        _, tokens = farslip.encode_dense(model, batch["image"][b:b + 1], last_attn=last_attn)
        for n in range(batch[f"{prefix}_valid"].shape[1]):
            if not batch[f"{prefix}_valid"][b, n]:
                continue
            box = batch[f"{prefix}_box"][b, n].reshape(1, 4)
            regions.append(farslip.roi_features(tokens, [box], model.visual.grid_size)[0])
            c, t = farslip.encode_dense(model, views[k:k + 1], last_attn=last_attn)
            pooled.append(_unit(t[0].mean(0)))
            cls.append(_unit(c[0]))
            k += 1
    r = torch.stack(regions).double()
    losses = {"roi2pooled": [torch.stack(pooled)], "roi2cls": [torch.stack(cls)],
              "combined": [torch.stack(pooled), torch.stack(cls)]}[align]
    return sum(ref_distill(r, t.double()) for t in losses) / len(losses)


@torch.no_grad()
def ref_local_term(model, batch, align: str, mpcl: bool) -> float:
    labels = batch["obj_label"].tolist()
    rows = [i for i, y in enumerate(labels) if y >= 0 or not mpcl]
    slots = [(b, n) for b in range(batch["obj_valid"].shape[0])
             for n in range(batch["obj_valid"].shape[1]) if batch["obj_valid"][b, n]]
    v, t = [], []
    for i in rows:
        crop = batch["obj"][i:i + 1]
        if align == "cls":
            v.append(_unit(model.encode_image(crop))[0])
        elif align == "pooled":
            v.append(_unit(farslip.encode_dense(model, crop)[1][0].mean(0)))
        else:
            b, n = slots[i]
            _, tokens = farslip.encode_dense(model, batch["image"][b:b + 1])
            v.append(farslip.roi_features(tokens, [batch["obj_box"][b, n].reshape(1, 4)],
                                          model.visual.grid_size)[0])
        t.append(_unit(model.encode_text(batch["obj_text"][i:i + 1]))[0])
    v, t = torch.stack(v).double(), torch.stack(t).double()
    s = float(model.logit_scale.exp())
    return ref_mpcl(v, t, [labels[i] for i in rows], s) if mpcl else ref_clip(v, t, s)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("align", ["roi2pooled", "roi2cls", "combined"])
def test_farslip1_terms_match_reference(align):
    args = make_args("--method", "farslip1", "--use-imagecrop-aug", "--distill-align", align,
                     data="x.tar")
    model = tiny_model()
    batch = make_batch(model, objects=False)
    terms = _terms(args, model, batch)
    assert terms["global_itc"].item() == pytest.approx(ref_global(model, batch), rel=1e-5)
    assert terms["distill"].item() == pytest.approx(
        ref_distill_term(model, batch, "crop", align), rel=1e-5, abs=1e-6)
    assert "local_itc" not in terms
    assert terms["loss"].item() == pytest.approx(
        terms["global_itc"].item() + 0.1 * terms["distill"].item(), rel=1e-6)


@pytest.mark.parametrize("align,mpcl", [("cls", True), ("pooled", True), ("roi", True),
                                        ("cls", False)])
def test_farslip2_terms_match_reference(align, mpcl):
    args = make_args("--method", "farslip2", "--local-itc-align", align,
                     "--mpcl-loss" if mpcl else "--no-mpcl-loss", "--w-l", "0.5")
    model = tiny_model()
    batch = make_batch(model)
    terms = _terms(args, model, batch)
    assert terms["global_itc"].item() == pytest.approx(ref_global(model, batch), rel=1e-5)
    assert terms["distill"].item() == pytest.approx(
        ref_distill_term(model, batch, "crop", "roi2pooled"), rel=1e-5, abs=1e-6)
    assert terms["local_itc"].item() == pytest.approx(
        ref_local_term(model, batch, align, mpcl), rel=1e-5)
    want = terms["global_itc"].item() + 0.1 * terms["distill"].item() + 0.5 * terms["local_itc"].item()
    assert terms["loss"].item() == pytest.approx(want, rel=1e-6)


def test_objects_as_distillation_views_match_reference():
    args = make_args("--method", "farslip2", "--local-method", "objects")
    model = tiny_model()
    batch = make_batch(model, crops=False)
    terms = _terms(args, model, batch)
    assert terms["distill"].item() == pytest.approx(
        ref_distill_term(model, batch, "obj", "roi2pooled"), rel=1e-5, abs=1e-6)
    assert terms["local_itc"].item() == pytest.approx(ref_local_term(model, batch, "cls", True),
                                                      rel=1e-5)


@pytest.mark.parametrize("mode", ["ema", "frozen"])
def test_teacher_targets_equal_active_at_start_and_student_skips_crops(mode):
    args = make_args("--method", "farslip1", "--use-imagecrop-aug", "--distill-type", mode,
                     data="x.tar")
    model = tiny_model()
    batch = make_batch(model, objects=False)
    plan = make_plan(args.method)
    feats = StudentFeatures(model, plan)(batch)
    assert not any(k.startswith("distill_") for k in feats)  # the student never encodes crops
    teacher = Teacher(mode, model, plan)
    targets = teacher.targets(batch, plan)
    assert not targets["distill_pooled"].requires_grad
    active = _terms(make_args("--method", "farslip1", "--use-imagecrop-aug", data="x.tar"),
                    model, batch)
    assert _terms(args, model, batch, teacher)["distill"].item() == pytest.approx(
        active["distill"].item(), rel=1e-6)


def test_active_targets_carry_gradient():
    args = make_args("--method", "farslip1", "--use-imagecrop-aug", data="x.tar")
    model = tiny_model()
    batch = make_batch(model, objects=False)
    feats = StudentFeatures(model, make_plan(args.method))(batch)
    assert feats["distill_pooled"].requires_grad  # not detached: gradient flows to both sides


def test_region_texts_encoded_once():
    args = make_args("--method", "farslip2")
    model = tiny_model()
    batch = make_batch(model, labels=(1, 1, 1, 2, 2))
    seen = []  # batch sizes entering the text tower
    handle = model.transformer.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
    StudentFeatures(model, make_plan(args.method))(batch)
    handle.remove()
    # captions (3 rows), then the region texts: 5 labelled rows holding 2 distinct texts
    assert seen == [3, 2]


def test_mpcl_only_encodes_labelled_object_crops(monkeypatch):
    args = make_args("--method", "farslip2", "--loss-type", "global_itc", "local_itc")
    model = tiny_model()
    batch = make_batch(model, crops=False, labels=(0, -1, -1, 3, -1))
    shapes = []
    original = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda x, **kw: (shapes.append(x.shape[0]),
                                                                 original(x, **kw))[1])
    StudentFeatures(model, make_plan(args.method))(batch)
    assert shapes == [3, 2]  # global images, then only the 2 labelled object crops


@pytest.mark.parametrize("flags", [
    ("--method", "vanilla"),
    ("--method", "farslip1", "--distill-type", "ema", "--EMA-momentum", "0.5"),
    ("--method", "farslip1", "--distill-type", "frozen", "--distill-align", "combined"),
    ("--method", "farslip2", "--local-itc-align", "roi", "--no-mpcl-loss"),
    ("--method", "farslip2", "--local-method", "grids", "--last-attn-type", "clearclip"),
    ("--method", "farslip2", "--local-method", "objects", "--distill-type", "ema"),
])
def test_one_optimiser_step_of_each_option(tmp_path, flags):
    tar = flags[1] == "farslip1"
    extra = ("--use-imagecrop-aug",) if tar else ()
    tr = _trainer(tmp_path, *flags, *extra, "--lr", "1e-3", "--wd", "0.1",
                  data="x.tar" if tar or flags[1] == "vanilla" else "x.json")
    objects = flags[1] == "farslip2"
    batch = make_batch(tr.model, crops="objects" not in flags, objects=objects)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    terms = tr.train_step(batch)
    assert torch.isfinite(terms["loss"])
    changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
    assert "visual.proj" in changed and "text_projection" in changed
    if tr.teacher.mode != "active":  # the teacher is the vision tower (keys without visual.)
        assert set(tr.teacher.state_dict()) == {k[len("visual."):] for k in before
                                                if k.startswith("visual.")}
    if tr.teacher.mode == "ema":
        m = tr.cfg.method.ema_momentum
        for k, v in tr.teacher.module.state_dict().items():
            want = m * before[f"visual.{k}"] + (1 - m) * tr.model.state_dict()[f"visual.{k}"]
            torch.testing.assert_close(v, want, rtol=1e-5, atol=1e-6)
    if tr.teacher.mode == "frozen":
        for k, v in tr.teacher.module.state_dict().items():
            assert torch.equal(v, before[f"visual.{k}"])


def test_logit_scale_is_clamped_after_the_step(tmp_path):
    tr = _trainer(tmp_path, "--method", "vanilla", "--lr", "1e-3", data="x.tar")
    with torch.no_grad():
        tr.model.logit_scale.fill_(10.0)
    tr.train_step(make_batch(tr.model, crops=False, objects=False))
    assert tr.model.logit_scale.item() == pytest.approx(math.log(100.0))


def test_long_text_keeps_first_rows_fixed(tmp_path):
    tr = _trainer(tmp_path, "--method", "farslip2", "--long-text", "--lr", "1e-2")
    assert tr.model.context_length == 248 and tr.guard is not None
    before = tr.model.positional_embedding.detach().clone()
    tr.train_step(make_batch(tr.model))
    after = tr.model.positional_embedding.detach()
    assert torch.equal(after[:20], before[:20])
    assert not torch.equal(after[20:], before[20:])


def test_param_groups_skip_decay_on_gains_biases_scale():
    model = tiny_model()
    no_decay, decay = param_groups(model, 0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.5
    plain = {names[id(p)] for p in no_decay["params"]}
    assert "logit_scale" in plain and "visual.class_embedding" in plain
    assert all(p.ndim >= 2 for p in decay["params"])
    assert "visual.proj" in {names[id(p)] for p in decay["params"]}
    assert len(no_decay["params"]) + len(decay["params"]) == len(list(model.parameters()))


def test_batch_without_any_views_trains_with_zero_local_losses(tmp_path):
    tr = _trainer(tmp_path, "--method", "farslip2", "--lr", "1e-3")
    batch = make_batch(tr.model)
    for prefix in ("crop", "obj"):
        batch[f"{prefix}_valid"][:] = False
        batch[prefix] = batch[prefix][:0]
    batch["obj_text"], batch["obj_label"] = batch["obj_text"][:0], batch["obj_label"][:0]
    terms = tr.train_step(batch)
    assert terms["distill"].item() == 0.0 and terms["local_itc"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(terms["global_itc"].item())


def test_grad_checkpointing_gives_the_same_step(tmp_path):
    """Activation checkpointing (dense path included) changes memory, not the numbers."""
    flags = ("--method", "farslip2", "--local-itc-align", "pooled", "--lr", "1e-3")
    plain, ckpt = _trainer(tmp_path, *flags), _trainer(tmp_path, *flags, "--grad-checkpointing")
    assert ckpt.model.visual.transformer.grad_checkpointing
    batch = make_batch(plain.model)
    a, b = plain.train_step(batch), ckpt.train_step(batch)
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-6)
    for (name, p), q in zip(plain.model.named_parameters(), ckpt.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("precision", ["amp", "amp_bf16"])
def test_mixed_precision_step(tmp_path, precision):
    tr = _trainer(tmp_path, "--method", "farslip2", "--precision", precision, "--lr", "1e-3")
    assert (tr.scaler is not None) == (precision == "amp")
    before = tr.model.visual.proj.detach().clone()
    batch = make_batch(tr.model)
    for _ in range(20):  # fp16: GradScaler skips steps (halving its scale) until grads are finite
        terms = tr.train_step(batch)
        if not torch.equal(before, tr.model.visual.proj):
            break
    assert all(torch.isfinite(v) for v in terms.values())
    assert tr.model.visual.proj.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, tr.model.visual.proj)


def test_distill_only_never_touches_the_text_tower(tmp_path):
    tr = _trainer(tmp_path, "--method", "farslip1", "--use-imagecrop-aug", "--loss-type",
                  "distill", "--lr", "1e-3", data="x.tar")
    assert tr.plan.image_need == ("tokens",)  # no CLS branch for the global image either
    before = tr.model.text_projection.detach().clone()
    terms = tr.train_step(make_batch(tr.model, objects=False))
    assert set(terms) == {"distill", "loss"}
    assert tr.model.text_projection.grad is None
    assert torch.equal(before, tr.model.text_projection)

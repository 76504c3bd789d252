"""The step after host-side bookkeeping (``prepare_batch``): bit-identical losses and gradients
to the step as it was (tests/_step_ref.py), and no read of tensor values inside the step."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import farslip
from farslip.train.main import Trainer
from farslip.train.step import StudentFeatures, compute_losses, make_plan, prepare_batch
from farslip.train.syncs import HostReads, step_host_reads
from farslip.train.teacher import Teacher

from ._step_ref import old_features, old_losses
from ._train_utils import make_args, make_batch, tiny_model

WEIGHTS = {"w_g": 1.0, "w_d": 0.1, "w_l": 0.7}
CASES = [
    (("--method", "vanilla"), "x.tar"),
    (("--method", "farslip1", "--use-imagecrop-aug"), "x.tar"),
    (("--method", "farslip1", "--use-imagecrop-aug", "--distill-align", "combined"), "x.tar"),
    (("--method", "farslip2"), "x.json"),
    (("--method", "farslip2", "--local-itc-align", "pooled"), "x.json"),
    (("--method", "farslip2", "--local-itc-align", "roi"), "x.json"),
    (("--method", "farslip2", "--no-mpcl-loss"), "x.json"),
    (("--method", "farslip2", "--local-method", "objects"), "x.json"),
    (("--method", "farslip2", "--local-method", "objects", "--local-itc-align", "pooled",
      "--no-mpcl-loss"), "x.json"),
    (("--method", "farslip2", "--distill-type", "ema"), "x.json"),
]


def _batch(model, flags):
    method = flags[1]
    return make_batch(model, crops=method != "vanilla" and "objects" not in flags,
                      objects=method == "farslip2", labels=(0, -1, 2, 0, 1, -1))


def _run(model, plan, batch, step, teacher=None):
    model.zero_grad(set_to_none=True)
    targets = teacher.targets(batch, plan) if teacher is not None else None
    clip = farslip.losses.global_itc_loss()
    if step == "old":
        feats = old_features(model, plan, batch)
        terms, rows = old_losses(plan, feats, batch, grid=model.visual.grid_size, weights=WEIGHTS,
                                 clip_loss=clip, targets=targets)
    else:
        feats = StudentFeatures(model, plan)(batch)
        terms = compute_losses(plan, feats, batch, grid=model.visual.grid_size, weights=WEIGHTS,
                               clip_loss=clip, targets=targets)
        rows = int(terms.pop("local_rows")) if "local_rows" in terms else None
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, rows, grads


@pytest.mark.parametrize("flags,data", CASES, ids=[" ".join(f) for f, _ in CASES])
def test_prepared_step_gives_the_old_losses_and_gradients_bit_for_bit(flags, data):
    args = make_args(*flags, data=data)
    plan = make_plan(args.method)
    model = tiny_model()
    batch = _batch(model, flags)
    teacher = Teacher.from_config(args.method, model, plan) if args.method.distill_type != "active" else None
    want = _run(model, plan, batch, "old", teacher)
    prepared = prepare_batch(batch, plan, model)
    assert prepared["prepared"] and prepared["text"].shape[1] < batch["text"].shape[1]  # trimmed
    got = _run(model, plan, prepared, "new", teacher)
    assert got[0].keys() == want[0].keys() and got[1] == want[1]
    for name in want[0]:
        assert torch.equal(got[0][name], want[0][name]), name
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        assert torch.equal(got[2][name], want[2][name]), name


def _trainer(tmp_path, flags, data):
    args = make_args(*flags, "--lr", "1e-3", data=data)
    torch.manual_seed(0)
    return Trainer(args, tmp_path)


_counted_step = step_host_reads


@pytest.mark.parametrize("flags,data", CASES, ids=[" ".join(f) for f, _ in CASES])
def test_a_prepared_step_reads_no_tensor_value(tmp_path, flags, data):
    tr = _trainer(tmp_path, flags, data)
    raw = _batch(tr.model, flags)
    raw["image"] = (raw["image"].clamp(-1, 1) * 100 + 128).to(torch.uint8)  # as the loader gives it
    tr.train_step(tr.prepare(raw))  # warm-up: mean/std reach the device, the optimiser state exists
    reads = _counted_step(tr, tr.prepare(raw))
    assert reads.total == 0, dict(reads.counts)
    # the counter sees reads where there are some: the same step on an unprepared batch
    unprepared = _counted_step(tr, raw)
    assert unprepared.total >= 1 and unprepared.counts["_local_scalar_dense"] >= 1


def test_host_reads_counts_each_kind():
    x = torch.arange(6.0)
    with HostReads() as reads:
        x.sum().item()
        bool(x.any())
        x[x > 2]
        torch.unique(x)
        torch.tensor([1.0])
        x.index_select(0, torch.zeros(2, dtype=torch.long))  # integer indexing: no read
        with reads.paused():
            x.max().item()
    assert dict(reads.counts) == {"_local_scalar_dense": 2, "index[bool]": 1, "_unique2": 1,
                                  "lift_fresh": 1}


def test_prepare_refuses_a_batch_without_the_crops_a_loss_needs():
    args = make_args("--method", "farslip2")
    model = tiny_model()
    batch = make_batch(model, labels=(0, -1, 2, 0, 1))
    labelled = (batch["obj_label"] >= 0).nonzero().squeeze(1)
    batch["obj"], batch["obj_rows"] = batch["obj"][labelled[:-1]], labelled[:-1]
    with pytest.raises(ValueError, match="does not hold"):
        prepare_batch(batch, make_plan(args.method), model)


@pytest.mark.parametrize("align,pixels", [("cls", "labelled"), ("roi", "none")])
def test_loader_leaves_out_unread_object_crops_and_the_losses_stay(tmp_path, align, pixels):
    from farslip.data.train_data import get_train_data

    from ._train_utils import write_mgrs

    js, imgs = write_mgrs(tmp_path / "mgrs", items=6)  # every image has a free-text object
    args = make_args("--method", "farslip2", "--local-itc-align", align, data=js, root=imgs)
    assert args.data.object_pixels == pixels
    model = tiny_model()
    tok = farslip.get_tokenizer(model)
    size = model.visual.image_size

    def first(object_pixels):
        info = get_train_data(dataclasses.replace(args.data, object_pixels=object_pixels), tok, size)
        return next(iter(info.dataloader))

    full, lean = first("all"), first(pixels)
    labels = full["obj_label"]
    assert (labels < 0).any() and full["obj"].shape[0] == labels.shape[0]
    kept = (labels >= 0).nonzero().squeeze(1) if pixels == "labelled" else labels[:0]
    assert torch.equal(lean["obj_rows"], kept) and lean["obj"].shape[0] == kept.shape[0]
    assert torch.equal(lean["obj"], full["obj"][kept])  # the crops it keeps are the same pixels
    for key in ("image", "crop", "obj_box", "obj_valid", "obj_label", "obj_text"):
        assert torch.equal(lean[key], full[key]), key
    plan = make_plan(args.method)
    clip = farslip.losses.global_itc_loss()
    terms = []
    for batch in (full, lean):
        from farslip.data.transforms import normalize_views

        batch = normalize_views(prepare_batch(batch, plan, model))
        feats = StudentFeatures(model, plan)(batch)
        terms.append(compute_losses(plan, feats, batch, grid=model.visual.grid_size, weights=WEIGHTS,
                                    clip_loss=clip))
    for name in ("global_itc", "distill", "local_itc", "loss", "local_rows"):
        assert torch.equal(terms[0][name], terms[1][name]), name


@pytest.mark.parametrize("flags,pixels", [
    ((), "labelled"),
    (("--no-mpcl-loss",), "all"),
    (("--local-itc-align", "roi"), "none"),
    (("--local-itc-align", "roi", "--local-method", "objects"), "all"),
    (("--loss-type", "global_itc", "distill"), "none"),
])
def test_object_pixels_follow_the_losses(flags, pixels):
    assert make_args("--method", "farslip2", *flags).data.object_pixels == pixels


"""The EMA / frozen teacher holds only the vision tower, computes exactly the targets a whole-CLIP
teacher computed, moves by the EMA formula (one fused foreach lerp), and resumes exactly, also
from an older checkpoint whose teacher state is a whole CLIP."""
from __future__ import annotations

import copy

import pytest
import torch

from farslip.train.main import Trainer
from farslip.train.step import ViewEncoder, make_plan
from farslip.train.teacher import Teacher

from ._train_utils import make_args, make_batch, tiny_model


@pytest.mark.parametrize("align", ["roi2pooled", "roi2cls", "combined"])
@pytest.mark.parametrize("mode", ["ema", "frozen"])
def test_vision_only_teacher_gives_the_whole_model_teachers_targets(mode, align):
    args = make_args("--method", "farslip1", "--use-imagecrop-aug", "--distill-type", mode,
                     "--distill-align", align, data="x.tar")
    plan = make_plan(args.method)
    model = tiny_model()
    teacher = Teacher(mode, model, plan)
    assert teacher.module is not model.visual
    assert type(teacher.module).__name__ == "VisionTransformer"
    own = {id(t) for t in teacher.module.parameters()}
    assert not own & {id(p) for p in model.parameters()}  # a copy, not shared
    assert sum(p.numel() for p in teacher.module.parameters()) == sum(
        p.numel() for p in model.visual.parameters()) < sum(p.numel() for p in model.parameters())
    assert not any(p.requires_grad for p in teacher.module.parameters())
    whole = ViewEncoder(copy.deepcopy(model).eval().requires_grad_(False), plan.distill_need,
                        plan.last_attn)  # the teacher as it was
    batch = make_batch(model, objects=False)
    got = teacher.targets(batch, plan)
    with torch.no_grad():
        want = {f"distill_{k}": v for k, v in whole(batch["crop"]).items() if k != "tokens"}
    assert got.keys() == want.keys()
    for key in got:
        assert torch.equal(got[key], want[key]), key  # bit-identical


def test_foreach_ema_equals_the_formula_and_copies_other_buffers():
    model = tiny_model()
    model.visual.register_buffer("counter", torch.tensor([3], dtype=torch.long))
    args = make_args("--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "ema",
                     data="x.tar")
    m = 0.9
    teacher = Teacher("ema", model, make_plan(args.method), momentum=m)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.visual.counter.fill_(7)
    old = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    student = model.visual.state_dict()
    teacher.update(model)
    for key, value in teacher.module.state_dict().items():
        if key == "counter":
            assert value.item() == 7
            continue
        torch.testing.assert_close(value, m * old[key] + (1 - m) * student[key],
                                   rtol=1e-6, atol=1e-7, msg=lambda s: f"{key}: {s}")
    teacher.update(model)  # the cached pairing follows the same tensors
    for key, value in teacher.module.state_dict().items():
        if key != "counter":
            want = m * (m * old[key] + (1 - m) * student[key]) + (1 - m) * student[key]
            torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-6)


def test_frozen_teacher_does_not_move():
    model = tiny_model()
    args = make_args("--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "frozen",
                     data="x.tar")
    teacher = Teacher("frozen", model, make_plan(args.method))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        model.visual.proj.add_(1.0)
    teacher.update(model)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def _trainer(tmp_path, *flags):
    args = make_args("--method", "farslip2", "--distill-type", "ema", "--lr", "1e-3", *flags)
    torch.manual_seed(0)
    return Trainer(args, tmp_path)


def test_resume_restores_the_tower_and_reads_old_whole_clip_states(tmp_path):
    run = tmp_path / "run"
    tr = _trainer(run)
    batch = make_batch(tr.model)
    for _ in range(2):
        tr.train_step(batch)
        tr.step += 1
    tr.save(0)
    path = run / "checkpoints" / "epoch_latest.pt"
    saved = torch.load(path, weights_only=True)
    assert set(saved["state_dict_teacher"]) == {k[len("visual."):] for k in saved["state_dict"]
                                                if k.startswith("visual.")}
    resumed = _trainer(run, "--resume", str(path))
    for key, value in tr.teacher.state_dict().items():
        assert torch.equal(resumed.teacher.state_dict()[key], value), key
    # the next step of both is the same step
    a, b = tr.train_step(batch), resumed.train_step(batch)
    assert torch.equal(a["loss"], b["loss"])
    for key, value in tr.teacher.state_dict().items():
        assert torch.equal(resumed.teacher.state_dict()[key], value), key

    # an older checkpoint: the teacher was a whole CLIP (its text tower was dead weight)
    whole = copy.deepcopy(tr.model)
    with torch.no_grad():
        whole.visual.proj.mul_(0.5)
    old = dict(saved, state_dict_teacher=whole.state_dict())
    old_path = tmp_path / "old.pt"
    torch.save(old, old_path)
    from_old = _trainer(tmp_path / "run2", "--resume", str(old_path))
    for key, value in whole.visual.state_dict().items():
        assert torch.equal(from_old.teacher.state_dict()[key], value), key

"""The accelerator subset: what runs on ``cuda`` equals the CPU within tolerance, and a
prepared step never makes the host wait for the device.

Marked ``cuda``: deselected by the default run (pytest.ini), selected by
``scripts/gpu_check.sh`` with ``-m cuda``. The device comes from ``FARSLIP_TEST_DEVICE``
(default ``cuda``); a missing CUDA device is a failure, not a skip. ``gpu_check.sh --dry-run``
sets ``FARSLIP_TEST_DEVICE=cpu``: every comparison then runs (CPU against CPU), so the module
itself is exercised where no GPU is lent.
"""
from __future__ import annotations

import os

import pytest
import torch

import farslip
from farslip import losses
from farslip.data.transforms import normalize_uint8
from farslip.train.main import Trainer, to_device
from farslip.train.syncs import step_cuda_syncs, step_host_reads

from ._train_utils import make_args, make_batch, tiny_model

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def device() -> torch.device:
    name = os.environ.get("FARSLIP_TEST_DEVICE", "cuda")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.fail("the cuda tests need a CUDA device (FARSLIP_TEST_DEVICE=cpu runs them on the CPU)")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the comparisons
    torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)


def close(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(a.detach().cpu().double(), b.detach().cpu().double(), rtol=rtol, atol=atol)


def test_normalisation_on_the_device_is_bit_identical(device):
    x = torch.randint(0, 256, (2, 3, 17, 9), dtype=torch.uint8)
    assert torch.equal(normalize_uint8(x.to(device)).cpu(), normalize_uint8(x))


@pytest.mark.parametrize("last_attn", farslip.LAST_ATTN_TYPES)
def test_dense_tokens_match_the_cpu(device, last_attn):
    model = tiny_model().eval()
    images = torch.randn(2, 3, 32, 32)
    want = farslip.encode_dense(model, images, last_attn=last_attn)
    got = farslip.encode_dense(model.to(device), images.to(device), last_attn=last_attn)
    for g, w in zip(got, want):
        close(g, w)


def test_roi_features_match_the_cpu(device):
    tokens = torch.randn(3, 16, 8)
    boxes = [torch.tensor([[0.1, 0.2, 0.7, 0.9]]), torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 1.0, 1.0],
                                                                                    [0.3, 0.3, 0.5, 0.6]])]
    want = farslip.roi_features(tokens, boxes, 4)
    close(farslip.roi_features(tokens.to(device), [b.to(device) for b in boxes], 4), want)
    packed = torch.cat(boxes).to(device)
    index = torch.tensor([0, 2, 2], device=device)
    close(farslip.roi_features(tokens.to(device), packed, 4, image_index=index), want)


def test_losses_match_the_cpu(device):
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    y = torch.tensor([0, 1, 0, -1, 2, 1])
    s = torch.tensor(7.0)
    on = [x.to(device) for x in (v, t, y, s)]
    close(losses.multi_positive_loss(*on), losses.multi_positive_loss(v, t, y, s))
    close(losses.clip_rows_loss(on[0], on[1], on[3]), losses.clip_rows_loss(v, t, s))
    close(losses.distill_loss(on[0], on[1]), losses.distill_loss(v, t))
    rows = y >= 0
    close(losses._masked_rows_loss(*on[:3], rows.to(device), on[3], True),
          losses._masked_rows_loss(v, t, y, rows, s, True))


STEPS = {
    "farslip1": (("--method", "farslip1", "--use-imagecrop-aug"), "x.tar"),
    "farslip2": (("--method", "farslip2"), "x.json"),
    "farslip2-ema-roi": (("--method", "farslip2", "--distill-type", "ema", "--local-itc-align", "roi"), "x.json"),
}


def _trainer(tmp_path, device, flags, data, precision="fp32"):
    args = make_args(*flags, "--lr", "1e-5", "--precision", precision, data=data)
    args = args.replace("run", device=device.type)
    torch.manual_seed(0)
    return Trainer(args, tmp_path)


def _uint8_batch(model, flags):
    batch = make_batch(model, b=4, crops="--use-imagecrop-aug" in flags or flags[1] == "farslip2",
                       objects=flags[1] == "farslip2")
    for key in ("image", "crop", "obj"):
        if key in batch:
            batch[key] = (batch[key].clamp(-2, 2) * 60 + 128).to(torch.uint8)
    return batch


@pytest.mark.parametrize("name", STEPS)
def test_fp32_step_matches_the_cpu(tmp_path, device, name):
    flags, data = STEPS[name]
    cpu = _trainer(tmp_path, torch.device("cpu"), flags, data)
    dev = _trainer(tmp_path, device, flags, data)
    batch = _uint8_batch(cpu.model, flags)
    for _ in range(2):  # the second step's losses also check the first update
        want = cpu.train_step(cpu.prepare(batch))
        got = dev.train_step(to_device(dev.prepare(batch), device))
        for key, value in want.items():
            close(got[key], value, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("precision", ["amp", "amp_bf16"])
def test_mixed_precision_step_is_near_fp32(tmp_path, device, precision):
    if device.type == "cpu" and precision == "amp":
        precision = "amp_bf16"  # fp16 autocast on a CPU is only slow; the dry run checks bf16 twice
    flags, data = STEPS["farslip2"]
    ref = _trainer(tmp_path, device, flags, data)
    mixed = _trainer(tmp_path, device, flags, data, precision)
    batch = to_device(ref.prepare(_uint8_batch(ref.model, flags)), device)
    want, got = ref.train_step(batch), mixed.train_step(batch)
    for key in ("global_itc", "distill", "local_itc", "loss"):
        assert torch.isfinite(got[key])
        close(got[key], want[key], rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", STEPS)
def test_a_prepared_step_never_waits_for_the_device(tmp_path, device, name):
    flags, data = STEPS[name]
    tr = _trainer(tmp_path, device, flags, data)
    cpu = _uint8_batch(tr.model, flags)
    if device.type == "cuda":
        cpu = {k: v.pin_memory() for k, v in cpu.items()}
    tr.train_step(to_device(tr.prepare(cpu), device))  # warm-up: constants reach the device once
    batch = to_device(tr.prepare(cpu), device)
    if device.type == "cuda":
        syncs = step_cuda_syncs(tr, batch)
        assert not syncs, syncs
    else:
        reads = step_host_reads(tr, batch)
        assert reads.total == 0, dict(reads.counts)

"""Each loss term of farslip.losses against a slow reference written with explicit loops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from farslip import losses

from ._train_utils import _dot, ref_clip, ref_mpcl


def _unit(n: int, d: int = 8) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)


def test_global_itc_is_clip_loss():
    img, txt = _unit(6), _unit(6)
    s = torch.tensor(7.0, dtype=torch.float64)
    got = losses.global_itc_loss()(img, txt, s)
    assert float(got) == pytest.approx(ref_clip(img, txt, 7.0), rel=1e-10)


def test_distill_loss_matches_cosines():
    r, t = _unit(5), _unit(5)
    want = 1.0 - sum(_dot(r[i], t[i]) for i in range(5)) / 5
    assert float(losses.distill_loss(r, t)) == pytest.approx(want, rel=1e-12)
    # identical features: zero loss; opposite: 2
    assert float(losses.distill_loss(r, r)) == pytest.approx(0.0, abs=1e-12)
    assert float(losses.distill_loss(r, -r)) == pytest.approx(2.0, rel=1e-12)


def test_distill_loss_empty_is_zero_with_graph():
    r = torch.zeros(0, 8, requires_grad=True)
    loss = losses.distill_loss(r, torch.zeros(0, 8))
    loss.backward()
    assert loss.item() == 0.0 and r.grad is not None


def test_distill_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        losses.distill_loss(_unit(3), _unit(4))


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, -1, 1, 0], [3, 3, 3], [0, 1, 2, 4]])
def test_mpcl_matches_reference(labels):
    n = len(labels)
    v, t = _unit(n), _unit(n)
    got = losses.multi_positive_loss(v, t, torch.tensor(labels), torch.tensor(5.0, dtype=torch.float64))
    assert float(got) == pytest.approx(ref_mpcl(v, t, labels, 5.0), rel=1e-10)


def test_mpcl_with_distinct_labels_is_clip_loss():
    v, t = _unit(5), _unit(5)
    s = torch.tensor(3.0, dtype=torch.float64)
    mp = losses.multi_positive_loss(v, t, torch.arange(5), s)
    assert float(mp) == pytest.approx(float(losses.clip_rows_loss(v, t, s)), rel=1e-12)


def test_mpcl_no_labelled_rows_is_zero_not_nan():
    v = _unit(3).requires_grad_(True)
    loss = losses.multi_positive_loss(v, _unit(3), torch.tensor([-1, -1, -1]), torch.tensor(10.0))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(v.grad).all()


def test_clip_rows_loss_matches_reference():
    v, t = _unit(4), _unit(4)
    got = losses.clip_rows_loss(v, t, torch.tensor(2.5, dtype=torch.float64))
    assert float(got) == pytest.approx(ref_clip(v, t, 2.5), rel=1e-10)


@pytest.mark.parametrize("mpcl", [True, False])
def test_region_itc_single_rank(mpcl):
    valid = torch.tensor([[True, False, True], [True, True, False]])
    labels = [2, -1, 2, 0]
    v, t = _unit(4), _unit(4)
    loss, rows = losses.region_itc_loss(v, t, torch.tensor(labels), valid,
                                        torch.tensor(4.0, dtype=torch.float64), mpcl=mpcl)
    want = ref_mpcl(v, t, labels, 4.0) if mpcl else ref_clip(v, t, 4.0)
    assert float(loss) == pytest.approx(want, rel=1e-10)
    assert rows == (3 if mpcl else 4)


def test_scatter_rows_places_and_keeps_gradient():
    rows = torch.randn(2, 3, requires_grad=True)
    out = losses._scatter_rows(rows, torch.tensor([3, 1]), 5)
    assert torch.equal(out[3], rows[0]) and torch.equal(out[1], rows[1])
    assert out[[0, 2, 4]].abs().sum().item() == 0.0
    out.sum().backward()
    assert torch.equal(rows.grad, torch.ones(2, 3))


@pytest.mark.parametrize("mpcl", [True, False])
def test_masked_rows_loss_equals_the_loss_over_the_kept_rows(mpcl):
    """The multi-rank path masks padding (-2) instead of dropping it: same loss, no host read."""
    labels = torch.tensor([2, -2, -1, 2, 0, -2, 1])
    v, t = _unit(7), _unit(7)
    s = torch.tensor(6.0, dtype=torch.float64)
    rows = labels >= 0 if mpcl else labels != -2
    got = losses._masked_rows_loss(v, t, labels, rows, s, mpcl)
    keep = rows.nonzero().squeeze(1)
    y = labels[keep].tolist()
    want = ref_mpcl(v[keep], t[keep], y, 6.0) if mpcl else ref_clip(v[keep], t[keep], 6.0)
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_masked_rows_loss_without_rows_is_zero_with_finite_gradient():
    v = _unit(3).requires_grad_(True)
    loss = losses._masked_rows_loss(v, _unit(3), torch.tensor([-2, -1, -2]),
                                    torch.zeros(3, dtype=torch.bool), torch.tensor(10.0), True)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(v.grad).all()


def test_region_itc_labelled_rows_skip_the_filter_with_the_same_value():
    labels = torch.tensor([3, 1, 3])
    v, t, s = _unit(3), _unit(3), torch.tensor(4.0, dtype=torch.float64)
    valid = torch.ones(1, 3, dtype=torch.bool)
    a, rows_a = losses.region_itc_loss(v, t, labels, valid, s, labelled=True)
    b, rows_b = losses.region_itc_loss(v, t, labels, valid, s)
    assert torch.equal(a, b) and int(rows_a) == int(rows_b) == 3

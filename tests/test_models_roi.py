"""roi_features: properties and an explicit bilinear-sampling reference."""
import torch
import torch.nn.functional as F

import farslip

from ._model_refs import roi_reference


def test_full_image_box_is_normalised_mean_token():
    tokens = torch.randn(2, 49, 16)
    boxes = [torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])]
    out = farslip.roi_features(tokens, boxes, grid=(7, 7))
    expected = F.normalize(tokens.mean(dim=1), dim=-1)
    torch.testing.assert_close(out, torch.stack([expected[0], expected[1], expected[1]]), rtol=1e-5, atol=1e-6)


def test_single_cell_box_on_affine_field_returns_that_cell():
    """With aligned=True each sample is a bilinear read; on a token field affine in (row, col)
    the symmetric samples of a one-cell box average exactly to the cell's own token."""
    g, dim = 5, 8
    rows, cols = torch.meshgrid(torch.arange(g, dtype=torch.float64), torch.arange(g, dtype=torch.float64), indexing="ij")
    a, b, c = torch.randn(dim, dtype=torch.float64), torch.randn(dim, dtype=torch.float64), torch.randn(dim, dtype=torch.float64)
    field = a + rows[..., None] * b + cols[..., None] * c  # [g, g, D]
    tokens = field.reshape(1, g * g, dim)
    for r, cc in [(2, 3), (1, 1), (3, 2)]:
        box = torch.tensor([[cc / g, r / g, (cc + 1) / g, (r + 1) / g]], dtype=torch.float64)
        out = farslip.roi_features(tokens, [box], grid=g)
        torch.testing.assert_close(out[0], F.normalize(field[r, cc], dim=0), rtol=1e-9, atol=1e-9)


def test_matches_explicit_bilinear_reference():
    torch.manual_seed(0)
    tokens = torch.randn(2, 16, 6, dtype=torch.float64)
    boxes = [torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 0.25, 0.25]], dtype=torch.float64),
             torch.tensor([[0.3, 0.05, 0.95, 0.6]], dtype=torch.float64)]
    out = farslip.roi_features(tokens, boxes, grid=(4, 4))
    torch.testing.assert_close(out, roi_reference(tokens, boxes, (4, 4)), rtol=1e-9, atol=1e-9)


def test_order_batch_tensor_and_gradients():
    tokens = torch.randn(2, 16, 6, requires_grad=True)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], [[0.2, 0.2, 0.8, 0.8], [0.0, 0.5, 0.5, 1.0]]])
    out = farslip.roi_features(tokens, boxes, grid=4)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    # image-major order: the second image's first box only depends on image 1
    separate = farslip.roi_features(tokens[1:], [boxes[1, :1]], grid=4)
    torch.testing.assert_close(out[2], separate[0])
    out.sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0

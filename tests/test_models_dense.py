"""encode_dense: the CLS branch is encode_image, each dense variant matches a slow reference."""
import pytest
import torch

import farslip
from farslip.models.dense import LAST_ATTN_TYPES

from ._model_refs import dense_tokens_reference


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return farslip.create_model("ViT-Tiny-8").eval()


@pytest.fixture(scope="module")
def vit_b32():
    torch.manual_seed(0)
    return farslip.create_model("ViT-B-32").eval()


def test_cls_equals_encode_image(tiny):
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        cls, tokens = farslip.encode_dense(tiny, images)
        ref = tiny.encode_image(images)
    torch.testing.assert_close(cls, ref, rtol=0, atol=0)
    assert tokens.shape == (3, 16, 32)


@pytest.mark.parametrize("variant", LAST_ATTN_TYPES)
def test_dense_variants_match_reference_tiny(tiny, variant):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, tokens = farslip.encode_dense(tiny, images, last_attn=variant, need=("tokens",))
        ref = dense_tokens_reference(tiny, images, variant)
    torch.testing.assert_close(tokens, ref, rtol=1e-4, atol=1e-5)


def test_dense_variants_match_reference_vit_b32(vit_b32):
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        cls, _ = farslip.encode_dense(vit_b32, images, need=("cls",))
        torch.testing.assert_close(cls, vit_b32.encode_image(images), rtol=1e-5, atol=1e-5)
        for variant in LAST_ATTN_TYPES:
            _, tokens = farslip.encode_dense(vit_b32, images, last_attn=variant, need=("tokens",))
            assert tokens.shape == (1, 49, 512)
            torch.testing.assert_close(tokens, dense_tokens_reference(vit_b32, images, variant), rtol=1e-4, atol=1e-4)


def test_segearth_differs_from_plain_attention(tiny):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, seg = farslip.encode_dense(tiny, images, last_attn="segearth", need=("tokens",))
        _, van = farslip.encode_dense(tiny, images, last_attn="vanilla", need=("tokens",))
        _, clear = farslip.encode_dense(tiny, images, last_attn="clearclip", need=("tokens",))
    assert not torch.allclose(seg, van, atol=1e-3)
    assert not torch.allclose(seg, clear, atol=1e-3)


def test_need_selects_branches(tiny):
    images = torch.randn(1, 3, 32, 32)
    cls, tokens = farslip.encode_dense(tiny, images, need=("cls",))
    assert tokens is None and cls.shape == (1, 32)
    cls, tokens = farslip.encode_dense(tiny, images, need=("tokens",))
    assert cls is None and tokens.shape == (1, 16, 32)
    with pytest.raises(ValueError, match="need"):
        farslip.encode_dense(tiny, images, need=("pooled",))
    with pytest.raises(ValueError, match="last_attn"):
        farslip.encode_dense(tiny, images, last_attn="penultimate")


def test_tokens_branch_skips_the_normal_last_block(tiny):
    """Asking only for tokens must not run the last block's MLP (the CLS branch)."""
    calls = []
    handle = tiny.visual.transformer.resblocks[-1].mlp.register_forward_hook(lambda *a: calls.append(1))
    try:
        farslip.encode_dense(tiny, torch.randn(1, 3, 32, 32), last_attn="segearth", need=("tokens",))
        assert calls == []
        farslip.encode_dense(tiny, torch.randn(1, 3, 32, 32), need=("cls",))
        assert calls == [1]
    finally:
        handle.remove()


def test_gradient_checkpointing_gives_same_values_and_grads():
    torch.manual_seed(1)
    model = farslip.create_model("ViT-Tiny-8")
    images = torch.randn(2, 3, 32, 32)

    def run():
        model.zero_grad()
        cls, tokens = farslip.encode_dense(model, images)
        (cls.square().sum() + tokens.square().sum()).backward()
        return cls.detach(), tokens.detach(), model.visual.conv1.weight.grad.clone()

    plain = run()
    model.set_grad_checkpointing(True)
    checked = run()
    for a, b in zip(plain, checked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

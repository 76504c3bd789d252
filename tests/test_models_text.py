"""encode_text trims padding and still equals model.encode_text exactly."""
import torch

import farslip
from farslip.models.text import encode_text, used_length


def test_trimmed_text_equals_full_context_short_and_long():
    torch.manual_seed(0)
    for long_text in (False, True):
        model = farslip.create_model("ViT-Tiny-8", long_text=long_text).eval()
        tokenizer = farslip.get_tokenizer(model)
        texts = ["a satellite image of a harbor", "!", "three red-roofed buildings along a road " * 3]
        tokens = tokenizer(texts)
        assert used_length(tokens) < tokens.shape[1]
        with torch.no_grad():
            torch.testing.assert_close(encode_text(model, tokens), model.encode_text(tokens), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(encode_text(model, tokens, normalize=True),
                                       model.encode_text(tokens, normalize=True), rtol=1e-5, atol=1e-6)


def test_full_length_caption_and_gradients():
    torch.manual_seed(0)
    model = farslip.create_model("ViT-Tiny-8")
    tokens = farslip.get_tokenizer(model)(["road " * 200, "a lake"])  # the first is truncated: EOT at 76
    assert used_length(tokens) == 77
    a = encode_text(model, tokens)
    a.square().sum().backward()
    grad_trimmed = model.token_embedding.weight.grad.clone()
    model.zero_grad()
    b = model.encode_text(tokens)
    b.square().sum().backward()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_trimmed, model.token_embedding.weight.grad, rtol=1e-4, atol=1e-6)

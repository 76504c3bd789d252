"""Long-CLIP text: the stretch formula, the two-table layout, 248-token captions, frozen rows."""
import torch

import farslip
from farslip.models.longclip import FrozenRows, stretch_positional_embedding

from ._model_refs import stretch_reference


def test_stretch_matches_formula_row_by_row():
    table = torch.randn(77, 12, dtype=torch.float64)
    out = stretch_positional_embedding(table)
    assert out.shape == (248, 12)
    ref = stretch_reference(table)
    torch.testing.assert_close(out[:20], table[:20], rtol=0, atol=0)  # rows 0-19 copied
    torch.testing.assert_close(out[20:244], ref[20:244], rtol=1e-12, atol=1e-12)  # interpolated
    torch.testing.assert_close(out[244:], ref[244:], rtol=1e-12, atol=1e-12)  # extrapolated
    # hand-worked spot checks
    torch.testing.assert_close(out[20 + 4 * 10 + 1], (3 * table[30] + table[31]) / 4)
    torch.testing.assert_close(out[247], table[76] + 3 * (table[76] - table[75]) / 4)


def _two_table_state(model):
    """The reference implementation's layout of a long model's merged table."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = state["positional_embedding"]
    first, res = torch.randn_like(merged), torch.randn_like(merged)
    first[:20], res[20:] = merged[:20], merged[20:]
    mask1 = torch.zeros(248, 1)
    mask1[:20] = 1
    state.update(positional_embedding=first, positional_embedding_res=res, mask1=mask1, mask2=1 - mask1)
    return state


def test_two_table_and_merged_layouts_give_identical_text_features(tmp_path):
    torch.manual_seed(0)
    long_model = farslip.create_model("ViT-Tiny-8", long_text=True).eval()
    tokenizer = farslip.get_tokenizer(long_model)
    text = tokenizer(["a satellite image of " + "many red buildings near a river " * 12])
    two_table = tmp_path / "two_table.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _two_table_state(long_model).items()}, "epoch": 3}, two_table)
    merged = tmp_path / "merged.pt"
    torch.save(long_model.state_dict(), merged)
    a = farslip.create_model("ViT-Tiny-8", str(two_table)).eval()
    b = farslip.create_model("ViT-Tiny-8", str(merged)).eval()
    assert a.context_length == b.context_length == 248
    with torch.no_grad():
        fa, fb, ref = a.encode_text(text), b.encode_text(text), long_model.encode_text(text)
    torch.testing.assert_close(fa, ref)
    torch.testing.assert_close(fb, ref)


def test_tokens_beyond_77_change_long_features_only():
    torch.manual_seed(0)
    long_model = farslip.create_model("ViT-Tiny-8", long_text=True).eval()
    short_model = farslip.create_model("ViT-Tiny-8").eval()
    base = "a satellite image of " + "a road " * 40  # > 77 tokens
    captions = [base + "with a harbour", base + "with an airport"]
    with torch.no_grad():
        long_feats = long_model.encode_text(farslip.get_tokenizer(long_model)(captions))
        short_feats = short_model.encode_text(farslip.get_tokenizer(short_model)(captions))
    assert farslip.get_tokenizer(long_model)(captions).shape == (2, 248)
    torch.testing.assert_close(short_feats[0], short_feats[1])  # truncated at 77: identical
    assert not torch.allclose(long_feats[0], long_feats[1], atol=1e-4)


def test_frozen_rows_stay_fixed_under_adamw_with_weight_decay():
    torch.manual_seed(0)
    model = farslip.create_model("ViT-Tiny-8", long_text=True)
    guard = FrozenRows(model)
    before = model.positional_embedding.detach().clone()
    opt = torch.optim.AdamW([model.positional_embedding], lr=1e-2, weight_decay=1.0)
    text = farslip.get_tokenizer(model)(["a long caption " * 30])
    for _ in range(3):
        opt.zero_grad()
        model.encode_text(text).square().sum().backward()
        assert model.positional_embedding.grad[:20].abs().sum() == 0
        opt.step()
        guard.restore()
    after = model.positional_embedding.detach()
    torch.testing.assert_close(after[:20], before[:20], rtol=0, atol=0)
    assert (after[20:] - before[20:]).abs().sum() > 0

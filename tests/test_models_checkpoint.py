"""Safe, strict checkpoint loading in every released layout."""
import argparse

import pytest
import torch

import farslip
from farslip.models.checkpoint import CheckpointError, UnsafeCheckpointError, load_checkpoint


@pytest.fixture()
def source():
    torch.manual_seed(0)
    return farslip.create_model("ViT-Tiny-8").eval()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bare_training_dict_and_safetensors(tmp_path, source):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.pt"
    torch.save(source.state_dict(), bare)
    training = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": []},
                "state_dict_teacher": {f"module.{k}": v * 0 for k, v in source.state_dict().items()}}, training)
    st = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    for path in (bare, training, st):
        model = farslip.create_model("ViT-Tiny-8", str(path))
        assert _same_weights(model, source), path


def test_unsafe_pickle_is_refused_with_the_flag_named(tmp_path, source):
    path = tmp_path / "with_object.pt"
    torch.save({"state_dict": source.state_dict(), "args": argparse.Namespace(lr=1e-6)}, path)
    with pytest.raises(UnsafeCheckpointError, match="allow_unsafe=True.*--unsafe-load"):
        farslip.create_model("ViT-Tiny-8", str(path))
    model = farslip.create_model("ViT-Tiny-8", str(path), allow_unsafe=True)
    assert _same_weights(model, source)
    # the safe files of the same run still load without the flag
    safe = tmp_path / "safe.pt"
    torch.save({"state_dict": source.state_dict(), "epoch": 1}, safe)
    assert _same_weights(farslip.create_model("ViT-Tiny-8", str(safe)), source)


def test_mismatches_are_errors_naming_keys(source):
    model = farslip.create_model("ViT-Tiny-8")
    state = source.state_dict()
    missing = {k: v for k, v in state.items() if k != "logit_scale"}
    with pytest.raises(CheckpointError, match="missing keys: logit_scale"):
        load_checkpoint(model, missing)
    extra = dict(state, bogus_weight=torch.zeros(1))
    with pytest.raises(CheckpointError, match="unexpected keys: bogus_weight"):
        load_checkpoint(model, extra)
    shaped = dict(state, text_projection=torch.zeros(3, 3))
    with pytest.raises(CheckpointError, match="shape mismatch: text_projection"):
        load_checkpoint(model, shaped)


def test_long_checkpoint_never_truncated(tmp_path):
    long_model = farslip.create_model("ViT-Tiny-8", long_text=True)
    path = tmp_path / "long.pt"
    torch.save(long_model.state_dict(), path)
    short = farslip.create_model("ViT-Tiny-8")
    with pytest.raises(CheckpointError, match="248 rows.*context is 77"):
        load_checkpoint(short, str(path))
    with pytest.raises(CheckpointError, match="long_text=False"):
        farslip.create_model("ViT-Tiny-8", str(path), long_text=False)
    auto = farslip.create_model("ViT-Tiny-8", str(path))
    assert auto.context_length == 248 and _same_weights(auto, long_model)


def test_short_checkpoint_stretched_when_long_text_asked(tmp_path, source):
    path = tmp_path / "short.pt"
    torch.save(source.state_dict(), path)
    model = farslip.create_model("ViT-Tiny-8", str(path), long_text=True)
    assert model.context_length == 248
    torch.testing.assert_close(model.positional_embedding[:20], source.positional_embedding[:20])


def test_missing_file_and_unknown_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        farslip.create_model("ViT-Tiny-8", str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown model"):
        farslip.create_model("ViT-Nonexistent-3")

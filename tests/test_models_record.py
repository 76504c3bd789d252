"""Self-describing checkpoints: the trainer records the model's settings, ``create_model(path)``
and ``--pretrained path`` rebuild it with no flags, contradictions are errors naming both, and
QuickGELU is never inferred from the name of a file that records its settings."""
from __future__ import annotations

import open_clip
import pytest
import torch

import farslip
from farslip.models.checkpoint import CheckpointError
from farslip.models.record import SETTINGS_KEY, model_settings, read_settings
from farslip.train import main as train_main
from farslip.train.args import parse_args

from ._train_utils import MODEL, write_mgrs
from .test_train_run import stage2_flags


def _gelu(model) -> str:
    return type(model.visual.transformer.resblocks[0].mlp.gelu).__name__


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A stage-2 run with QuickGELU and Long-CLIP text (one epoch of the tiny model)."""
    tmp = tmp_path_factory.mktemp("rec")
    js, imgs = write_mgrs(tmp / "mgrs", items=4)
    flags = stage2_flags(tmp, js, imgs, "rec", "--force-quick-gelu", "--long-text")
    assert train_main.main(flags) == 0
    return tmp / "logs" / "rec" / "checkpoints" / "epoch_1.pt"


def test_trainer_checkpoints_record_plain_settings(trained):
    saved = torch.load(trained, map_location="cpu", weights_only=True)  # plain types only
    assert saved[SETTINGS_KEY] == {"arch": MODEL, "quick_gelu": True, "context_length": 248,
                                   "image_size": [32, 32], "farslip_version": farslip.__version__}
    cfg = saved["train_config"]
    assert cfg["model"]["model"] == MODEL and cfg["model"]["force_quick_gelu"] is True
    assert cfg["optim"]["lr"] == 1e-3 and cfg["method"]["loss_type"] == ["global_itc", "distill", "local_itc"]
    assert read_settings(trained) == saved[SETTINGS_KEY]


def test_create_model_from_the_path_alone(trained):
    saved = torch.load(trained, map_location="cpu", weights_only=True)
    model = farslip.create_model(str(trained))
    assert model.farslip_arch == MODEL and _gelu(model) == "QuickGELU"
    assert model.context_length == 248 and tuple(model.visual.image_size) == (32, 32)
    for key, value in saved["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert farslip.get_tokenizer(model)(["x"]).shape == (1, 248)
    # as pretrained of its architecture: no --force-quick-gelu needed
    again = farslip.create_model(MODEL, str(trained))
    assert _gelu(again) == "QuickGELU" and _same(again, model)


def test_the_trainer_reads_the_record(trained, tmp_path):
    js, imgs = write_mgrs(tmp_path / "mgrs", items=4)
    args = parse_args(["--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2",
                       "--pretrained", str(trained)])
    assert args.model.model == MODEL and args.model.force_quick_gelu is None  # read from the file
    default = parse_args(["--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2",
                          "--pretrained", "none"])
    assert default.model.model == "ViT-B-16"
    flags = [f for f in stage2_flags(tmp_path, js, imgs, "from") if f != MODEL and f != "--model"]
    assert train_main.main(flags + ["--pretrained", str(trained)]) == 0
    out = torch.load(tmp_path / "logs" / "from" / "checkpoints" / "epoch_1.pt", weights_only=True)
    assert out[SETTINGS_KEY]["arch"] == MODEL and out[SETTINGS_KEY]["quick_gelu"] is True


def test_contradicting_model_or_quick_gelu_is_an_error_naming_both(trained, tmp_path, capsys):
    with pytest.raises(ValueError, match=f"'ViT-Small-8' contradicts {trained}, which records "
                                         f"architecture '{MODEL}'"):
        farslip.create_model("ViT-Small-8", str(trained))
    with pytest.raises(ValueError, match="FarSLIP1-ViT-B-32.*ViT-B-32.*contradicts.*ViT-Tiny-8"):
        farslip.create_model("FarSLIP1-ViT-B-32", str(trained))
    with pytest.raises(ValueError, match="--no-force-quick-gelu.*quick_gelu=True"):
        farslip.create_model(str(trained), force_quick_gelu=False)
    js, imgs = write_mgrs(tmp_path / "mgrs", items=4)
    with pytest.raises(SystemExit) as err:
        parse_args(["--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2",
                    "--model", "ViT-Small-8", "--pretrained", str(trained)])
    assert err.value.code == 2
    text = capsys.readouterr().err
    assert "ViT-Small-8" in text and MODEL in text and str(trained) in text
    with pytest.raises(SystemExit):
        parse_args(["--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2",
                    "--model", str(trained)])
    assert "a checkpoint goes in --pretrained FILE" in capsys.readouterr().err


def test_quick_gelu_is_not_inferred_from_a_recorded_files_name(tmp_path):
    torch.manual_seed(0)
    tiny = farslip.create_model(MODEL)  # GELU
    named = tmp_path / "FarSLIP1_ViT-B-32.pt"  # a released file's name
    torch.save({"state_dict": tiny.state_dict(), SETTINGS_KEY: model_settings(tiny)}, named)
    assert _gelu(farslip.create_model(str(named))) == "GELU"
    assert _gelu(farslip.create_model(MODEL, str(named))) == "GELU"
    bare = tmp_path / "bare" / "FarSLIP1_ViT-B-32.pt"  # no record: the name still says it
    bare.parent.mkdir()
    torch.save(tiny.state_dict(), bare)
    assert _gelu(farslip.create_model(MODEL, str(bare))) == "QuickGELU"


def test_recorded_image_size_is_rebuilt(tmp_path):
    torch.manual_seed(0)
    model = open_clip.create_model(MODEL, force_image_size=48)
    model.farslip_arch = MODEL
    path = tmp_path / "big.pt"
    torch.save({"state_dict": model.state_dict(), SETTINGS_KEY: model_settings(model)}, path)
    rebuilt = farslip.create_model(str(path))
    assert tuple(rebuilt.visual.image_size) == (48, 48) and _same(rebuilt, model)
    with pytest.raises(CheckpointError):  # without the record the 48-px positions do not fit
        farslip.create_model(MODEL, str(_bare(tmp_path, model)))


def _bare(tmp_path, model):
    path = tmp_path / "bare48.pt"
    torch.save(model.state_dict(), path)
    return path


def test_files_without_a_record(tmp_path):
    torch.manual_seed(0)
    tiny = farslip.create_model(MODEL)
    bare = tmp_path / "weights.pt"
    torch.save(tiny.state_dict(), bare)
    assert read_settings(bare) is None
    with pytest.raises(CheckpointError, match="records no model settings.*--model ARCH --pretrained FILE"):
        farslip.create_model(str(bare))
    assert _same(farslip.create_model(MODEL, str(bare)), tiny)  # loads exactly as before
    malformed = tmp_path / "malformed.pt"
    torch.save({"state_dict": tiny.state_dict(), SETTINGS_KEY: {"arch": MODEL}}, malformed)
    with pytest.raises(CheckpointError, match="malformed 'model_settings'"):
        farslip.create_model(str(malformed))


def test_classify_cli_takes_the_checkpoint_as_the_model(trained, tmp_path, capsys):
    from PIL import Image

    from farslip.apps import main_classify

    image = tmp_path / "scene.png"
    Image.new("RGB", (40, 40), (30, 120, 60)).save(image)
    assert main_classify([str(image), "--model", str(trained), "--labels", "forest,harbor",
                          "--device", "cpu"]) == 0
    assert "forest" in capsys.readouterr().out
    assert main_classify([str(image), "--model", "ViT-Small-8", "--pretrained", str(trained),
                          "--labels", "forest,harbor", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "ViT-Small-8" in err and MODEL in err and "Traceback" not in err

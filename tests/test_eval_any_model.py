"""Evaluation for any model: config files, random weights, hub / local-dir ids, did-you-mean, path rules."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import farslip
from farslip.apps import classify, main_classify, main_segment
from farslip.cli import main as farslip_main
from farslip.eval.encode import Runtime
from tests._eval_utils import write_benchmarks, write_segmentation
from tests.test_models_hub import write_hub_cache

TINY = Path(farslip.__file__).parent / "model_configs" / "ViT-Tiny-8.json"
FAST = ["--workers", "0", "--batch-size", "16"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def _config_file(folder: Path, name: str = "MyTinyWide", embed_dim: int = 24) -> Path:
    """An open_clip model config that is not built in (a tiny ViT with its own embedding width)."""
    config = json.loads(TINY.read_text())
    config["embed_dim"] = embed_dim
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def test_model_config_file_on_the_command_line(bench, tmp_path):
    config = _config_file(tmp_path)
    model = farslip.create_model(str(config))
    assert model.text_projection.shape[1] == 24 and model.farslip_weights is None  # the file's config, random
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    assert farslip_main(["eval", "classification", "--model", str(config), "--pretrained", str(weights), *FAST,
                         "--data-root", str(bench), "--datasets", "aid", "--output", str(out)]) == 0
    info = json.loads((out / "results.json").read_text())["model"]
    assert info["random_weights"] is False and info["checkpoint"] == str(weights)
    reloaded = farslip.create_model(str(config), str(weights))
    assert torch.equal(reloaded.visual.proj, model.visual.proj)
    assert farslip.get_tokenizer(str(config))(["a"]).shape == (1, 77)


def test_bad_config_files_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        farslip.create_model(str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        farslip.create_model(str(broken))
    wrapped = tmp_path / "open_clip_config.json"
    wrapped.write_text(json.dumps({"model_cfg": json.loads(TINY.read_text())}))
    with pytest.raises(ValueError, match="local-dir:"):
        farslip.create_model(str(wrapped))
    clash = _config_file(tmp_path, name="ViT-B-32")  # a built-in name with another config
    with pytest.raises(ValueError, match="rename the file"):
        farslip.create_model(str(clash))
    assert open_clip.get_model_config("ViT-B-32")["embed_dim"] == 512  # the built-in was not replaced


def test_pretrained_none_everywhere(bench, image, tmp_path, capsys):
    # library: a named checkpoint with random weights keeps its architecture and text length, downloads nothing
    model = farslip.create_model("FarSLIP2-ViT-B-32", "none")
    assert model.context_length == 248 and model.farslip_weights is None and model.farslip_checkpoint is None
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    # eval: accepted, and the report says it was random
    out = tmp_path / "eval"
    assert farslip_main(["eval", "retrieval", "--model", "ViT-Tiny-8", "--pretrained", "none", *FAST,
                         "--data-root", str(bench), "--output", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["random_weights"] is True and data["model"]["pretrained"] == "none"
    assert "(random weights)" in (out / "results.md").read_text()
    # classify and segment
    assert main_classify([str(image), "--model", "ViT-Tiny-8", "--pretrained", "none", "--labels", "a,b",
                          "--device", "cpu"]) == 0
    assert main_segment([str(image), "--model", "ViT-Tiny-8", "--pretrained", "NONE", "--classes", "a;b",
                         "--out", str(tmp_path / "o.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "o.png").is_file()
    # the trainer's parser hands 'none' on unchanged (create_model reads it)
    from farslip.train.args import parse_args
    assert parse_args(["--train-data", "x.tar", "--pretrained", "none", "--model", "ViT-Tiny-8", "--use-imagecrop-aug",
                       "--train-num-samples", "8"]).model.pretrained == "none"


def test_loading_a_file_logs_no_random_init_warning(tmp_path, caplog):
    weights = tmp_path / "tiny.pt"
    torch.save(farslip.create_model("ViT-Tiny-8", "none").state_dict(), weights)
    with caplog.at_level(logging.INFO):
        open_clip.create_model("ViT-Tiny-8")  # control: open_clip alone says it
    assert any("initialized randomly" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        model = farslip.create_model("ViT-Tiny-8", str(weights))
    messages = [r.getMessage() for r in caplog.records]
    assert not any("initialized randomly" in m or "random weights" in m for m in messages), messages
    assert any(f"loaded {weights}" in m for m in messages) and model.farslip_checkpoint == str(weights)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        farslip.create_model("ViT-Tiny-8", "none")  # asked for: said once, as info, by farslip
    assert [r.levelno for r in caplog.records if "random weights" in r.getMessage()] == [logging.INFO]


def test_misspelled_names_get_the_closest_ones(bench, tmp_path, capsys):
    for wrong, right in (("FarSLIP2-ViT-B16", "FarSLIP2-ViT-B-16"), ("ViT-B-23", "ViT-B-32"),
                         ("vit-tiny-9", "ViT-Tiny-8")):
        assert farslip_main(["eval", "classification", "--model", wrong, *FAST, "--data-root", str(bench),
                             "--output", str(tmp_path / wrong)]) == 2
        err = capsys.readouterr().err
        assert "Did you mean" in err and repr(right) in err, err
        assert not (tmp_path / wrong).exists()  # refused before anything ran
    assert farslip_main(["eval", "classification", "--model", "ViT-Tiny-8", *FAST, "--data-root", str(bench),
                         "--datasets", "aidd", "--output", str(tmp_path / "x")]) == 2
    assert "did you mean 'aid'" in capsys.readouterr().err


def _schema_folder(folder: Path, seed: int) -> tuple[Path, torch.nn.Module]:
    """An open_clip-style model folder: open_clip_config.json + open_clip_model.safetensors."""
    torch.manual_seed(seed)
    model = farslip.create_model("ViT-Tiny-8", "none")
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": json.loads(TINY.read_text()),
                                                              "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder, model.eval()


def test_local_dir_model(tmp_path, image):
    folder, source = _schema_folder(tmp_path / "mymodel", seed=3)
    model = farslip.create_model(f"local-dir:{folder}").eval()
    assert model.farslip_checkpoint == str(folder / "open_clip_model.safetensors")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    random = farslip.create_model(f"local-dir:{folder}", "none")
    assert random.farslip_weights is None and not torch.equal(random.visual.proj, source.visual.proj)
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file"):
        farslip.create_model(f"local-dir:{folder}")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        farslip.create_model(f"local-dir:{tmp_path / 'elsewhere'}")


def test_hf_hub_model_offline_from_the_cache(tmp_path, image):
    folder, source = _schema_folder(tmp_path / "files", seed=5)
    cache = tmp_path / "hub"
    write_hub_cache(cache, "someorg/tiny-rs-clip", {name: folder / name for name in
                                                    ("open_clip_config.json", "open_clip_model.safetensors")})
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.pop("HF_HOME", None)
    done = subprocess.run([sys.executable, "-m", "farslip", "classify", str(image), "--model",
                           "hf-hub:someorg/tiny-rs-clip", "--labels", "airport,forest,harbor", "--json", "-",
                           "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)  # stdout holds only the JSON; the table went to stderr
    assert str(image) in done.stderr
    expected = classify(source, farslip.get_tokenizer(source), [Image.open(image).convert("RGB")],
                        ["airport", "forest", "harbor"], Runtime(workers=0))[0]
    assert [record["probabilities"][k] for k in ("airport", "forest", "harbor")] == \
        pytest.approx(expected.tolist(), abs=1e-5)
    # not cached: one error naming the repo and the ways to get it, no traceback
    missing = subprocess.run([sys.executable, "-m", "farslip", "classify", str(image), "--model",
                              "hf-hub:someorg/other", "--labels", "a,b"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "someorg/other" in missing.stderr and "local-dir:" in missing.stderr
    with pytest.raises(ValueError, match="hf-hub:ORG/REPO"):
        farslip.create_model("hf-hub:someorg/tiny-rs-clip/extra/file.pt")


def test_csv_and_classnames_follow_one_path_rule(bench, tmp_path, monkeypatch, capsys):
    """Relative --csv / --classnames: the current directory first, then --data-root; errors name both."""
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "mine.txt").write_text((bench / "aid" / "classnames.txt").read_text())
    monkeypatch.chdir(here)
    out = tmp_path / "out"
    # --csv found under --data-root, --classnames in the current directory
    assert farslip_main(["eval", "classification", "--model", "ViT-Tiny-8", *FAST, "--data-root", str(bench),
                         "--csv", "aid/aid_img_txt_pairs_test.csv", "--classnames", "mine.txt",
                         "--output", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())["classification"]["datasets"]["aid_img_txt_pairs_test"]
    assert data["classnames"] == "mine.txt" and data["csv"] == str(bench / "aid/aid_img_txt_pairs_test.csv")
    # --classnames found under --data-root too
    assert farslip_main(["eval", "classification", "--model", "ViT-Tiny-8", *FAST, "--data-root", str(bench),
                         "--csv", "aid/aid_img_txt_pairs_test.csv", "--classnames", "eurosat/classnames.txt",
                         "--output", str(tmp_path / "out2")]) == 0
    assert farslip_main(["eval", "classification", "--model", "ViT-Tiny-8", *FAST, "--data-root", str(bench),
                         "--csv", "aid/aid_img_txt_pairs_test.csv", "--classnames", "absent.txt",
                         "--output", str(tmp_path / "out3")]) == 2
    err = capsys.readouterr().err
    assert "absent.txt" in err and str(bench / "absent.txt") in err  # both paths tried are named
    help_text = subprocess.run([sys.executable, "-m", "farslip", "eval", "classification", "--help"],
                               capture_output=True, text=True, timeout=120).stdout
    assert "current directory first, then under --data-root" in " ".join(help_text.split())


def test_retrieval_help_says_which_caption_prefix_and_column(capsys):
    with pytest.raises(SystemExit):
        farslip_main(["eval", "retrieval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--caption-prefix 'a satellite image. '" in text  # how to ask for the RSICD-style prefix
    assert "title_multi_objects" in text and "default title" in text


def test_segmentation_of_a_random_model_reports_it(tmp_path):
    seg = write_segmentation(tmp_path / "ovss")
    out = tmp_path / "seg"
    assert farslip_main(["eval", "segmentation", "--model", "ViT-Tiny-8", "--pretrained", "none", *FAST,
                         "--data-root", str(seg), "--output", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["random_weights"] is True and list(data["segmentation"]["datasets"]) == ["LoveDA"]

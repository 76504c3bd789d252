"""`farslip classify` and `farslip segment` on the tiny model and synthetic images."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import farslip
from farslip.apps import classify, main_classify, main_segment, overlay, parse_classes, parse_labels
from farslip.transforms import eval_transform
from farslip.eval.encode import Runtime
from farslip.eval.report import palette


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(farslip.create_model("ViT-Tiny-8").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(96, 64), (50, 80)]):
        path = folder / f"scene{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_classify_probabilities_match_an_explicit_computation(checkpoint, images):
    model = farslip.create_model("ViT-Tiny-8", str(checkpoint)).eval()
    tokenizer = farslip.get_tokenizer(model)
    labels = ["airport", "farmland", "storage tanks"]
    pil = [Image.open(p).convert("RGB") for p in images]
    probs = classify(model, tokenizer, pil, labels, Runtime(workers=0))
    with torch.no_grad():
        weights = []
        for label in labels:
            prompts = tokenizer([f"a satellite photo of {label}.", f"a satellite image of {label}"])
            weights.append(F.normalize(F.normalize(model.encode_text(prompts), dim=-1).mean(0), dim=0))
        image = F.normalize(model.encode_image(torch.stack([eval_transform(32)(p) for p in pil])), dim=-1)
        expected = (model.logit_scale.exp() * image @ torch.stack(weights).T).softmax(-1)
    torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-5)


def test_classify_cli(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "probs.json"
    code = main_classify([*map(str, images), "--model", "ViT-Tiny-8", "--pretrained", str(checkpoint),
                          "--labels", "airport,farmland,harbor", "--top", "2", "--json", str(out), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(images[0]) in printed and printed.count("%") == 4
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == [str(p) for p in images]  # one record per image, in order
    for record in records:
        row = record["probabilities"]
        assert set(row) == {"airport", "farmland", "harbor"} and sum(row.values()) == pytest.approx(1.0, abs=1e-5)
        assert record["prediction"] == max(row, key=row.get)
    assert main_classify([str(images[0]), "--model", "ViT-Tiny-8", "--labels", "only-one"]) == 2
    assert "at least two labels" in capsys.readouterr().err


def test_segment_cli_writes_overlay_and_labels(checkpoint, images, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("background\nbuilding,house\nwater,lake\n")
    out, labels_png = tmp_path / "overlay.png", tmp_path / "labels.png"
    code = main_segment([str(images[0]), "--model", "ViT-Tiny-8", "--pretrained", str(checkpoint),
                         "--classes", str(classes), "--out", str(out), "--save-labels", str(labels_png),
                         "--device", "cpu"])
    assert code == 0
    image = np.asarray(Image.open(images[0]).convert("RGB"))
    labels = np.asarray(Image.open(labels_png))
    assert labels.shape == image.shape[:2] and labels.max() < 3
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape[0] >= image.shape[0] and drawn.shape[1] > image.shape[1]  # legend on the right
    blended = np.round(0.5 * image.astype(np.float32) + 0.5 * palette(3)[labels].astype(np.float32))
    np.testing.assert_array_equal(drawn[: image.shape[0], : image.shape[1]], blended.astype(np.uint8))
    assert "overlay:" in capsys.readouterr().out


def test_parsers(tmp_path):
    assert parse_classes("building;road;tree,forest") == [["building"], ["road"], ["tree", "forest"]]
    path = tmp_path / "c.txt"
    path.write_text("background\n\nwater, lake\n")
    assert parse_classes(str(path)) == [["background"], ["water", "lake"]]
    assert parse_labels("a, b ,c") == ["a", "b", "c"]
    with pytest.raises(ValueError):
        parse_classes("onlyone")
    legend = overlay(Image.new("RGB", (10, 10)), np.zeros((10, 10), dtype=np.uint8), [["a"], ["b"]])
    assert legend.width > 10 and legend.height >= 10

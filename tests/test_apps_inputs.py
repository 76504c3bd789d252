"""`farslip classify` / `segment` on folders and several images, JSON records, `--json -`, GeoTIFF labels."""
from __future__ import annotations

import csv
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, TiffImagePlugin

import farslip
from farslip.apps import classify, main_classify, main_segment, segment_labels
from farslip.eval.encode import Runtime
from farslip.eval.report import palette
from farslip.eval.segmentation import build_queries

GEO = {33550: (12, (0.5, 0.5, 0.0)),  # ModelPixelScale
       33922: (12, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)),  # ModelTiepoint
       34735: (3, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)),  # GeoKeyDirectory
       34737: (2, "WGS 84 / UTM zone 33N|")}  # GeoAsciiParams


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(farslip.create_model("ViT-Tiny-8", "none").state_dict(), path)
    return path


def _picture(path: Path, seed: int, size=(48, 40), tags=None) -> Path:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if tags:
        info = TiffImagePlugin.ImageFileDirectory_v2()
        for tag, (kind, value) in tags.items():
            info[tag] = value
            info.tagtype[tag] = kind
        image.save(path, tiffinfo=info)
    else:
        image.save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """b.png, a.jpg, c.tif (a GeoTIFF) and a text file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    _picture(root / "b.png", 1)
    _picture(root / "a.jpg", 2, size=(64, 30))
    _picture(root / "c.tif", 3, size=(40, 52), tags=GEO)
    (root / "notes.txt").write_text("not an image")
    return root


def _model_args(checkpoint) -> list[str]:
    return ["--model", "ViT-Tiny-8", "--pretrained", str(checkpoint), "--device", "cpu"]


def test_classify_a_folder_writes_one_record_per_image(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "records.json"
    assert main_classify([str(folder), *_model_args(checkpoint), "--labels", "airport,forest,harbor",
                          "--json", str(out), "--batch-size", "2"]) == 0
    records = json.loads(out.read_text())
    expected_order = [folder / "a.jpg", folder / "b.png", folder / "c.tif"]  # sorted, the text file left out
    assert [r["image"] for r in records] == [str(p) for p in expected_order]
    model = farslip.create_model("ViT-Tiny-8", str(checkpoint)).eval()
    probs = classify(model, farslip.get_tokenizer(model), [Image.open(p).convert("RGB") for p in expected_order],
                     ["airport", "forest", "harbor"], Runtime(workers=0))
    for record, row in zip(records, probs):  # batches of 2 give the same numbers as one batch of 3
        assert [record["probabilities"][k] for k in ("airport", "forest", "harbor")] == \
            pytest.approx(row.tolist(), abs=1e-5)
        assert record["prediction"] == ["airport", "forest", "harbor"][int(row.argmax())]
    printed = capsys.readouterr().out
    assert printed.index(str(expected_order[0])) < printed.index(str(expected_order[2]))


def test_classify_json_to_stdout_keeps_stdout_pure_json(checkpoint, folder, capsys):
    assert main_classify([str(folder / "b.png"), str(folder / "a.jpg"), *_model_args(checkpoint),
                          "--labels", "airport,forest", "--json", "-"]) == 0
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [Path(r["image"]).name for r in records] == ["b.png", "a.jpg"]  # files keep the order given
    assert "b.png" in captured.err and "%" in captured.err  # the table went to standard error


def test_bad_inputs_are_named(checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main_classify([str(empty), *_model_args(checkpoint), "--labels", "a,b"]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main_segment([str(tmp_path / "missing.png"), *_model_args(checkpoint), "--classes", "a;b"]) == 2
    assert "missing.png" in capsys.readouterr().err


def _tiff_tags(path: Path) -> dict[int, tuple]:
    """The first IFD of a TIFF file read byte by byte (independent of Pillow): {tag: values}."""
    data = path.read_bytes()
    order = {b"II": "<", b"MM": ">"}[data[:2]]
    assert struct.unpack(order + "H", data[2:4])[0] == 42
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    sizes = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 12: ("d", 8)}
    tags = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if kind not in sizes:
            continue
        code, size = sizes[kind]
        raw = entry[8:12] if n * size <= 4 else data[struct.unpack(order + "I", entry[8:12])[0]:][: n * size]
        if kind == 2:
            tags[tag] = raw[:n].rstrip(b"\0").decode()
        else:
            tags[tag] = struct.unpack(order + code * n, raw[: n * size])
    return tags


def test_segment_a_folder_with_json_coverage_and_georeferenced_labels(checkpoint, folder, tmp_path, capsys, caplog):
    overlays, labels = tmp_path / "overlays", tmp_path / "labels"
    classes = "background;building,house;water,lake"
    with caplog.at_level(logging.WARNING):
        assert main_segment([str(folder), *_model_args(checkpoint), "--classes", classes, "--out", str(overlays),
                             "--save-labels", str(labels), "--json", "-"]) == 0
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [Path(r["image"]).name for r in records] == ["a.jpg", "b.png", "c.tif"]
    assert sorted(p.name for p in overlays.iterdir()) == ["a_overlay.png", "b_overlay.png", "c_overlay.png"]
    assert sorted(p.name for p in labels.iterdir()) == ["a_labels.png", "b_labels.png", "c_labels.tif",
                                                        "labels.classes.csv"]
    model = farslip.create_model("ViT-Tiny-8", str(checkpoint)).eval()
    run = Runtime(batch_size=16, workers=0)
    queries = build_queries(model, farslip.get_tokenizer(model), [["background"], ["building", "house"],
                                                                 ["water", "lake"]], run)
    for record in records:
        source = Image.open(record["image"]).convert("RGB")
        stored = np.asarray(Image.open(record["labels"]))
        assert stored.shape == (source.height, source.width) and (record["width"], record["height"]) == source.size
        np.testing.assert_array_equal(stored, segment_labels(model, source, queries, run=run))
        counts = np.bincount(stored.ravel(), minlength=3)
        assert [record["classes"][c]["pixels"] for c in ("background", "building", "water")] == counts.tolist()
        assert sum(v["share"] for v in record["classes"].values()) == pytest.approx(1.0)
    geo = records[2]
    assert geo["georeferenced"] is True and records[0]["georeferenced"] is False
    written = _tiff_tags(Path(geo["labels"]))
    for tag, (_, value) in GEO.items():
        assert written[tag] == value, tag
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    with open(labels / "labels.classes.csv", newline="") as handle:
        key = list(csv.reader(handle))
    assert key[0] == ["index", "class", "synonyms", "r", "g", "b"]
    assert [row[:3] for row in key[1:]] == [["0", "background", ""], ["1", "building", "house"],
                                            ["2", "water", "lake"]]
    assert [int(v) for v in key[2][3:]] == palette(3)[1].tolist()  # the overlay's colour of class 1


def test_segment_one_geotiff_to_png_warns_that_georeferencing_is_dropped(checkpoint, folder, tmp_path, caplog):
    out = tmp_path / "labels.png"
    with caplog.at_level(logging.WARNING):
        assert main_segment([str(folder / "c.tif"), *_model_args(checkpoint), "--classes", "a;b",
                             "--out", str(tmp_path / "o.png"), "--save-labels", str(out),
                             "--json", str(tmp_path / "r.json")]) == 0
    assert any("georeferencing" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "labels.classes.csv").is_file() and (tmp_path / "o.png").is_file()
    (record,) = json.loads((tmp_path / "r.json").read_text())
    assert record["georeferenced"] is False and record["labels"] == str(out)


def test_segment_refuses_images_whose_outputs_would_collide(checkpoint, folder, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    _picture(other / "b.png", 9)
    assert main_segment([str(folder / "b.png"), str(other / "b.png"), *_model_args(checkpoint), "--classes", "a;b",
                         "--out", str(tmp_path / "o")]) == 2
    assert "b" in capsys.readouterr().err and not (tmp_path / "o").exists()

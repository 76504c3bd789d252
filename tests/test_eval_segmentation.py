"""OVSS: sliding windows, the single-window forward, synonyms, class files and label conventions."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import farslip
from farslip.eval import SEGMENTATION, evaluate_segmentation
from farslip.eval.datasets import load_label_map, read_class_synonyms, segmentation_pairs
from farslip.eval.encode import Runtime
from farslip.eval.imresize import resize_linear_u8
from farslip.eval.segmentation import (Geometry, Queries, build_queries, centred_padding, class_probabilities,
                                       geometry_for, predict_labels, prepare_image, resized_size, segment_image,
                                       segment_labels, sliding_logits, window_boxes, window_starts)
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from tests._eval_utils import write_segmentation

RUN = dict(batch_size=4, workers=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = farslip.create_model("ViT-Tiny-8").eval()
    tokenizer = farslip.get_tokenizer(model)
    queries = build_queries(model, tokenizer, [["forest", "woodland"], ["water"], ["desert", "sand"]], Runtime())
    return model, tokenizer, queries


def test_window_starts_snap_the_last_window():
    assert window_starts(448, 224, 112) == [0, 112, 224]  # the paper's 3 x 3 windows
    assert window_starts(300, 224, 112) == [0, 76]
    assert window_starts(224, 224, 112) == [0]
    assert window_starts(100, 224, 112) == [0]  # smaller than a window: one window, 100 long


def test_windows_cover_every_pixel_as_counted():
    height, width, window, stride = 300, 250, 224, 112  # neither a multiple of the stride
    boxes = window_boxes(height, width, window, stride)
    assert boxes == [(0, 0), (0, 26), (76, 0), (76, 26)]
    count = np.zeros((height, width), dtype=int)
    for y, x in boxes:
        count[y:y + window, x:x + window] += 1
    # rows 0..75 in one window, 76..223 in two, 224..299 in one; columns 0..25 one, 26..223 two, rest one
    rows = np.array([1] * 76 + [2] * 148 + [1] * 76)
    cols = np.array([1] * 26 + [2] * 198 + [1] * 26)
    np.testing.assert_array_equal(count, rows[:, None] * cols[None, :])
    assert count.sum() == len(boxes) * window * window


@torch.no_grad()
def test_single_window_equals_direct_forward(tiny):
    model, _, queries = tiny
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    prepared = prepare_image(image, 32)  # the tiny model's window: exactly one window
    assert prepared.shape == (3, 32, 32)
    (logits,) = sliding_logits(model, [prepared], queries, run=Runtime(**RUN))
    _, tokens = farslip.encode_dense(model, prepared[None], last_attn="segearth", need=("tokens",))
    tokens = tokens[0] / tokens[0].norm(dim=-1, keepdim=True)
    direct = torch.einsum("pd,dq->qp", tokens, queries.weights).reshape(-1, 4, 4)
    expected = F.interpolate(direct[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_windows_batched_across_images_match_one_by_one(tiny):
    model, _, queries = tiny
    rng = np.random.default_rng(1)
    images = [torch.from_numpy(rng.standard_normal((3, h, w)).astype(np.float32)) for h, w in ((40, 64), (20, 30))]
    together = sliding_logits(model, images, queries, run=Runtime(**{**RUN, "batch_size": 3}))
    for image, joint in zip(images, together):
        (alone,) = sliding_logits(model, [image], queries, run=Runtime(**{**RUN, "batch_size": 64}))
        assert joint.shape == (queries.weights.shape[1], *image.shape[-2:])  # padding cropped off again
        torch.testing.assert_close(joint, alone, rtol=1e-5, atol=1e-6)


def test_class_score_is_the_max_over_synonyms():
    queries = Queries(torch.zeros(2, 3), torch.tensor([0, 0, 1]), [["a", "a2"], ["b"]])
    logits = torch.tensor([0.1, 0.3, 0.2]).view(3, 1, 1)
    probs = class_probabilities(logits, queries, (2, 2))
    softmax = torch.softmax(50 * torch.tensor([0.1, 0.3, 0.2]), dim=0)
    assert probs.shape == (2, 2, 2)
    torch.testing.assert_close(probs[:, 0, 0], torch.stack([softmax[:2].max(), softmax[2]]))


@torch.no_grad()
def test_segment_image_and_the_evaluation_shortcut_agree(tiny):
    model, _, queries = tiny
    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (45, 70, 3), dtype=np.uint8))
    probs = segment_image(model, image, queries, run=Runtime(**RUN))
    assert probs.shape == (3, 45, 70) and torch.isfinite(probs).all()
    (logits,) = sliding_logits(model, [prepare_image(image, 448)], queries, run=Runtime(**RUN))
    np.testing.assert_array_equal(predict_labels(logits, queries, (45, 70)), probs.argmax(dim=0).numpy())
    np.testing.assert_array_equal(segment_labels(model, image, queries, run=Runtime(**RUN)), probs.argmax(dim=0).numpy())


def test_packaged_class_files_exist_for_every_registered_set():
    for spec in SEGMENTATION.values():
        classes = read_class_synonyms(spec.packaged_classes)
        assert len(classes) >= 5, spec.name
    assert read_class_synonyms(SEGMENTATION["OpenEarthMap"].packaged_classes)[-1] == ["building", "roof", "house"]


def test_evaluate_segmentation_conventions(tmp_path, tiny, caplog):
    model, tokenizer, _ = tiny
    root = write_segmentation(tmp_path)
    with caplog.at_level(logging.INFO, logger="farslip"):
        result = evaluate_segmentation(model, tokenizer, root, ["loveda"], **RUN)
    loveda = result["datasets"]["LoveDA"]
    assert str(root / "LoveDA" / "classes.txt") in caplog.text  # the local class file wins, and says so
    assert loveda["reduce_zero_label"] is True and loveda["split"] == "val"
    assert loveda["out_of_range_pixels"] == 0  # labels 1..3 became 0..2, the 3 classes of the file
    assert loveda["classes"] == ["forest", "water", "desert"]
    assert len(loveda["examples"]) == 2 and loveda["examples"][0]["truth"].shape == (40, 56)
    assert result["mean_mIoU"] == pytest.approx(loveda["mIoU"])
    # without the shift label 3 is out of range for 3 classes, and label 0 is scored as class 0
    plain = evaluate_segmentation(model, tokenizer, root, ["LoveDA"], reduce_zero_label=False, **RUN)
    assert plain["datasets"]["LoveDA"]["out_of_range_pixels"] > 0
    # the packaged LoveDA list (7 classes) is used when the folder has no classes.txt
    (root / "LoveDA" / "classes.txt").unlink()
    packaged = evaluate_segmentation(model, tokenizer, root, ["LoveDA"], num_examples=0, **RUN)
    assert packaged["datasets"]["LoveDA"]["classes"][1] == "building"
    assert packaged["datasets"]["LoveDA"]["class_file"] == str(SEGMENTATION["LoveDA"].packaged_classes)


def test_unregistered_folder_and_missing_split(tmp_path, tiny):
    model, tokenizer, _ = tiny
    root = write_segmentation(tmp_path, name="MySet", split="test")
    classes = tmp_path / "mine.txt"
    classes.write_text("background\nforest\nwater\ndesert\n")
    result = evaluate_segmentation(model, tokenizer, None, seg_dir=root / "MySet", classes=classes, split="test", **RUN)
    assert result["datasets"]["MySet"]["num_images"] == 2
    assert result["datasets"]["MySet"]["reduce_zero_label"] is False
    with pytest.raises(Exception, match=str(Path(root / "MySet" / "img_dir" / "val"))):
        evaluate_segmentation(model, tokenizer, None, seg_dir=root / "MySet", classes=classes, **RUN)


def test_bf16_model_segments(tmp_path):
    model = farslip.create_model("ViT-Tiny-8", precision="bf16").eval()
    root = write_segmentation(tmp_path)
    result = evaluate_segmentation(model, farslip.get_tokenizer(model), root, ["LoveDA"],
                                   **{**RUN, "precision": "bf16"})
    assert 0.0 <= result["mean_mIoU"] <= 100.0


@torch.no_grad()
def test_last_attn_variant_reaches_the_model(tiny):
    model, _, queries = tiny
    image = prepare_image(Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)), 32)
    (segearth,) = sliding_logits(model, [image], queries, last_attn="segearth", run=Runtime(**RUN))
    (vanilla,) = sliding_logits(model, [image], queries, last_attn="vanilla", run=Runtime(**RUN))
    _, tokens = farslip.encode_dense(model, image[None], last_attn="vanilla", need=("tokens",))
    cosine = F.normalize(tokens[0], dim=-1) @ queries.weights
    expected = F.interpolate(cosine.T.reshape(1, -1, 4, 4), size=(32, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(vanilla, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(segearth, vanilla)


# ---------------------------------------------------------------- the reference's rules, re-computed


def _clip(image_size: int, patch: int, width: int = 64, layers: int = 1):
    """A tiny random open_clip CLIP with the given input and patch size."""
    import open_clip

    torch.manual_seed(image_size + patch)
    vision = dict(image_size=image_size, patch_size=patch, width=width, layers=layers, head_width=32)
    text = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1)
    return open_clip.model.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()


def _bilinear_matrix(src: int, dst: int) -> torch.Tensor:
    """[dst, src] weights of a half-pixel bilinear resize (align_corners=False), edges clamped."""
    m = torch.zeros(dst, src, dtype=torch.float64)
    for d in range(dst):
        c = max((d + 0.5) * src / dst - 0.5, 0.0)
        i0 = min(int(math.floor(c)), src - 1)
        i1 = min(i0 + 1, src - 1)
        t = c - i0 if i0 < src - 1 else 0.0
        m[d, i0] += 1 - t
        m[d, i1] += t
    return m


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """[C, h, w] -> [C, H, W] through the explicit matrices (float64)."""
    my, mx = _bilinear_matrix(x.shape[-2], size[0]), _bilinear_matrix(x.shape[-1], size[1])
    return torch.einsum("Hh,chw,Ww->cHW", my, x.double(), mx)


def _reference_logits(model, image: torch.Tensor, queries: Queries, window: int, stride: int) -> torch.Tensor:
    """The reference's sliding window, one window at a time: windows y1 = i * stride, y2 = min(y1 +
    window, h), y1 = max(y2 - window, 0); each padded centred with zeros to a multiple of the patch,
    resized to the model's input, its patch-grid cosines resized to the padded window and cut."""
    _, h, w = image.shape
    size, patch = model.visual.image_size[0], model.visual.patch_size[0]
    grid = size // patch
    total = torch.zeros(queries.weights.shape[1], h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    rows = max(h - window + stride - 1, 0) // stride + 1
    cols = max(w - window + stride - 1, 0) // stride + 1
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride + window, h), min(j * stride + window, w)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            crop = image[:, y1:y2, x1:x2]
            ch, cw = crop.shape[-2:]
            ph, pw = math.ceil(ch / patch) * patch, math.ceil(cw / patch) * patch
            top, left = (ph - ch) // 2, (pw - cw) // 2
            canvas = torch.zeros(3, ph, pw)
            canvas[:, top:top + ch, left:left + cw] = crop
            inputs = canvas if (ph, pw) == (size, size) else _resize(canvas, (size, size)).float()
            _, tokens = farslip.encode_dense(model, inputs[None], last_attn="segearth", need=("tokens",))
            tokens = tokens[0] / tokens[0].norm(dim=-1, keepdim=True)
            cos = (tokens @ queries.weights).T.reshape(-1, grid, grid)
            up = _resize(cos, (ph, pw))[:, top:top + ch, left:left + cw]
            total[:, y1:y2, x1:x2] += up
            count[y1:y2, x1:x2] += 1
    assert (count > 0).all()
    return (total / count).float()


@pytest.fixture(scope="module")
def models_224_96():
    out = {}
    for size, patch in ((224, 32), (96, 16)):
        model = _clip(size, patch)
        queries = build_queries(model, farslip.get_tokenizer(model), [["forest"], ["water"], ["sand"]], Runtime())
        out[size] = (model, queries)
    return out


def test_geometries():
    model = farslip.create_model("ViT-Tiny-8")
    assert geometry_for(model) == Geometry(448, 224, 112)  # the paper's, whatever the model's input
    assert geometry_for(model, "model") == Geometry(64, 32, 16)
    assert geometry_for(model, "reference", long_side=300) == Geometry(300, 224, 112)
    with pytest.raises(ValueError, match="reference, model"):
        geometry_for(model, "scaled")


def test_centred_padding_and_windows_of_a_narrow_image():
    # a 256 x 70 image: long side 448 -> 448 x 123; three 224 x 123 windows down, one across
    assert resized_size(256, 70, 448) == (448, 123)
    assert window_boxes(448, 123, 224, 112) == [(0, 0), (112, 0), (224, 0)]
    assert centred_padding(224, 123, 32) == (2, 3, 0, 0)  # 123 -> 128: 2 left, 3 right
    assert centred_padding(224, 123, 16) == (2, 3, 0, 0)
    assert centred_padding(100, 123, 8) == (2, 3, 2, 2)
    assert centred_padding(96, 96, 16) == (0, 0, 0, 0)


@torch.no_grad()
@pytest.mark.parametrize("size", [224, 96])
@pytest.mark.parametrize("shape", [(448, 336), (448, 123), (150, 448), (60, 90)])
def test_sliding_window_equals_the_reference(models_224_96, size, shape):
    """Window grid, small-side padding and the resize to a 224- or 96-px input, re-computed."""
    model, queries = models_224_96[size]
    image = torch.from_numpy(np.random.default_rng(sum(shape)).standard_normal((3, *shape)).astype(np.float32))
    (ours,) = sliding_logits(model, [image], queries, run=Runtime(**RUN), window=224, stride=112)
    expected = _reference_logits(model, image, queries, 224, 112)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    labels = (ours.argmax(0) == expected.argmax(0)).float().mean()
    assert labels > 0.999


@torch.no_grad()
def test_model_geometry_windows_are_the_model_input(models_224_96):
    model, queries = models_224_96[96]
    image = torch.from_numpy(np.random.default_rng(9).standard_normal((3, 192, 150)).astype(np.float32))
    shape = geometry_for(model, "model")
    assert shape == Geometry(192, 96, 48)
    (ours,) = sliding_logits(model, [image], queries, run=Runtime(**RUN), window=shape.window, stride=shape.stride)
    torch.testing.assert_close(ours, _reference_logits(model, image, queries, 96, 48), rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_segment_labels_uses_the_exact_uint8_resize(models_224_96):
    model, queries = models_224_96[96]
    pixels = np.random.default_rng(4).integers(0, 255, (256, 70, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    prepared = prepare_image(image, 448)
    resized = resize_linear_u8(pixels, (448, 123))
    expected = (torch.from_numpy(resized).permute(2, 0, 1).float() / 255
                - torch.tensor(OPENAI_DATASET_MEAN)[:, None, None]) / torch.tensor(OPENAI_DATASET_STD)[:, None, None]
    torch.testing.assert_close(prepared, expected)
    logits = _reference_logits(model, prepared, queries, 224, 112)
    truth = queries.query_class[_resize(logits, (256, 70)).argmax(0)].numpy()
    labels = segment_labels(model, image, queries, run=Runtime(**RUN))
    assert labels.dtype == np.uint8 and labels.shape == (256, 70)
    assert (labels == truth).mean() > 0.999


def test_fp16_segments_like_fp32(tmp_path):
    root = write_segmentation(tmp_path)
    torch.manual_seed(0)
    model = farslip.create_model("ViT-Tiny-8").eval()
    half = farslip.create_model("ViT-Tiny-8", precision="fp16").eval()
    half.load_state_dict(model.state_dict())
    tokenizer = farslip.get_tokenizer(model)
    run = {**RUN, "batch_size": 64}
    full = evaluate_segmentation(model, tokenizer, root, ["LoveDA"], **run)["datasets"]["LoveDA"]
    fp16 = evaluate_segmentation(half, tokenizer, root, ["LoveDA"], **{**run, "precision": "fp16"})["datasets"]["LoveDA"]
    assert half.visual.conv1.weight.dtype == torch.float16
    assert fp16["mIoU"] == pytest.approx(full["mIoU"], abs=2.0)
    agree = np.mean([(a["prediction"] == b["prediction"]).mean() for a, b in zip(full["examples"], fp16["examples"])])
    assert agree > 0.95


# ---------------------------------------------------------------- layouts


def _write_set(root: Path, images: str, labels: str, img_suffix: str, ann_suffix: str, stems=("a", "b")) -> None:
    rng = np.random.default_rng(0)
    for stem in stems:
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        label = (np.arange(40 * 48).reshape(40, 48) % 3).astype(np.uint8)
        (root / images).mkdir(parents=True, exist_ok=True)
        (root / labels).mkdir(parents=True, exist_ok=True)
        fmt = {".tif": "TIFF", ".png": "PNG", ".jpg": "JPEG"}
        Image.fromarray(pixels).save(root / images / f"{stem}{img_suffix}", fmt[img_suffix.lower()])
        Image.fromarray(label).save(root / labels / f"{stem}{ann_suffix}", fmt[ann_suffix[-4:].lower()])


# the paper's framework layout (the table), then the other accepted spellings
LAYOUTS = {
    "OpenEarthMap": [("OpenEarthMap/img_dir/val", "OpenEarthMap/ann_dir/val", ".tif", ".tif")],
    "LoveDA": [("loveDA/img_dir/val", "loveDA/ann_dir/val", ".png", ".png"),
               ("LoveDA/img_dir/val", "LoveDA/ann_dir/val", ".png", ".png")],
    "iSAID": [("iSAID/img_dir/val", "iSAID/ann_dir/val", ".png", "_instance_color_RGB.png")],
    "Potsdam": [("potsdam/img_dir/val", "potsdam/ann_dir/val", ".png", ".png"),
                ("Potsdam/img_dir/val", "Potsdam/ann_dir/val", ".png", ".png")],
    "Vaihingen": [("vaihingen/img_dir/val", "vaihingen/ann_dir/val", ".png", ".png"),
                  ("Vaihingen/img_dir/val", "Vaihingen/ann_dir/val", ".png", ".png")],
    "UAVid": [("UAVid/img_dir/test", "UAVid/ann_dir/test", ".png", ".png")],
    "UDD5": [("UDD5/val/src", "UDD5/val/gt", ".JPG", ".png"), ("UDD5/img_dir/val", "UDD5/ann_dir/val", ".JPG", ".png"),
             ("UDD/UDD/UDD5/val/src", "UDD/UDD/UDD5/val/gt", ".jpg", ".png")],
    "VDD": [("VDD/test/src", "VDD/test/gt", ".JPG", ".png"), ("VDD/img_dir/test", "VDD/ann_dir/test", ".JPG", ".png")],
}


def _case_sensitive(path: Path) -> bool:
    (path / "Probe").mkdir(parents=True)
    return not (path / "probe").exists()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_registered_layout_is_found(tmp_path, name):
    spec = SEGMENTATION[name]
    assert _case_sensitive(tmp_path / "probe_dir")
    for i, (images, labels, img_suffix, ann_suffix) in enumerate(LAYOUTS[name]):
        root = tmp_path / f"root{i}"
        _write_set(root, images, labels, img_suffix, ann_suffix)
        found = spec.locate(root)
        assert (found.images, found.labels) == (root / images, root / labels)
        pairs = segmentation_pairs(found.images, found.labels, spec.ann_suffix, spec.img_suffix)
        assert [(a.name, b.name) for a, b in pairs] == [(f"{s}{img_suffix}", f"{s}{ann_suffix}") for s in "ab"]
        assert load_label_map(pairs[0][1], spec.reduce_zero_label).shape == (40, 48)


def test_the_frameworks_spelling_wins_and_absent_sets_name_every_path(tmp_path):
    _write_set(tmp_path, "loveDA/img_dir/val", "loveDA/ann_dir/val", ".png", ".png")
    _write_set(tmp_path, "LoveDA/img_dir/val", "LoveDA/ann_dir/val", ".png", ".png")
    assert SEGMENTATION["LoveDA"].locate(tmp_path).folder == tmp_path / "loveDA"
    with pytest.raises(FileNotFoundError) as err:
        SEGMENTATION["UDD5"].locate(tmp_path)
    for path in ("UDD5/val/src", "UDD5/val/gt", "UDD/UDD/UDD5/val/src", "UDD5/img_dir/val", "UDD5/ann_dir/val"):
        assert str(tmp_path / path) in str(err.value)
    assert SEGMENTATION["UDD5"].find(tmp_path) is None


def test_images_of_other_suffixes_are_not_read(tmp_path):
    _write_set(tmp_path, "OpenEarthMap/img_dir/val", "OpenEarthMap/ann_dir/val", ".tif", ".tif")
    Image.new("RGB", (4, 4)).save(tmp_path / "OpenEarthMap/img_dir/val/preview.png")
    found = SEGMENTATION["OpenEarthMap"].locate(tmp_path)
    assert len(segmentation_pairs(found.images, found.labels, ".tif", ".tif")) == 2
    with pytest.raises(FileNotFoundError, match=r"\*\.JPG"):
        segmentation_pairs(found.images, found.labels, ".png", ".JPG")


def test_tif_and_src_gt_sets_evaluate_end_to_end(tmp_path, tiny):
    model, tokenizer, _ = tiny
    _write_set(tmp_path, "OpenEarthMap/img_dir/val", "OpenEarthMap/ann_dir/val", ".tif", ".tif")
    _write_set(tmp_path, "VDD/test/src", "VDD/test/gt", ".JPG", ".png")
    for folder in ("OpenEarthMap", "VDD"):
        (tmp_path / folder / "classes.txt").write_text("forest\nwater\nsand\n")
    result = evaluate_segmentation(model, tokenizer, tmp_path, ["OpenEarthMap", "VDD"], num_examples=0, **RUN)
    assert set(result["datasets"]) == {"OpenEarthMap", "VDD"} and not result["failed"]
    assert result["datasets"]["VDD"]["split"] == "test" and result["datasets"]["VDD"]["num_images"] == 2
    assert result["datasets"]["VDD"]["folder"] == str(tmp_path / "VDD")
    assert result["datasets"]["OpenEarthMap"]["window"] == 224 and result["datasets"]["OpenEarthMap"]["model_input"] == 32
    scaled = evaluate_segmentation(model, tokenizer, tmp_path, ["VDD"], window_geometry="model", num_examples=0, **RUN)
    assert (scaled["datasets"]["VDD"]["long_side"], scaled["datasets"]["VDD"]["window"]) == (64, 32)


def test_seg_dir_accepts_src_gt(tmp_path, tiny):
    model, tokenizer, _ = tiny
    _write_set(tmp_path / "Mine", "val/src", "val/gt", ".jpg", ".png")
    (tmp_path / "Mine" / "classes.txt").write_text("forest\nwater\nsand\n")
    result = evaluate_segmentation(model, tokenizer, None, seg_dir=tmp_path / "Mine", num_examples=0, **RUN)
    assert result["datasets"]["Mine"]["num_images"] == 2
    with pytest.raises(Exception, match="test/src"):
        evaluate_segmentation(model, tokenizer, None, seg_dir=tmp_path / "Mine", split="test", **RUN)

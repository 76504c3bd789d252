"""OVSS: sliding windows, the single-window forward, synonyms, class files and label conventions."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import farslip
from farslip.eval import SEGMENTATION, evaluate_segmentation
from farslip.eval.datasets import read_class_synonyms
from farslip.eval.encode import Runtime
from farslip.eval.segmentation import (Queries, build_queries, class_probabilities, predict_labels, prepare_image,
                                       segment_image, segment_labels, sliding_logits, window_boxes, window_starts)
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
    assert window_starts(100, 224, 112) == [0]  # smaller than a window: one (padded) window


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
    (logits,) = sliding_logits(model, [prepare_image(image, 64)], queries, run=Runtime(**RUN))
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

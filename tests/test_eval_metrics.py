"""The three metrics against hand-worked examples (no model involved)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from farslip.eval.datasets import label_indices, load_label_map
from farslip.eval.metrics import IoUAccumulator, deduplicate_pairs, retrieval_recall, topk_accuracy


def test_topk_accuracy_hand_worked():
    logits = torch.tensor([[0.9, 0.1, 0.0, 0.0],   # target 0: rank 1
                           [0.5, 0.2, 0.3, 0.1],   # target 2: rank 2
                           [0.4, 0.3, 0.2, 0.1]])  # target 3: rank 4
    targets = torch.tensor([0, 2, 3])
    acc = topk_accuracy(logits, targets, ks=(1, 2, 5))
    assert acc["top1"] == pytest.approx(100 / 3)
    assert acc["top2"] == pytest.approx(200 / 3)
    assert acc["top5"] == pytest.approx(100.0)  # k beyond the 4 classes: every sample counts


def test_labels_by_name_and_by_index(tmp_path):
    names = ["forest", "sea lake", "desert"]
    csv = tmp_path / "x.csv"
    assert label_indices(["desert", "forest", "sea lake"], names, csv) == [2, 0, 1]
    assert label_indices(["2", "0", "1.0"], names, csv) == [2, 0, 1]
    with pytest.raises(ValueError, match=r"x\.csv.*'swamp'"):
        label_indices(["forest", "swamp"], names, csv)
    with pytest.raises(ValueError, match=r"'3'"):
        label_indices(["0", "3"], names, csv)  # index out of range


# Rows (image, caption) with embeddings chosen by hand:
#   images A=[1,0], B=[0,1], C=[.8,.6];  captions c1=[.6,.8], c2=[0,1], c3=[1,0]
# positives after de-duplication: A{c1,c3} B{c1,c2} C{c2};  c1{A,B} c2{B,C} c3{A}
# image->text rankings: A: c3 c1 c2 (hit@1)  B: c2 c1 c3 (hit@1)  C: c1 c3 c2 (hit only @3)
# text->image rankings: c1: C B A (hit@2)  c2: B C A (hit@1)  c3: A C B (hit@1)
# Row-wise scoring (each row's own caption as the only positive, no de-duplication) would give
# image->text R@1 = 2/6 (only rows (B,c2) and (A,c3) hit); with positive sets it is 2/3.
ROWS = [("A", "c1"), ("B", "c1"), ("B", "c2"), ("A", "c3"), ("C", "c2"), ("A", "c1")]
IMAGES = {"A": [1.0, 0.0], "B": [0.0, 1.0], "C": [0.8, 0.6]}
CAPTIONS = {"c1": [0.6, 0.8], "c2": [0.0, 1.0], "c3": [1.0, 0.0]}


def test_deduplicate_pairs():
    images, captions, pairs = deduplicate_pairs([r[0] for r in ROWS], [r[1] for r in ROWS])
    assert images == ["A", "B", "C"] and captions == ["c1", "c2", "c3"]
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 1)]


@pytest.mark.parametrize("chunk", [1, 2, 1024])
def test_retrieval_recall_with_positive_sets(chunk):
    images, captions, pairs = deduplicate_pairs([r[0] for r in ROWS], [r[1] for r in ROWS])
    img = torch.tensor([IMAGES[i] for i in images])
    txt = torch.tensor([CAPTIONS[c] for c in captions])
    r = retrieval_recall(img, txt, pairs, chunk=chunk)
    assert r["image_to_text_R@1"] == pytest.approx(200 / 3)
    assert r["image_to_text_R@5"] == pytest.approx(100.0)
    assert r["image_to_text_R@10"] == pytest.approx(100.0)
    assert r["text_to_image_R@1"] == pytest.approx(200 / 3)
    assert r["text_to_image_R@5"] == pytest.approx(100.0)
    assert r["image_to_text_mean"] == pytest.approx((200 / 3 + 200) / 3)
    assert r["mean_recall"] == pytest.approx((2 * 200 / 3 + 400) / 6)


def test_iou_hand_worked_with_ignore_and_absent_class():
    gt = np.array([[0, 0, 1, 255],
                   [2, 2, 1, 1]])
    pred = np.array([[0, 1, 1, 3],
                     [2, 0, 1, 3]])
    acc = IoUAccumulator(num_classes=5)
    acc.update(pred, gt)
    # class 0: I=1 U=3; class 1: I=2 U=4; class 2: I=1 U=2; class 3 absent from truth but
    # predicted once (the pixel under 255 does not count): I=0 U=1; class 4: U=0 -> left out.
    ious = acc.per_class_iou()
    assert ious[:4] == pytest.approx([100 / 3, 50.0, 50.0, 0.0])
    assert math.isnan(ious[4])
    assert acc.miou() == pytest.approx((100 / 3 + 50 + 50 + 0) / 4)
    assert acc.pixel_accuracy() == pytest.approx(100 * 4 / 7)


def test_iou_accumulates_over_the_dataset():
    acc = IoUAccumulator(num_classes=2)
    acc.update(np.array([[0, 1]]), np.array([[0, 1]]))  # per image: class 0 IoU 1
    acc.update(np.array([[1, 1, 1]]), np.array([[0, 0, 0]]))  # per image: class 0 IoU 0
    # dataset-wide: class 0 I=1, U=1+3=4 -> 25 (a mean of per-image IoUs would say 50)
    assert acc.per_class_iou()[0] == pytest.approx(25.0)
    # class 1: I=1, U=1+3=4 -> 25
    assert acc.miou() == pytest.approx(25.0)


def test_out_of_range_labels_are_counted_not_scored():
    acc = IoUAccumulator(num_classes=2)
    acc.update(np.array([[0, 0, 1]]), np.array([[0, 7, 1]]))
    assert acc.out_of_range == 1
    assert acc.miou() == pytest.approx(100.0)


def test_reduce_zero_label(tmp_path):
    raw = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "a.png")
    reduced = load_label_map(tmp_path / "a.png", reduce_zero_label=True)
    np.testing.assert_array_equal(reduced, [[255, 0, 1], [2, 255, 0]])
    np.testing.assert_array_equal(load_label_map(tmp_path / "a.png", reduce_zero_label=False), raw)
    # scored pixels: (0,1) 0->0, (0,2) 1->1, (1,0) 2->2, (1,2) 0->1; (0,0) and (1,1) are ignored,
    # so their predictions count nowhere
    acc = IoUAccumulator(num_classes=3)
    acc.update(np.array([[2, 0, 1], [2, 0, 1]]), reduced)
    # class 0: I=1, truth 2, pred 1 -> U=2; class 1: I=1, truth 1, pred 2 -> U=2; class 2: I=1, U=1
    assert acc.per_class_iou() == pytest.approx([50.0, 50.0, 100.0])


def test_rgb_label_map_is_rejected_by_name(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="colour.png"):
        load_label_map(tmp_path / "colour.png", reduce_zero_label=False)

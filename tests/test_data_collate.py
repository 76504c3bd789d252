"""Collate: valid views image-major, masks and padded boxes, texts, labels and skip counts."""
from __future__ import annotations

import torch

from farslip.data.train_data import Collate

from ._data_utils import TEXT_LEN, char_tokenizer, decode_text

S = 8


def view(value: float) -> torch.Tensor:
    return torch.full((3, S, S), float(value))


def sample(b: int, n_crop: int, objects: list[tuple[str, int]], skipped: int = 0) -> dict:
    return {
        "image": view(b), "caption": f"caption {b}", "skipped": skipped,
        "crop": [view(10 * b + k) for k in range(n_crop)],
        "crop_box": torch.tensor([[0.1 * b, 0.0, 0.1 * b + 0.01 * (k + 1), 1.0] for k in range(n_crop)]).reshape(-1, 4),
        "obj": [view(100 + 10 * b + k) for k in range(len(objects))],
        "obj_box": torch.tensor([[0.0, 0.1 * k, 1.0, 0.5] for k in range(len(objects))]).reshape(-1, 4),
        "obj_text": [t for t, _ in objects], "obj_label": [y for _, y in objects],
    }


def test_collate_masks_ordering_and_counts():
    samples = [
        sample(0, 2, [("a satellite image of tree", 3)], skipped=1),
        sample(1, 0, []),
        sample(2, 3, [("a pond", -1), ("a satellite image of road", 5), ("a pond", -1)], skipped=2),
    ]
    batch = Collate(char_tokenizer, max_boxes=4)(samples)
    assert batch["image"].shape == (3, 3, S, S) and batch["text"].shape == (3, TEXT_LEN)
    assert [decode_text(t) for t in batch["text"]] == ["caption 0", "caption 1", "caption 2"]
    # crops: only the valid ones, image-major
    assert [v[0, 0, 0].item() for v in batch["crop"]] == [0, 1, 20, 21, 22]
    assert batch["crop_valid"].tolist() == [[True, True, False, False], [False] * 4, [True, True, True, False]]
    assert batch["crop"].shape[0] == batch["crop_valid"].sum()
    for b, s in enumerate(samples):
        n = len(s["crop"])
        assert torch.equal(batch["crop_box"][b, :n], s["crop_box"])
        assert (batch["crop_box"][b, n:] == 0).all()
    # objects and their texts/labels in the same order
    assert [v[0, 0, 0].item() for v in batch["obj"]] == [100, 120, 121, 122]
    assert batch["obj_valid"].sum(1).tolist() == [1, 0, 3]
    assert [decode_text(t) for t in batch["obj_text"]] == [
        "a satellite image of tree", "a pond", "a satellite image of road", "a pond"]
    assert batch["obj_label"].tolist() == [3, -1, 5, -1] and batch["obj_label"].dtype == torch.long
    assert batch["skipped"].item() == 3 and batch["skipped"].shape == ()


def test_collate_with_no_valid_views_gives_empty_tensors():
    batch = Collate(char_tokenizer, max_boxes=4)([sample(0, 0, []), sample(1, 0, [])])
    assert batch["crop"].shape == (0, 3, S, S) and not batch["crop_valid"].any()
    assert batch["obj"].shape == (0, 3, S, S) and batch["obj_text"].shape == (0, TEXT_LEN)
    assert batch["obj_label"].shape == (0,)


def test_collate_without_local_views_has_only_global_keys():
    plain = [{"image": view(b), "caption": f"c{b}", "skipped": 0} for b in range(2)]
    assert set(Collate(char_tokenizer, max_boxes=4)(plain)) == {"image", "text", "skipped"}

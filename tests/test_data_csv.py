"""CSV pairs: validation batches (eval transform, CSV order), missing files and columns, CSV training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from farslip.data.csv_data import read_pairs
from farslip.data.train_data import get_train_data, get_val_data
from farslip.data.transforms import eval_transform

from ._data_utils import char_tokenizer, decode_text, make_args, with_views, write_images


def write_csv(path, rows, sep=","):
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"filepath{sep}title\n")
        for p, t in rows:
            f.write(f"{p}{sep}{t}\n")


@pytest.fixture
def val_set(tmp_path):
    names = [f"img{i}.png" for i in range(5)]
    write_images(str(tmp_path / "imgs"), names, size=(60, 40))
    write_csv(tmp_path / "val.csv", [(n, f"title {i}") for i, n in enumerate(names)])
    return tmp_path, names


def test_val_batches_follow_the_csv_with_the_eval_transform(val_set):
    root, names = val_set
    args = make_args(val_data=str(root / "val.csv"), root_val_img_dir=str(root / "imgs"), batch_size=2)
    val = get_val_data(args, 32, char_tokenizer)
    batches = list(val.dataloader)
    assert val.num_samples == 5 and val.num_batches == 3 == len(batches)
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    assert [decode_text(t) for b in batches for t in b["text"]] == [f"title {i}" for i in range(5)]
    images = torch.cat([b["image"] for b in batches])
    expected = torch.stack([eval_transform(32)(Image.open(root / "imgs" / n)) for n in names])
    assert torch.equal(images, expected)


def test_val_accepts_a_preprocess_and_none_without_val_data(val_set):
    root, _ = val_set
    assert get_val_data(make_args(val_data=None), 32, char_tokenizer) is None
    args = make_args(val_data=str(root / "val.csv"), root_val_img_dir=str(root / "imgs"), batch_size=5)
    raw = get_val_data(args, lambda im: torch.from_numpy(np.asarray(im).copy()), char_tokenizer)
    batch = next(iter(raw.dataloader))
    assert batch["image"].shape == (5, 40, 60, 3)


def test_val_missing_image_is_named(val_set):
    root, _ = val_set
    write_csv(root / "bad.csv", [("img0.png", "a"), ("nope.png", "b")])
    args = make_args(val_data=str(root / "bad.csv"), root_val_img_dir=str(root / "imgs"))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        get_val_data(args, 32, char_tokenizer)


def test_read_pairs_columns_separator_and_empty_rows(tmp_path):
    write_csv(tmp_path / "tab.csv", [("a.png", "x, with a comma"), ("", "no path"), ("b.png", "")], sep="\t")
    assert [(i.path, i.caption) for i in read_pairs(str(tmp_path / "tab.csv"))] == [("a.png", "x, with a comma")]
    (tmp_path / "cols.csv").write_text("path,caption\na.png,x\n")
    with pytest.raises(ValueError, match="filepath"):
        read_pairs(str(tmp_path / "cols.csv"))


def test_csv_training_type_with_crops(val_set):
    root, _ = val_set
    args = make_args(train_data=str(root / "val.csv"), train_dataset_type="csv", method="vanilla",
                     root_train_img_dir=str(root / "imgs"), batch_size=2)
    info = get_train_data(with_views(args, crops=True, objects=False), char_tokenizer, 32)
    assert info.num_batches == 2
    batches = list(info.dataloader)
    assert all(b["image"].shape == (2, 3, 32, 32) and b["crop"].shape == (8, 3, 32, 32) for b in batches)
    seen = [decode_text(t) for b in batches for t in b["text"]]
    assert len(set(seen)) == 4 and set(seen) <= {f"title {i}" for i in range(5)}

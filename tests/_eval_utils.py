"""Tiny hand-made benchmark folders for the evaluation tests (a few 40-px images each)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"forest": (20, 120, 30), "desert": (220, 190, 120), "sea lake": (20, 60, 200)}


def _image(path: Path, colour, size=(40, 40), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_benchmarks(root: Path) -> Path:
    """``aid`` (string labels + an empty-label row), ``eurosat`` (integer labels), ``RSICD``.

    Same layout as SkyScript's benchmark folder: CSV paths relative to ``root``.
    """
    names = list(COLOURS)
    for dataset, as_int in (("aid", False), ("eurosat", True)):
        rows = []
        for i in range(6):
            cls = i % 3
            rel = f"{dataset}/images/{i}.png"
            _image(root / rel, COLOURS[names[cls]], seed=i)
            rows.append([rel, cls if as_int else names[cls]])
        rows.append([f"{dataset}/images/0.png", ""])  # no label: dropped
        (root / dataset).mkdir(parents=True, exist_ok=True)
        (root / dataset / "classnames.txt").write_text("\n".join(names) + "\n")
        _csv(root / f"{dataset}/{dataset}_img_txt_pairs_test.csv", ["filepath", "label"], rows)
    rows = []
    for i in range(4):
        rel = f"RSICD/images/{i}.png"
        _image(root / rel, COLOURS[names[i % 3]], seed=10 + i)
        rows += [[rel, f"a view of {names[i % 3]} number {i}"], [rel, f"{names[i % 3]} seen from above"]]
    _csv(root / "RSICD/RSICD_img_txt_pairs_test.csv", ["filepath", "title"], rows)
    return root


def write_segmentation(root: Path, name: str = "LoveDA", split: str = "val", sizes=((40, 56), (48, 48))) -> Path:
    """``root/name/img_dir/split`` + ``ann_dir/split``: label maps 0..3 with a 255 block, + classes.txt."""
    folder = root / name
    for i, (h, w) in enumerate(sizes):
        rng = np.random.default_rng(i)
        labels = np.zeros((h, w), dtype=np.uint8)
        labels[: h // 2, : w // 2] = 1
        labels[h // 2:, w // 2:] = 2
        labels[h // 2:, : w // 2] = 3
        labels[:4, :4] = 255
        pixels = (np.array([(200, 200, 200), (20, 120, 30), (20, 60, 200), (220, 190, 120)], dtype=np.int64)
                  [np.where(labels == 255, 0, labels)] + rng.integers(-20, 20, (h, w, 3)))
        (folder / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (folder / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "img_dir" / split / f"tile{i}.png")
        Image.fromarray(labels).save(folder / "ann_dir" / split / f"tile{i}.png")
    (folder / "classes.txt").write_text("forest,woodland\nwater\ndesert,sand\n")
    return root

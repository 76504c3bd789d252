"""Tiny on-disk fixtures for the data tests: RS5M shards, MGRS json, CSV pairs, a readable tokenizer."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile

import numpy as np
import torch
from PIL import Image

from farslip.config import DataConfig

TEXT_LEN = 96


def char_tokenizer(texts: list[str]) -> torch.Tensor:
    """Encodes each text as its character codes (padded/truncated to TEXT_LEN): exactly invertible."""
    return torch.tensor([[ord(c) for c in t[:TEXT_LEN].ljust(TEXT_LEN)] for t in texts], dtype=torch.long).reshape(
        len(texts), TEXT_LEN
    )


def decode_text(row: torch.Tensor) -> str:
    return "".join(map(chr, row.tolist())).rstrip()


def image_array(seed: int, width: int, height: int) -> np.ndarray:
    """A random RGB image (uint8 [H, W, 3]) that differs per seed."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str, keys: list[str], size=(48, 40), corrupt=(), truncated=(), no_caption=()) -> None:
    """A webdataset shard of RS5M-style samples; caption = 'caption <key>'; some broken on purpose."""
    with tarfile.open(path, "w") as tar:
        for i, key in enumerate(keys):
            image = encode(image_array(i, *size), "JPEG")
            if key in corrupt:
                image = b"\xff\xd8 not a jpeg"
            elif key in truncated:
                image = image[: len(image) // 2]  # a valid header, then the data stops
            _add(tar, f"{key}.img_content", image)
            if key not in no_caption:
                _add(tar, f"{key}.caption", f"caption {key}".encode())
            _add(tar, f"{key}.img_name", f"{key}.jpg".encode())


def write_shards(folder: str, shards: int, per_shard: int, **kwargs) -> list[list[str]]:
    """``shards`` shards named shard-0000.tar...; returns the keys of each."""
    os.makedirs(folder, exist_ok=True)
    all_keys = []
    for s in range(shards):
        keys = [f"s{s}k{k:03d}" for k in range(per_shard)]
        write_shard(os.path.join(folder, f"shard-{s:04d}.tar"), keys, **kwargs)
        all_keys.append(keys)
    return all_keys


def write_images(folder: str, names: list[str], size=(64, 48)) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(image_array(i, *size)).save(os.path.join(folder, name))


def write_json(path: str, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(items, f)


def make_args(**overrides) -> DataConfig:
    """A data config with the published defaults, small batches, no workers and no local views
    (``crops``/``objects`` as asked); the stage-2 jitter on for MGRS json unless ``color_jitter``
    says otherwise. ``method`` is accepted and ignored (the trainer derives views from it)."""
    values = dict(
        train_data=None, train_dataset_type="webdataset", train_dataset_name="test", train_num_samples=None,
        root_train_img_dir=None, dataset_resampled=False, val_data=None, root_val_img_dir=None, workers=0,
        batch_size=2, view_resize="torch", use_imagecrop_aug=False, local_method="randomcrops", max_boxes=4, min_size=64, max_size=1024,
        crops=False, objects=False, object_pixels="all",
    )
    overrides.pop("method", None)
    values.update(overrides)
    values.setdefault("color_jitter", values["train_dataset_type"] == "json")
    return DataConfig(**values)


def with_views(data: DataConfig, **views) -> DataConfig:
    """``data`` with other views (``crops``, ``objects``, ``object_pixels``) or settings."""
    return dataclasses.replace(data, **views)

"""Helpers for the trainer tests: flags, a tiny model, hand-built batches, tiny datasets on disk,
and slow reference losses written with explicit loops."""
from __future__ import annotations

import io
import json
import math
import random
import tarfile
from pathlib import Path

import torch
from PIL import Image

import farslip
from farslip.train.args import parse_args

MODEL = "ViT-Tiny-8"
CATEGORIES = ["harbor", "runway", "storage tank", "bridge"]


def make_args(*extra: str, data: str = "x.json", root: str = ".", **kw):
    """Validated trainer flags for the tiny model (json data unless ``data`` says otherwise)."""
    argv = ["--train-data", data, "--model", MODEL, "--pretrained", "none", "--precision", "fp32",
            "--device", "cpu", "--batch-size", "3", "--workers", "0"]
    if data.endswith(".json"):
        argv += ["--root-train-img-dir", root]
    if data.endswith(".tar"):
        argv += ["--train-num-samples", "6"]
    return parse_args(argv + list(extra))


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return farslip.create_model(MODEL, pretrained=None)


def make_batch(model, *, b: int = 3, n: int = 3, crops: bool = True, objects: bool = True,
               labels=(0, -1, 2, 0, 1), seed: int = 1) -> dict:
    """A batch dict of the data pipeline's shape with random pixels and boxes."""
    g = torch.Generator().manual_seed(seed)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    tok = farslip.get_tokenizer(model)
    batch = {"image": torch.randn(b, 3, size, size, generator=g),
             "text": tok([f"caption {i} of a scene" for i in range(b)]),
             "skipped": torch.tensor(0)}

    def views(prefix: str, counts: list[int]):
        valid = torch.zeros(b, n, dtype=torch.bool)
        boxes = torch.zeros(b, n, 4)
        for i, c in enumerate(counts):
            valid[i, :c] = True
            lo = torch.rand(c, 2, generator=g) * 0.5
            boxes[i, :c] = torch.cat([lo, lo + 0.2 + torch.rand(c, 2, generator=g) * 0.3], 1)
        batch[prefix] = torch.randn(int(valid.sum()), 3, size, size, generator=g)
        batch[f"{prefix}_box"], batch[f"{prefix}_valid"] = boxes, valid

    if crops:
        views("crop", [n, 1, 2][:b] + [n] * max(0, b - 3))
    if objects:
        counts = [2, 0, 3][:b] + [1] * max(0, b - 3)
        views("obj", counts)
        m = sum(counts)
        ys = [labels[i % len(labels)] for i in range(m)]
        texts = [f"a satellite image of {CATEGORIES[y]}" if y >= 0 else f"free text {i}"
                 for i, y in enumerate(ys)]
        batch["obj_text"] = tok(texts)
        batch["obj_label"] = torch.tensor(ys, dtype=torch.long)
    return batch


# ----------------------------------------------------------------- slow references
def _log_softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def _dot(a, b) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def ref_clip(img, txt, s: float) -> float:
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        row_i = _log_softmax_row([s * _dot(img[i], txt[j]) for j in range(n)])
        row_t = _log_softmax_row([s * _dot(txt[i], img[j]) for j in range(n)])
        total += -row_i[i] - row_t[i]
    return total / (2 * n)


def ref_mpcl(v, t, y: list[int], s: float) -> float:
    rows = [i for i in range(len(y)) if y[i] != -1]
    if not rows:
        return 0.0
    total = 0.0
    for i in rows:
        pos = [j for j in rows if y[j] == y[i]]
        lv = _log_softmax_row([s * _dot(v[i], t[j]) for j in rows])
        lt = _log_softmax_row([s * _dot(t[i], v[j]) for j in rows])
        for j in pos:
            k = rows.index(j)
            total += -(lv[k] + lt[k]) / (2 * len(pos))
    return total / len(rows)


def ref_distill(r, t) -> float:
    return 1.0 - sum(_dot(r[i], t[i]) for i in range(r.shape[0])) / r.shape[0]


# ----------------------------------------------------------------- tiny datasets on disk
def _jpeg(seed: int, size=(48, 40)) -> bytes:
    rnd = random.Random(seed)
    img = Image.new("RGB", size, tuple(rnd.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rnd.randrange(size[0] - 8), rnd.randrange(size[1] - 8)
        img.paste(tuple(rnd.randrange(256) for _ in range(3)), (x, y, x + 8, y + 8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def write_rs5m(folder: Path, shards: int = 2, per_shard: int = 6, corrupt: bool = False) -> str:
    """RS5M-style webdataset shards; with ``corrupt`` one bad JPEG and one missing caption."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(folder / f"rs-train-{s:04d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"s{s}_{i:03d}"
                members = {"img_content": _jpeg(100 * s + i),
                           "caption": f"scene {s} {i} with a harbor".encode(),
                           "img_name": f"{key}.jpg".encode()}
                if corrupt and s == 0 and i == 1:
                    members["img_content"] = b"\xff\xd8 not really a jpeg"
                if corrupt and s == 0 and i == 2:
                    del members["caption"]
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / ("rs-train-{0000..%04d}.tar" % (shards - 1)))


def write_mgrs(folder: Path, items: int = 8, broken: bool = False) -> tuple[str, str]:
    """An MGRS-style text_info.json and global_imgs/; with ``broken`` a missing image and an
    object-less item. Returns (json path, image folder)."""
    imgs = folder / "global_imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(0)
    records = []
    for i in range(items):
        name = f"img_{i:03d}.jpg"
        (imgs / name).write_bytes(_jpeg(i, size=(160, 160)))
        segs = []
        for j in range(3):  # 70 x 70 boxes: above the default --min-size 64
            x, y = rnd.randrange(0, 80), rnd.randrange(0, 80)
            box = {"x1": x, "y1": y, "x2": x + 70, "y2": y + 70, "w": 160, "h": 160}
            if j == 2:
                segs.append({"bbox": box, "cap": f"a small thing {i}"})
            else:
                c = rnd.randrange(len(CATEGORIES))
                segs.append({"bbox": box, "category": CATEGORIES[c], "category_id": c})
        records.append({"global_filepath": name, "global_caption": f"an image number {i}",
                        "segment": segs})
    if broken:
        records[1]["global_filepath"] = "does_not_exist.jpg"
        records[2]["segment"] = []
    path = folder / "text_info.json"
    path.write_text(json.dumps(records))
    return str(path), str(imgs)


def write_val_csv(folder: Path, rows: int = 6) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filepath,title"]
    for i in range(rows):
        (folder / f"v{i}.jpg").write_bytes(_jpeg(500 + i))
        lines.append(f"v{i}.jpg,validation scene {i}")
    path = folder / "val.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)

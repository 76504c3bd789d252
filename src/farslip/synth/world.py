"""The synthetic remote-sensing world, written in every real data format (``farslip synth``).

No remote-sensing data set can be downloaded where this project is tested, yet every loader,
trainer and evaluator must run for real. This module renders deterministic aerial-looking
scenes (the rest of ``farslip.synth``) and writes them in the exact on-disk formats of the real
data: RS5M webdataset shards, the MGRS-200k JSON + image folder, the SkyScript benchmark tree
(classification and retrieval CSVs) and the converted OVSS ``img_dir``/``ann_dir`` tree, plus a
README saying which command reads what. The benchmark sets, their paths and columns are those of
the evaluation registry (``farslip.eval.registry``). Python API::

    from farslip.synth import write_world
    paths = write_world("out/world", seed=0, scale="small")

Same seed -> byte-identical files: each scene is rendered from a generator seeded by
(seed, stream, index) alone, so ``--workers`` only changes the speed.
"""
from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..cli import CommandParser
from ..errors import add_debug_arg, report, user_errors
from ..data.csv_data import CAPTION_COLUMN, IMAGE_COLUMN, LABEL_COLUMN
from ..eval.registry import CLASSIFICATION, IGNORE_INDEX, RETRIEVAL
from . import captions as cap
from .layouts import INTEGER_LABELS, OVSS_SETS, SKYSCRIPT_VAL_CSV, OvssSet
from .scene import SceneObject, render_scene, stream_rng
from .vocab import OBJECT_CATEGORIES, SCENE_CLASSES
from .writers import encode_image, encode_jpeg, tar_bytes, write_bytes, write_csv, write_json, write_text

log = logging.getLogger(__name__)

__all__ = ["OBJECT_CATEGORIES", "SCALES", "SCENE_CLASSES", "Scale", "main", "mgrs_image_path", "render_scene",
           "write_world"]

RS5M_PREFIXES = ("pub11", "rs3")
# Sub-folders of the output directory that ``write_world`` owns (and replaces with overwrite=True).
OWNED = ("rs5m", "rs5m_faulty", "mgrs", "mgrs_faulty", "benchmarks", "ovss", "README.md")
README_TITLE = "# Synthetic remote-sensing world"  # first line of DIR/README.md: marks a world


@dataclass(frozen=True)
class Scale:
    """How many samples each data set gets."""

    rs5m_shards: int  # shards per prefix (pub11 and rs3 each)
    rs5m_per_shard: int
    rs5m_val: int
    mgrs: int
    classification: int  # images per classification set
    retrieval: int  # images per retrieval set (each with several captions)
    skyscript_val: int
    ovss: int  # images per OVSS set


SCALES: dict[str, Scale] = {
    "tiny": Scale(rs5m_shards=1, rs5m_per_shard=6, rs5m_val=4, mgrs=6, classification=4, retrieval=4,
                  skyscript_val=4, ovss=2),
    "small": Scale(rs5m_shards=2, rs5m_per_shard=16, rs5m_val=16, mgrs=32, classification=24,
                   retrieval=24, skyscript_val=24, ovss=6),
    "medium": Scale(rs5m_shards=4, rs5m_per_shard=375, rs5m_val=200, mgrs=1000, classification=200,
                    retrieval=200, skyscript_val=200, ovss=24),
}


@dataclass(frozen=True)
class Task:
    """One scene to render: its stream and index, size profile, optional fixed class, and the
    OVSS set whose label map to produce (then the image is PNG, else JPEG)."""

    stream: str
    index: int
    profile: str
    scene_class: str | None = None
    ovss: str | None = None


@dataclass
class Product:
    """A rendered, encoded scene with the truth the writers need."""

    scene_class: str
    width: int
    height: int
    objects: list[SceneObject]
    captions: dict[str, str]
    image: bytes
    label: bytes | None


def _ovss_labels(seed: int, task: Task, spec: OvssSet, image: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """The set's label map; marks a few pixels 255 and, for reduce-zero-label sets, a no-data
    strip 0 (painted black in ``image``, as real no-data is)."""
    label = spec.lut()[semantic]
    rng = stream_rng(seed, task.stream + "/ignore", task.index)
    h, w = label.shape
    side = int(rng.integers(6, 13))
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    label[y:y + side, x:x + side] = IGNORE_INDEX
    if spec.reduce_zero_label and task.index % 2 == 0:
        strip = max(4, w // 10)
        label[:, w - strip:] = 0
        image[:, w - strip:] = 0
    return label


def produce(seed: int, task: Task) -> Product:
    """Render and encode one scene (runs in worker processes; a pure function of its inputs)."""
    scene = render_scene(seed, task.stream, task.index, scene_class=task.scene_class, profile=task.profile)
    texts = {"brief": cap.brief_caption(scene), "detailed": cap.detailed_caption(scene),
             "long": cap.long_caption(scene)}
    texts.update({f"short{v}": cap.short_caption(scene, v) for v in range(3)})
    label = None
    if task.ovss is not None:
        spec = next(s for s in OVSS_SETS if s.name == task.ovss)
        image = scene.image.copy()
        label = encode_image(_ovss_labels(seed, task, spec, image, scene.semantic), spec.ann_suffix)
        data = encode_image(image, spec.img_suffix)
    else:
        data = encode_jpeg(scene.image)
    return Product(scene.scene_class, scene.width, scene.height, scene.objects, texts, data, label)


class _Renderer:
    """Renders task lists in order, in this process or a worker pool, with one progress bar."""

    def __init__(self, seed: int, workers: int, total: int, progress: bool) -> None:
        self.seed = seed
        # fork starts workers without re-importing torch; elsewhere the platform default works too.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        self.pool = multiprocessing.get_context(method).Pool(workers) if workers > 1 else None
        self.bar = tqdm(total=total, desc="synth", unit="scene", disable=not progress)

    def __call__(self, tasks: list[Task]) -> Iterator[Product]:
        fn = functools.partial(produce, self.seed)
        results = self.pool.imap(fn, tasks, chunksize=4) if self.pool else map(fn, tasks)
        for product in results:
            self.bar.update(1)
            yield product

    def close(self) -> None:
        self.bar.close()
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# ---------------------------------------------------------------- RS5M (webdataset shards)

def _rs5m_sample(prefix: str, index: int, product: Product, caption: bool = True) -> list[tuple[str, bytes]]:
    """Tar members of one RS5M sample; the key has no dot (webdataset splits names at the first
    one) and the caption is one of the three short phrasings, chosen by the index."""
    key = f"{prefix}_{index:06d}"
    members = [(f"{key}.img_content", product.image), (f"{key}.img_name", f"{key}.jpg".encode())]
    if caption:
        members.append((f"{key}.caption", product.captions[f"short{index % 3}"].encode("utf-8")))
    return members


def _write_rs5m(root: Path, scale: Scale, render: _Renderer) -> dict[str, object]:
    folder = root / "rs5m"
    for prefix in RS5M_PREFIXES:
        for shard in range(scale.rs5m_shards):
            first = shard * scale.rs5m_per_shard
            tasks = [Task(f"rs5m-{prefix}", i, "train") for i in range(first, first + scale.rs5m_per_shard)]
            members = []
            for task, product in zip(tasks, render(tasks)):
                members += _rs5m_sample(prefix, task.index, product)
            write_bytes(folder / f"{prefix}-train-{shard:04d}.tar", tar_bytes(members))
    tasks = [Task("rs5m-val", i, "train") for i in range(scale.rs5m_val)]
    members = []
    for task, product in zip(tasks, render(tasks)):
        members += _rs5m_sample("val", task.index, product)
    write_bytes(folder / "val-0000.tar", tar_bytes(members))

    # A deliberately broken shard: sample 1 has a corrupt JPEG, sample 2 has no caption member.
    tasks = [Task("rs5m-faulty", i, "train") for i in range(4)]
    members = []
    for task, product in zip(tasks, render(tasks)):
        if task.index == 1:
            product.image = product.image[:64] + b"this is not the rest of a JPEG file" * 8
        members += _rs5m_sample("faulty", task.index, product, caption=task.index != 2)
    write_bytes(root / "rs5m_faulty" / "faulty-0000.tar", tar_bytes(members))
    last = scale.rs5m_shards - 1
    return {
        "rs5m_train": str(folder / f"{{{','.join(RS5M_PREFIXES)}}}-train-{{0000..{last:04d}}}.tar"),
        "rs5m_val": str(folder / "val-0000.tar"),
        "rs5m_faulty": str(root / "rs5m_faulty" / "faulty-0000.tar"),
    }


# ---------------------------------------------------------------- MGRS (JSON + image folder)

def _mgrs_item(path: str, product: Product, index: int) -> dict:
    segments = []
    for k, o in enumerate(product.objects):
        x1, y1, x2, y2 = o.box
        seg: dict[str, object] = {"bbox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2,
                                           "W": product.width, "H": product.height}}
        if (7 * index + k) % 9 == 4:  # a few objects are described in free text instead
            seg["cap"] = cap.region_caption(o, product.width, product.height)
        else:
            seg["category"] = o.category
            seg["category_id"] = o.category_id
        segments.append(seg)
    return {"global_filepath": path, "global_caption": product.captions["long"],
            "detailed_caption": product.captions["detailed"], "brief_caption": product.captions["brief"],
            "segment": segments}


def mgrs_image_path(index: int) -> str:
    """``global_filepath`` of MGRS scene ``index`` (relative to ``global_imgs/``)."""
    return f"{index // 100:03d}/mgrs_{index:06d}.jpg"


def _write_mgrs(root: Path, scale: Scale, render: _Renderer) -> dict[str, object]:
    folder = root / "mgrs"
    tasks = [Task("mgrs", i, "mgrs") for i in range(scale.mgrs)]
    items = []
    for task, product in zip(tasks, render(tasks)):
        path = mgrs_image_path(task.index)
        write_bytes(folder / "global_imgs" / path, product.image)
        items.append(_mgrs_item(path, product, task.index))
    write_json(folder / "text_info.json", items)

    # Robustness variant: item 1 has no objects, item 2's image file does not exist.
    faulty = root / "mgrs_faulty"
    tasks = [Task("mgrs-faulty", i, "mgrs", scene_class="residential area") for i in range(4)]
    items = []
    for task, product in zip(tasks, render(tasks)):
        path = f"faulty_{task.index:06d}.jpg"
        item = _mgrs_item(path, product, task.index)
        if task.index == 1:
            item["segment"] = []
        if task.index != 2:
            write_bytes(faulty / "global_imgs" / path, product.image)
        items.append(item)
    write_json(faulty / "text_info.json", items)
    return {"mgrs_json": str(folder / "text_info.json"), "mgrs_images": str(folder / "global_imgs"),
            "mgrs_faulty_json": str(faulty / "text_info.json"), "mgrs_faulty_images": str(faulty / "global_imgs")}


# ---------------------------------------------------------------- benchmarks (SkyScript tree)

def _balanced(stream: str, n: int) -> list[Task]:
    return [Task(stream, i, "bench", scene_class=SCENE_CLASSES[i % len(SCENE_CLASSES)]) for i in range(n)]


def _write_classification(bench: Path, scale: Scale, render: _Renderer) -> None:
    """Every registered classification set, at its registered CSV and class-list paths."""
    for spec in CLASSIFICATION.values():
        folder = Path(spec.csv).parts[0]
        rows: list[tuple[str, object]] = []
        tasks = _balanced(f"cls-{spec.name}", scale.classification)
        for task, product in zip(tasks, render(tasks)):
            rel = f"{folder}/images/{product.scene_class.replace(' ', '_')}/{folder}_{task.index:05d}.jpg"
            write_bytes(bench / rel, product.image)
            label = SCENE_CLASSES.index(product.scene_class) if spec.name in INTEGER_LABELS else product.scene_class
            rows.append((rel, label))
        rows.insert(len(rows) // 2, (rows[0][0], ""))  # an unlabeled row: readers must drop it
        write_csv(bench / spec.csv, (IMAGE_COLUMN, LABEL_COLUMN), rows)
        write_text(bench / spec.classnames, "\n".join(SCENE_CLASSES) + "\n")


def _retrieval_titles(product: Product, index: int) -> list[str]:
    """2 to 4 captions per image; the brief one is shared by every image of the same content,
    and every fifth image repeats a caption, as RSICD does."""
    c = product.captions
    titles = [c["short0"], c["brief"], c["short1"], c["short2"]][:2 + index % 3]
    return titles + [c["short0"]] * (index % 5 == 0)


def _write_retrieval(bench: Path, scale: Scale, render: _Renderer) -> None:
    """Every registered retrieval set at its registered CSV path, captions in its caption column.

    A set that reads the ``title`` column gets RSICD's shape (several captions per image); one that
    reads another column (SkyScript's ``title_multi_objects``) gets SkyScript's: one row per image
    with a ``title`` and that column.
    """
    for spec in RETRIEVAL.values():
        rows = []
        tasks = [Task(f"ret-{spec.name}", i, "bench") for i in range(scale.retrieval)]
        for task, product in zip(tasks, render(tasks)):
            if spec.caption_key == CAPTION_COLUMN:
                rel = f"{spec.name}/images/{spec.name.lower()}_{task.index:05d}.jpg"
                rows += [(rel, t) for t in _retrieval_titles(product, task.index)]
            else:
                rel = f"{spec.name}/images/{spec.name.lower()}_test_{task.index:05d}.jpg"
                multi = "a satellite image of " + product.captions["brief"].rstrip(".")
                rows.append((rel, product.captions["short0"], multi))
            write_bytes(bench / rel, product.image)
        columns = (IMAGE_COLUMN, CAPTION_COLUMN) if spec.caption_key == CAPTION_COLUMN \
            else (IMAGE_COLUMN, CAPTION_COLUMN, spec.caption_key)
        write_csv(bench / spec.csv, columns, rows)

    rows = []
    tasks = [Task("skyscript-val", i, "bench") for i in range(scale.skyscript_val)]
    for task, product in zip(tasks, render(tasks)):
        rel = f"SkyScript/val_images/skyscript_val_{task.index:05d}.jpg"
        write_bytes(bench / rel, product.image)
        rows.append((rel, product.captions[f"short{task.index % 3}"]))
    write_csv(bench / SKYSCRIPT_VAL_CSV, (IMAGE_COLUMN, CAPTION_COLUMN), rows)


# ---------------------------------------------------------------- OVSS (the registry's layout)

def _write_ovss(root: Path, scale: Scale, render: _Renderer) -> None:
    for spec in OVSS_SETS:
        folders = spec.folders(root / "ovss")
        tasks = [Task(f"ovss-{spec.name}", i, "ovss", scene_class=SCENE_CLASSES[i % len(SCENE_CLASSES)],
                      ovss=spec.name) for i in range(scale.ovss)]
        for task, product in zip(tasks, render(tasks)):
            stem = f"{spec.name.lower()}_{task.index:05d}"
            write_bytes(folders.images / f"{stem}{spec.img_suffix}", product.image)
            write_bytes(folders.labels / f"{stem}{spec.ann_suffix}", product.label)
        write_text(folders.folder / "classes.txt", "\n".join(spec.classes) + "\n")


# ---------------------------------------------------------------- the world

def count_tasks(scale: Scale) -> int:
    """Scenes rendered for one world (for the progress bar)."""
    return (len(RS5M_PREFIXES) * scale.rs5m_shards * scale.rs5m_per_shard + scale.rs5m_val + 4
            + scale.mgrs + 4 + len(CLASSIFICATION) * scale.classification
            + len(RETRIEVAL) * scale.retrieval + scale.skyscript_val + len(OVSS_SETS) * scale.ovss)


def write_world(out_dir: str | os.PathLike, seed: int = 0, scale: str | Scale = "small", workers: int = 1,
                overwrite: bool = False, progress: bool = False) -> dict[str, object]:
    """Write the whole synthetic world under ``out_dir`` and return what was written.

    Returns a dict of paths (as strings): ``root``, ``readme``, ``rs5m_train`` (a brace pattern
    for ``--train-data``), ``rs5m_val``, ``rs5m_faulty``, ``mgrs_json``, ``mgrs_images``,
    ``mgrs_faulty_json``, ``mgrs_faulty_images``, ``benchmarks`` (the eval ``--data-root``),
    ``skyscript_val_csv``, ``ovss`` (the segmentation ``--data-root``), plus ``counts`` (a dict of
    sample counts). ``scale`` is a name in ``SCALES`` or a ``Scale``. Refuses to write into a
    folder that already holds a world unless ``overwrite``, which first deletes the world's own
    sub-folders (and nothing else).
    """
    if isinstance(scale, Scale):
        sizes, scale = scale, "custom"
    elif scale in SCALES:
        sizes = SCALES[scale]
    else:
        raise ValueError(f"unknown scale {scale!r}; choose from {sorted(SCALES)} or pass a Scale")
    root = Path(out_dir)
    existing = [root / name for name in OWNED if (root / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{root} already holds {existing[0].name}; pass overwrite=True (--overwrite) "
                              "to replace a synthetic world there")
    if existing and not _holds_world(root):
        raise FileExistsError(f"{root} holds {existing[0].name} but no synthetic-world README.md: "
                              "refusing to delete anything there; choose an empty --out")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    root.mkdir(parents=True, exist_ok=True)

    render = _Renderer(seed, workers, count_tasks(sizes), progress)
    try:
        paths: dict[str, object] = {"root": str(root)}
        paths.update(_write_rs5m(root, sizes, render))
        paths.update(_write_mgrs(root, sizes, render))
        bench = root / "benchmarks"
        _write_classification(bench, sizes, render)
        _write_retrieval(bench, sizes, render)
        _write_ovss(root, sizes, render)
    finally:
        render.close()
    counts = {
        "rs5m_train": len(RS5M_PREFIXES) * sizes.rs5m_shards * sizes.rs5m_per_shard,
        "rs5m_val": sizes.rs5m_val,
        "mgrs": sizes.mgrs,
        "classification_per_set": sizes.classification,
        "retrieval_images_per_set": sizes.retrieval,
        "skyscript_val": sizes.skyscript_val,
        "ovss_per_set": sizes.ovss,
    }
    paths.update(benchmarks=str(bench), skyscript_val_csv=str(bench / SKYSCRIPT_VAL_CSV),
                 ovss=str(root / "ovss"), readme=str(root / "README.md"), counts=counts)
    write_text(root / "README.md", readme_text(seed, scale, sizes))
    log.info("synthetic world (seed %d, scale %s) written to %s", seed, scale, root)
    return paths


def _holds_world(root: Path) -> bool:
    readme = root / "README.md"
    return readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(README_TITLE)


def readme_text(seed: int, scale: str, s: Scale) -> str:
    """The DIR/README.md written next to the data: what each folder is and what reads it."""
    n_train = len(RS5M_PREFIXES) * s.rs5m_shards * s.rs5m_per_shard
    last = s.rs5m_shards - 1
    cls_lines = "\n".join(f"  - `{c.csv}` ({'integer' if c.name in INTEGER_LABELS else 'string'} labels)"
                          for c in CLASSIFICATION.values())
    ret_lines = "\n".join(f"  - `{r.csv}`" if r.caption_key == CAPTION_COLUMN
                          else f"  - `{r.csv}` (`{IMAGE_COLUMN},{CAPTION_COLUMN},{r.caption_key}`)"
                          for r in RETRIEVAL.values())
    ovss_names = ",".join(o.name for o in OVSS_SETS)
    def where(o) -> str:
        layout = o.registered.layouts[0]
        return (f"`ovss/{layout.folder}/` (`{layout.images.format(split=o.split)}/*{o.img_suffix}`, "
                f"`{layout.labels.format(split=o.split)}/*{o.ann_suffix}`, `classes.txt`)")

    ovss_lines = "\n".join(
        f"- {o.name}: {where(o)}: "
        + ("label 0 = no data (ignored), classes start at 1 (reduce-zero-label)" if o.reduce_zero_label
           else "label 0 is the class `background`") + ", 255 = ignore"
        for o in OVSS_SETS)
    command = (f"`farslip synth --out DIR --seed {seed} --scale {scale}`" if scale in SCALES
               else f"`farslip.synth.write_world(DIR, seed={seed}, scale=Scale(...))`")
    return f"""{README_TITLE} (seed {seed}, scale `{scale}`)

Written by {command}. Every image is a procedural
top-down scene with known truth: a scene class out of {len(SCENE_CLASSES)}
({', '.join(SCENE_CLASSES)}), objects out of {len(OBJECT_CATEGORIES)} categories
({', '.join(OBJECT_CATEGORIES)}) with pixel boxes, a per-pixel class mask, and captions
generated from that truth. Same seed, same bytes.

## `rs5m/`: stage-1 training data (RS5M webdataset format)

`{{pub11,rs3}}-train-{{0000..{last:04d}}}.tar`: {n_train} samples, members `<key>.img_content`
(JPEG), `<key>.caption` (utf-8), `<key>.img_name`; keys are unique across shards. `val-0000.tar`:
{s.rs5m_val} more samples, same format. There is no size file: pass the count.

    farslip train --train-dataset-name RS5M --train-data 'DIR/rs5m/{{pub11,rs3}}-train-{{0000..{last:04d}}}.tar' \\
        --train-dataset-type webdataset --train-num-samples {n_train} --method farslip1 ...

`rs5m_faulty/faulty-0000.tar` is broken **on purpose** (for training's robustness tests): of its 4
samples, the second has a corrupt JPEG and the third has no `.caption` member.

## `mgrs/`: stage-2 training data (MGRS-200k format)

`text_info.json` (a JSON list of {s.mgrs} items) + `global_imgs/` (`global_filepath` is relative to
it). Each item has `global_caption` (long, often over 77 CLIP tokens), `detailed_caption`,
`brief_caption` and `segment`: objects with `bbox` {{x1, y1, x2, y2, W, H}} in original pixels
(x2, y2 exclusive; a box may extend past the image where the object is cut by the border) and
`category` + `category_id` (index in the category list above), or for a few a free-text `cap`.
Some items have no object, many boxes are smaller than 64 x 64 px (cars, trees), as in real data.

    farslip train --train-dataset-name MGRS --train-data DIR/mgrs/text_info.json \\
        --root-train-img-dir DIR/mgrs/global_imgs/ --train-dataset-type json --method farslip2 ...

`mgrs_faulty/` (same schema, 4 items) is broken **on purpose**: the second item has no object,
the third item's image file does not exist.

## `benchmarks/`: the SkyScript benchmark tree (`farslip eval ... --data-root DIR/benchmarks`)

Every `filepath` in every CSV is relative to `DIR/benchmarks`. All registered classification and
retrieval sets are here:

    farslip eval classification --model M --pretrained CKPT --data-root DIR/benchmarks
    farslip eval retrieval --model M --pretrained CKPT --data-root DIR/benchmarks

- Zero-shot classification (`filepath,label`, `<dir>/classnames.txt` = the {len(SCENE_CLASSES)} scene
  classes, one per line; each CSV has one row with an empty label that readers must drop):
{cls_lines}
- Retrieval (`filepath,title`; several captions per image, some captions shared by several
  images, a few repeated rows):
{ret_lines}
- Training validation: `{SKYSCRIPT_VAL_CSV}` (`filepath,title`), for
  `farslip train --val-data DIR/benchmarks/{SKYSCRIPT_VAL_CSV} --root-val-img-dir DIR/benchmarks`.

## `ovss/`: open-vocabulary segmentation (`farslip eval segmentation ... --data-root DIR/ovss`)

Three of the registered sets are imitated, so name them:

    farslip eval segmentation --model M --pretrained CKPT --data-root DIR/ovss --datasets {ovss_names}
    farslip eval all --model M --pretrained CKPT --data-root DIR/benchmarks --seg-data-root DIR/ovss \\
        --seg-datasets {ovss_names}

The folders, names and file types are those the paper's evaluation framework reads (the
mmsegmentation converters' output): OpenEarthMap's images and label maps are uncompressed TIFF,
the others PNG; label maps are single-channel uint8 named after the image's stem (iSAID's end in
`_instance_color_RGB.png`, as mmsegmentation's converted iSAID does). `classes.txt`: one class per
line, comma-separated synonyms.
{ovss_lines}
"""


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="farslip synth",
                      description="Write the synthetic remote-sensing world in every real data "
                                  "format (RS5M, MGRS, SkyScript benchmarks, OVSS).")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="world seed: same seed, same bytes")
    p.add_argument("--scale", choices=sorted(SCALES), default="small",
                   help="; ".join(f"{name}: {count_tasks(s)} scenes" for name, s in SCALES.items()))
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="rendering processes (the output does not depend on it)")
    p.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace a world already in --out (only its own sub-folders are deleted)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar")
    add_debug_arg(p)
    return p


def main(argv: Iterable[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    start = time.perf_counter()
    try:
        paths = write_world(args.out, seed=args.seed, scale=args.scale, workers=max(1, args.workers),
                            overwrite=args.overwrite, progress=args.progress)
    except user_errors() as err:  # an existing world without --overwrite, an unwritable --out
        if args.debug:
            raise
        return report("farslip synth", err)
    counts = paths["counts"]
    print(f"synthetic world (seed {args.seed}, scale {args.scale}) written to {paths['root']} "
          f"in {time.perf_counter() - start:.1f} s")
    print(f"  RS5M shards   {paths['rs5m_train']}  ({counts['rs5m_train']} pairs; val {counts['rs5m_val']})")
    print(f"  MGRS          {paths['mgrs_json']}  ({counts['mgrs']} images)")
    print(f"  benchmarks    {paths['benchmarks']}  ({len(CLASSIFICATION)} classification x "
          f"{counts['classification_per_set']}, {len(RETRIEVAL)} retrieval x "
          f"{counts['retrieval_images_per_set']} images)")
    print(f"  OVSS          {paths['ovss']}  ({len(OVSS_SETS)} sets x {counts['ovss_per_set']} images)")
    print(f"  see {paths['readme']}")
    return 0

"""The synthetic world: every file read back with independent readers (tarfile, json, csv, PIL).

One small world is written once per module; the checks compare its files with the scene truth
(re-rendered through the public API), with hand-stated format rules, and with a second run.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from farslip.eval import classification, retrieval
from farslip.eval.registry import CLASSIFICATION, RETRIEVAL, SEGMENTATION
from farslip.synth import captions as cap
from farslip.synth.layouts import INTEGER_LABELS, OVSS_SETS
from farslip.synth.scene import SEMANTIC_OFFSET, render_scene
from farslip.synth.vocab import OBJECT_CATEGORIES, PLURALS, SCENE_CLASSES, SEMANTIC_CLASSES
from farslip.synth.world import SCALES, main, write_world

SEED = 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return write_world(tmp_path_factory.mktemp("world"), seed=SEED, scale="small")


def _root(world: dict) -> Path:
    return Path(world["root"])


def _tar_samples(path: Path) -> tuple[dict[str, dict[str, bytes]], list[tarfile.TarInfo]]:
    """key -> {extension: bytes}, keys split at the first dot of the member name (webdataset rule)."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
        for info in infos:
            key, ext = info.name.split(".", 1)
            samples[key][ext] = tar.extractfile(info).read()
    return dict(samples), infos


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except OSError:
        return False


def _names_scene(text: str) -> bool:
    return any(c in text for c in SCENE_CLASSES)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- vocabulary and scenes

def test_vocabulary_is_rich_enough():
    assert len(set(SCENE_CLASSES)) == len(SCENE_CLASSES) >= 8
    assert len(set(OBJECT_CATEGORIES)) == len(OBJECT_CATEGORIES) >= 10
    assert {"storage tanks", "parking lot"} <= set(SCENE_CLASSES)
    assert set(PLURALS) == set(OBJECT_CATEGORIES)


def test_render_scene_is_pure_and_self_consistent():
    a = render_scene(3, "unit", 5, scene_class="residential area")
    b = render_scene(3, "unit", 5, scene_class="residential area")
    c = render_scene(4, "unit", 5, scene_class="residential area")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (a.height, a.width, 3) and a.image.dtype == np.uint8
    assert a.objects, "a residential area always has buildings"
    ids = set(np.unique(a.instances)) - {0}
    assert ids <= {o.instance for o in a.objects}
    for o in a.objects:  # the semantic mask says the object's category wherever its instance is
        sem = a.semantic[a.instances == o.instance]
        assert (sem == SEMANTIC_OFFSET + o.category_id).all()


def test_captions_are_derived_from_the_truth():
    scene = render_scene(1, "unit", 2, scene_class="harbor")
    long = cap.long_caption(scene)
    for o in scene.objects:
        assert o.category in long or PLURALS[o.category] in long
    for v in range(3):
        assert "harbor" in cap.short_caption(scene, v)
    n_ships = sum(o.category == "ship" for o in scene.objects)
    assert n_ships >= 2  # the harbor layout asks for 2..6 ships
    assert f"{cap.number(n_ships)} " in cap.short_caption(scene, 0)
    o = scene.objects[0]
    assert cap.region_caption(o, scene.width, scene.height).endswith(cap.position(o, scene.width, scene.height))


def test_position_words_follow_the_grid():
    scene = render_scene(0, "unit", 0, scene_class="desert")
    w, h = scene.width, scene.height
    from farslip.synth.scene import SceneObject
    assert cap.position(SceneObject("car", (0, 0, 4, 4), "red", 1), w, h) == "upper left"
    assert cap.position(SceneObject("car", (w - 4, h - 4, w + 10, h + 10), "red", 1), w, h) == "lower right"
    assert cap.position(SceneObject("car", (w // 2 - 2, h // 2 - 2, w // 2 + 2, h // 2 + 2), "red", 1), w, h) == "center"


# ---------------------------------------------------------------- RS5M shards

def test_rs5m_train_and_val_shards(world):
    root = _root(world)
    pattern = world["rs5m_train"]
    m = re.fullmatch(r".*/\{(.+)\}-train-\{(\d+)\.\.(\d+)\}\.tar", pattern)
    assert m, pattern
    prefixes, first, last = m.group(1).split(","), int(m.group(2)), int(m.group(3))
    assert prefixes == ["pub11", "rs3"] and last > first
    keys: list[str] = []
    for prefix in prefixes:
        for shard in range(first, last + 1):
            path = root / "rs5m" / f"{prefix}-train-{shard:04d}.tar"
            samples, infos = _tar_samples(path)
            names = [i.name for i in infos]
            assert names == sorted(names)
            assert all(i.mtime == infos[0].mtime and i.uid == 0 and i.gid == 0 for i in infos)
            for key, members in samples.items():
                assert set(members) == {"img_content", "caption", "img_name"}, (path, key)
                assert members["img_name"].decode() == f"{key}.jpg"
                with Image.open(io.BytesIO(members["img_content"])) as im:
                    assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) >= 128
                assert _names_scene(members["caption"].decode("utf-8"))
            keys += samples
    assert len(keys) == len(set(keys)) == world["counts"]["rs5m_train"] == 64
    val, _ = _tar_samples(Path(world["rs5m_val"]))
    assert len(val) == world["counts"]["rs5m_val"] and not set(val) & set(keys)


def test_rs5m_faulty_shard_has_one_corrupt_image_and_one_missing_caption(world):
    samples, _ = _tar_samples(Path(world["rs5m_faulty"]))
    undecodable = [k for k, m in samples.items() if not _decodes(m["img_content"])]
    no_caption = [k for k, m in samples.items() if "caption" not in m]
    assert len(undecodable) == 1 and len(no_caption) == 1 and undecodable != no_caption
    assert len(samples) >= 3  # and some good ones


# ---------------------------------------------------------------- MGRS

def _mgrs(world) -> list[dict]:
    return json.loads(Path(world["mgrs_json"]).read_text(encoding="utf-8"))


def _clipped_area(bbox: dict) -> int:
    w = min(bbox["x2"], bbox["W"]) - max(bbox["x1"], 0)
    h = min(bbox["y2"], bbox["H"]) - max(bbox["y1"], 0)
    return max(0, w) * max(0, h)


def test_mgrs_schema(world):
    items = _mgrs(world)
    assert isinstance(items, list) and len(items) == world["counts"]["mgrs"]
    images = Path(world["mgrs_images"])
    tokenizer = SimpleTokenizer()
    sizes, long_captions, caps, tiny, outside, kept_big = set(), 0, 0, 0, 0, []
    unusable = 0
    for item in items:
        assert set(item) == {"global_filepath", "global_caption", "detailed_caption", "brief_caption", "segment"}
        with Image.open(images / item["global_filepath"]) as im:
            assert im.format == "JPEG"
            size = im.size
        sizes.add(size)
        long_captions += len(tokenizer.encode(item["global_caption"])) > 77
        assert _names_scene(item["global_caption"]) and _names_scene(item["brief_caption"])
        usable = 0
        for seg in item["segment"]:
            bbox = seg["bbox"]
            assert list(bbox) == ["x1", "y1", "x2", "y2", "W", "H"]
            assert (bbox["W"], bbox["H"]) == size
            assert bbox["x2"] > bbox["x1"] and bbox["y2"] > bbox["y1"]
            if "cap" in seg:
                caps += 1
                assert "category" not in seg and isinstance(seg["cap"], str) and seg["cap"]
            else:
                assert OBJECT_CATEGORIES[seg["category_id"]] == seg["category"]
                word = seg["category"]
                assert word in item["global_caption"] or PLURALS[word] in item["global_caption"]
            area = _clipped_area(bbox)
            tiny += area < 64 * 64
            usable += area >= 64 * 64
            outside += bbox["x1"] < 0 or bbox["y1"] < 0 or bbox["x2"] > bbox["W"] or bbox["y2"] > bbox["H"]
            if seg.get("category") in ("building", "storage tank", "airplane", "tennis court"):
                kept_big.append(area >= 64 * 64)
        unusable += usable == 0
    assert len(sizes) >= 4  # several sizes and aspect ratios
    assert any(w != h for w, h in sizes)
    assert long_captions >= len(items) // 2
    assert caps >= 1 and tiny >= 1 and outside >= 1 and unusable >= 1
    assert np.mean(kept_big) > 0.6  # the stage-2 64 px filter keeps most real objects


def test_mgrs_boxes_match_object_pixels(world):
    items = _mgrs(world)
    images = Path(world["mgrs_images"])
    checked = whole = 0
    for item in items:
        index = int(re.search(r"mgrs_(\d+)\.jpg$", item["global_filepath"]).group(1))
        scene = render_scene(SEED, "mgrs", index, profile="mgrs")
        with Image.open(images / item["global_filepath"]) as im:
            decoded = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert np.abs(decoded - scene.image).mean() < 6  # the file is this scene (JPEG-close)
        assert len(item["segment"]) == len(scene.objects)
        h, w = scene.instances.shape
        for seg, obj in zip(item["segment"], scene.objects):
            b = seg["bbox"]
            ys, xs = np.nonzero(scene.instances == obj.instance)
            assert xs.size, "every annotated object has pixels in the image"
            assert b["x1"] <= xs.min() and xs.max() < b["x2"] and b["y1"] <= ys.min() and ys.max() < b["y2"]
            if 0 <= b["x1"] and 0 <= b["y1"] and b["x2"] <= w and b["y2"] <= h:
                # Whole object in view: the box is tight, each edge touches its pixels.
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (b["x1"], b["y1"], b["x2"], b["y2"])
                whole += 1
            else:
                # Cut by the border: the box reaches past it, and so do the object's pixels.
                assert (b["x1"] >= 0 or xs.min() == 0) and (b["y1"] >= 0 or ys.min() == 0)
                assert (b["x2"] <= w or xs.max() == w - 1) and (b["y2"] <= h or ys.max() == h - 1)
            if "category" in seg:
                sem = scene.semantic[ys, xs]
                assert (np.asarray(SEMANTIC_CLASSES)[sem] == seg["category"]).all()
            checked += 1
    assert checked >= 50 and whole >= checked // 2


def test_mgrs_faulty_variant(world):
    items = json.loads(Path(world["mgrs_faulty_json"]).read_text(encoding="utf-8"))
    images = Path(world["mgrs_faulty_images"])
    missing = [it for it in items if not (images / it["global_filepath"]).is_file()]
    empty = [it for it in items if not it["segment"]]
    assert len(missing) == 1 and len(empty) == 1 and missing[0] is not empty[0]
    assert len(items) - 2 >= 1


# ---------------------------------------------------------------- benchmarks

def test_every_registered_benchmark_is_where_the_evaluator_looks(world):
    """One registry: the world writes each classification and retrieval set the evaluation registry
    names, at the path the evaluator reads (segmentation: see test_ovss_sets)."""
    bench = Path(world["benchmarks"])
    assert all(classification.dataset_present(bench, name) for name in CLASSIFICATION)
    assert all(retrieval.dataset_present(bench, name) for name in RETRIEVAL)
    assert all((bench / spec.classnames).is_file() for spec in CLASSIFICATION.values())
    assert INTEGER_LABELS <= set(CLASSIFICATION)


def test_classification_sets(world):
    bench = Path(world["benchmarks"])
    for spec in CLASSIFICATION.values():
        header, rows = _read_csv(bench / spec.csv)
        assert header == ["filepath", "label"]
        classnames = (bench / spec.csv.split("/")[0] / "classnames.txt").read_text(encoding="utf-8").splitlines()
        assert classnames == list(SCENE_CLASSES)
        empty = [r for r in rows if r["label"] == ""]
        labelled = [r for r in rows if r["label"] != ""]
        assert len(empty) == 1 and len(labelled) == world["counts"]["classification_per_set"]
        if spec.name in INTEGER_LABELS:
            names = [classnames[int(r["label"])] for r in labelled]
        else:
            names = [r["label"] for r in labelled]
            assert set(names) <= set(classnames)
        assert set(names) == set(SCENE_CLASSES)  # balanced: every class appears
        for r in labelled:
            assert (bench / r["filepath"]).is_file(), r["filepath"]
    assert {"eurosat"} == INTEGER_LABELS  # eurosat spells labels as indices, as the real one does


def _mean_colour_features(paths: list[Path]) -> np.ndarray:
    """4 x 4 mean colours (48 numbers) per image: a crude, model-free scene descriptor."""
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB").resize((4, 4), Image.BOX), dtype=np.float32).ravel())
    return np.stack(out)


def test_scene_classes_are_separable_by_colour(world):
    """Learnable on purpose: nearest class-mean of 4 x 4 colour layouts, fitted on four sets and
    scored on the other four, is far above chance."""
    bench = Path(world["benchmarks"])
    feats, labels = [], []
    for spec in CLASSIFICATION.values():
        rows = [r for r in _read_csv(bench / spec.csv)[1] if r["label"] != ""]
        names = [SCENE_CLASSES[int(r["label"])] if spec.name in INTEGER_LABELS else r["label"] for r in rows]
        feats.append(_mean_colour_features([bench / r["filepath"] for r in rows]))
        labels.append(np.array([SCENE_CLASSES.index(n) for n in names]))
    train_x, train_y = np.concatenate(feats[:4]), np.concatenate(labels[:4])
    test_x, test_y = np.concatenate(feats[4:]), np.concatenate(labels[4:])
    means = np.stack([train_x[train_y == c].mean(0) for c in range(len(SCENE_CLASSES))])
    pred = np.argmin(((test_x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == test_y).mean() > 3 / len(SCENE_CLASSES)


def test_retrieval_sets(world):
    bench = Path(world["benchmarks"])
    rsicd_style = [spec for spec in RETRIEVAL.values() if spec.name != "SkyScript"]
    assert [spec.name for spec in rsicd_style] == ["RSICD", "RSITMD", "ucmcaptions"]
    for name, csv_path in ((spec.name, spec.csv) for spec in rsicd_style):
        header, rows = _read_csv(bench / csv_path)
        assert header == ["filepath", "title"]
        per_image: dict[str, set[str]] = defaultdict(set)
        per_title: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            assert (bench / r["filepath"]).is_file() and r["title"] and _names_scene(r["title"])
            per_image[r["filepath"]].add(r["title"])
            per_title[r["title"]].add(r["filepath"])
        assert len(per_image) == world["counts"]["retrieval_images_per_set"]
        assert max(len(t) for t in per_image.values()) >= 3, name
        assert max(len(i) for i in per_title.values()) >= 2, name  # shared captions
        assert len(rows) > sum(len(t) for t in per_image.values())  # repeated rows too
    header, rows = _read_csv(bench / "SkyScript_test_30K_filtered_by_CLIP_openai.csv")
    assert header == ["filepath", "title", "title_multi_objects"]
    assert all((bench / r["filepath"]).is_file() and _names_scene(r["title_multi_objects"]) for r in rows)
    header, rows = _read_csv(Path(world["skyscript_val_csv"]))
    assert header == ["filepath", "title"] and len(rows) == world["counts"]["skyscript_val"]
    assert all((bench / r["filepath"]).is_file() for r in rows)


# ---------------------------------------------------------------- OVSS

def test_ovss_sets(world):
    ovss = Path(world["ovss"])
    conventions = set()
    for spec in OVSS_SETS:
        found = SEGMENTATION[spec.name].find(ovss)  # where the evaluator looks first
        assert found == SEGMENTATION[spec.name].candidates(ovss)[0]
        lines = (found.folder / "classes.txt").read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(spec.classes) and all(s.strip() for line in lines for s in line.split(","))
        images = sorted(found.images.iterdir())
        assert len(images) == world["counts"]["ovss_per_set"]
        assert {p.suffix for p in images} == {spec.img_suffix}
        seen: set[int] = set()
        water_rgb = []
        for img_path in images:
            ann_path = found.labels / (img_path.stem + spec.ann_suffix)
            with Image.open(img_path) as im, Image.open(ann_path) as ann:
                assert ann.mode == "L" and ann.size == im.size
                kinds = {".tif": "TIFF", ".png": "PNG"}
                assert (im.format, ann.format) == (kinds[spec.img_suffix], kinds[spec.ann_suffix[-4:]])
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
                label = np.asarray(ann)
            seen |= set(np.unique(label).tolist())
            water = [i for i, line in enumerate(lines) if "water" in line.split(",")]
            if water:
                value = water[0] + (1 if spec.reduce_zero_label else 0)
                water_rgb.append(rgb[label == value])
        n = len(lines)
        assert 255 in seen
        if spec.reduce_zero_label:
            assert 0 in seen and seen - {0, 255} <= set(range(1, n + 1))
        else:
            assert seen - {255} <= set(range(n)) and 0 in seen
        conventions.add(spec.reduce_zero_label)
        if water_rgb:  # the label maps line up with the pictures: water pixels are blue
            pix = np.concatenate(water_rgb)
            assert len(pix) > 100 and pix[:, 2].mean() > pix[:, 0].mean() + 40
    assert conventions == {True, False}


# ---------------------------------------------------------------- README, determinism, CLI

def test_readme_names_every_folder_and_command(world):
    text = Path(world["readme"]).read_text(encoding="utf-8")
    for needle in ("rs5m/", "rs5m_faulty/", "mgrs/", "mgrs_faulty/", "benchmarks/", "ovss/",
                   "farslip train", "--data-root DIR/benchmarks", "--data-root DIR/ovss",
                   "relative to `DIR/benchmarks`"):
        assert needle in text, needle


def test_refuses_to_overwrite_without_flag(world):
    with pytest.raises(FileExistsError):
        write_world(world["root"], seed=SEED, scale="small")


def test_overwrite_never_deletes_a_folder_that_is_not_a_world(tmp_path):
    keep = tmp_path / "benchmarks" / "mine.txt"
    keep.parent.mkdir()
    keep.write_text("user data")
    with pytest.raises(FileExistsError, match="refusing"):
        write_world(tmp_path, scale="tiny", overwrite=True)
    assert keep.read_text() == "user data"


def test_cli_same_seed_gives_identical_bytes_with_workers(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--seed", "5", "--scale", "tiny", "--workers", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "RS5M" in printed
    again = write_world(tmp_path / "api", seed=5, scale="tiny", workers=1)
    first, second = _hashes(out), _hashes(Path(again["root"]))
    assert len(first) > 80
    assert first == second
    assert main(["--out", str(out), "--seed", "5", "--scale", "tiny", "--workers", "1", "--no-progress"]) == 2  # exists: a user error
    assert main(["--out", str(out), "--seed", "5", "--scale", "tiny", "--overwrite", "--no-progress"]) == 0
    assert _hashes(out) == first
    other = write_world(tmp_path / "other", seed=6, scale="tiny")
    third = _hashes(Path(other["root"]))
    images = [p for p in first if p.endswith((".jpg", ".png"))]
    assert set(third) == set(first) and len(images) >= 40
    assert all(first[p] != third[p] for p in images)  # a different seed draws different scenes


def test_scales_grow():
    small, medium = SCALES["small"], SCALES["medium"]
    assert medium.mgrs >= 10 * small.mgrs and medium.rs5m_shards * medium.rs5m_per_shard >= 1000

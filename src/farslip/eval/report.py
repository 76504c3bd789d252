"""Evaluation output: ``results.json``, ``results.md`` (tables shaped like the paper's) and, for
segmentation, PNG panels of image | ground truth | prediction per data set."""
from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ..atomic import atomic_write
from .datasets import IGNORE_INDEX
from .metrics import RECALL_KS

PANEL_GAP = 4


def palette(num_classes: int) -> np.ndarray:
    """[256, 3] uint8 colours: well-separated hues for the classes, black for the ignore label."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for c in range(min(num_classes, IGNORE_INDEX)):
        hue = (c * 0.618033988749895) % 1.0
        colours[c] = [round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.65, 0.95)]
    return colours


def panel(example: dict, num_classes: int) -> Image.Image:
    """image | truth | prediction side by side (labels coloured, ignored pixels black)."""
    colours = palette(num_classes)
    parts = [example["image"], colours[example["truth"]], colours[example["prediction"]]]
    height = max(p.shape[0] for p in parts)
    width = sum(p.shape[1] for p in parts) + PANEL_GAP * (len(parts) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    left = 0
    for part in parts:
        canvas[: part.shape[0], left:left + part.shape[1]] = part
        left += part.shape[1] + PANEL_GAP
    return Image.fromarray(canvas)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NaN -> null, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(results: dict) -> str:
    """The paper-shaped tables of whatever tasks ``results`` holds, one row for this model."""
    label = results.get("model", {}).get("label", "model")
    lines = [f"# Evaluation of {label}", ""]
    cls = results.get("classification")
    if cls:
        sets = list(cls["datasets"])
        lines += ["## Zero-shot scene classification (top-1 %, top-5 % below)", ""]
        lines += _table(["model", *sets, "mean"], [
            [label, *(_fmt(cls["datasets"][s]["top1"]) for s in sets), _fmt(cls["mean_top1"])],
            [f"{label} (top-5)", *(_fmt(cls["datasets"][s]["top5"]) for s in sets), _fmt(cls["mean_top5"])],
        ]) + [""]
    ret = results.get("retrieval")
    if ret:
        sets = list(ret["datasets"])
        lines += ["## Zero-shot retrieval (mean of R@1/5/10 per direction, %)", ""]
        lines += _table(["model", *(f"{s} {d}" for s in sets for d in ("img->txt", "txt->img")), "mean recall"], [
            [label, *(_fmt(ret["datasets"][s][f"{d}_mean"]) for s in sets for d in ("image_to_text", "text_to_image")),
             _fmt(ret["mean_mean_recall"])]])
        lines += ["", "Recall@k per data set:", ""]
        keys = [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in RECALL_KS]
        lines += _table(["data set", *(k.replace("image_to_text", "I->T").replace("text_to_image", "T->I") for k in keys)],
                        [[s, *(_fmt(ret["datasets"][s][k]) for k in keys)] for s in sets]) + [""]
    seg = results.get("segmentation")
    if seg:
        sets = list(seg["datasets"])
        lines += ["## Open-vocabulary semantic segmentation (mIoU %)", ""]
        lines += _table(["model", *sets, "mean"], [
            [label, *(_fmt(seg["datasets"][s]["mIoU"]) for s in sets), _fmt(seg["mean_mIoU"])]]) + [""]
        for s in sets:
            lines += [f"![{s} example]({p})" for p in seg["datasets"][s].get("examples", []) if isinstance(p, str)]
        lines += [""]
    failures = [(task, name, err) for task in ("classification", "retrieval", "segmentation")
                for name, err in (results.get(task) or {}).get("failed", {}).items()]
    if failures:
        lines += ["## Failed data sets", ""] + [f"- {task} / {name}: {err}" for task, name, err in failures] + [""]
    return "\n".join(lines)


def write_report(results: dict, out_dir: Union[str, Path]) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and the segmentation PNGs into ``out_dir``.

    ``results`` maps task names (``classification``, ``retrieval``, ``segmentation``) to what the
    ``evaluate_*`` functions return, plus optional ``model`` / ``settings`` entries. Example arrays
    are written as PNGs and replaced by their relative paths in the JSON. Returns the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    clean = dict(results)
    seg = results.get("segmentation")
    if seg:
        clean["segmentation"] = {**seg, "datasets": {}}
        for name, metrics in seg["datasets"].items():
            paths = []
            for i, example in enumerate(metrics.get("examples", [])):
                if isinstance(example, str):  # already written (a report written twice)
                    paths.append(example)
                    continue
                rel = Path("segmentation") / f"{name}_{i}_{Path(example['file']).stem}.png"
                (out / rel.parent).mkdir(parents=True, exist_ok=True)
                panel(example, len(metrics["classes"])).save(out / rel)
                written[str(rel)] = out / rel
                paths.append(rel.as_posix())
            clean["segmentation"]["datasets"][name] = {**metrics, "examples": paths}
    atomic_write(out / "results.json", json.dumps(_jsonable(clean), indent=2, allow_nan=False) + "\n")
    atomic_write(out / "results.md", markdown(clean) + "\n")
    written["results.json"] = out / "results.json"
    written["results.md"] = out / "results.md"
    return written

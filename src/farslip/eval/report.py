"""Evaluation output: ``results.json``, ``results.md`` (tables shaped like the paper's) and, for
segmentation, PNG panels of image | ground truth | prediction per data set; and the merged
multi-run tables of ``farslip eval report`` (Markdown and CSV).

Every table uses the paper's data set names (``registry.DISPLAY_NAMES``), prints percentages with
two decimals, right-aligned; ``results.json`` keeps the exact values and the hit counts behind them.
"""
from __future__ import annotations

import colorsys
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_write
from .metrics import EXTRA_KS, RECALL_KS
from .registry import CLASSIFICATION, IGNORE_INDEX, RETRIEVAL, SEGMENTATION, display_name

PANEL_GAP = 4
DIRECTIONS = (("image_to_text", "img->txt"), ("text_to_image", "txt->img"))
RANDOM_MARK = " (random weights)"
PARTIAL_MARK = "*"
PARTIAL_NOTE = (f"{PARTIAL_MARK} mean over the data sets that run evaluated, which are not all the columns of "
                f"this table: not comparable with the other rows")


def palette(num_classes: int) -> np.ndarray:
    """[256, 3] uint8 colours: well-separated hues for the classes, black for the ignore label."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for c in range(min(num_classes, IGNORE_INDEX)):
        hue = (c * 0.618033988749895) % 1.0
        colours[c] = [round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.65, 0.95)]
    return colours


def _text_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom - min(top, 0)) + 2


def panel(example: dict, classes: Sequence[str]) -> Image.Image:
    """image | truth | prediction side by side, each titled, with a legend of the classes shown
    (labels coloured as :func:`palette`, ignored pixels black)."""
    colours = palette(len(classes))
    parts = [example["image"], colours[example["truth"]], colours[example["prediction"]]]
    titles = ("image", "ground truth", "prediction")
    font = ImageFont.load_default()
    line = _text_height(font)
    shown = sorted(set(np.unique(example["truth"]).tolist()) | set(np.unique(example["prediction"]).tolist()))
    entries = [(tuple(int(v) for v in colours[c]), classes[c]) for c in shown if c < len(classes)]
    if IGNORE_INDEX in shown:
        entries.append(((0, 0, 0), "ignored"))
    height = max(p.shape[0] for p in parts)
    width = sum(p.shape[1] for p in parts) + PANEL_GAP * (len(parts) - 1)
    width = max(width, max(int(font.getlength(t)) for t in titles) * 3 + 2 * PANEL_GAP)
    # legend rows: swatch + name entries laid left to right, wrapped at the panel width
    rows, row, used = [], [], 0
    for colour, name in entries:
        need = line + 4 + int(font.getlength(name)) + 12
        if row and used + need > width:
            rows.append(row)
            row, used = [], 0
        row.append((colour, name, need))
        used += need
    if row:
        rows.append(row)
    canvas = Image.new("RGB", (width, line + height + PANEL_GAP + line * len(rows) + PANEL_GAP), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for part, title in zip(parts, titles):
        draw.text((left, 0), title, fill="black", font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(part)), (left, line))
        left += part.shape[1] + PANEL_GAP
    top = line + height + PANEL_GAP
    for legend_row in rows:
        x = 0
        for colour, name, need in legend_row:
            draw.rectangle([x, top + 1, x + line - 3, top + line - 2], fill=colour, outline="black")
            draw.text((x + line + 2, top), name, fill="black", font=font)
            x += need
        top += line
    return canvas


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
    """A percentage for reading: two decimals; missing (None / NaN) as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


@dataclass
class Table:
    """A table of formatted cells; every column but the first is numeric (right-aligned)."""

    key: str  # file stem of its CSV
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> list[str]:
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]

        def line(cells: Sequence[str]) -> str:
            padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "| " + " | ".join(padded) + " |"

        rule = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
        return [line(self.header), rule, *(line(r) for r in self.rows)] + ([""] + self.notes if self.notes else [])

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        for row in self.rows:
            writer.writerow([row[0], *("" if c == "-" else c.rstrip(PARTIAL_MARK) for c in row[1:])])
        return buffer.getvalue()


def run_label(results: dict) -> str:
    """The row label of a run: its model label, marked when its weights were random."""
    info = results.get("model") or {}
    label = str(info.get("label") or info.get("model") or "model")
    return label + RANDOM_MARK if info.get("random_weights") else label


def _columns(runs: Sequence[dict], task: str, registered: dict) -> list[str]:
    """The data sets any run evaluated for ``task``: registered ones in registry order, then others."""
    seen: list[str] = []
    for results in runs:
        for name in ((results.get(task) or {}).get("datasets") or {}):
            if name not in seen:
                seen.append(name)
    return [n for n in registered if n in seen] + [n for n in seen if n not in registered]


def _mean_cell(value: Any, evaluated: set, columns: Sequence[str]) -> str:
    return _fmt(value) + (PARTIAL_MARK if not set(columns) <= evaluated else "")


def paper_tables(runs: Sequence[dict], labels: Optional[Sequence[str]] = None) -> list[Table]:
    """The paper's tables, one row per run (``runs``: results dicts as written to results.json)."""
    labels = list(labels) if labels is not None else [run_label(r) for r in runs]
    tables = []
    cls_cols = _columns(runs, "classification", CLASSIFICATION)
    if cls_cols:
        for metric, key in (("top1", "classification"), ("top5", "classification_top5")):
            table = Table(key, f"Zero-shot scene classification, top-{metric[-1]} accuracy (%)",
                          ["Method", *(display_name(c) for c in cls_cols), "Mean"])
            for label, results in zip(labels, runs):
                task = results.get("classification")
                if not task:
                    continue
                sets = task.get("datasets") or {}
                table.rows.append([label, *(_fmt(sets.get(c, {}).get(metric)) for c in cls_cols),
                                   _mean_cell(task.get(f"mean_{metric}"), set(sets), cls_cols)])
            tables.append(table)
    ret_cols = _columns(runs, "retrieval", RETRIEVAL)
    if ret_cols:
        table = Table("retrieval", "Zero-shot image-text retrieval, mean of R@1/5/10 per direction (%)",
                      ["Method", *(f"{display_name(c)} {arrow}" for c in ret_cols for _, arrow in DIRECTIONS),
                       "Mean recall"])
        for label, results in zip(labels, runs):
            task = results.get("retrieval")
            if not task:
                continue
            sets = task.get("datasets") or {}
            table.rows.append([label, *(_fmt(sets.get(c, {}).get(f"{d}_mean")) for c in ret_cols for d, _ in DIRECTIONS),
                               _mean_cell(task.get("mean_mean_recall"), set(sets), ret_cols)])
        tables.append(table)
    seg_cols = _columns(runs, "segmentation", SEGMENTATION)
    if seg_cols:
        table = Table("segmentation", "Open-vocabulary semantic segmentation, mIoU (%)",
                      ["Method", *(display_name(c) for c in seg_cols), "Mean"])
        for label, results in zip(labels, runs):
            task = results.get("segmentation")
            if not task:
                continue
            sets = task.get("datasets") or {}
            table.rows.append([label, *(_fmt(sets.get(c, {}).get("mIoU")) for c in seg_cols),
                               _mean_cell(task.get("mean_mIoU"), set(sets), seg_cols)])
        tables.append(table)
    for table in tables:
        if any(row[-1].endswith(PARTIAL_MARK) for row in table.rows):
            table.notes.append(PARTIAL_NOTE)
    return tables


def _count(hits: Any, total: Any) -> str:
    return f"{hits}/{total}" if hits is not None and total is not None else "-"


def detail_tables(results: dict) -> list[Table]:
    """One run's per-set details: the rates with the hit counts behind them."""
    tables = []
    cls = (results.get("classification") or {}).get("datasets") or {}
    if cls:
        table = Table("classification_detail", "Classification per data set",
                      ["data set", "top-1", "top-5", "top-1 hits", "top-5 hits"])
        for name, m in cls.items():
            n = m.get("num_samples", m.get("num_images"))
            table.rows.append([display_name(name), _fmt(m.get("top1")), _fmt(m.get("top5")),
                               _count(m.get("top1_hits"), n), _count(m.get("top5_hits"), n)])
        tables.append(table)
    ret = (results.get("retrieval") or {}).get("datasets") or {}
    if ret:
        ks = [*RECALL_KS, *EXTRA_KS]
        table = Table("retrieval_detail", "Recall@k per data set (%; hits/queries for R@1)",
                      ["data set", *(f"{arrow} R@{k}" for _, arrow in DIRECTIONS for k in ks),
                       *(f"{arrow} hits@1" for _, arrow in DIRECTIONS)])
        for name, m in ret.items():
            table.rows.append([display_name(name), *(_fmt(m.get(f"{d}_R@{k}")) for d, _ in DIRECTIONS for k in ks),
                               *(_count(m.get(f"{d}_hits@1"), m.get(f"{d}_queries")) for d, _ in DIRECTIONS)])
        tables.append(table)
    return tables


def rows_table(results: dict) -> Optional[Table]:
    """The CSV rows of each classification / retrieval set: read, used, dropped and why."""
    table = Table("rows", "Rows of each data set's CSV (rows with an empty field cannot be used and are dropped)",
                  ["data set", "task", "rows read", "rows used", "rows dropped", "why"])
    for task in ("classification", "retrieval"):
        for name, m in ((results.get(task) or {}).get("datasets") or {}).items():
            rows = m.get("rows")
            if not isinstance(rows, dict):
                continue
            dropped = rows.get("dropped") or {}
            table.rows.append([display_name(name), task, str(rows.get("read", "-")), str(rows.get("used", "-")),
                               str(sum(dropped.values())),
                               "; ".join(f"{n} {why}" for why, n in dropped.items()) or "-"])
    return table if table.rows else None


def markdown(results: dict) -> str:
    """``results.md``: the paper-shaped tables (one row for this model), the per-set details,
    the segmentation panels, and what was absent or failed."""
    label = run_label(results)
    info = results.get("model") or {}
    lines = [f"# Evaluation of {label}", ""]
    if info.get("random_weights"):
        lines += ["Weights: random (no pretrained weights loaded).", ""]
    elif info.get("checkpoint"):
        lines += [f"Weights: `{info['checkpoint']}` (sha256 {info.get('checkpoint_sha256')}).", ""]
    elif info.get("weights"):
        lines += [f"Weights: `{info['weights']}`.", ""]
    tables = {t.key: t for t in paper_tables([results], [label])}
    details = {t.key: t for t in detail_tables(results)}
    for keys in (("classification", "classification_top5", "classification_detail"),
                 ("retrieval", "retrieval_detail"), ("segmentation",)):
        for key in keys:
            if key in tables or key in details:
                table = tables.get(key) or details[key]
                lines += [f"## {table.title}" if key in tables else f"{table.title}:", "", *table.markdown(), ""]
    rows = rows_table(results)
    if rows is not None:
        lines += [f"{rows.title}:", "", *rows.markdown(), ""]
    seg = results.get("segmentation")
    if seg:
        for s in seg["datasets"]:
            lines += [f"![{display_name(s)} example]({p})" for p in seg["datasets"][s].get("examples", [])
                      if isinstance(p, str)]
        lines += [""]
    absent = [(task, name) for task in ("classification", "retrieval", "segmentation")
              for name in (results.get(task) or {}).get("absent") or []]
    if absent:
        lines += ["## Not evaluated (absent under the data root)", ""]
        lines += [f"- {task}: {', '.join(display_name(n) for t, n in absent if t == task)}"
                  for task in dict.fromkeys(t for t, _ in absent)] + [""]
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
                image = panel(example, metrics["classes"])
                atomic_write(out / rel, lambda handle: image.save(handle, format="PNG"), durable=False)
                written[str(rel)] = out / rel
                paths.append(rel.as_posix())
            clean["segmentation"]["datasets"][name] = {**metrics, "examples": paths}
    atomic_write(out / "results.json", json.dumps(_jsonable(clean), indent=2, allow_nan=False) + "\n")
    atomic_write(out / "results.md", markdown(clean) + "\n")
    written["results.json"] = out / "results.json"
    written["results.md"] = out / "results.md"
    return written


def merged_labels(runs: Sequence[tuple[str, dict]]) -> list[str]:
    """Row labels of several runs; runs that would share a label get their folder name added."""
    labels = [run_label(results) for _, results in runs]
    return [f"{label} [{folder}]" if labels.count(label) > 1 else label
            for label, (folder, _) in zip(labels, runs)]


def merged_markdown(runs: Sequence[tuple[str, dict]]) -> tuple[str, list[Table]]:
    """The Markdown of ``farslip eval report`` for ``runs`` = [(folder name, results), ...]."""
    tables = paper_tables([r for _, r in runs], merged_labels(runs))
    lines = [f"# Evaluation report ({len(runs)} run{'s' if len(runs) != 1 else ''})", ""]
    for table in tables:
        lines += [f"## {table.title}", "", *table.markdown(), ""]
    if any(run_label(r).endswith(RANDOM_MARK) for _, r in runs):
        lines += [f"Rows marked{RANDOM_MARK} evaluate a model with random (untrained) weights.", ""]
    return "\n".join(lines), tables


def write_merged_report(runs: Sequence[tuple[str, dict]], out_dir: Optional[Union[str, Path]]) -> tuple[str, list[Path]]:
    """``report.md`` + one CSV per table (``classification.csv``, ``classification_top5.csv``,
    ``retrieval.csv``, ``segmentation.csv``) into ``out_dir`` when given; returns the Markdown and
    the paths written."""
    text, tables = merged_markdown(runs)
    written: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write(out / "report.md", text + "\n"))
        for table in tables:
            written.append(atomic_write(out / f"{table.key}.csv", table.csv()))
    return text, [Path(p) for p in written]

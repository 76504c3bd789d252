"""Zero-shot scene classification (SPEC section 6), on the registered benchmarks or any CSV.

Per data set: the two satellite prompts per class, normalised text embeddings averaged and
renormalised; images through the CLIP eval transform; top-1 / top-5 in percent. The headline is
the mean top-1 over the sets evaluated. The command line is ``farslip eval classification``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from farslip.transforms import eval_transform

from farslip.data.csv_data import read_labels

from .datasets import checked_paths, csv_set_present, label_indices, read_classnames, require_dir, resolve_user_path
from .encode import Runtime, encode_image_files, text_classifier
from .metrics import topk_accuracy
from .registry import CLASSIFICATION, lookup
from .runner import run_datasets

log = logging.getLogger(__name__)

PROMPTS = ("a satellite photo of {}.", "a satellite image of {}")
HEADLINE = ("top1", "top5")
PathLike = Union[str, Path]


def dataset_present(data_root: PathLike, name: str) -> bool:
    """The registered set ``name`` is present under ``data_root`` (its folder or CSV exists)."""
    return csv_set_present(Path(data_root), CLASSIFICATION[name].csv)


def classify_csv(model, tokenizer, csv: Path, classnames: Path, image_root: Path, run: Runtime,
                 desc: str = "classification") -> dict:
    """Top-1/top-5 of one CSV (``filepath``, ``label``) against the class list in ``classnames``.

    Rows with an empty filepath or label are dropped and counted (``rows``: read, used, dropped by
    why; in results.json and results.md); labels are class names or indices.
    """
    items, rows = read_labels(str(csv))
    names = read_classnames(classnames)
    targets = torch.tensor(label_indices([item.label for item in items], names, csv))
    paths = checked_paths([item.path for item in items], image_root, csv)
    weights = text_classifier(model, tokenizer, names, PROMPTS, run)
    features = encode_image_files(model, paths, eval_transform(model.visual.image_size), run, desc)
    metrics = topk_accuracy(features @ weights, targets, ks=(1, 5))
    return {**metrics, "num_images": len(paths), "num_classes": len(names), "rows": rows, "csv": str(csv),
            "classnames": str(classnames)}


def evaluate_classification(model, tokenizer, data_root: Optional[PathLike], datasets: Optional[Sequence[str]] = None,
                            *, batch_size: int = 64, workers: int = 4, device: str = "cpu", precision: str = "fp32",
                            csv: Optional[PathLike] = None, classnames: Optional[PathLike] = None,
                            name: Optional[str] = None, image_root: Optional[PathLike] = None,
                            keep_going: bool = False) -> dict:
    """Zero-shot classification of ``model`` on registered sets, or on one ``csv`` of your own.

    ``datasets``: registered names (default: all eight). With ``csv`` only that file is evaluated,
    under ``name`` (default: the file's stem) with ``classnames`` (default: ``classnames.txt``
    beside the CSV); both are looked up as given (absolute or relative to the current directory),
    then under ``data_root``. Image paths in a CSV are relative
    to ``image_root`` (default ``data_root``). Returns ``{"datasets": {name: {top1, top5, ...}},
    "failed": {...}, "mean_top1", "mean_top5"}``; a failing set raises
    :class:`~farslip.eval.runner.DatasetFailed` unless ``keep_going``.
    """
    model.eval()
    run = Runtime(batch_size, workers, device, precision)
    root = Path(data_root) if data_root is not None else None
    if csv is None and root is None:
        raise ValueError("classification needs a data root (--data-root or FARSLIP_DATA) or a --csv")
    csv_path = resolve_user_path(csv, root, "--csv") if csv is not None else None
    images = Path(image_root) if image_root is not None else (root if root is not None else csv_path.parent)

    def one(set_name: str) -> dict:
        if csv_path is not None:
            names_path = resolve_user_path(classnames, root, "--classnames") if classnames \
                else csv_path.parent / "classnames.txt"
            return classify_csv(model, tokenizer, csv_path, names_path, images, run, desc=set_name)
        spec = CLASSIFICATION[set_name]
        require_dir(root / Path(spec.csv).parent, f"classification data set {spec.name}")
        metrics = classify_csv(model, tokenizer, root / spec.csv, root / spec.classnames, images, run, desc=spec.name)
        return {**metrics, "note": spec.note} if spec.note else metrics

    if csv_path is not None:
        names = [name or csv_path.stem]
    else:
        names = [lookup(CLASSIFICATION, n, "classification").name for n in datasets or CLASSIFICATION]
    return run_datasets("classification", names, one, HEADLINE, keep_going)


"""Zero-shot image-text retrieval (SPEC section 6), on the registered benchmarks or any CSV.

Rows repeat images (several captions each) and captions (several images each): both are
de-duplicated and every query keeps its set of positives; R@1/5/10 per direction, their mean per
direction (the paper's cells) and the mean of all six. The command line is ``farslip eval retrieval``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from farslip.transforms import eval_transform

from farslip.data.csv_data import read_pairs_counted

from .datasets import checked_paths, csv_set_present, require_dir, resolve_user_path
from .encode import Runtime, encode_image_files, encode_texts
from .metrics import deduplicate_pairs, retrieval_recall
from .registry import RETRIEVAL, lookup
from .runner import run_datasets

HEADLINE = ("mean_recall", "image_to_text_mean", "text_to_image_mean")
PathLike = Union[str, Path]


def dataset_present(data_root: PathLike, name: str) -> bool:
    """The registered set ``name`` is present under ``data_root`` (its CSV, or its own folder, exists)."""
    return csv_set_present(Path(data_root), RETRIEVAL[name].csv)


def retrieve_csv(model, tokenizer, csv: Path, caption_key: str, prefix: str, image_root: Path, run: Runtime,
                 desc: str = "retrieval") -> dict:
    """Recall metrics of one CSV (``filepath`` + ``caption_key``); ``prefix`` goes before each caption.

    Rows with an empty filepath or caption are dropped and counted (``rows``: read, used, dropped by why).
    """
    items, rows = read_pairs_counted(str(csv), caption_column=caption_key)
    images, captions, pairs = deduplicate_pairs([item.path for item in items], [item.caption for item in items])
    paths = checked_paths(images, image_root, csv)
    image_features = encode_image_files(model, paths, eval_transform(model.visual.image_size), run, f"{desc} images")
    text_features = encode_texts(model, tokenizer, [prefix + c for c in captions], run, f"{desc} texts")
    metrics = retrieval_recall(image_features, text_features, pairs)
    return {**metrics, "num_rows": len(items), "rows": rows, "num_images": len(images), "num_captions": len(captions),
            "csv": str(csv), "caption_key": caption_key, "caption_prefix": prefix}


def evaluate_retrieval(model, tokenizer, data_root: Optional[PathLike], datasets: Optional[Sequence[str]] = None,
                       *, batch_size: int = 64, workers: int = 4, device: str = "cpu", precision: str = "fp32",
                       csv: Optional[PathLike] = None, caption_key: str = "title", caption_prefix: str = "",
                       name: Optional[str] = None, image_root: Optional[PathLike] = None,
                       keep_going: bool = False) -> dict:
    """Zero-shot retrieval of ``model`` on registered sets, or on one ``csv`` of your own.

    ``datasets``: registered names (default: all four). With ``csv`` (as given, else under
    ``data_root``) only that file is evaluated, under ``name`` (default: its stem), reading captions
    from ``caption_key`` with ``caption_prefix`` prepended. Image paths are relative to
    ``image_root`` (default ``data_root``). Returns ``{"datasets": {name: {image_to_text_R@1, ...,
    mean_recall, ...}}, "failed": {...}, "mean_mean_recall", ...}``; a failing set raises
    :class:`~farslip.eval.runner.DatasetFailed` unless ``keep_going``.
    """
    model.eval()
    run = Runtime(batch_size, workers, device, precision)
    root = Path(data_root) if data_root is not None else None
    if csv is None and root is None:
        raise ValueError("retrieval needs a data root (--data-root or FARSLIP_DATA) or a --csv")
    csv_path = resolve_user_path(csv, root, "--csv") if csv is not None else None
    images = Path(image_root) if image_root is not None else (root if root is not None else csv_path.parent)

    def one(set_name: str) -> dict:
        if csv_path is not None:
            return retrieve_csv(model, tokenizer, csv_path, caption_key, caption_prefix, images, run, desc=set_name)
        spec = RETRIEVAL[set_name]
        require_dir((root / spec.csv).parent, f"retrieval data set {spec.name}")
        return retrieve_csv(model, tokenizer, root / spec.csv, spec.caption_key, spec.prefix, images, run,
                            desc=spec.name)

    if csv_path is not None:
        names = [name or csv_path.stem]
    else:
        names = [lookup(RETRIEVAL, n, "retrieval").name for n in datasets or RETRIEVAL]
    return run_datasets("retrieval", names, one, HEADLINE, keep_going)


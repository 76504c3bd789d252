"""The three metrics of the paper's tables, as pure tensor functions (SPEC section 6).

Kept free of models and files so that each can be checked against a hand-worked example.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch

from .registry import IGNORE_INDEX

RECALL_KS = (1, 5, 10)  # the paper's cells: the mean of these per direction
EXTRA_KS = (100,)  # reported too (the reference prints R@100), outside every mean


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent for ``logits`` [N, C] and integer ``targets`` [N], with the exact
    counts: ``top{k}`` (percent, = 100 * ``top{k}_hits`` / ``num_samples``) and ``top{k}_hits``.

    ``k`` larger than the number of classes counts every sample as a hit (as top-C would).
    """
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} logits rows but {targets.shape[0]} targets")
    ks = list(ks)
    total = int(logits.shape[0])
    k_max = min(max(ks), logits.shape[1])
    ranked = logits.topk(k_max, dim=1).indices  # [N, k_max], best first
    hit_at = ranked == targets.view(-1, 1)
    result: dict = {"num_samples": total}
    for k in ks:
        hits = int(hit_at[:, : min(k, k_max)].any(dim=1).sum())
        result[f"top{k}"] = 100.0 * hits / total if total else math.nan
        result[f"top{k}_hits"] = hits
    return result


def deduplicate_pairs(images: Sequence[str], captions: Sequence[str]) -> tuple[list[str], list[str], torch.Tensor]:
    """Rows of (image, caption) -> unique images, unique captions (first-seen order) and the pairs.

    The returned ``pairs`` [M, 2] holds (image index, caption index) of every distinct row: an
    image's positives are all captions it was paired with, and a caption's all its images.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    image_index: dict[str, int] = {}
    caption_index: dict[str, int] = {}
    pairs = {(image_index.setdefault(i, len(image_index)), caption_index.setdefault(c, len(caption_index)))
             for i, c in zip(images, captions)}
    pair_tensor = torch.tensor(sorted(pairs), dtype=torch.long).view(-1, 2)
    return list(image_index), list(caption_index), pair_tensor


def _hits(queries: torch.Tensor, keys: torch.Tensor, positive_keys: torch.Tensor, num_keys: int,
          k_max: int, chunk: int) -> torch.Tensor:
    """[Q, k_max] bool: is the j-th best key of each query one of its positives?

    ``positive_keys`` encodes each (query, key) positive as ``query * num_keys + key``; similarities
    are computed ``chunk`` queries at a time so that 30K x 30K never sits in memory at once.
    """
    out = []
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start:start + chunk] @ keys.T
        top = sims.topk(k_max, dim=1).indices
        rows = torch.arange(start, start + top.shape[0]).view(-1, 1)
        out.append(torch.isin(rows * num_keys + top, positive_keys))
    return torch.cat(out)


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, pairs: torch.Tensor,
                     ks: Sequence[int] = RECALL_KS, chunk: int = 1024,
                     extra_ks: Sequence[int] = EXTRA_KS) -> dict[str, float]:
    """Recall@k (percent) in both directions over de-duplicated images and captions.

    A query is a hit at k when *any* of its positives ranks in its top k (k beyond the number of
    keys: every query with a positive counts). Returns, per direction ``d`` (``image_to_text``,
    ``text_to_image``) and k in ``ks`` + ``extra_ks``: ``d_R@k`` (percent) with its exact count
    ``d_hits@k`` out of ``d_queries``; the per-direction means over ``ks`` only, ``d_mean`` (the
    paper's table cells), and ``mean_recall`` over the six R@1/5/10.
    """
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    img_pos = pairs[:, 0] * n_txt + pairs[:, 1]
    txt_pos = pairs[:, 1] * n_img + pairs[:, 0]
    all_ks = list(dict.fromkeys([*ks, *extra_ks]))
    result: dict = {}
    for direction, queries, keys, positives, n_keys in (
        ("image_to_text", image_features, text_features, img_pos, n_txt),
        ("text_to_image", text_features, image_features, txt_pos, n_img),
    ):
        n_queries = int(queries.shape[0])
        k_max = min(max(all_ks), n_keys)
        hit_at = _hits(queries, keys, positives, n_keys, k_max, chunk)
        result[f"{direction}_queries"] = n_queries
        for k in all_ks:
            hits = int(hit_at[:, : min(k, k_max)].any(dim=1).sum())
            result[f"{direction}_hits@{k}"] = hits
            result[f"{direction}_R@{k}"] = 100.0 * hits / n_queries if n_queries else math.nan
        result[f"{direction}_mean"] = sum(result[f"{direction}_R@{k}"] for k in ks) / len(ks)
    result["mean_recall"] = sum(result[f"{d}_R@{k}"] for d in ("image_to_text", "text_to_image") for k in ks) / (2 * len(ks))
    return result


class IoUAccumulator:
    """Dataset-wide intersections and unions per class (mmsegmentation's mIoU, SPEC section 6).

    ``update`` takes a predicted and a ground-truth label map of one image; pixels labelled
    ``ignore_index`` (default the registry's ``IGNORE_INDEX``, 255) do not count. Ground-truth
    labels outside ``[0, num_classes)`` other than the ignore label are also left out and counted
    in ``out_of_range`` so that callers can report them.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intersection = np.zeros(num_classes, dtype=np.int64)
        self.union = np.zeros(num_classes, dtype=np.int64)
        self.label_area = np.zeros(num_classes, dtype=np.int64)
        self.out_of_range = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        valid = gt != self.ignore_index
        in_range = (gt >= 0) & (gt < self.num_classes)
        self.out_of_range += int((valid & ~in_range).sum())
        keep = valid & in_range
        gt, pred = gt[keep], pred[keep]
        n = self.num_classes
        inter = np.bincount(gt[gt == pred], minlength=n)[:n]
        area_gt = np.bincount(gt, minlength=n)[:n]
        area_pred = np.bincount(pred, minlength=n)[:n]
        self.intersection += inter
        self.union += area_gt + area_pred - inter
        self.label_area += area_gt

    def per_class_iou(self) -> list[float]:
        """IoU in percent per class; NaN where the class never occurs in prediction or truth."""
        return [100.0 * i / u if u > 0 else math.nan for i, u in zip(self.intersection, self.union)]

    def miou(self) -> float:
        """Mean IoU (percent) over the classes with non-zero union; NaN if there are none."""
        ious = [v for v in self.per_class_iou() if not math.isnan(v)]
        return sum(ious) / len(ious) if ious else math.nan

    def pixel_accuracy(self) -> float:
        """Correct valid pixels / valid pixels, in percent (mmsegmentation's aAcc)."""
        total = self.label_area.sum()
        return 100.0 * self.intersection.sum() / total if total else math.nan

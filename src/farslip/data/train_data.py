"""The trainer's data entry points: :func:`get_train_data`, :func:`get_val_data` and the batch collate.

A batch is a dict of CPU tensors (B images, N = ``--max-boxes``, S = image size, L = text length):

- ``image`` [B, 3, S, S], ``text`` [B, L];
- with crops: ``crop`` [Mc, 3, S, S] (valid crops only, image-major), ``crop_box`` [B, N, 4]
  (normalised xyxy of the original image, zero padded), ``crop_valid`` [B, N] bool;
- with objects: ``obj_box`` [B, N, 4], ``obj_valid`` [B, N], ``obj_text`` [Mo, L],
  ``obj_label`` [Mo] long (-1: free text, no category) for all Mo objects, and ``obj``
  [Mp, 3, S, S] the crops of those that a loss looks at (``object_pixels``): all of them, or
  only some, and then ``obj_rows`` [Mp] says which object each crop is;
- ``skipped``: long scalar, bad samples this worker skipped since its previous batch;
- MGRS objects: ``dropped_boxes`` [len(DROP_REASONS)] long, the objects of the batch's images
  looked at and not kept, per reason of :data:`farslip.data.mgrs.DROP_REASONS`;
- webdataset only: ``position`` [3] long, (worker, raw samples taken, batches made) after this
  batch (see :mod:`farslip.data.rs5m`), for step checkpoints and exact mid-epoch resume.

Training views are uint8 (``farslip.data.pixels``; the trainer normalises them on the device
with ``normalize_views``); validation images are the normalised float32 of the eval transform.
Padding exists only in the masks and boxes: no image tensor is built for a padding slot.
Training batches always hold ``batch_size`` images (bad samples are skipped and replaced, see
:mod:`farslip.data.rs5m` and :mod:`farslip.data.image_files`), so ranks can gather features.
"""
from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .csv_data import check_files, image_root, read_pairs
from .image_files import EpochTagged, ImageFileDataset, probe_images
from .jitter import hue_tables
from .mgrs import DROP_REASONS, MgrsItems
from .pixels import RESIZES, SquashViews
from .rs5m import RS5MStream, SharedEpoch, StreamStart, check_shards, expand_shards
from .transforms import eval_transform
from .views import CROP_METHODS, OBJECT_PIXELS, ViewMaker

logger = logging.getLogger(__name__)

DATASET_TYPES = ("webdataset", "json", "csv")
Tokenizer = Callable[[list[str]], torch.Tensor]


class Collate:
    """Stacks per-sample dicts (from :class:`~farslip.data.views.ViewMaker`) into a batch dict."""

    def __init__(self, tokenizer: Tokenizer, max_boxes: int) -> None:
        self.tokenizer = tokenizer
        self.max_boxes = max_boxes

    def _views(self, samples: list[dict], kind: str, image: torch.Tensor, batch: dict) -> None:
        """Adds ``kind`` [M,3,S,S], ``kind_box`` [B,N,4], ``kind_valid`` [B,N] for ``kind`` in crop/obj."""
        valid = torch.zeros(len(samples), self.max_boxes, dtype=torch.bool)
        boxes = torch.zeros(len(samples), self.max_boxes, 4)
        views: list[torch.Tensor] = []
        rows: list[int] = []  # object row of each view, when samples build only some (obj_rows)
        start = 0
        for b, sample in enumerate(samples):
            count = len(sample[f"{kind}_box"])
            if count > self.max_boxes:
                raise ValueError(f"sample {b} has {count} {kind} views, more than max_boxes={self.max_boxes}")
            valid[b, :count] = True
            boxes[b, :count] = sample[f"{kind}_box"]
            views.extend(sample[kind])
            rows.extend(start + i for i in sample.get(f"{kind}_rows", range(len(sample[kind]))))
            start += count
        batch[kind] = torch.stack(views) if views else image.new_zeros((0, *image.shape[1:]))
        batch[f"{kind}_box"], batch[f"{kind}_valid"] = boxes, valid
        if any(f"{kind}_rows" in s for s in samples):
            batch[f"{kind}_rows"] = torch.tensor(rows, dtype=torch.long)

    def __call__(self, samples: list[dict]) -> dict:
        image = torch.stack([s["image"] for s in samples])
        text = self.tokenizer([s["caption"] for s in samples])
        batch = {"image": image, "text": text}
        if "crop" in samples[0]:
            self._views(samples, "crop", image, batch)
        if "obj" in samples[0]:
            self._views(samples, "obj", image, batch)
            texts = [t for s in samples for t in s["obj_text"]]
            batch["obj_text"] = self.tokenizer(texts) if texts else text.new_zeros((0, text.shape[1]))
            batch["obj_label"] = torch.tensor([y for s in samples for y in s["obj_label"]], dtype=torch.long)
        batch["skipped"] = torch.tensor(sum(s["skipped"] for s in samples), dtype=torch.long)
        if "dropped_boxes" in samples[0]:
            batch["dropped_boxes"] = torch.tensor(
                [sum(s["dropped_boxes"].get(reason, 0) for s in samples) for reason in DROP_REASONS], dtype=torch.long)
        return batch


@dataclass
class DataInfo:
    """A loader with its epoch length; ``set_epoch`` reshuffles (DistributedSampler / shared epoch).

    ``stream_workers`` is the number of logical workers of a webdataset stream (``--workers``,
    at least 1) and 0 for map-style data, whose order does not depend on the workers.
    """

    dataloader: DataLoader
    num_samples: int
    num_batches: int
    sampler: Optional[EpochTagged] = None
    shared_epoch: Optional[SharedEpoch] = None
    batch_size: int = 0
    stream_workers: int = 0

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        if self.shared_epoch is not None:
            self.shared_epoch.set(epoch)

    def resume_at(self, epoch: int, batches: int, streams: Optional[list[tuple[int, int]]] = None) -> None:
        """Let ``epoch`` begin after its first ``batches`` batches (this rank's).

        Map-style data starts its sampler that many batches in; a webdataset stream needs the
        (raw samples taken, batches made) of each of its workers, ``streams``. Call before the
        first iteration of the loader.
        """
        if not 0 <= batches < self.num_batches:
            raise ValueError(f"cannot resume after batch {batches} of an epoch of {self.num_batches}")
        if self.sampler is not None:
            self.sampler.start_at(epoch, batches * self.batch_size)
            return
        if streams is None or len(streams) != self.stream_workers:
            raise ValueError(f"a webdataset stream resumes with one position per worker "
                             f"({self.stream_workers}), got {streams!r}")
        start = StreamStart(epoch, batches, tuple(int(t) for t, _ in streams), tuple(int(m) for _, m in streams))
        self.dataloader.dataset.resume_at(start)


def _loader_kwargs(workers: int, seed: int) -> dict:
    """Worker settings of the training loaders. The loader draws its workers' base seed from its
    own generator, not from torch's global one, so creating an iterator (each epoch with
    ``--workers 0``, once with persistent workers) never moves the training RNG: a resumed run's
    global RNG follows the uninterrupted run's. (The data draws nothing from worker seeds: every
    sample's randomness comes from its own seed, see :mod:`farslip.data.views`.)"""
    return dict(
        num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )


def _crop_method(args: argparse.Namespace, crops: bool) -> Optional[str]:
    if not crops:
        return None
    if args.local_method not in CROP_METHODS:
        raise ValueError(f"crop views need --local-method in {CROP_METHODS}, got {args.local_method!r}")
    return args.local_method


def _webdataset(args: argparse.Namespace, views: ViewMaker, collate: Collate, epoch: int) -> DataInfo:
    if not args.train_num_samples:
        raise ValueError("--train-num-samples is required for --train-dataset-type webdataset (no size file)")
    urls = check_shards(expand_shards(args.train_data), args.train_data)
    workers = max(args.workers, 1)
    if not args.dataset_resampled and len(urls) < args.world_size * workers:
        raise ValueError(
            f"{len(urls)} shard(s) cannot be split over {args.world_size} rank(s) x {workers} worker(s): "
            "use fewer --workers, more shards, or --dataset-resampled"
        )
    num_batches = math.ceil(args.train_num_samples / (args.batch_size * args.world_size))
    shared_epoch = SharedEpoch(epoch)
    dataset = RS5MStream(
        urls, views, collate, args.batch_size, num_batches, shared_epoch,
        seed=args.seed, rank=args.rank, world_size=args.world_size, resampled=args.dataset_resampled,
    )
    loader = DataLoader(dataset, batch_size=None, **_loader_kwargs(args.workers, args.seed))
    logger.info("train data: %d shard(s), %d batch(es) of %d per rank per epoch",
                len(urls), num_batches, args.batch_size)
    return DataInfo(loader, num_batches * args.batch_size * args.world_size, num_batches, shared_epoch=shared_epoch,
                    batch_size=args.batch_size, stream_workers=workers)


def _file_dataset(args: argparse.Namespace, views: ViewMaker, collate: Collate, objects: bool, epoch: int) -> DataInfo:
    if args.train_dataset_type == "json":
        items = MgrsItems(args.train_data, args.max_boxes, args.min_size, args.max_size, objects=objects)
    else:
        items = read_pairs(args.train_data)
    if args.train_num_samples:
        logger.info("--train-num-samples is ignored for %s data: an epoch is one pass", args.train_dataset_type)
    dataset = ImageFileDataset(items, image_root(args.train_data, args.root_train_img_dir), views, seed=args.seed)
    probe_images(dataset, args.train_data)
    sampler = EpochTagged(
        DistributedSampler(
            dataset, num_replicas=args.world_size, rank=args.rank, shuffle=True, seed=args.seed, drop_last=True
        )
    )
    sampler.set_epoch(epoch)
    num_batches = len(sampler) // args.batch_size
    if num_batches == 0:
        raise ValueError(
            f"{args.train_data}: {len(dataset)} item(s) give no full batch of {args.batch_size} "
            f"on {args.world_size} rank(s): "
            + (f"lower --batch-size to at most {len(sampler)} (the items per rank)" if len(sampler)
               else f"use at most {len(dataset)} rank(s)")
        )
    loader = DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True, collate_fn=collate,
        **_loader_kwargs(args.workers, args.seed),
    )
    logger.info("train data: %d item(s), %d batch(es) of %d per rank per epoch",
                len(dataset), num_batches, args.batch_size)
    return DataInfo(loader, num_batches * args.batch_size * args.world_size, num_batches, sampler=sampler,
                    batch_size=args.batch_size)


def get_train_data(
    args: argparse.Namespace,
    tokenizer: Tokenizer,
    image_size: Union[int, tuple[int, int]],
    *,
    crops: bool,
    objects: bool,
    epoch: int = 0,
    object_pixels: str = "all",
) -> DataInfo:
    """The training loader for ``args.train_dataset_type`` with crop and/or object views as asked.

    ``image_size`` is the model's input size (an int or ``model.visual.image_size``'s (h, w)).
    ``object_pixels`` (``all`` / ``labelled`` / ``none``) says which object crops to build (the
    trainer passes what its losses read); ``args.view_resize`` (``torch`` / ``pil``, default
    torch) the resize kernel of the views (see :mod:`farslip.data.pixels`).
    """
    if args.train_dataset_type not in DATASET_TYPES:
        raise ValueError(f"--train-dataset-type must be one of {DATASET_TYPES}, got {args.train_dataset_type!r}")
    if objects and args.train_dataset_type != "json":
        raise ValueError(f"object views need MGRS json data (--train-dataset-type json), not {args.train_dataset_type}")
    if object_pixels not in OBJECT_PIXELS:
        raise ValueError(f"object_pixels must be one of {OBJECT_PIXELS}, got {object_pixels!r}")
    resize = getattr(args, "view_resize", "torch")
    if resize not in RESIZES:
        raise ValueError(f"--view-resize must be one of {RESIZES}, got {resize!r}")
    jitter = args.train_dataset_type == "json"
    if jitter:
        hue_tables()  # built once here, before the workers fork, so that they share it
    views = ViewMaker(
        SquashViews(image_size, jitter=jitter, resize=resize),
        crop_method=_crop_method(args, crops),
        max_boxes=args.max_boxes,
        object_pixels=object_pixels if objects else "all",
    )
    collate = Collate(tokenizer, args.max_boxes)
    if args.train_dataset_type == "webdataset":
        return _webdataset(args, views, collate, epoch)
    return _file_dataset(args, views, collate, objects, epoch)


def get_val_data(
    args: argparse.Namespace, image_size_or_preprocess: Union[int, tuple[int, int], Callable], tokenizer: Tokenizer
) -> Optional[DataInfo]:
    """The validation loader over ``args.val_data`` (a ``filepath,title`` CSV), or None without one.

    Every image must exist (checked up front, naming the missing files); batches are
    ``{"image", "text", "skipped"}`` in CSV order with the evaluation transform.
    """
    if not args.val_data:
        return None
    if callable(image_size_or_preprocess):
        preprocess = image_size_or_preprocess
    else:
        preprocess = eval_transform(image_size_or_preprocess)
    items = read_pairs(args.val_data)
    root = image_root(args.val_data, args.root_val_img_dir)
    check_files(items, root, args.val_data)
    dataset = ImageFileDataset(items, root, ViewMaker(preprocess), replace_bad=False)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, collate_fn=Collate(tokenizer, args.max_boxes),
        num_workers=args.workers, pin_memory=torch.cuda.is_available(),
    )
    return DataInfo(loader, len(dataset), len(loader))

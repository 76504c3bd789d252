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

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch.utils.data import DataLoader, DistributedSampler

from farslip.config import DataConfig

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


def _crop_method(data: DataConfig) -> Optional[str]:
    if not data.crops:
        return None
    if data.local_method not in CROP_METHODS:
        raise ValueError(f"crop views need --local-method in {CROP_METHODS}, got {data.local_method!r}")
    return data.local_method


def _webdataset(data: DataConfig, views: ViewMaker, collate: Collate, epoch: int, seed: int,
                rank: int, world_size: int) -> DataInfo:
    if not data.train_num_samples:
        raise ValueError("--train-num-samples is required for --train-dataset-type webdataset (no size file)")
    urls = check_shards(expand_shards(data.train_data), data.train_data)
    workers = max(data.workers, 1)
    if not data.dataset_resampled and len(urls) < world_size * workers:
        raise ValueError(
            f"{len(urls)} shard(s) cannot be split over {world_size} rank(s) x {workers} worker(s): "
            "use fewer --workers, more shards, or --dataset-resampled")
    num_batches = math.ceil(data.train_num_samples / (data.batch_size * world_size))
    shared_epoch = SharedEpoch(epoch)
    dataset = RS5MStream(
        urls, views, collate, data.batch_size, num_batches, shared_epoch,
        seed=seed, rank=rank, world_size=world_size, resampled=data.dataset_resampled,
    )
    loader = DataLoader(dataset, batch_size=None, **_loader_kwargs(data.workers, seed))
    logger.info("train data: %d shard(s), %d batch(es) of %d per rank per epoch",
                len(urls), num_batches, data.batch_size)
    return DataInfo(loader, num_batches * data.batch_size * world_size, num_batches, shared_epoch=shared_epoch,
                    batch_size=data.batch_size, stream_workers=workers)


def _file_dataset(data: DataConfig, views: ViewMaker, collate: Collate, epoch: int, seed: int,
                  rank: int, world_size: int) -> DataInfo:
    if data.train_dataset_type == "json":
        items = MgrsItems(data.train_data, data.max_boxes, data.min_size, data.max_size, objects=data.objects)
    else:
        items = read_pairs(data.train_data)
    if data.train_num_samples:
        logger.info("--train-num-samples is ignored for %s data: an epoch is one pass", data.train_dataset_type)
    dataset = ImageFileDataset(items, image_root(data.train_data, data.root_train_img_dir), views, seed=seed)
    probe_images(dataset, data.train_data)
    sampler = EpochTagged(
        DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    )
    sampler.set_epoch(epoch)
    num_batches = len(sampler) // data.batch_size
    if num_batches == 0:
        raise ValueError(
            f"{data.train_data}: {len(dataset)} item(s) give no full batch of {data.batch_size} "
            f"on {world_size} rank(s): "
            + (f"lower --batch-size to at most {len(sampler)} (the items per rank)" if len(sampler)
               else f"use at most {len(dataset)} rank(s)")
        )
    loader = DataLoader(
        dataset, batch_size=data.batch_size, sampler=sampler, drop_last=True, collate_fn=collate,
        **_loader_kwargs(data.workers, seed),
    )
    logger.info("train data: %d item(s), %d batch(es) of %d per rank per epoch",
                len(dataset), num_batches, data.batch_size)
    return DataInfo(loader, num_batches * data.batch_size * world_size, num_batches, sampler=sampler,
                    batch_size=data.batch_size)


def get_train_data(
    data: DataConfig,
    tokenizer: Tokenizer,
    image_size: Union[int, tuple[int, int]],
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
) -> DataInfo:
    """The training loader of ``data`` (its format, views and batch size) for this rank.

    ``image_size`` is the model's input size (an int or ``model.visual.image_size``'s (h, w));
    ``data.crops`` / ``data.objects`` say which local views to build, ``data.object_pixels``
    (``all`` / ``labelled`` / ``none``) which object crops (the trainer derives what its losses
    read), ``data.view_resize`` the resize kernel and ``data.color_jitter`` the stage-2 jitter
    (see :mod:`farslip.data.pixels`). ``seed`` fixes the order and every sample's draws.
    """
    if not isinstance(data, DataConfig):
        raise TypeError(f"get_train_data takes a farslip.config.DataConfig, not {type(data).__name__}")
    if data.train_dataset_type not in DATASET_TYPES:
        raise ValueError(f"--train-dataset-type must be one of {DATASET_TYPES}, got {data.train_dataset_type!r}")
    if data.objects and data.train_dataset_type != "json":
        raise ValueError(f"object views need MGRS json data (--train-dataset-type json), not {data.train_dataset_type}")
    if data.object_pixels not in OBJECT_PIXELS:
        raise ValueError(f"object_pixels must be one of {OBJECT_PIXELS}, got {data.object_pixels!r}")
    if data.view_resize not in RESIZES:
        raise ValueError(f"--view-resize must be one of {RESIZES}, got {data.view_resize!r}")
    if data.color_jitter:
        hue_tables()  # built once here, before the workers fork, so that they share it
    views = ViewMaker(
        SquashViews(image_size, jitter=data.color_jitter, resize=data.view_resize),
        crop_method=_crop_method(data),
        max_boxes=data.max_boxes,
        object_pixels=data.object_pixels if data.objects else "all",
    )
    collate = Collate(tokenizer, data.max_boxes)
    build = _webdataset if data.train_dataset_type == "webdataset" else _file_dataset
    return build(data, views, collate, epoch, seed, rank, world_size)


def get_val_data(
    data: DataConfig, image_size_or_preprocess: Union[int, tuple[int, int], Callable], tokenizer: Tokenizer
) -> Optional[DataInfo]:
    """The validation loader over ``data.val_data`` (a ``filepath,title`` CSV), or None without one.

    Every image must exist (checked up front, naming the missing files); batches are
    ``{"image", "text", "skipped"}`` in CSV order with the evaluation transform.
    """
    if not data.val_data:
        return None
    if callable(image_size_or_preprocess):
        preprocess = image_size_or_preprocess
    else:
        preprocess = eval_transform(image_size_or_preprocess)
    items = read_pairs(data.val_data)
    root = image_root(data.val_data, data.root_val_img_dir)
    check_files(items, root, data.val_data)
    dataset = ImageFileDataset(items, root, ViewMaker(preprocess), replace_bad=False)
    loader = DataLoader(
        dataset, batch_size=data.batch_size, shuffle=False, collate_fn=Collate(tokenizer, data.max_boxes),
        num_workers=data.workers, pin_memory=torch.cuda.is_available(),
    )
    return DataInfo(loader, len(dataset), len(loader))

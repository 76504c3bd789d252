"""Map-style training/validation data over image files: MGRS json items and CSV pairs.

Both formats reduce to :class:`FileItem` (an image path, a caption and optionally an object
picker); :class:`ImageFileDataset` decodes the image once and hands it to a
:class:`~farslip.data.views.ViewMaker`. Indices arrive as ``(epoch, index)`` pairs from
:class:`EpochTagged`, so the per-sample seed (seed, epoch, index) is right even in persistent
workers that never see ``set_epoch``; the augmentation of an item is therefore independent of
the number of workers and of the batch it lands in.

A bad item (missing or undecodable image, no caption) is logged and *replaced* by another item
drawn deterministically from the same seed, and the replacement is counted in the sample's
``skipped`` field: batches stay full, which the cross-rank feature gather of the losses needs.
:data:`MAX_REPLACEMENTS` bad items in a row stop the run with a :class:`DataError`.

Images are read as RGB by :func:`to_rgb`: 16-bit greyscale images (PNG/TIFF, Pillow modes ``I;16*``
and ``I``) are scaled to 8 bits (``v * 255 / 65535``) with a warning naming the file, instead of
Pillow's ``convert("RGB")``, which clips every value above 255 and turns such an image white;
floating-point images (mode ``F``) are refused.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import random
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from .views import RegionPicker, ViewMaker, sample_seed

logger = logging.getLogger(__name__)

MAX_REPLACEMENTS = 50
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
MAX_NAMED_16BIT = 20  # per process; further 16-bit images are scaled the same way, said once
_warned_16bit: set[str] = set()


class BadSample(ValueError):
    """A training sample that cannot be used (missing member/file, undecodable image, no caption)."""


class DataError(ValueError):
    """The data as a whole is unusable (every sample bad, no shard, no image): stop with this message."""


def to_rgb(image: Image.Image, name: str) -> Image.Image:
    """``image`` as a loaded 8-bit RGB image; 16-bit greyscale is scaled to 8 bits with a warning.

    ``convert("RGB")`` would clip a 16-bit image (values up to 65535) at 255; here every value v becomes
    round(v * 255 / 65535). A mode ``I`` image (32-bit integers, as some TIFFs and older Pillows
    read 16-bit files) must hold values in 0..65535 and is scaled the same way. A floating-point
    image (mode ``F``) has no agreed range: :class:`BadSample`.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise BadSample(f"{name}: a {image.mode} image with values {values.min()}..{values.max()}, outside the "
                            "16-bit range 0..65535: convert it to 8-bit RGB first")
        if name not in _warned_16bit and len(_warned_16bit) < MAX_NAMED_16BIT:
            _warned_16bit.add(name)
            more = ("; further 16-bit images are scaled the same way without a warning each"
                    if len(_warned_16bit) == MAX_NAMED_16BIT else "")
            logger.warning("%s: 16-bit image (mode %s) scaled to 8 bits (value * 255 / 65535)%s",
                           name, image.mode, more)
        scaled = (values * 255 + 32767) // 65535
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        raise BadSample(f"{name}: a floating-point image (mode F) has no agreed value range: convert it to 8-bit "
                        "(or 16-bit) RGB or greyscale first")
    return image.convert("RGB")


def open_image(source: Union[str, bytes], name: str) -> Image.Image:
    """Decode an image file path or encoded bytes to a loaded RGB PIL image; :class:`BadSample` on failure."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return to_rgb(image, name)
    except BadSample:
        raise
    except FileNotFoundError as exc:
        raise BadSample(f"{name}: image file not found") from exc
    except UnidentifiedImageError as exc:
        raise BadSample(f"{name}: not a recognised image format") from exc
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, ... for broken data
        raise BadSample(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc


@dataclass
class FileItem:
    """One record: image path (absolute or relative to the dataset root), caption, optional objects."""

    path: str
    caption: str
    regions: Optional[RegionPicker] = None


class EpochTagged(Sampler):
    """Wraps a sampler with ``epoch``/``set_epoch`` (e.g. DistributedSampler) to yield ``(epoch, index)``.

    :meth:`start_at` makes one epoch begin after its first ``offset`` indices (a mid-epoch
    resume: the consumed batches times the batch size); every other epoch is whole.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.offset_epoch, self.offset = -1, 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def start_at(self, epoch: int, offset: int) -> None:
        if not 0 <= offset <= len(self.sampler):
            raise ValueError(f"offset {offset} outside this rank's {len(self.sampler)} indices")
        self.offset_epoch, self.offset = epoch, offset

    def _skip(self) -> int:
        return self.offset if self.sampler.epoch == self.offset_epoch else 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, index) for index in itertools.islice(self.sampler, self._skip(), None))

    def __len__(self) -> int:
        return len(self.sampler) - self._skip()


class ImageFileDataset(Dataset):
    """Items from ``items`` (a sequence of :class:`FileItem`), images under ``root``, views by ``views``.

    ``replace_bad=False`` (validation) raises :class:`BadSample` instead of replacing an item.
    ``dataset[i]`` or ``dataset[(epoch, i)]`` returns the ViewMaker's dict plus ``skipped``.
    """

    def __init__(
        self,
        items: Sequence[FileItem],
        root: Optional[str],
        views: ViewMaker,
        seed: int = 0,
        replace_bad: bool = True,
    ) -> None:
        if len(items) == 0:
            raise ValueError("dataset has no items")
        self.items = items
        self.root = root
        self.views = views
        self.seed = seed
        self.replace_bad = replace_bad

    def __len__(self) -> int:
        return len(self.items)

    def path(self, item: FileItem) -> str:
        return os.path.join(self.root, item.path) if self.root else item.path

    def load(self, epoch: int, index: int) -> dict:
        """The sample of item ``index``; raises :class:`BadSample` if it is unusable."""
        item = self.items[index]  # MGRS items parse lazily and may raise BadSample here
        image = open_image(self.path(item), self.path(item))
        sample = self.views(image, item.caption, sample_seed(self.seed, epoch, index), item.regions)
        dropped = getattr(item.regions, "dropped", None)  # MGRS objects not kept, by reason
        if dropped is not None:
            sample["dropped_boxes"] = dict(dropped)
        return sample

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not self.replace_bad:
            return {**self.load(epoch, index), "skipped": 0}
        rng = random.Random(sample_seed(self.seed, epoch, index, "replace"))
        last = None
        for skipped in range(MAX_REPLACEMENTS):
            try:
                return {**self.load(epoch, index), "skipped": skipped}
            except BadSample as exc:
                logger.warning("skipping item %d: %s", index, exc)
                last = exc
                index = rng.randrange(len(self.items))
        raise DataError(f"{MAX_REPLACEMENTS} bad items in a row (the last: {last}); the data set looks broken: check "
                        "its image root (--root-train-img-dir) and its files")


PROBE_ITEMS = 64


def probe_images(dataset: ImageFileDataset, source: str, flag: str = "--root-train-img-dir") -> None:
    """Start-up check that the images are where the data set says: of up to :data:`PROBE_ITEMS` items
    spread evenly over it (all of a small one), at least one image file must exist.

    A wrong image root (or a data set whose every image is missing) is then a :class:`DataError` in
    the first second, naming the data, the root and a path tried, instead of 50 warnings and a stop
    inside a loader worker. Missing images among existing ones are skipped and counted as usual.
    """
    n = len(dataset.items)
    count = min(PROBE_ITEMS, n)
    picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
    tried, bad = [], []
    for index in picks:
        try:
            item = dataset.items[index]
        except BadSample as exc:
            bad.append(str(exc))
            continue
        path = dataset.path(item)
        if os.path.isfile(path):
            return
        tried.append(path)
    checked = "every item" if len(picks) == n else f"{len(picks)} items spread over its {n}"
    if not tried:
        raise DataError(f"{source}: no usable item among {checked}, e.g. {bad[0]}")
    root = f" under {flag} {dataset.root}" if dataset.root else ""
    raise DataError(f"{source}: no image found for {checked}{root} (e.g. {tried[0]} does not exist); "
                    f"check {flag} (the folder the image paths are relative to)")


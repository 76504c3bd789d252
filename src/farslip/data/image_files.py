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
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import random
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from .views import RegionPicker, ViewMaker, sample_seed

logger = logging.getLogger(__name__)

MAX_REPLACEMENTS = 50


class BadSample(ValueError):
    """A training sample that cannot be used (missing member/file, undecodable image, no caption)."""


def open_image(source: Union[str, bytes], name: str) -> Image.Image:
    """Decode an image file path or encoded bytes to a loaded RGB PIL image; :class:`BadSample` on failure."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.convert("RGB")
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
        return self.views(image, item.caption, sample_seed(self.seed, epoch, index), item.regions)

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not self.replace_bad:
            return {**self.load(epoch, index), "skipped": 0}
        rng = random.Random(sample_seed(self.seed, epoch, index, "replace"))
        for skipped in range(MAX_REPLACEMENTS):
            try:
                return {**self.load(epoch, index), "skipped": skipped}
            except BadSample as exc:
                logger.warning("skipping item %d: %s", index, exc)
                index = rng.randrange(len(self.items))
        raise RuntimeError(f"{MAX_REPLACEMENTS} bad items in a row (last tried: item {index}); check the dataset")

"""RS5M-style webdataset shards -> batches of global views, captions and local crops (SPEC section 3).

A sample is ``<key>.img_content`` (encoded image), ``<key>.caption`` (utf-8) and
``<key>.img_name``; the common ``jpg``/``png``/``webp`` and ``txt`` member names are accepted
too. ``--train-data`` is anything webdataset expands: brace patterns, ``::``-separated lists,
URLs and ``pipe:`` commands.

Order and splitting: in each pass over the data the shard list is shuffled with a seed of
(seed, epoch, pass), identical on every rank; rank r takes every ``world_size``-th shard
starting at r and its worker w every ``num_workers``-th of those, so all (rank, worker) pairs
read disjoint shards. With ``--dataset-resampled`` each (rank, worker) instead draws shards with
replacement from its own seed. Within a pass, samples go through a shuffle buffer seeded by
(seed, epoch, rank, worker); the buffer drains at the end of the pass, so when
``--train-num-samples`` equals the data size and the shards split evenly, an epoch sees every
sample exactly once. Every rank yields exactly ``num_batches`` batches per epoch
(``with_epoch`` semantics: passes repeat as needed), split as evenly as possible over the
workers, so ranks stay in lock-step.

Reproducibility: for a fixed (seed, epoch, world size, worker count) the batches are identical
run to run, so an epoch-boundary resume sees the same data. A sample's crops depend only on
(seed, epoch, shard name, key); which samples meet in a batch depends on world size and worker
count, as in any sharded stream.

A sample that lacks a member or whose image does not decode is logged (shard and key), skipped
and counted (the next good sample carries the count to the batch's ``skipped``), and so is a
sample whose key repeats inside a shard (a repeated member, or the same key again later: only
its first sample is used); an unreadable shard is logged and passed over. The stream is
bounded: :data:`MAX_BAD_IN_A_ROW` bad samples in a row, or a whole pass over a worker's shards
without one usable sample, or without any sample at all, stop the run with a
:class:`~farslip.data.image_files.DataError` naming the shards.

``--train-data`` paths on the local disk are checked at start-up: a shard that does not exist,
or a glob (``/rs5m/*.tar``, expanded here, sorted) that matches no file, is an error at once.

Mid-epoch resume: every batch carries ``position`` = (worker, raw samples taken, batches made),
where *worker* is the logical worker that made it and *raw samples taken* counts every sample
drawn from its shuffled raw stream so far (bad ones included). A DataLoader hands out an
IterableDataset's batches round-robin over its workers (worker 0, 1, ..., 0, 1, ...), so batch
``i`` of an epoch comes from logical worker ``i % workers``. :meth:`RS5MStream.resume_at` takes
the positions of the last batch each worker had delivered when ``batches`` batches were consumed;
in that epoch each worker then re-creates its shuffled raw stream, passes over the samples it had
taken *without decoding them* (the tar is read, no image is decoded), makes only its remaining
batches, and the loader's worker ids are rotated by ``batches % workers`` so the round-robin goes
on with the worker whose turn it was. The batches that follow are then exactly those an
uninterrupted epoch would have given. Bad samples met before a position were counted in the
batches already consumed; those after it are met and counted again by the resumed stream.
"""
from __future__ import annotations

import glob
import itertools
import logging
import multiprocessing as mp
import os
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from .image_files import BadSample, DataError, open_image
from .views import ViewMaker, sample_seed

logger = logging.getLogger(__name__)

IMAGE_MEMBERS = ("img_content", "jpg", "jpeg", "png", "webp")
CAPTION_MEMBERS = ("caption", "txt")
SHUFFLE_BUFFER = 2000
SHUFFLE_INITIAL = 500
POSITION_KEY = "position"
MAX_BAD_IN_A_ROW = 1000
GLOB_CHARS = "*?["


def _is_local(url: str) -> bool:
    return not url.startswith("pipe:") and "://" not in url


def expand_shards(spec: str) -> list[str]:
    """All shard URLs of a ``--train-data`` spec (``::`` lists, brace patterns, ``${WDS_*}`` variables,
    and globs of local files, sorted); a glob that matches nothing is a
    :class:`~farslip.data.image_files.DataError`. URLs and ``pipe:`` commands are taken as given."""
    urls = []
    for url in wds.shardlists.expand_urls(spec):
        if _is_local(url) and any(c in url for c in GLOB_CHARS) and not os.path.isfile(url):
            matches = sorted(glob.glob(os.path.expanduser(url)))
            if not matches:
                raise DataError(f"--train-data {spec!r}: the pattern {url} matches no file")
            urls += matches
        else:
            urls.append(url)
    if not urls:
        raise DataError(f"--train-data {spec!r} names no shards")
    return urls


def check_shards(urls: list[str], spec: str) -> list[str]:
    """``urls``, once every local one is known to exist (else a DataError naming the missing ones)."""
    missing = [u for u in urls if _is_local(u) and not os.path.isfile(u)]
    if missing:
        raise DataError(f"--train-data {spec!r}: {len(missing)} of {len(urls)} shard(s) do not exist, e.g. "
                        f"{missing[0]}")
    return urls


def _shards(urls: list[str]) -> str:
    """``the shard a.tar`` / ``the 40 shards a.tar, b.tar, c.tar, d.tar and 36 more``."""
    names = ", ".join(urls[:4]) + (f" and {len(urls) - 4} more" if len(urls) > 4 else "")
    return f"the shard {names}" if len(urls) == 1 else f"the {len(urls)} shards {names}"


class StreamCheck:
    """The bounds and the duplicate-key check of one (rank, worker) stream (module docstring).

    ``raw_samples`` calls :meth:`new_pass` at each pass and passes its samples through
    :meth:`mark`; ``__iter__`` reports each decoded sample to :meth:`good` or :meth:`bad`.
    """

    def __init__(self, rank: int, worker: int, limit: Optional[int] = None) -> None:
        self.where = f"rank {rank} worker {worker}"
        self.limit = MAX_BAD_IN_A_ROW if limit is None else limit
        self.urls: list[str] = []
        self.in_a_row = self.raw_in_pass = self.bad_in_pass = 0
        self.last = ""
        self.repeated_members: set[tuple[str, str]] = set()  # (shard, key) with a member twice

    def new_pass(self, urls: list[str]) -> None:
        if self.raw_in_pass and self.bad_in_pass == self.raw_in_pass:
            raise DataError(f"{self.where}: a whole pass over {_shards(self.urls)} gave no usable sample "
                            f"({self.bad_in_pass} bad; the last: {self.last}); check the shards' member names "
                            f"(.{' / .'.join(IMAGE_MEMBERS)} and .{' / .'.join(CAPTION_MEMBERS)}) and images")
        self.urls, self.raw_in_pass, self.bad_in_pass = urls, 0, 0

    def good(self) -> None:
        self.in_a_row = 0

    def bad(self, exc: Exception) -> None:
        self.in_a_row += 1
        self.bad_in_pass += 1
        self.last = str(exc)
        if self.in_a_row >= self.limit:
            raise DataError(f"{self.where}: {self.in_a_row} bad samples in a row in {_shards(self.urls)} (the last: "
                            f"{self.last}); the shards look broken")

    def read_error(self, exc: Exception) -> bool:
        """webdataset handler: log an unreadable shard / tar member and carry on; remember a repeated member."""
        text = str(exc.args[0]) if exc.args else str(exc)
        if ": duplicate file name in tar file" in text:
            key, _ = wds.tariterators.base_plus_ext(text.split(": duplicate file name in tar file")[0])
            url = next((a for a in exc.args[1:] if isinstance(a, str)), None)
            self.repeated_members.add((url, key))
        logger.warning("webdataset read error (continuing): %s", exc)
        return True

    def mark(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Samples as they come; one whose key repeats in its shard gets ``__bad__`` (the reason).

        Shards are read one after the other, so the keys seen are kept for the current shard only.
        """
        seen: set[tuple[str, str]] = set()
        for sample in samples:
            self.raw_in_pass += 1
            where = (sample.get("__url__"), sample.get("__key__"))
            if seen and where[0] != next(iter(seen))[0]:
                seen.clear()  # the next shard
            if where in seen:
                sample["__bad__"] = "its key appears more than once in the shard (only the first sample is used)"
            elif where in self.repeated_members or (None, where[1]) in self.repeated_members:
                self.repeated_members.discard(where)
                self.repeated_members.discard((None, where[1]))
                sample["__bad__"] = "a member of it appears twice in the shard (a duplicated key)"
            seen.add(where)
            yield sample


class SharedEpoch:
    """The current epoch in shared memory, so persistent dataloader workers see ``set_epoch``."""

    def __init__(self, epoch: int = 0) -> None:
        self.value = mp.Value("i", epoch)

    def set(self, epoch: int) -> None:
        self.value.value = epoch

    def get(self) -> int:
        return self.value.value


@dataclass(frozen=True)
class StreamStart:
    """Where the workers of one rank resume inside ``epoch`` (see the module docstring).

    ``batches``: batches of the epoch this rank had consumed; ``taken[w]`` / ``made[w]``: raw
    samples logical worker ``w`` had taken from its stream / batches it had made, as carried by
    the last of its batches that was consumed (0, 0 for a worker none of whose batches was).
    """

    epoch: int
    batches: int
    taken: tuple[int, ...]
    made: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.taken) != len(self.made) or not self.taken:
            raise ValueError(f"a stream start needs one (taken, made) pair per worker, got {self}")
        if sum(self.made) != self.batches:
            raise ValueError(f"the workers made {sum(self.made)} batches but {self.batches} were consumed")


def pass_over(stream: Iterator[dict], count: int) -> None:
    """Draw ``count`` raw samples from ``stream`` and drop them (nothing is decoded)."""
    for _ in itertools.islice(stream, count):
        pass


def _first_member(sample: dict, names: tuple[str, ...]) -> bytes:
    for name in names:
        if name in sample:
            return sample[name]
    raise BadSample(f"missing member (.{' / .'.join(names)})")


def decode_sample(sample: dict) -> tuple[Image.Image, str]:
    """(RGB image, caption) of one raw webdataset sample; :class:`BadSample` when unusable."""
    name = f"sample {sample.get('__key__')!r} of {sample.get('__url__')}"
    if "__bad__" in sample:
        raise BadSample(f"{name}: {sample['__bad__']}")
    try:
        caption = _first_member(sample, CAPTION_MEMBERS).decode("utf-8").strip()
        data = _first_member(sample, IMAGE_MEMBERS)
    except (BadSample, UnicodeDecodeError) as exc:
        raise BadSample(f"{name}: {exc}") from None
    if not caption:
        raise BadSample(f"{name}: empty caption")
    return open_image(data, name), caption


class RS5MStream(IterableDataset):
    """Iterable of collated batches from webdataset shards (see the module docstring)."""

    def __init__(
        self,
        urls: list[str],
        views: ViewMaker,
        collate: Callable[[list[dict]], dict],
        batch_size: int,
        num_batches: int,
        epoch: SharedEpoch,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resampled: bool = False,
        shuffle_buffer: int = SHUFFLE_BUFFER,
    ) -> None:
        self.urls = urls
        self.views, self.collate = views, collate
        self.batch_size, self.num_batches = batch_size, num_batches
        self.epoch, self.seed = epoch, seed
        self.rank, self.world_size = rank, world_size
        self.resampled = resampled
        self.shuffle_buffer = shuffle_buffer
        self.start: Optional[StreamStart] = None

    def resume_at(self, start: StreamStart) -> None:
        """Begin epoch ``start.epoch`` where ``start`` says (other epochs begin at their start).

        Call before the loader's workers start (its first ``iter``): they copy the dataset then.
        """
        self.start = start

    def __len__(self) -> int:
        return self.num_batches

    def pass_urls(self, epoch: int, pass_index: int, worker: int, num_workers: int) -> list[str]:
        """The shards (rank, worker) reads in pass ``pass_index`` of ``epoch``."""
        if self.resampled:
            rng = random.Random(sample_seed(self.seed, epoch, pass_index, self.rank, worker))
            count = -(-len(self.urls) // (self.world_size * num_workers))
            return [rng.choice(self.urls) for _ in range(count)]
        urls = list(self.urls)
        random.Random(sample_seed(self.seed, epoch, pass_index)).shuffle(urls)
        return urls[self.rank :: self.world_size][worker::num_workers]

    def raw_samples(self, epoch: int, worker: int, num_workers: int,
                    check: Optional[StreamCheck] = None) -> Iterator[dict]:
        """Undecoded samples of this (rank, worker), shuffled within each pass, pass after pass, as
        long as ``check`` (one is made when not given) lets the stream go on."""
        check = check or StreamCheck(self.rank, worker)
        rng = random.Random(sample_seed(self.seed, epoch, self.rank, worker, "shuffle"))
        for pass_index in itertools.count():
            urls = self.pass_urls(epoch, pass_index, worker, num_workers)
            check.new_pass(urls)
            samples = check.mark(wds.tarfile_samples(({"url": u} for u in urls), handler=check.read_error))
            count = 0
            for sample in wds.shuffle(self.shuffle_buffer, min(SHUFFLE_INITIAL, self.shuffle_buffer), rng=rng)(samples):
                count += 1
                yield sample
            if count == 0:
                raise DataError(f"rank {self.rank} worker {worker}: no sample could be read from {_shards(urls)} "
                                "(see the read errors above)")

    def _start_of(self, epoch: int, loader_id: int, num_workers: int) -> tuple[int, int, int]:
        """(logical worker, raw samples already taken, batches already made) of a loader worker."""
        start = self.start if self.start is not None and self.start.epoch == epoch else None
        if start is None:
            return loader_id, 0, 0
        if len(start.taken) != num_workers:
            raise ValueError(f"the stream position was recorded with {len(start.taken)} worker(s); "
                             f"this loader has {num_workers}")
        worker = (loader_id + start.batches) % num_workers
        return worker, start.taken[worker], start.made[worker]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        loader_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch.get()
        worker, taken, made = self._start_of(epoch, loader_id, num_workers)
        my_batches = self.num_batches // num_workers + (worker < self.num_batches % num_workers)
        check = StreamCheck(self.rank, worker)
        stream = self.raw_samples(epoch, worker, num_workers, check)
        batch: list[dict] = []
        skipped = 0
        try:
            pass_over(stream, taken)
            while made < my_batches:
                raw = next(stream)
                taken += 1
                try:
                    image, caption = decode_sample(raw)
                except BadSample as exc:
                    logger.warning("skipping %s", exc)
                    skipped += 1
                    check.bad(exc)
                    continue
                check.good()
                seed = sample_seed(self.seed, epoch, os.path.basename(raw["__url__"]), raw["__key__"])
                batch.append({**self.views(image, caption, seed), "skipped": skipped})
                skipped = 0
                if len(batch) == self.batch_size:
                    made += 1
                    out = self.collate(batch)
                    out[POSITION_KEY] = torch.tensor([worker, taken, made], dtype=torch.long)
                    yield out
                    batch = []
        finally:
            stream.close()  # closes the open shard now, not at garbage collection

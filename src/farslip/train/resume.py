"""Where the training data stands inside an epoch: recorded for step checkpoints, restored on resume.

A step checkpoint (``--save-every-n-steps``) stores a ``position`` dict of plain values:

- ``epoch`` (0-based epoch in progress) and ``batches`` (batches of it every rank has consumed);
- the layout the position is only valid for: ``kind`` (``stream`` for webdataset, ``sampler``
  for MGRS json / CSV), ``world_size``, ``batch_size``, ``num_batches`` (per rank per epoch),
  ``seed``, and for a stream ``workers`` (logical workers per rank, ``max(--workers, 1)``);
- for a stream, ``streams[rank][worker] = [raw samples taken, batches made]``: what the last
  consumed batch of each worker carried (:mod:`farslip.data.rs5m`).

Resuming continues with batch ``batches`` of ``epoch``: a sampler starts that many batches in, a
stream's workers pass over the raw samples they had taken without decoding them. With the same
layout the batches that follow are exactly those of the uninterrupted run; a different layout is
refused at start-up (:func:`layout_problems`), since the remaining samples of the epoch would
then be a different set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from farslip.config import TrainConfig, World
from farslip.data.rs5m import POSITION_KEY


@dataclass
class DataPosition:
    """This rank's place in one epoch: batches consumed and, for a stream, each worker's position."""

    epoch: int
    batches: int = 0
    streams: dict[int, tuple[int, int]] = field(default_factory=dict)

    def advance(self, batch: dict[str, Any]) -> None:
        """Count one consumed batch; takes its ``position`` entry (CPU) out of ``batch``."""
        self.batches += 1
        position: Optional[torch.Tensor] = batch.pop(POSITION_KEY, None)
        if position is not None:
            worker, taken, made = (int(v) for v in position.tolist())
            self.streams[worker] = (taken, made)

    def stream_list(self, workers: int) -> list[list[int]]:
        """[[taken, made] per logical worker]; (0, 0) for a worker none of whose batches came yet."""
        return [list(self.streams.get(w, (0, 0))) for w in range(workers)]


def layout(cfg: TrainConfig, world: World, data) -> dict[str, Any]:
    """The settings a recorded position depends on, for this run and its data (a ``DataInfo``)."""
    out = {"kind": "stream" if data.stream_workers else "sampler", "world_size": world.world_size,
           "batch_size": cfg.data.batch_size, "num_batches": data.num_batches, "seed": cfg.run.seed}
    if data.stream_workers:
        out["workers"] = data.stream_workers
    return out


def position_state(position: DataPosition, cfg: TrainConfig, world: World, data,
                   streams: Optional[list[list[list[int]]]]) -> dict[str, Any]:
    """The checkpoint's ``position`` entry; ``streams`` = every rank's :meth:`DataPosition.stream_list`."""
    state = {"epoch": position.epoch, "batches": position.batches, **layout(cfg, world, data)}
    if data.stream_workers:
        state["streams"] = streams
    return state


def layout_problems(state: dict[str, Any], cfg: TrainConfig, world: World, data) -> list[str]:
    """How this run's layout differs from the one ``state`` was recorded with (empty: same)."""
    mine = layout(cfg, world, data)
    return [f"{key} {state.get(key)!r} in the checkpoint, {value!r} in this run"
            for key, value in mine.items() if state.get(key) != value]


def restore(state: dict[str, Any], world: World, data) -> DataPosition:
    """Point ``data`` at the batch after ``state``'s and return this rank's :class:`DataPosition`."""
    epoch, batches = int(state["epoch"]), int(state["batches"])
    streams = None
    position = DataPosition(epoch, batches)
    if data.stream_workers:
        streams = [tuple(pair) for pair in state["streams"][world.rank]]
        position.streams = {w: (int(t), int(m)) for w, (t, m) in enumerate(streams)}
    data.resume_at(epoch, batches, streams)
    return position

"""Count what a step reads from tensor values: each such read is a host sync on a GPU.

:class:`HostReads` is a ``TorchDispatchMode`` that records every operator whose result (a
Python number, or the *shape* of a tensor) depends on the values of its inputs, plus tensors
made from Python data inside the step (on a GPU that is a host-to-device copy, which PyTorch
makes blocking): ``.item()`` / ``int()`` / ``bool()`` (``aten._local_scalar_dense``),
``nonzero``, ``unique``, ``masked_select``, boolean-mask indexing and assignment,
``repeat_interleave`` without an output size, ``equal``. On a CPU they cost little, so this
counts them where time cannot show them; ``scripts/gpu_check.sh`` cross-checks on CUDA with
``torch.cuda.set_sync_debug_mode``.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# operators that always read values (result value or result shape depends on the data)
_READS = {
    aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
    aten.nonzero.default, aten.masked_select.default, aten.unique_dim.default,
    aten._unique2.default, aten._unique.default, aten.unique_consecutive.default,
    aten.unique_dim_consecutive.default, aten.lift_fresh.default, aten.lift_fresh_copy.default,
}
_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
             aten._index_put_impl_.default}


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class HostReads(TorchDispatchMode):
    """``with HostReads() as reads: ...`` then ``reads.total`` / ``reads.counts`` (by operator).

    ``with reads.paused(): ...`` excludes a part (e.g. the optimiser's host-side step counter).
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._paused = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._paused:
            if func in _READS:
                self.counts[str(func.overloadpacket.__name__)] += 1
            elif func in _INDEXING and _bool_index(args):
                self.counts[f"{func.overloadpacket.__name__}[bool]"] += 1
            elif func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
                self.counts["repeat_interleave"] += 1
        return func(*args, **kwargs)


def step_host_reads(trainer, batch: dict) -> HostReads:
    """:class:`HostReads` of one ``trainer.train_step(batch)``, the optimizer step left out:
    AdamW keeps its step counters on the host (not capturable / fused), on CUDA too, so its
    ``.item()`` of them is no device sync. GradScaler's read of ``found_inf`` is one (amp)."""
    step = trainer.optimizer.step
    with HostReads() as reads:
        def paused_step(*a, **k):
            with reads.paused():
                return step(*a, **k)

        trainer.optimizer.step = paused_step
        try:
            trainer.train_step(batch)
        finally:
            del trainer.optimizer.step
    return reads


def step_cuda_syncs(trainer, batch: dict) -> list[str]:
    """The synchronisations CUDA itself reports (``torch.cuda.set_sync_debug_mode``) during one
    ``trainer.train_step(batch)`` on a CUDA batch: the first line of each warning."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]

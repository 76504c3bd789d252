"""Divergence guard: a run whose loss or gradients turn non-finite stops with one message.

Per step, :meth:`DivergenceGuard.observe` updates a few tensors *on the device* (which loss
terms and whether the gradient norm are non-finite, the first such step, the lr and logit
scale at it, GradScaler-skipped steps and their longest streak): no host synchronisation.
The host reads them only where it already waits: folded into the log interval's one
reduction (:meth:`slots` + :meth:`judge`) and before every checkpoint
(``Trainer.ensure_finite``, which adds a check of the weights themselves). Under DDP the
slots are summed over ranks, so every rank reaches the same verdict and all stop together;
only on the failure path do two more small collectives find the first bad step.

With ``--precision amp`` non-finite gradients are the GradScaler's business: it skips the
step and halves its scale. Those skips are counted and logged; ``--max-skipped-steps`` in a
row stop the run like a non-finite loss. A non-finite *loss term* stops the run in every
precision (scaling the backward cannot repair a forward pass).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

EXIT_DIVERGED = 3  # the trainer's exit status when the guard stops a run


class TrainingDiverged(RuntimeError):
    """The guard stopped the run; ``str(err)`` is the message for the user."""


def nonfinite_flag(modules: Iterable[Optional[torch.nn.Module]]) -> torch.Tensor:
    """1.0 (on the device) if any floating-point parameter of ``modules`` is NaN/inf.

    Parameters only: buffers may hold infinities by design (the text tower's causal mask is
    -inf above the diagonal). One ``isfinite().all()`` per tensor, stacked: no host
    synchronisation until the flag is read.
    """
    flags = [torch.isfinite(p).all()
             for module in modules if module is not None
             for p in module.parameters() if p.is_floating_point()]
    if not flags:
        return torch.zeros((), dtype=torch.float64)
    return (~torch.stack(flags).all()).to(torch.float64)


def nonfinite_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of ``state`` whose floating-point tensor holds a NaN or inf (one host sync)."""
    keys = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not keys:
        return []
    flags = [torch.isfinite(state[k]).all() for k in keys]
    ok = torch.stack([f.to(flags[0].device) for f in flags]).cpu()
    return [k for k, good in zip(keys, ok.tolist()) if not good]


Reduce = Callable[[torch.Tensor, "dist.ReduceOp"], torch.Tensor]


def _no_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    return tensor


class DivergenceGuard:
    """On-device divergence state of one rank (see the module docstring).

    ``terms``: the loss terms to watch (``loss`` = their weighted sum included).
    ``scaler``: the run uses a GradScaler (``--precision amp``): gradients are its business.
    ``max_skipped``: stop after this many GradScaler-skipped steps in a row (0: never).
    ``grads_every``: check the gradient norm every N steps without a scaler (0: never).
    ``reduce(tensor, op)``: all-reduce over ranks in place (identity for one process).
    """

    def __init__(self, terms: Sequence[str], device: torch.device, *, scaler: bool,
                 max_skipped: int = 50, grads_every: int = 1, reduce: Reduce = _no_reduce):
        self.terms = list(terms)
        self.scaler, self.max_skipped, self.grads_every = scaler, int(max_skipped), int(grads_every)
        self.reduce = reduce
        n = self.n = len(self.terms)
        f64 = dict(dtype=torch.float64, device=device)
        # SUM-reducible: steps with term i non-finite (n), with non-finite gradients,
        # non-finite weights (pre-save check), GradScaler-skipped steps, "too many in a row"
        self.counts = torch.zeros(n + 4, **f64)
        self.first = torch.full((), math.inf, **f64)       # first step with a bad term/grad
        self.at_first = torch.zeros(n + 3, **f64)           # its flags, raw logit scale, lr
        self.run = torch.zeros((), **f64)                   # skipped steps in a row, now
        self.worst = torch.zeros((), **f64)                 # longest streak since the last read
        self.streak_step = torch.full((), math.inf, **f64)  # step the streak reached the limit
        self._zero = torch.zeros((), **f64)
        self.pending = 0                 # steps observed since the last judge
        self.skipped_total = 0           # GradScaler-skipped steps read so far (per rank)

    # ------------------------------------------------------------------ per step (no sync)
    def grads_due(self, step: int) -> bool:
        """Whether step ``step`` (1-based) checks the gradient norm (host-side arithmetic)."""
        return not self.scaler and self.grads_every > 0 and step % self.grads_every == 0

    @torch.no_grad()
    def observe(self, step: int, terms: Mapping[str, torch.Tensor],
                grad_norm: Optional[torch.Tensor], logit_scale: torch.Tensor, lr: float) -> None:
        """Record step ``step``'s loss terms (and gradient norm, when checked) on the device.

        Call before ``optimizer.step()`` so that ``logit_scale`` is the value the loss used.
        """
        self.pending += 1
        values = [terms[t].detach().to(self._zero.device, torch.float64).reshape(())
                  for t in self.terms]
        values.append(self._zero if grad_norm is None
                      else grad_norm.detach().to(self._zero.device, torch.float64).reshape(()))
        flags = (~torch.isfinite(torch.stack(values))).to(torch.float64)
        self.counts[: self.n + 1] += flags
        new = (flags.amax() > 0) & torch.isinf(self.first)
        self.first.copy_(torch.where(new, float(step), self.first))
        self.at_first[: self.n + 1] = torch.where(new, flags, self.at_first[: self.n + 1])
        self.at_first[self.n + 1] = torch.where(new, logit_scale.detach().to(torch.float64),
                                                self.at_first[self.n + 1])
        self.at_first[self.n + 2] = torch.where(new, float(lr), self.at_first[self.n + 2])

    @torch.no_grad()
    def observe_skip(self, step: int, skipped: torch.Tensor) -> None:
        """Record whether the GradScaler skipped step ``step`` (a device bool, read later)."""
        s = skipped.to(torch.float64)
        self.counts[self.n + 2] += s
        self.run.add_(1).mul_(s)  # (run + 1) if skipped else 0
        torch.maximum(self.worst, self.run, out=self.worst)
        if self.max_skipped > 0:
            hit = (self.run >= self.max_skipped) & torch.isinf(self.streak_step)
            self.streak_step.copy_(torch.where(hit, float(step), self.streak_step))

    # ------------------------------------------------------------------ checkpoint state
    def streak(self) -> int:
        """GradScaler-skipped steps in a row up to now, this rank (one host sync: call at a save)."""
        return int(self.run.item())

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a checkpoint: ``skipped_total`` (GradScaler-skipped steps read so far)
        and ``streak`` (this rank's current run of them), as :meth:`streak` and
        :attr:`skipped_total` gave when it was written right after a read (:meth:`judge`)."""
        self.skipped_total = int(state.get("skipped_total", 0))
        self.run.fill_(float(state.get("streak", 0)))
        self.worst.copy_(self.run)

    # ------------------------------------------------------------------ read (one sync)
    def slots(self, weights_bad: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The SUM-reducible slots to fold into a reduction (a new tensor; see :meth:`judge`)."""
        out = self.counts.clone()
        if self.max_skipped > 0:
            out[self.n + 3] = (self.worst >= self.max_skipped).to(torch.float64)
        if weights_bad is not None:
            out[self.n + 1] = weights_bad.to(out.device, torch.float64)
        return out

    def judge(self, reduced: torch.Tensor, *, world_size: int, epoch: int,
              last_checkpoint: Optional[Path]) -> tuple[int, Optional[str]]:
        """Read the all-reduced :meth:`slots` (on the host): (skipped steps, message or None).

        Resets the interval's counts. A message means the run must stop; every rank gets
        the same answer (collectives on the failure path are entered by all ranks).
        """
        values = [float(v) for v in reduced.tolist()]
        n = self.n
        skipped = int(round(values[n + 2] / max(world_size, 1)))
        self.skipped_total += skipped
        self.pending = 0
        bad_terms = [t for i, t in enumerate(self.terms) if values[i] > 0]
        bad_grads, bad_weights, streak = values[n] > 0, values[n + 1] > 0, values[n + 3] > 0
        self.counts.zero_()
        self.worst.copy_(self.run)
        if not (bad_terms or bad_grads or bad_weights or streak):
            return skipped, None
        return skipped, self._message(bad_weights, streak, epoch, last_checkpoint)

    def _message(self, bad_weights: bool, streak: bool, epoch: int,
                 last_checkpoint: Optional[Path]) -> str:
        n = self.n
        first = self.first.clone()
        self.reduce(first, dist.ReduceOp.MIN)
        parts = []
        if math.isfinite(float(first)):
            mine = (self.first == first).to(torch.float64)
            info = torch.cat([self.at_first * mine, mine.reshape(1)])
            self.reduce(info, dist.ReduceOp.SUM)
            info = info.tolist()
            ranks = max(info[-1], 1.0)
            terms = [t for i, t in enumerate(self.terms) if info[i] > 0]
            what = []
            if terms:
                what.append("non-finite loss terms: " + ", ".join(terms))
            if info[n] > 0:
                what.append("non-finite gradients" + (" (loss terms finite)" if not terms else ""))
            parts.append(f"training diverged at step {int(first)} (epoch {epoch}): "
                         f"{'; '.join(what)}; lr {info[n + 2] / ranks:.6g}, logit scale "
                         f"{math.exp(info[n + 1] / ranks):.6g}")
        elif bad_weights:
            parts.append(f"training diverged by epoch {epoch}: the weights hold NaN/inf although "
                         "no checked loss term or gradient was (gradient checks off or sparse: "
                         "see --check-grads-every)")
        if streak:
            step = self.streak_step.clone()
            self.reduce(step, dist.ReduceOp.MIN)
            at = f" (reached at step {int(step)})" if math.isfinite(float(step)) else ""
            parts.append(f"the GradScaler skipped {self.max_skipped} or more optimizer steps in a "
                         f"row{at}, epoch {epoch}: the fp16 gradients stay non-finite at every "
                         "loss scale")
        where = (f"last good checkpoint: {last_checkpoint}" if last_checkpoint is not None
                 else "no checkpoint has been written yet")
        return ("; ".join(parts) + f". Nothing was saved after it; {where}. Lower --lr, set "
                "--grad-clip-norm or use --precision amp_bf16/fp32, then --resume that "
                "checkpoint.")

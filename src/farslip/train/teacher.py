"""Distillation teachers (``--distill-type``): active, EMA, frozen.

``active`` has no module: the student's own features of the crops are the targets, in the
same step and not detached. ``ema`` and ``frozen`` keep a gradient-free copy of the student
that encodes *only* the distillation views (never global images or captions); the EMA copy
moves towards the student after each optimizer step, theta_T <- m theta_T + (1 - m) theta_S.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from .step import Plan, ViewEncoder


class Teacher:
    """The teacher of one run; ``module`` is None for ``active``.

    ``encoder`` is the module that computes the targets (``torch.compile`` may wrap it).
    """

    def __init__(self, mode: str, student: nn.Module, plan: Plan, momentum: float = 0.99):
        if mode not in ("active", "ema", "frozen"):
            raise ValueError(f"unknown teacher mode {mode!r}; choose active, ema or frozen")
        self.mode = mode
        self.momentum = float(momentum)
        self.module: Optional[nn.Module] = None
        if mode != "active":
            self.module = copy.deepcopy(student).eval().requires_grad_(False)
        self.encoder = None if self.module is None else ViewEncoder(
            self.module, plan.distill_need, plan.last_attn)

    @torch.no_grad()
    def targets(self, batch, plan: Plan) -> Optional[dict[str, torch.Tensor]]:
        """Normalised targets of the distillation views (None for the active teacher)."""
        if self.module is None:
            return None
        feats = self.encoder(batch[plan.distill_views])
        return {f"distill_{k}": v for k, v in feats.items() if k != "tokens"}

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """EMA step towards ``student`` (call after ``optimizer.step()``); no-op otherwise."""
        if self.mode != "ema":
            return
        teacher = self.module.state_dict()
        for name, value in student.state_dict().items():
            target = teacher[name]
            if target.is_floating_point():
                target.lerp_(value.to(target.dtype), 1.0 - self.momentum)
            else:
                target.copy_(value)

    def state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        return None if self.module is None else self.module.state_dict()

    def load_state_dict(self, state: Optional[dict[str, torch.Tensor]]) -> None:
        if self.module is None:
            return
        if state is None:
            raise ValueError(f"the checkpoint has no teacher state for --distill-type {self.mode}")
        self.module.load_state_dict(state, strict=True)

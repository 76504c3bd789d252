"""Distillation teachers (``--distill-type``): active, EMA, frozen.

``active`` has no module: the student's own features of the crops are the targets, in the
same step and not detached. ``ema`` and ``frozen`` keep a gradient-free copy of the student's
*vision tower* only (a teacher encodes only the distillation views, never captions, so a text
tower would be dead weight); the EMA copy moves towards the student after each optimizer step,
theta_T <- m theta_T + (1 - m) theta_S, as one fused ``torch._foreach_lerp_`` over the
floating-point parameters and buffers (other buffers are copied).

The teacher's checkpoint state (``state_dict_teacher``) is the tower's own state dict
(``conv1.weight``, ...). An older checkpoint whose teacher was a whole CLIP loads too: its
``visual.`` entries are the tower.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional

import torch
from torch import nn

from farslip.config import MethodConfig

from .step import Plan, ViewEncoder

log = logging.getLogger(__name__)


class VisionTower(nn.Module):
    """A CLIP's vision tower in the shape ``encode_views`` reads (``.visual``, ``.encode_image``).

    ``encode_image`` is ``CLIP.encode_image`` without normalisation: ``visual(images)``; the
    dense path reads ``.visual`` itself. So the targets equal a whole-CLIP teacher's bit for bit.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


class Teacher:
    """The teacher of one run; ``module`` (the vision tower) is None for ``active``.

    ``encoder`` is the module that computes the targets (``torch.compile`` may wrap it).
    """

    def __init__(self, mode: str, student: nn.Module, plan: Plan, momentum: float = 0.99):
        if mode not in ("active", "ema", "frozen"):
            raise ValueError(f"unknown teacher mode {mode!r}; choose active, ema or frozen")
        self.mode = mode
        self.momentum = float(momentum)
        self.module: Optional[nn.Module] = None
        self.encoder: Optional[nn.Module] = None
        self._source: Optional[nn.Module] = None
        if mode != "active":
            self.module = copy.deepcopy(student.visual).eval().requires_grad_(False)
            self.encoder = ViewEncoder(VisionTower(self.module), plan.distill_need, plan.last_attn)

    @classmethod
    def from_config(cls, method: MethodConfig, student: nn.Module, plan: Plan) -> "Teacher":
        """The teacher a run's method settings ask for (``--distill-type``, ``--EMA-momentum``)."""
        return cls(method.distill_type, student, plan, method.ema_momentum)

    @torch.no_grad()
    def targets(self, batch, plan: Plan) -> Optional[dict[str, torch.Tensor]]:
        """Normalised targets of the distillation views (None for the active teacher)."""
        if self.module is None:
            return None
        feats = self.encoder(batch[plan.distill_views])
        return {f"distill_{k}": v for k, v in feats.items() if k != "tokens"}

    def _pair(self, student: nn.Module) -> None:
        """Match the tower's tensors with the student's (same objects every step: cached)."""
        mine, theirs = _tensors(self.module), _tensors(student.visual)
        if mine.keys() != theirs.keys():
            raise ValueError("the student's vision tower does not match the teacher's")
        floats = [k for k, t in mine.items() if t.is_floating_point()]
        self._float = ([mine[k] for k in floats], [theirs[k] for k in floats])
        self._other = [(mine[k], theirs[k]) for k in mine if k not in set(floats)]
        self._source = student

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """EMA step towards ``student`` (call after ``optimizer.step()``); no-op otherwise."""
        if self.mode != "ema":
            return
        if self._source is not student:
            self._pair(student)
        teacher, source = self._float
        if teacher:
            torch._foreach_lerp_(teacher, source, 1.0 - self.momentum)
        for target, value in self._other:
            target.copy_(value)

    def state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        return None if self.module is None else self.module.state_dict()

    def load_state_dict(self, state: Optional[dict[str, torch.Tensor]]) -> None:
        if self.module is None:
            return
        if state is None:
            raise ValueError(f"the checkpoint has no teacher state for --distill-type {self.mode}")
        if any(k.startswith("visual.") for k in state):  # an older checkpoint: a whole-CLIP teacher
            log.info("teacher state holds a whole CLIP (an older checkpoint): loading its visual.* entries")
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        self.module.load_state_dict(state, strict=True)

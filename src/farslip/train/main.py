"""The trainer: ``farslip train``, ``torchrun -m farslip.train`` and the checkout's
``torchrun -m open_clip_train.main`` all run :func:`main`.

Distributed set-up comes from open_clip's own helpers (torchrun, SLURM ``srun``, multi-node
rendezvous), the schedule from ``open_clip_train.scheduler.cosine_lr`` and autocast from
``open_clip_train.precision.get_autocast``; FarSLIP's step lives in ``step.py``/``losses.py``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from open_clip_train.distributed import (all_gather_object, broadcast_object,
                                          init_distributed_device_so, is_master)
from open_clip_train.precision import get_autocast
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import get_clip_metrics
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import farslip
from farslip.atomic import atomic_write, remove_stale_temps
from farslip.config import ModelConfig, TrainConfig, World
from farslip.data.transforms import eval_transform, normalize_views
from farslip.errors import EXIT_USER_ERROR, UserError, message, user_errors
from farslip.models.longclip import FrozenRows, enable_long_text, is_long_text
from farslip.models.text import encode_text

from farslip.losses import global_itc_loss
from farslip.models.record import SETTINGS_KEY, model_settings

from . import checkpoint, resume
from .args import parse_args
from .guard import EXIT_DIVERGED, DivergenceGuard, TrainingDiverged, nonfinite_flag
from .step import StudentFeatures, compute_losses, make_plan, prepare_batch
from .teacher import Teacher

log = logging.getLogger("farslip.train")
MAX_LOGIT_SCALE = math.log(100.0)
_HANDLERS: list[logging.Handler] = []
_NO_PHASE = nullcontext()


def no_phase(name: str) -> nullcontext:
    """The default ``Trainer.phase``: no timing (``scripts/bench.py train`` puts a timer here)."""
    return _NO_PHASE


# --------------------------------------------------------------------------- set-up helpers
def setup_logging(log_file: Optional[Path], master: bool) -> None:
    """Console (and, on the master, ``out.log``) handlers on the root logger.

    Handlers from an earlier in-process run are removed first, so tests and notebooks that
    call :func:`main` repeatedly do not duplicate lines or write into old folders.
    """
    root = logging.getLogger()
    close_logging()
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", "%Y-%m-%d,%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
        _HANDLERS.append(handler)
    root.setLevel(logging.INFO if master else logging.WARNING)


def default_name(cfg: TrainConfig) -> str:
    model = cfg.model.model.replace("/", "-")
    return (f"{time.strftime('%Y_%m_%d-%H_%M_%S')}-{model}-{cfg.method.method}-lr_{cfg.optim.lr:g}"
            f"-b_{cfg.data.batch_size}")


def close_logging() -> None:
    """Remove and close the handlers :func:`setup_logging` added (the end of :func:`main`), so an
    in-process caller keeps its own logging and ``out.log`` is closed."""
    root = logging.getLogger()
    for handler in _HANDLERS:
        root.removeHandler(handler)
        handler.close()
    _HANDLERS.clear()


def seed_everything(seed: int, rank: int) -> None:
    """Same torch seed on every rank (identical init); python/numpy offset by rank."""
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed(seed + rank)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on gains, biases, logit_scale and any 1-D parameter."""
    def no_decay(name: str, p: torch.Tensor) -> bool:
        return (p.ndim < 2 or "bias" in name or "logit_scale" in name or "ln" in name
                or "bn" in name)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
    ]


def build_model(settings: ModelConfig, device: torch.device) -> nn.Module:
    """The student from ``--model``/``--pretrained`` (+ Long-CLIP text when asked)."""
    try:
        model = farslip.create_model(settings.model, pretrained=settings.pretrained,
                                     force_quick_gelu=settings.force_quick_gelu,
                                     long_text=settings.long_text, device=device,
                                     allow_unsafe=settings.unsafe_load)
    except farslip.CheckpointNotAvailable as err:
        raise SystemExit(f"farslip train: cannot load --pretrained {settings.pretrained!r} for "
                         f"{settings.model}: {err}\n(offline? download the weights on a machine with "
                         "network access and pass the file path, or use --pretrained none)")
    except (farslip.CheckpointError, OSError, ValueError) as err:  # the message names the file
        raise UserError(f"--pretrained {settings.pretrained}: {err}") from err
    if settings.long_text and not is_long_text(model):
        enable_long_text(model)
    if settings.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def report_writers(cfg: TrainConfig, run_dir: Path):
    """TensorBoard / wandb loggers, only for what ``--report-to`` names (imports deferred)."""
    tb = wandb = None
    if "tensorboard" in cfg.run.report_to:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise SystemExit("--report-to tensorboard needs the tensorboard package "
                             f"(pip install tensorboard): {err}")
        tb = SummaryWriter(str(run_dir / "tensorboard"))
    if "wandb" in cfg.run.report_to:
        try:
            import wandb  # noqa: F811
        except ImportError as err:
            raise SystemExit(f"--report-to wandb needs the wandb package (pip install wandb): {err}")
        wandb.init(project=cfg.run.wandb_project_name, name=cfg.run.name, config=cfg.record(),
                   dir=str(run_dir))
    return tb, wandb


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def all_reduce(values: torch.Tensor, world: World, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(values, op=op)
    return values


def gather(obj: Any, world: World) -> list[Any]:
    """``obj`` of every rank, in rank order (a collective: every rank must call it)."""
    return all_gather_object(world, obj) if world.distributed else [obj]


# --------------------------------------------------------------------------- the run
class Trainer:
    """State of one run: model, student wrapper, teacher, optimiser, schedule, loggers."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, world: Optional[World] = None):
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"Trainer takes a farslip.config.TrainConfig (farslip.train.args.parse_args "
                            f"builds one), not {type(cfg).__name__}")
        self.cfg, self.run_dir = cfg, run_dir
        self.world = world = world if world is not None else World(device=cfg.run.device)
        self.device = device = torch.device(world.device)
        method, optim = cfg.method, cfg.optim
        self.plan = make_plan(method)
        self.model = build_model(cfg.model, device)
        self.grid = self.model.visual.grid_size
        self.teacher = Teacher.from_config(method, self.model, self.plan)
        # torch's choice of update: multi-tensor (foreach) on CUDA, the per-parameter loop on a
        # CPU, where foreach measured no faster (`scripts/bench.py train optimizer`)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, optim.wd), lr=optim.lr,
                                           betas=(optim.beta1, optim.beta2), eps=optim.eps)
        self.scaler = torch.amp.GradScaler(device.type) if optim.precision == "amp" else None
        if optim.precision == "amp" and device.type == "cpu":
            log.warning("--precision amp (the recipe's default, float16 autocast) is about 10x slower than fp32 "
                        "on a CPU; pass --precision fp32 (or amp_bf16) for CPU runs")
        self.autocast = get_autocast(optim.precision, device_type=device.type)
        self.clip_loss = global_itc_loss(
            local_loss=method.local_loss, gather_with_grad=method.gather_with_grad,
            rank=world.rank, world_size=world.world_size)
        self.weights = {"w_g": method.w_g, "w_d": method.w_d, "w_l": method.w_l}
        self.start_epoch, self.step, self.skipped_total = 0, 0, 0
        self.resume_path: Optional[Path] = None
        self.resume_state: Optional[dict[str, Any]] = None  # data position of a mid-epoch checkpoint
        self.position: Optional[resume.DataPosition] = None  # where the next epoch begins
        self.last_checkpoint: Optional[Path] = None  # the newest checkpoint known to be good
        self.terms = [n for n in ("global_itc", "distill", "local_itc") if n in method.loss_type]
        self.divergence = DivergenceGuard(
            [*self.terms, "loss"], device, scaler=self.scaler is not None,
            max_skipped=optim.max_skipped_steps, grads_every=optim.check_grads_every,
            reduce=lambda t, op: all_reduce(t, world, op))
        self._resume()
        self.guard = FrozenRows(self.model) if is_long_text(self.model) else None
        student: nn.Module = StudentFeatures(self.model, self.plan)
        if world.distributed:
            # every parameter is used whenever the global ITC runs; otherwise let DDP look
            student = DistributedDataParallel(
                student, device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=not self.plan.global_itc)
        if cfg.model.torchcompile:
            student = torch.compile(student)
            if self.teacher.encoder is not None:
                self.teacher.encoder = torch.compile(self.teacher.encoder)
        self.student = student
        self.tokenizer = farslip.get_tokenizer(self.model)
        self.phase = no_phase  # phase(name) -> context manager around each part of a step

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Host-side bookkeeping of a CPU batch (``step.prepare_batch``), before it moves."""
        return prepare_batch(batch, self.plan, self.model)

    def _resume(self) -> None:
        resume_from, world = self.cfg.run.resume, self.world
        if resume_from is None:
            return
        unreadable = (farslip.CheckpointError, ValueError, OSError)  # their messages name the file
        path = problem = None
        if is_master(world):
            try:
                path = checkpoint.resolve(resume_from, self.run_dir / "checkpoints")
            except unreadable as err:
                problem = str(err)
        if world.distributed:  # every rank loads the file rank 0 chose (or learns why there is none)
            path, problem = broadcast_object(world, (path, problem))
        if problem is None and path is None:
            log.info("--resume latest: no checkpoint in %s yet; starting fresh", self.run_dir)
            return
        ckpt = None
        if problem is None:
            try:
                ckpt = checkpoint.load(path)
                farslip.load_checkpoint(self.model, ckpt["state_dict"], name=f"--resume {path}")
            except unreadable as err:
                problem = str(err)
        if world.distributed:  # a rank that cannot read the file stops every rank, not only itself
            failed = [(rank, text) for rank, text in enumerate(gather(problem, world)) if text is not None]
            if failed:
                rank, text = failed[0]
                problem = text if world.world_size == 1 else f"{text} (rank {rank})"
        if problem is not None:
            raise UserError(f"--resume {resume_from}: {problem}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.teacher.load_state_dict(ckpt.get("state_dict_teacher"))
        ranks = ckpt.get("rng_ranks")
        same_world = ranks is not None and len(ranks) == world.world_size
        checkpoint.set_rng_state(ranks[world.rank] if same_world else ckpt.get("rng"))
        self.start_epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.skipped_total = int(ckpt.get("skipped_total", 0))
        guard = ckpt.get("guard") or {}
        streaks = guard.get("streaks")
        self.divergence.load_state_dict({
            "skipped_total": int(guard.get("skipped_total", 0)),
            "streak": int(streaks[world.rank]) if same_world and streaks else 0})
        self.last_checkpoint = path
        self.resume_path, self.resume_state = path, ckpt.get("position")
        where = (f"after batch {self.resume_state['batches']} of epoch {self.start_epoch}"
                 if self.resume_state else f"at the start of epoch {self.start_epoch}")
        log.info("resumed from %s: step %d, continuing %s", path, self.step, where)

    def restore_data_position(self, data) -> None:
        """After a mid-epoch checkpoint: point ``data`` at the next batch (or refuse a changed layout)."""
        state = self.resume_state
        if state is None:
            return
        problems = resume.layout_problems(state, self.cfg, self.world, data)
        if problems:
            raise SystemExit(
                f"farslip train: --resume {self.resume_path} was written inside epoch {state['epoch']} "
                f"(after batch {state['batches']}) and continues exactly only with the same data layout: "
                f"{'; '.join(problems)}.\nRun with the settings of the checkpoint, or resume from an "
                "epoch-end checkpoint (epoch_latest.pt, epoch_N.pt), which starts the next epoch.")
        self.position = resume.restore(state, self.world, data)
        if data.stream_workers:
            taken = [t for t, _ in self.position.streams.values()]
            log.info("data position restored: each worker of this rank passes over %s raw sample(s) "
                     "without decoding them", "/".join(map(str, taken)))

    # ---------------------------------------------------------------- one optimiser step
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimiser step on a device batch (best from :meth:`prepare`: then no part of
        the step reads tensor values on the host); uint8 views are normalised here."""
        method, phase = self.cfg.method, self.phase
        with phase("data"):
            batch = normalize_views(batch)
        with self.autocast():
            with phase("teacher"):
                targets = self.teacher.targets(batch, self.plan) if self.plan.distill else None
            with phase("forward"):
                feats = self.student(batch)
                terms = compute_losses(self.plan, feats, batch, grid=self.grid,
                                       weights=self.weights, clip_loss=self.clip_loss,
                                       targets=targets, gather_with_grad=method.gather_with_grad,
                                       rank=self.world.rank, world_size=self.world.world_size)
        loss = terms["loss"]
        step, lr = self.step + 1, self.optimizer.param_groups[0]["lr"]
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        clip = self.cfg.optim.grad_clip_norm
        with phase("optimizer"):  # with the divergence guard's on-device bookkeeping
            if self.scaler is not None:
                if clip is not None:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                self.divergence.observe(step, terms, None, self.model.logit_scale, lr)
                # a skipped step lowers the scale; compare on the device (get_scale() would sync)
                scale = self.scaler._scale.clone()
                self.scaler.step(self.optimizer)  # reads found_inf: the one host sync of amp
                self.scaler.update()
                self.divergence.observe_skip(step, self.scaler._scale < scale)
            else:
                grad_norm = None
                if clip is not None:
                    grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                elif self.divergence.grads_due(step):
                    grad_norm = nn.utils.get_total_norm(
                        [p.grad for p in self.model.parameters() if p.grad is not None])
                self.divergence.observe(step, terms, grad_norm, self.model.logit_scale, lr)
                self.optimizer.step()
            with torch.no_grad():
                if self.guard is not None:
                    self.guard.restore()
                self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        with phase("teacher"):
            self.teacher.update(self.model)
        return {k: v.detach() for k, v in terms.items()}

    # ---------------------------------------------------------------- one epoch
    def _epoch_position(self, epoch: int) -> resume.DataPosition:
        """The restored position if ``epoch`` is the one a mid-epoch resume continues, else its start."""
        position, self.position = self.position, None
        if position is not None and position.epoch == epoch:
            return position
        return resume.DataPosition(epoch)

    def _step_checkpoint_due(self, done: int, num_batches: int) -> bool:
        """Every ``--save-every-n-steps`` global steps, except at an epoch's last batch (the epoch
        checkpoint follows). The same answer on every rank."""
        every = self.cfg.run.save_every_n_steps
        return every > 0 and self.step % every == 0 and done < num_batches

    def train_epoch(self, data, epoch: int, scheduler, tb=None, wandb=None) -> None:
        log_every = self.cfg.run.log_every_n_steps
        self.student.train()
        data.set_epoch(epoch)
        num_batches = data.num_batches
        position = self._epoch_position(epoch)
        names = [n for n in ("loss", "global_itc", "distill", "local_itc")
                 if n == "loss" or n in self.cfg.method.loss_type]
        if "local_itc" in names:
            names.append("local_rows")  # region rows per step (0 rows -> the term is 0)
        # running sums stay on the device (no per-step sync); the last slot counts bad samples
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=self.device)
        seen, done, t0 = 0, position.batches, time.perf_counter()
        drops = None  # MGRS objects not kept this epoch, by reason (farslip.data.mgrs.DROP_REASONS)
        for i, batch in enumerate(data.dataloader, start=position.batches):
            if i >= num_batches:
                break
            done = i + 1
            position.advance(batch)
            lr = scheduler(self.step)
            skipped = int(batch.pop("skipped").sum()) if "skipped" in batch else 0
            dropped = batch.pop("dropped_boxes", None)  # CPU counts: adding them costs no sync
            drops = dropped if drops is None else drops + dropped
            batch = to_device(self.prepare(batch), self.device)
            terms = self.train_step(batch)
            self.step += 1
            seen += 1
            sums[:-1] += torch.stack([terms[n].to(self.device, torch.float64) for n in names])
            sums[-1] += skipped
            save_now = self._step_checkpoint_due(i + 1, num_batches)
            # a step checkpoint logs its interval first, so skipped_total is complete in it
            if (i + 1) % log_every == 0 or i + 1 == num_batches or save_now:
                self._log(epoch, i + 1, num_batches, names, sums, seen,
                          time.perf_counter() - t0, lr, tb, wandb)
                sums.zero_()
                seen, t0 = 0, time.perf_counter()
            if save_now:
                self.ensure_finite(epoch)  # every rank, before rank 0 writes
                self.save_step(position, data)
                t0 = time.perf_counter()
        if done < num_batches:
            log.warning("epoch %d: the data loader gave %d of %d batches", epoch, done, num_batches)
        if drops is not None:
            self._log_dropped(epoch, drops)

    def _log_dropped(self, epoch: int, drops: torch.Tensor) -> None:
        """One line per epoch: the MGRS objects of all ranks that were looked at and not kept, by reason."""
        from farslip.data.mgrs import DROP_REASONS

        drops = all_reduce(drops.to(self.device), self.world).cpu().tolist()
        parts = [f"{n} {reason}" for n, reason in zip(drops, DROP_REASONS) if n]
        log.info("epoch %d: MGRS boxes dropped: %s", epoch,
                 f"{sum(drops)} ({', '.join(parts)})" if parts else "none")

    def _log(self, epoch, done, total, names, sums, steps, elapsed, lr, tb, wandb) -> None:
        """Log the interval's means; the divergence guard's slots ride on the same reduction
        (one host sync per interval) and a verdict to stop is raised after the line is logged."""
        world = self.world
        packed = all_reduce(torch.cat([sums, self.divergence.slots()]), world).cpu()
        sums, guard = packed[: len(sums)], packed[len(sums):]
        amp_skipped, verdict = self.divergence.judge(
            guard, world_size=world.world_size, epoch=epoch, last_checkpoint=self.last_checkpoint)
        skipped = int(sums[-1])
        self.skipped_total += skipped
        means = {n: float(sums[k]) / (steps * world.world_size) for k, n in enumerate(names)}
        stats = {
            **means,
            "lr": lr,
            "logit_scale": self.model.logit_scale.exp().item(),
            "samples_per_s": steps * self.cfg.data.batch_size * world.world_size / max(elapsed, 1e-9),
            "skipped": skipped,
            "skipped_total": self.skipped_total,
        }
        if self.scaler is not None:  # GradScaler-skipped optimizer steps (non-finite fp16 grads)
            stats["amp_skipped_steps"] = amp_skipped
            stats["amp_skipped_steps_total"] = self.divergence.skipped_total
        log.info("epoch %d [%d/%d] step %d | %s", epoch, done, total, self.step,
                 " | ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in stats.items()))
        if tb is not None:
            for key, value in stats.items():
                tb.add_scalar(f"train/{key}", value, self.step)
        if wandb is not None:
            wandb.log({f"train/{k}": v for k, v in stats.items()}, step=self.step)
        if verdict is not None:
            raise TrainingDiverged(verdict)

    def ensure_finite(self, epoch: int) -> None:
        """Before a checkpoint, on every rank: stop if the guard saw a non-finite loss term or
        gradient, or the weights (student, teacher) hold NaN/inf. One reduction, one host sync."""
        weights = nonfinite_flag([self.model, self.teacher.module]).to(self.device)
        packed = all_reduce(self.divergence.slots(weights), self.world).cpu()
        _, verdict = self.divergence.judge(packed, world_size=self.world.world_size, epoch=epoch,
                                           last_checkpoint=self.last_checkpoint)
        if verdict is not None:
            raise TrainingDiverged(verdict)

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, val, epoch: int) -> dict[str, float]:
        """CLIP loss and retrieval metrics on the validation CSV (master only)."""
        self.model.eval()
        images, texts, loss_sum, count = [], [], 0.0, 0
        scale = self.model.logit_scale.exp()
        for batch in val.dataloader:
            image, text = (batch["image"], batch["text"]) if isinstance(batch, dict) else batch[:2]
            with self.autocast():
                u = nn.functional.normalize(self.model.encode_image(image.to(self.device)), dim=-1)
                t = nn.functional.normalize(encode_text(self.model, text.to(self.device)), dim=-1)
            u, t = u.float(), t.float()
            logits = scale * u @ t.T
            labels = torch.arange(u.shape[0], device=u.device)
            loss = (nn.functional.cross_entropy(logits, labels)
                    + nn.functional.cross_entropy(logits.T, labels)) / 2
            loss_sum += float(loss) * u.shape[0]
            count += u.shape[0]
            images.append(u.cpu())
            texts.append(t.cpu())
        self.model.train()
        if count == 0:
            raise RuntimeError(f"--val-data {self.cfg.data.val_data}: no validation samples")
        metrics = get_clip_metrics(torch.cat(images), torch.cat(texts), scale.cpu())
        result = {"epoch": epoch + 1, "step": self.step, "clip_val_loss": loss_sum / count,
                  "num_samples": count, **{k: float(v) for k, v in metrics.items()}}
        with open(self.run_dir / "val.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
        log.info("validation epoch %d | %s", epoch + 1,
                 " | ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)))
        return result

    # ---------------------------------------------------------------- checkpoints
    def _rank_state(self, streams: Optional[list[list[int]]] = None) -> dict[str, Any]:
        """What each rank contributes to a checkpoint (gathered to rank 0): its RNG states, the
        GradScaler-skip streak it is in, and for a step checkpoint its stream positions."""
        return {"rng": checkpoint.rng_state(), "streak": self.divergence.streak(),
                "streams": streams}

    def _payload(self, epochs_done: int, ranks: list[dict[str, Any]],
                 position: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The checkpoint's contents; ``ranks`` = every rank's :meth:`_rank_state`, in rank order."""
        payload = {
            "epoch": epochs_done,
            "step": self.step,
            "name": self.cfg.run.name,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "state_dict_teacher": self.teacher.state_dict(),
            "skipped_total": self.skipped_total,
            "guard": {"skipped_total": self.divergence.skipped_total,
                      "streaks": [rank["streak"] for rank in ranks]},
            "rng": ranks[0]["rng"],
            "rng_ranks": [rank["rng"] for rank in ranks],
            SETTINGS_KEY: model_settings(self.model),
            checkpoint.CONFIG_KEY: self.cfg.record(),
        }
        if position is not None:
            payload["position"] = position
        return payload

    def save(self, epoch: int) -> None:
        """The end of ``epoch``: ``epoch_latest.pt`` (+ ``epoch_N.pt``). Call on every rank."""
        every, world = self.cfg.run.save_frequency, self.world
        numbered = every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.cfg.optim.epochs)
        ranks = gather(self._rank_state(), world)
        written = self.run_dir / "checkpoints" / (f"epoch_{epoch + 1}.pt" if numbered
                                                  else checkpoint.LATEST)
        if is_master(world):
            self._write(lambda: checkpoint.save(self.run_dir / "checkpoints",
                                                self._payload(epoch + 1, ranks), numbered=numbered),
                        epoch)
        self.last_checkpoint = written  # the file rank 0 wrote (the path is the same on every rank)

    def save_step(self, position: resume.DataPosition, data) -> None:
        """``step_<step>.pt`` inside an epoch, with the data position. Call on every rank, after
        :meth:`ensure_finite`."""
        world = self.world
        ranks = gather(self._rank_state(position.stream_list(data.stream_workers)), world)
        written = self.run_dir / "checkpoints" / f"step_{self.step}.pt"
        if is_master(world):
            start = time.perf_counter()
            state = resume.position_state(position, self.cfg, world, data, [r["streams"] for r in ranks])
            payload = self._payload(position.epoch, ranks, state)
            path = self._write(lambda: checkpoint.save_step(self.run_dir / "checkpoints", payload,
                                                            self.cfg.run.keep_checkpoints), position.epoch)
            log.info("step checkpoint %s: %.1f MB in %.2f s", path.name, path.stat().st_size / 1e6,
                     time.perf_counter() - start)
        self.last_checkpoint = written

    def _write(self, save, epoch: int):
        """Run ``save`` (rank 0); a payload with non-finite weights becomes the guard's message."""
        try:
            return save()
        except checkpoint.NonFiniteCheckpoint as err:  # the last line of defence
            where = self.last_checkpoint or "none written yet"
            raise TrainingDiverged(f"{err} (epoch {epoch}, step {self.step}); last good "
                                   f"checkpoint: {where}") from None


def prepare_run_dir(cfg: TrainConfig, world: World) -> tuple[TrainConfig, Path]:
    """``<logs>/<name>`` (named now when ``--name`` is unset) and the config with that name;
    refuses to reuse a finished run's folder unless resuming."""
    if cfg.run.name is None:
        name = default_name(cfg)
        if world.distributed:  # ranks may start in different seconds: use rank 0's name
            name = broadcast_object(world, name)
        cfg = cfg.replace("run", name=name)
    run_dir = Path(cfg.run.logs) / cfg.run.name
    if is_master(world) and cfg.run.resume is None and (run_dir / "out.log").exists():
        raise SystemExit(f"farslip train: run folder {run_dir} exists; pass --resume latest to "
                         "continue it or choose another --name")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return cfg, run_dir


def write_params(cfg: TrainConfig, path: Path) -> None:
    """``params.txt``: one ``section.field: value`` line per setting (atomically)."""
    lines = [f"{name}.{key}: {value}" for name, section in cfg.record().items()
             for key, value in section.items()]
    atomic_write(path, "\n".join(lines) + "\n")


def run(cfg: TrainConfig, world: World) -> int:
    """Train with a validated config, in this process's place ``world`` (distributed-initialised)."""
    from farslip.data.train_data import get_train_data, get_val_data

    device = torch.device(world.device)
    cfg, run_dir = prepare_run_dir(cfg, world)
    master = is_master(world)
    setup_logging(run_dir / "out.log" if master else None, master)
    if master:
        for stale in remove_stale_temps(run_dir / "checkpoints"):
            log.info("removed %s (the temporary file of a checkpoint write that was killed)", stale)
        write_params(cfg, run_dir / "params.txt")
    log.info("run %s on %s, world size %d", cfg.run.name, device, world.world_size)
    tb, wandb = report_writers(cfg, run_dir) if master else (None, None)
    seed_everything(cfg.run.seed, world.rank)
    trainer = Trainer(cfg, run_dir, world)
    image_size = trainer.model.visual.image_size
    data = get_train_data(cfg.data, trainer.tokenizer, image_size, seed=cfg.run.seed, rank=world.rank,
                          world_size=world.world_size, epoch=trainer.start_epoch)
    trainer.restore_data_position(data)
    val = (get_val_data(cfg.data, eval_transform(image_size), trainer.tokenizer) if master else None)
    epochs = cfg.optim.epochs
    total_steps = data.num_batches * epochs
    scheduler = cosine_lr(trainer.optimizer, cfg.optim.lr, cfg.optim.warmup, total_steps)
    log.info("%d samples, %d steps per epoch per rank, %d epochs, %d steps in all",
             data.num_samples, data.num_batches, epochs, total_steps)
    for epoch in range(trainer.start_epoch, epochs):
        trainer.train_epoch(data, epoch, scheduler, tb, wandb)
        trainer.ensure_finite(epoch)  # every rank, before rank 0 writes a checkpoint
        trainer.save(epoch)  # every rank (their RNG states are gathered); rank 0 writes
        if val is not None and ((epoch + 1) % cfg.run.val_frequency == 0 or epoch + 1 == epochs):
            result = trainer.validate(val, epoch)
            if tb is not None:
                for key, value in result.items():
                    tb.add_scalar(f"val/{key}", value, trainer.step)
            if wandb is not None:
                wandb.log({f"val/{k}": v for k, v in result.items()}, step=trainer.step)
        if world.distributed:
            dist.barrier()
    log.info("done: %d steps, %d bad samples skipped%s", trainer.step, trainer.skipped_total,
             f", {trainer.divergence.skipped_total} optimizer steps skipped by the GradScaler"
             if trainer.scaler is not None else "")
    if tb is not None:
        tb.close()
    if wandb is not None:
        wandb.finish()
    return 0


def _user_error(world: World, text: str, logged: bool) -> int:
    """``farslip train: error: ...`` on standard error (and in out.log once this run ``logged``); exit 2."""
    rank = f" [rank {world.rank}]" if world.world_size > 1 else ""
    line = f"farslip train{rank}: error: {text}"
    if logged:
        log.error("%s", line)
    else:
        print(line, file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def init_world(cfg: TrainConfig) -> World:
    """This process's :class:`~farslip.config.World`: torch.distributed initialised from the
    environment (torchrun, SLURM) with open_clip's helper, or one process."""
    got = init_distributed_device_so(device=cfg.run.device, dist_backend=cfg.run.dist_backend,
                                     dist_url=cfg.run.dist_url)
    return World(rank=got["global_rank"], local_rank=got["local_rank"], world_size=got["world_size"],
                 distributed=got["distributed"], device=str(got["device"]))


def main(argv: Optional[list[str]] = None) -> int:
    """Parse the seed's flags, initialise torch.distributed from the environment, train."""
    cfg = parse_args(list(sys.argv[1:] if argv is None else argv))
    world = init_world(cfg)
    debug = cfg.run.debug
    before = list(_HANDLERS)  # none: each run closes its own (see close_logging)
    try:
        return run(cfg, world)
    except TrainingDiverged as err:  # one message, no traceback; every rank stops here together
        if is_master(world):
            log.error("farslip train: %s", err)
        return EXIT_DIVERGED
    except user_errors() as err:  # a bad file, checkpoint or data set: one message (--debug: traceback)
        if debug:
            raise
        return _user_error(world, message(err), logged=_HANDLERS != before)
    except SystemExit as err:  # the trainer's own start-up refusals (text messages)
        if not isinstance(err.code, str):
            raise
        if debug:  # show where it was refused
            raise UserError(err.code) from err
        return _user_error(world, err.code.removeprefix("farslip train: "), logged=_HANDLERS != before)
    finally:
        close_logging()
        if world.distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

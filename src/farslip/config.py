"""The settings of a training run as frozen, typed dataclasses (SPEC section 5).

The command line is the only source of settings: ``farslip.train.args.parse_args`` builds one
:class:`TrainConfig` from the flags, validates it once and derives what the flags imply (which
views the data builds, which teacher the step uses); nothing here reads a file or injects a
value. The library takes these objects, never an ``argparse.Namespace``: the data builders a
:class:`DataConfig`, ``make_plan`` a :class:`MethodConfig`, the trainer the whole
:class:`TrainConfig` and a :class:`World` (this process's place in ``torch.distributed``).

Field names are the flags' (``--train-dataset-type`` -> ``train_dataset_type``, ``--EMA-momentum``
-> ``ema_momentum``), so a field, its flag and the checkpoint's record read the same. A checkpoint
records :meth:`TrainConfig.record` (``train_config``, plain data); :meth:`TrainConfig.from_record`
reads it back, and also the flat ``train_args`` dict that checkpoints of earlier versions hold.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

LOSS_TYPES = ("global_itc", "distill", "local_itc")
METHOD_LOSSES = {
    "farslip1": ("global_itc", "distill"),
    "farslip2": ("global_itc", "distill", "local_itc"),
    "vanilla": ("global_itc",),
}


@dataclass(frozen=True)
class DataConfig:
    """What the training and validation loaders read and which views they build."""

    train_data: str
    train_dataset_type: str            # webdataset | json | csv (never "auto" here)
    train_dataset_name: Optional[str]
    train_num_samples: Optional[int]   # the epoch length of webdataset data
    root_train_img_dir: Optional[str]
    dataset_resampled: bool
    val_data: Optional[str]
    root_val_img_dir: Optional[str]
    workers: int
    batch_size: int                    # images per process per step
    view_resize: str                   # torch | pil
    use_imagecrop_aug: bool            # crop views asked for webdataset / CSV data
    local_method: str                  # randomcrops | grids | objects
    max_boxes: int                     # N local views per image
    min_size: int
    max_size: int
    color_jitter: bool                 # the stage-2 transform's colour jitter + grayscale
    # derived from the method and the data format (see farslip.train.args.parse_args)
    crops: bool                        # random-crop / grid views are built
    objects: bool                      # MGRS object views and texts are built
    object_pixels: str                 # which object crops some loss reads: all | labelled | none


@dataclass(frozen=True)
class MethodConfig:
    """The losses of the step, their weights and the teacher."""

    method: str                        # farslip1 | farslip2 | vanilla
    loss_type: tuple[str, ...]
    distill_align: str
    distill_type: str                  # active | ema | frozen
    ema_momentum: float
    local_itc_align: str
    mpcl_loss: bool
    w_g: float
    w_d: float
    w_l: float
    last_attn_type: str
    local_loss: bool
    gather_with_grad: bool
    distill_views: str                 # derived: "crops" or "objects", what distillation aligns


@dataclass(frozen=True)
class ModelConfig:
    """The student: architecture, initial weights and how it runs."""

    model: str                         # resolved: never None here
    pretrained: Optional[str]
    force_quick_gelu: Optional[bool]
    long_text: Optional[bool]
    grad_checkpointing: bool
    torchcompile: bool
    unsafe_load: bool


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, the schedule, precision and the divergence guard."""

    lr: float
    wd: float
    beta1: float
    beta2: float
    eps: float
    epochs: int
    warmup: int
    grad_clip_norm: Optional[float]
    precision: str
    max_skipped_steps: int
    check_grads_every: int


@dataclass(frozen=True)
class RunConfig:
    """Where the run lives, what it logs and checkpoints, its seed and its device."""

    logs: str
    name: Optional[str]                # None until the trainer names the run
    resume: Optional[str]
    save_frequency: int
    save_every_n_steps: int
    keep_checkpoints: int
    val_frequency: int
    log_every_n_steps: int
    report_to: tuple[str, ...]
    wandb_project_name: str
    seed: int
    device: str                        # resolved: cpu, cuda, cuda:1, ... (never "auto")
    dist_url: Optional[str]
    dist_backend: Optional[str]
    debug: bool


SECTIONS = {"data": DataConfig, "method": MethodConfig, "model": ModelConfig,
            "optim": OptimConfig, "run": RunConfig}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run, by section."""

    data: DataConfig
    method: MethodConfig
    model: ModelConfig
    optim: OptimConfig
    run: RunConfig

    def replace(self, section: str, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` in one section (the config itself never changes)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})

    def record(self) -> dict[str, dict[str, Any]]:
        """Plain data (str/int/float/bool/None and lists) for checkpoints, logs and reporters."""
        return {name: {f.name: _plain(getattr(getattr(self, name), f.name))
                       for f in fields(getattr(self, name))} for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """``{flag dest: value}`` over all sections (field names are unique across them)."""
        return {key: value for section in self.record().values() for key, value in section.items()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any],
                    defaults: Optional[Mapping[str, Any]] = None) -> "TrainConfig":
        """The config a checkpoint records: the sectioned ``train_config`` of this version, or
        the flat ``train_args`` of earlier ones (their extra entries, such as ``rank``, are
        ignored). A field missing from a flat record takes ``defaults[field]``; without one the
        record is refused with the missing names."""
        nested = all(isinstance(record.get(name), Mapping) for name in SECTIONS)
        flat: dict[str, Any] = dict(defaults or {})
        if nested:
            for name in SECTIONS:
                flat.update(record[name])
        else:
            flat.update(record)
        parts, missing = {}, []
        for name, section in SECTIONS.items():
            values = {}
            for f in fields(section):
                if f.name not in flat:
                    missing.append(f.name)
                    continue
                value = flat[f.name]
                values[f.name] = tuple(value) if isinstance(value, list) else value
            parts[name] = values
        if missing:
            raise ValueError(f"the training record lacks {', '.join(missing)}")
        return cls(**{name: SECTIONS[name](**values) for name, values in parts.items()})


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size, its device (``torch.distributed``
    after ``torchrun``; one process otherwise). Its attribute names are those open_clip's
    distributed helpers (``is_master``, ``broadcast_object``, ``all_gather_object``) read."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False
    device: str = "cpu"
    horovod: bool = False              # open_clip's helpers ask; farslip never uses Horovod

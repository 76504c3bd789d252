"""One string names a model: ``create_model("FarSLIP2-ViT-B-16")`` or an architecture + weights.

``name`` is a registry name (see ``registry.py``) or any open_clip architecture, including this
package's small configs in ``farslip/model_configs``. ``pretrained`` is a local file, an open_clip
tag (``openai``) or ``hf-hub:OWNER/REPO/FILE``; for a registry name it defaults to the released
weights. QuickGELU and the Long-CLIP text mode follow the weights unless forced.

A checkpoint the trainer wrote records its settings (``record.py``): its path alone is a model
name (``create_model("logs/run/checkpoints/epoch_1.pt")``), and as ``pretrained`` it needs no
architecture or QuickGELU flag; a contradicting one is an error naming both.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import open_clip
import torch
from torch import nn

from ..data.transforms import eval_transform, squash_transform
from .checkpoint import CheckpointError, load_checkpoint, load_state_dict, text_context
from .hub import CheckpointNotAvailable, hub_file, parse_hf_hub
from .longclip import enable_long_text
from .record import check_settings, read_settings
from .registry import PretrainedSpec, get_spec, spec_for_file

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)

_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _is_file_spec(pretrained: str) -> bool:
    return Path(pretrained).suffix in _FILE_SUFFIXES or Path(pretrained).exists()


def is_checkpoint_name(name: str) -> bool:
    """Whether a model name is a checkpoint file (neither a registry name nor an architecture)."""
    return get_spec(name) is None and name not in open_clip.list_models() and _is_file_spec(name)


def recorded_settings(name: str, pretrained: Optional[str]) -> tuple[Optional[str], Optional[str], Optional[dict]]:
    """(model name or None, pretrained, the settings a local checkpoint records or None).

    A model name that is a checkpoint file (and neither a registry name nor an architecture)
    becomes ``pretrained``; the name is then None and the file must record its settings.
    """
    if is_checkpoint_name(name):
        if pretrained is not None and pretrained != name:
            raise ValueError(f"model {name!r} is a checkpoint file; pass no pretrained= with it "
                             f"(got {pretrained!r})")
        name, pretrained = None, name
    local = pretrained is not None and not pretrained.startswith("hf-hub:") and _is_file_spec(pretrained)
    settings = read_settings(pretrained) if local else None
    if name is None and settings is None:
        raise CheckpointError(f"{pretrained} records no model settings (not a checkpoint of this trainer); "
                              f"name its architecture: create_model(ARCH, pretrained={pretrained!r}) "
                              "(command line: --model ARCH --pretrained FILE)")
    return name, pretrained, settings


def _resolve(name: Optional[str], pretrained: Optional[str], settings: Optional[dict] = None
             ) -> tuple[str, Optional[str], Optional[PretrainedSpec]]:
    """(architecture, weights source or None, registry entry describing the weights or None)."""
    if name is None:  # a recorded checkpoint named the model
        return settings["arch"], pretrained, None
    spec = get_spec(name)
    if spec is not None:
        if pretrained is None:
            pretrained = f"hf-hub:{spec.repo}/{spec.filename}" if spec.repo else spec.tag
        if settings is not None:  # the file says what it is, not the registry entry
            check_settings(settings, pretrained, arch=spec.arch, asked=name)
            return spec.arch, pretrained, None
        return spec.arch, pretrained, spec
    if name not in open_clip.list_models():
        raise ValueError(f"unknown model {name!r}: not a named checkpoint (farslip models) nor an open_clip "
                         f"architecture (open_clip.list_models())")
    if settings is not None:
        check_settings(settings, pretrained, arch=name)
        return name, pretrained, None
    # a file without a record: a released file's name says what it is (QuickGELU)
    weights_spec = spec_for_file(pretrained) if pretrained and _is_file_spec(pretrained) else None
    return name, pretrained, weights_spec


def _fetch(pretrained: str, cache_dir: Optional[str]) -> str:
    if pretrained.startswith("hf-hub:"):
        return hub_file(*parse_hf_hub(pretrained), cache_dir=cache_dir)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    return str(path)


def create_model(
    name: str,
    pretrained: Optional[str] = None,
    *,
    force_quick_gelu: Optional[bool] = None,
    long_text: Optional[bool] = None,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    cache_dir: Optional[str] = None,
    allow_unsafe: bool = False,
) -> nn.Module:
    """Build a stock open_clip ``CLIP`` and load its weights (see the module docstring).

    ``force_quick_gelu=None`` uses QuickGELU for OpenAI-derived weights (registry entries, the
    ``openai`` tag); ``long_text=None`` follows the checkpoint (248-row text table -> Long-CLIP);
    ``long_text=True`` on 77-token weights stretches the table (SPEC section 2); ``False`` on
    long weights is an error rather than a silent truncation. ``name`` may be a checkpoint file
    that records its settings; such a file as ``pretrained`` sets the architecture's QuickGELU and
    image size itself (see the module docstring).
    """
    name, pretrained, settings = recorded_settings(name, pretrained)
    arch, pretrained, spec = _resolve(name, pretrained, settings)
    is_tag = pretrained is not None and not pretrained.startswith("hf-hub:") and not _is_file_spec(pretrained)
    if settings is not None:
        check_settings(settings, pretrained, force_quick_gelu=force_quick_gelu)
        force_quick_gelu = settings["quick_gelu"]
    if force_quick_gelu is None:
        force_quick_gelu = bool(spec.quick_gelu) if spec is not None else (is_tag and pretrained == "openai")
    common = dict(precision=precision, device=device, force_quick_gelu=force_quick_gelu)

    if pretrained is None:
        model = open_clip.create_model(arch, pretrained=None, **common)
    elif is_tag:
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, cache_dir=cache_dir, **common)
        except Exception as err:  # open_clip raises RuntimeError / hub errors; say what happened
            raise CheckpointNotAvailable(
                f"could not load open_clip weights {arch!r} / {pretrained!r}: {type(err).__name__}: {err}. "
                f"Without internet access, pass a local file with --pretrained PATH (or pretrained none "
                f"to start from random weights)."
            ) from err
    else:
        path = _fetch(pretrained, cache_dir)
        state = load_state_dict(path, allow_unsafe=allow_unsafe)
        ctx = text_context(state)
        if ctx is not None and ctx > 77 and long_text is False:
            raise CheckpointError(f"{path} holds a {ctx}-token (Long-CLIP) text table; it cannot load with "
                                  f"long_text=False (that would truncate it). Drop the flag or pass long_text=True.")
        force_ctx = ctx if ctx is not None and ctx != 77 else None
        if settings is not None:
            if ctx is not None and ctx != settings["context_length"]:
                raise CheckpointError(f"{path}: records text context {settings['context_length']} but holds a "
                                      f"{ctx}-row positional table")
            h, w = settings["image_size"]
            common["force_image_size"] = h if h == w else (h, w)
        model = open_clip.create_model(arch, pretrained=None, force_context_length=force_ctx, **common)
        load_checkpoint(model, state)
        log.info("loaded %s into %s (quick_gelu=%s, text context %s)", path, arch, force_quick_gelu,
                 model.context_length)
    if long_text and model.context_length == 77:
        enable_long_text(model)
    model.farslip_arch = arch
    return model


def create_model_and_transforms(name: str, pretrained: Optional[str] = None, **kwargs):
    """``(model, preprocess_train, preprocess_val)``: the squash-resize training transform of the
    global view (no jitter; stage 2's jitter is ``squash_transform(size, jitter=True)``) and the
    CLIP evaluation transform."""
    model = create_model(name, pretrained, **kwargs)
    size = model.visual.image_size
    return model, squash_transform(size), eval_transform(size)


def get_tokenizer(name_or_model: Union[str, nn.Module], context_length: Optional[int] = None):
    """open_clip tokenizer for a model name or a created model (then at its own context length)."""
    if isinstance(name_or_model, nn.Module):
        arch = getattr(name_or_model, "farslip_arch", "ViT-B-32")
        ctx = context_length or name_or_model.context_length
        return open_clip.get_tokenizer(arch, context_length=ctx)
    spec = get_spec(name_or_model)
    arch = spec.arch if spec else name_or_model
    ctx = context_length or (spec.context_length if spec else None)
    return open_clip.get_tokenizer(arch, context_length=ctx)

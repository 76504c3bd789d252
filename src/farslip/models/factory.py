"""One string names a model: ``create_model("FarSLIP2-ViT-B-16")`` or an architecture + weights.

``name`` is a registry name (see ``registry.py``), any open_clip architecture (including this
package's small configs in ``farslip/model_configs``), the path of an open_clip model config file
(``my_model.json``), or an open_clip schema id: ``hf-hub:ORG/REPO`` (a hub repo holding
``open_clip_config.json`` and its weights, read through ``huggingface_hub`` and its cache) or
``local-dir:FOLDER`` (the same files in a folder). ``pretrained`` is a local file, an open_clip tag
(``openai``), ``hf-hub:OWNER/REPO/FILE``, or ``"none"`` for random weights; for a registry name
or a schema id it defaults to the model's own weights. QuickGELU and the Long-CLIP text mode
follow the weights unless forced.

A checkpoint the trainer wrote records its settings (``record.py``): its path alone is a model
name (``create_model("logs/run/checkpoints/epoch_1.pt")``), and as ``pretrained`` it needs no
architecture or QuickGELU flag; a contradicting one is an error naming both.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import open_clip
import torch
from torch import nn

from ..transforms import eval_transform, squash_transform
from .checkpoint import CheckpointError, load_checkpoint, load_state_dict, text_context
from .hub import CheckpointNotAvailable, hub_file, parse_hf_hub
from .longclip import enable_long_text
from .record import check_settings, read_settings
from .registry import HF_HUB, PretrainedSpec, get_spec, hf_hub_id, list_names, spec_for_file

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)

_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
RANDOM_WEIGHTS = "none"  # pretrained="none": random initialisation, asked for explicitly
LOCAL_DIR = "local-dir:"  # open_clip's prefix of a local schema folder (HF_HUB: registry.py)
SCHEMA_CONFIG = "open_clip_config.json"
# The weights file a schema folder / hub repo holds, in open_clip's order of preference.
SCHEMA_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                  "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                  "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def is_random_weights(pretrained: Optional[str]) -> bool:
    """``pretrained`` asks for random weights (``"none"``, any case)."""
    return isinstance(pretrained, str) and pretrained.strip().lower() == RANDOM_WEIGHTS


def _is_file_spec(pretrained: str) -> bool:
    return Path(pretrained).suffix in _FILE_SUFFIXES or Path(pretrained).exists()


def is_checkpoint_name(name: str) -> bool:
    """Whether a model name is a checkpoint file (no registry name, architecture, config or schema id)."""
    return (get_spec(name) is None and not name.startswith((HF_HUB, LOCAL_DIR)) and not name.lower().endswith(".json")
            and name not in open_clip.list_models() and _is_file_spec(name))


def recorded_settings(name: str, pretrained: Optional[str]) -> tuple[Optional[str], Optional[str], Optional[dict]]:
    """(model name or None, pretrained, the settings a local checkpoint records or None).

    A model name that is a checkpoint file becomes ``pretrained``; the name is then None and the
    file must record its settings.
    """
    if is_checkpoint_name(name):
        if pretrained is not None and pretrained != name:
            raise ValueError(f"model {name!r} is a checkpoint file; pass no pretrained= with it "
                             f"(got {pretrained!r})")
        name, pretrained = None, name
    local = (pretrained is not None and not is_random_weights(pretrained) and not pretrained.startswith(HF_HUB)
             and _is_file_spec(pretrained))
    settings = read_settings(pretrained) if local else None
    if name is None and settings is None:
        raise CheckpointError(f"{pretrained} records no model settings (not a checkpoint of this trainer); "
                              f"name its architecture: create_model(ARCH, pretrained={pretrained!r}) "
                              "(command line: --model ARCH --pretrained FILE)")
    return name, pretrained, settings


def did_you_mean(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (case-insensitive), best first."""
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    return [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)]


def unknown_model_error(name: str) -> ValueError:
    """What to say about a model name that is none of the accepted kinds."""
    close = did_you_mean(name, [*list_names(), *open_clip.list_models()])
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown model {name!r}: not a named checkpoint (`farslip models`), an open_clip "
                      f"architecture (open_clip.list_models()), a model config file (*.json), nor "
                      f"hf-hub:ORG/REPO / local-dir:FOLDER.{hint}")


def register_config_file(path: Union[str, Path]) -> str:
    """Make an open_clip model config file (``embed_dim``, ``vision_cfg``, ``text_cfg``) known to
    open_clip under its file stem; returns that architecture name.

    A stem that already names a different built-in config is refused rather than replacing it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model config file not found: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"model config {path}: not readable JSON ({err})") from err
    if isinstance(config, dict) and "model_cfg" in config:
        raise ValueError(f"{path} is an open_clip_config.json (config + preprocessing of a saved model): "
                         f"pass its folder as --model local-dir:{path.parent}")
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(config, dict) or key not in config]
    if missing:
        raise ValueError(f"model config {path}: missing {', '.join(missing)} (an open_clip model config, "
                         f"like open_clip's model_configs/ViT-B-32.json, has embed_dim, vision_cfg and text_cfg)")
    name = path.stem
    known = open_clip.get_model_config(name)
    if known is not None and known != config:
        raise ValueError(f"model config {path}: its name {name!r} is already an open_clip architecture with a "
                         f"different config; rename the file")
    if known is None:
        open_clip.add_model_config(path)
    return name


# What open_clip logs about the weights it did not load; wrong when this module loads them itself.
_OPEN_CLIP_WEIGHT_MESSAGES = ("No pretrained weights loaded for model", "Local config loaded, but no CLIP weights",
                              "Multiple checkpoints found in")


@contextlib.contextmanager
def _no_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" (and its notes on a
    schema folder's weights) while this module creates a model whose weights it loads itself, or
    that is random on purpose (said by this module's own log line)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_OPEN_CLIP_WEIGHT_MESSAGES)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


@dataclass(frozen=True)
class _Source:
    """What a model name resolves to: the open_clip name to build (an architecture or a
    ``local-dir:`` folder), the weights (file / tag / ``hf-hub:`` file, or None = random) and the
    registry entry describing them."""

    build: str
    pretrained: Optional[str]
    spec: Optional[PretrainedSpec]


def _schema_folder(name: str, cache_dir: Optional[str]) -> Path:
    """The folder holding ``open_clip_config.json`` of ``hf-hub:ORG/REPO`` (its hub cache snapshot)
    or ``local-dir:FOLDER``."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):]).expanduser()
        if not (folder / SCHEMA_CONFIG).is_file():
            raise FileNotFoundError(f"{name}: {folder / SCHEMA_CONFIG} does not exist (a local-dir: model is a "
                                    f"folder with {SCHEMA_CONFIG} and its weights, as open_clip saves them)")
        return folder
    repo = name[len(HF_HUB):].strip("/")
    if repo.count("/") != 1:
        raise ValueError(f"--model {name}: expected hf-hub:ORG/REPO (a repo with {SCHEMA_CONFIG}); "
                         f"a single weights file goes to --pretrained hf-hub:ORG/REPO/FILE")
    try:
        return Path(hub_file(repo, SCHEMA_CONFIG, cache_dir=cache_dir)).parent
    except CheckpointNotAvailable as err:
        raise CheckpointNotAvailable(
            f"--model {name}: {str(err).splitlines()[0]}\nGet the repo on a machine with internet access "
            f"(`hf download {repo}`) and copy the cache folder here (set HF_HUB_CACHE), or copy the repo's files "
            f"into a folder and pass --model local-dir:FOLDER.") from err


def _schema_weights(name: str, folder: Path, cache_dir: Optional[str]) -> str:
    """The weights file of a schema model: the first of SCHEMA_WEIGHTS it has."""
    if name.startswith(LOCAL_DIR):
        for filename in SCHEMA_WEIGHTS:
            if (folder / filename).is_file():
                return str(folder / filename)
        found = sorted(p.name for p in folder.iterdir() if p.suffix in _FILE_SUFFIXES)
        if len(found) == 1:
            return str(folder / found[0])
        raise FileNotFoundError(f"{name}: no weights file in {folder} (looked for {', '.join(SCHEMA_WEIGHTS)}"
                                f"{'; several others: ' + ', '.join(found) if found else ''}); pass one with "
                                f"--pretrained FILE, or --pretrained none for random weights")
    repo = name[len(HF_HUB):].strip("/")
    errors = []
    for filename in SCHEMA_WEIGHTS[:3]:
        try:
            return hub_file(repo, filename, cache_dir=cache_dir)
        except CheckpointNotAvailable as err:
            errors.append(str(err).splitlines()[0])
    raise CheckpointNotAvailable(f"{name}: none of {', '.join(SCHEMA_WEIGHTS[:3])} is cached or downloadable:\n"
                                 + "\n".join(errors))


def _resolve(name: Optional[str], pretrained: Optional[str], cache_dir: Optional[str] = None,
             settings: Optional[dict] = None) -> _Source:
    """The model name and ``pretrained`` -> :class:`_Source` (``pretrained`` None = random).

    ``settings`` (what a local checkpoint records) name the architecture when ``name`` is None
    and must agree with it otherwise; the file, not a registry entry or its name, then says what
    it is (QuickGELU).
    """
    if name is None:  # a recorded checkpoint named the model
        return _Source(settings["arch"], pretrained, None)
    random = is_random_weights(pretrained)
    spec = get_spec(name)
    if spec is not None:
        if pretrained is None:
            pretrained = hf_hub_id(spec.repo, spec.filename) if spec.repo else spec.tag
        if settings is not None:
            check_settings(settings, pretrained, arch=spec.arch, asked=name)
            return _Source(spec.arch, pretrained, None)
        return _Source(spec.arch, None if random else pretrained, spec)
    if name.startswith((HF_HUB, LOCAL_DIR)):
        folder = _schema_folder(name, cache_dir)
        if pretrained is None:
            pretrained = _schema_weights(name, folder, cache_dir)
        elif not random and not pretrained.startswith(HF_HUB) and not _is_file_spec(pretrained):
            raise ValueError(f"--pretrained {pretrained!r} with --model {name}: a schema model takes a weights "
                             f"file, hf-hub:ORG/REPO/FILE or none, not an open_clip tag")
        return _Source(f"{LOCAL_DIR}{folder}", None if random else pretrained, None)
    if name.lower().endswith(".json"):
        name = register_config_file(name)
    elif name not in open_clip.list_models():
        raise unknown_model_error(name)
    if random or pretrained is None:
        return _Source(name, None, None)
    if settings is not None:
        check_settings(settings, pretrained, arch=name)
        return _Source(name, pretrained, None)
    # a file without a record: a released file's name says what it is (QuickGELU)
    return _Source(name, pretrained, spec_for_file(pretrained) if _is_file_spec(pretrained) else None)


def _fetch(pretrained: str, cache_dir: Optional[str]) -> str:
    if pretrained.startswith(HF_HUB):
        return hub_file(*parse_hf_hub(pretrained), cache_dir=cache_dir)
    path = Path(pretrained).expanduser()
    if not path.exists():  # a folder or a broken file is named by the reader
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    return str(path)


def _mark(model: nn.Module, arch: str, weights: Optional[str], checkpoint: Optional[str]) -> nn.Module:
    """Record on the model what it is: the open_clip name its tokenizer follows, the weights source
    (None = random weights) and the local file loaded, if any."""
    model.farslip_arch = arch
    model.farslip_weights = weights
    model.farslip_checkpoint = checkpoint
    return model


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
    ``openai`` tag) and leaves a config's own setting otherwise; ``long_text=None`` follows the
    checkpoint (248-row text table -> Long-CLIP; a registry name with random weights takes its
    entry's text length); ``long_text=True`` on 77-token weights stretches the table (SPEC
    section 2); ``False`` on long weights is an error rather than a silent truncation. The created
    model records ``farslip_weights`` (the weights source, None for random weights) and
    ``farslip_checkpoint`` (the local file loaded). ``name`` may be a checkpoint file that records
    its settings; such a file as ``pretrained`` sets QuickGELU and the image size itself.
    """
    asked_random = is_random_weights(pretrained)
    name, pretrained, settings = recorded_settings(name, pretrained)
    source = _resolve(name, pretrained, cache_dir, settings)
    name = name or pretrained
    arch, pretrained, spec = source.build, source.pretrained, source.spec
    is_tag = pretrained is not None and not pretrained.startswith(HF_HUB) and not _is_file_spec(pretrained)
    if settings is not None:
        check_settings(settings, pretrained, force_quick_gelu=force_quick_gelu)
        force_quick_gelu = settings["quick_gelu"]
    if force_quick_gelu is None:
        force_quick_gelu = bool(spec.quick_gelu) if spec is not None else (is_tag and pretrained == "openai")
    common = dict(precision=precision, device=device, force_quick_gelu=force_quick_gelu)
    checkpoint = None

    if pretrained is None:
        if asked_random:
            log.info("%s: random weights (pretrained=%r)", name, RANDOM_WEIGHTS)
        else:
            log.warning("%s: no weights given, the model starts from random weights (pass pretrained=FILE|TAG, "
                        "or %r to ask for random weights)", name, RANDOM_WEIGHTS)
        with _no_random_init_warning():
            model = open_clip.create_model(arch, pretrained=None, load_weights=False, **common)
        if long_text is None and spec is not None and spec.long_text:
            long_text = True
    elif is_tag:
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, cache_dir=cache_dir, **common)
        except Exception as err:  # open_clip raises RuntimeError / hub errors; say what happened
            raise CheckpointNotAvailable(
                f"could not load open_clip weights {arch!r} / {pretrained!r}: {type(err).__name__}: {err}. "
                f"Without internet access, pass a local file with --pretrained PATH (or --pretrained none "
                f"to start from random weights)."
            ) from err
    else:
        checkpoint = _fetch(pretrained, cache_dir)
        state = load_state_dict(checkpoint, allow_unsafe=allow_unsafe)
        ctx = text_context(state)
        if ctx is not None and ctx > 77 and long_text is False:
            raise CheckpointError(f"{checkpoint} holds a {ctx}-token (Long-CLIP) text table; it cannot load with "
                                  f"long_text=False (that would truncate it). Drop the flag or pass long_text=True.")
        force_ctx = ctx if ctx is not None and ctx != 77 else None
        if settings is not None:
            if ctx is not None and ctx != settings["context_length"]:
                raise CheckpointError(f"{checkpoint}: records text context {settings['context_length']} but holds a "
                                      f"{ctx}-row positional table")
            h, w = settings["image_size"]
            common["force_image_size"] = h if h == w else (h, w)
        with _no_random_init_warning():
            model = open_clip.create_model(arch, pretrained=None, load_weights=False, force_context_length=force_ctx,
                                           **common)
        load_checkpoint(model, state, name=str(checkpoint))
        log.info("loaded %s into %s (quick_gelu=%s, text context %s)", checkpoint, arch, force_quick_gelu,
                 model.context_length)
    if long_text and model.context_length == 77:
        enable_long_text(model)
    return _mark(model, arch, pretrained, checkpoint)


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
    if arch.lower().endswith(".json"):
        arch = register_config_file(arch)
    ctx = context_length or (spec.context_length if spec else None)
    return open_clip.get_tokenizer(arch, context_length=ctx)

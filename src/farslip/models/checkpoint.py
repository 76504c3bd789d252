"""Safe checkpoint reading and strict loading into open_clip ``CLIP`` models.

Accepted files: a bare state dict, or a training dict holding ``state_dict`` (keys possibly
prefixed ``module.``; ``optimizer``, ``state_dict_teacher`` etc. are ignored), as ``.pt``/``.pth``/
``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors``. The Long-CLIP two-table layout
(``positional_embedding`` + ``positional_embedding_res`` + ``mask1``/``mask2``) is merged into one
table, the layout this project saves and stock open_clip loads with a 248-token context.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .longclip import KEEP

log = logging.getLogger(__name__)

StateSource = Union[str, Path, Mapping[str, Any]]
# Metadata entries of OpenAI's original checkpoints; not parameters.
_OPENAI_META = ("input_resolution", "context_length", "vocab_size")


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model (missing / unexpected / mis-shaped keys, wrong text length)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs unrestricted unpickling, which is off unless asked for."""


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format, TorchScript archives
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol >= 2 (torch.save's legacy format)


def _sniff(path: Path) -> str:
    """What a checkpoint file looks like from its first bytes: zip, pickle, safetensors or other."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if path.suffix == ".safetensors":
        return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[:1] == bytes([_PICKLE_PROTO]):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"  # an 8-byte header length, then the JSON header
    return "other"


def _not_a_checkpoint(path: Path) -> CheckpointError:
    """The error for a file that is no checkpoint format at all, saying what it seems to be."""
    with open(path, "rb") as handle:
        head = handle.read(200)
    try:
        first = head.decode("utf-8").splitlines()[0] if head.strip() else ""
    except UnicodeDecodeError:
        first = None
    if first is not None and first:
        what = f"a text file (it starts with {first[:60]!r})"
    else:
        what = f"an unknown binary format (first bytes {head[:8].hex(' ')})"
    return CheckpointError(f"{path} is not a checkpoint: it is {what}, not a PyTorch (.pt/.pth/.bin) "
                           "or .safetensors file; pass the weights file itself")


def read_file(path: Union[str, Path], allow_unsafe: bool = False) -> Any:
    """Read a checkpoint file without executing code from it (unless ``allow_unsafe``).

    Every way a file can be unusable is a :class:`CheckpointError` (or ``FileNotFoundError``) that
    names it and says what is wrong: a folder, an empty or truncated file, a file that is not a
    checkpoint at all, or a pickle that needs unrestricted unpickling (:class:`UnsafeCheckpointError`).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download or copy? Fetch it again")
    kind = _sniff(path)
    broken = (f"{path} is truncated or corrupted ({size} bytes; cannot read its {{}}): an interrupted "
              "download or copy? Fetch it again")
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(broken.format(f"safetensors header or data: {err}")) from err
    if kind == "other":
        raise _not_a_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _needs_unsafe(err):
            raise CheckpointError(broken.format(f"pickle: {_first_line(err)}")) from err
        if not allow_unsafe:
            raise UnsafeCheckpointError(
                f"{path}: refused to unpickle (it holds Python objects beyond tensors and plain "
                f"containers: {_first_line(err)}). Only if you trust this file, load it with allow_unsafe=True "
                f"(command line: --unsafe-load)."
            ) from err
        log.warning("%s: loading with unrestricted unpickling (allow_unsafe=True)", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except (EOFError, RuntimeError) as err:  # torch's zip reader raises RuntimeError on a cut file
        raise CheckpointError(broken.format("zip archive" if kind == "zip" else "pickle")) from err


def _first_line(err: Exception) -> str:
    """The informative line of a ``torch.load`` error (its weights-only unpickler's own reason)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line[len("WeightsUnpickler error:"):].split(" Please use")[0].strip()
    return lines[0] if lines else type(err).__name__


def _needs_unsafe(err: pickle.UnpicklingError) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a *well-formed* pickle for the Python
    objects it holds (rather than failing to parse a damaged one)."""
    reason = _first_line(err)
    return "global" in reason.lower()


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside a bare state dict or a training dict, without ``module.`` prefixes."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict or a dict with 'state_dict', got {type(obj).__name__}")
    for key in ("state_dict", "model", "model_state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {}
    for key, value in obj.items():
        if key in _OPENAI_META and (not isinstance(value, torch.Tensor) or value.ndim == 0):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def merge_long_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two-table Long-CLIP layout -> one table: rows < keep from the first, the rest from ``_res``."""
    if "positional_embedding_res" not in state:
        return state
    state = dict(state)
    res = state.pop("positional_embedding_res")
    mask1 = state.pop("mask1", None)
    state.pop("mask2", None)
    keep = int(mask1.flatten().gt(0).sum()) if mask1 is not None else KEEP
    base = state["positional_embedding"]
    if base.shape != res.shape:
        raise CheckpointError(f"Long-CLIP tables differ in shape: {tuple(base.shape)} vs {tuple(res.shape)}")
    state["positional_embedding"] = torch.cat([base[:keep], res[keep:]], dim=0)
    return state


def load_state_dict(source: StateSource, allow_unsafe: bool = False) -> dict[str, torch.Tensor]:
    """Read and normalise a checkpoint (file or mapping) into this project's key layout."""
    name = str(source) if isinstance(source, (str, Path)) else "state dict"
    obj = read_file(source, allow_unsafe) if isinstance(source, (str, Path)) else source
    return merge_long_clip(extract_state_dict(obj, name))


def text_context(state: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the text positional table in a (normalised) state dict, if it has one."""
    table = state.get("positional_embedding")
    return None if table is None else int(table.shape[0])


def _list(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_checkpoint(model: nn.Module, source: StateSource, allow_unsafe: bool = False,
                    name: Optional[str] = None) -> nn.Module:
    """Strictly load ``source`` into ``model``; any mismatch is an error naming the keys.

    ``name`` is what errors call the source (default: its path, or "state dict" for a mapping).
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "state dict")
    state = load_state_dict(source, allow_unsafe)
    ctx, model_ctx = text_context(state), getattr(model, "context_length", None)
    if ctx is not None and model_ctx is not None and ctx != model_ctx:
        hint = "create the model with long_text=True" if ctx > model_ctx else "it is a short-text checkpoint"
        raise CheckpointError(
            f"{name}: text positional table has {ctx} rows but the model's context is {model_ctx} "
            f"({hint}); refusing to truncate or pad it silently"
        )
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    mis_shaped = {k for k in set(own) & set(state) if own[k].shape != state[k].shape}
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_list(unexpected)}")
        if mis_shaped:
            parts.append("shape mismatch: " + _list(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                                                   for k in mis_shaped))
        raise CheckpointError(f"{name} does not fit {type(model).__name__}: " + "; ".join(parts))
    bad = non_finite_keys(state)
    if bad:
        raise CheckpointError(f"{name} holds non-finite weights (NaN or inf) in {len(bad)} tensor(s): {_list(bad)}; "
                              "it comes from a diverged run: use an earlier checkpoint")
    model.load_state_dict(state, strict=True)
    return model


def non_finite_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [key for key, value in state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]

"""Batched, precision-aware encoding of image files and texts, shared by the three evaluations."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F
from open_clip import get_input_dtype
from open_clip_train.precision import get_autocast
from torch.utils.data import DataLoader
from tqdm import tqdm

from farslip.models.text import encode_text

from .datasets import ImageFiles


@dataclass(frozen=True)
class Runtime:
    """How to run the model: batch size (images or windows per forward), loader workers, device
    and precision (``fp32``/``fp16``/``bf16`` cast the model at creation; ``amp``/``amp_bf16``
    autocast here)."""

    batch_size: int = 64
    workers: int = 4
    device: str = "cpu"
    precision: str = "fp32"

    def autocast(self) -> ContextManager:
        return get_autocast(self.precision, device_type=torch.device(self.device).type)()

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype images must have (open_clip's rule: half/bfloat16 for a cast model, else float32)."""
        return get_input_dtype(self.precision) or torch.float32


@torch.no_grad()
def encode_image_files(model, paths: Sequence[Path], transform: Callable, run: Runtime, desc: str) -> torch.Tensor:
    """L2-normalised ``model.encode_image`` of every file, in order, as float32 [N, D] on the CPU."""
    loader = DataLoader(ImageFiles(paths, transform), batch_size=run.batch_size, shuffle=False,
                        num_workers=run.workers, pin_memory=torch.device(run.device).type == "cuda")
    out = []
    dtype = run.input_dtype
    for images, _ in tqdm(loader, desc=desc, unit="batch", leave=False):
        with run.autocast():
            features = model.encode_image(images.to(run.device, dtype=dtype, non_blocking=True))
        out.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], run: Runtime, desc: str) -> torch.Tensor:
    """L2-normalised ``model.encode_text`` of every text, in order, as float32 [N, D] on the CPU.

    Uses ``farslip.encode_text`` (the same features, the padding after the longest text of each
    batch skipped).
    """
    out = []
    for start in tqdm(range(0, len(texts), run.batch_size), desc=desc, unit="batch", leave=False):
        tokens = tokenizer(list(texts[start:start + run.batch_size])).to(run.device)
        with run.autocast():
            features = encode_text(model, tokens)
        out.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(out)


def text_classifier(model, tokenizer, names: Sequence[str], templates: Sequence, run: Runtime) -> torch.Tensor:
    """Zero-shot weights [D, len(names)]: per name, normalised prompt embeddings averaged, renormalised
    (the CLIP recipe). Templates are format strings (``"a photo of {}."``) or callables."""
    prompts = [t.format(name) if isinstance(t, str) else t(name) for name in names for t in templates]
    features = encode_texts(model, tokenizer, prompts, run, "text prompts")
    weights = features.view(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(weights, dim=-1).T.contiguous()

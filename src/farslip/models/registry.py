"""Named checkpoints: one string for every released FarSLIP model and the peers it is compared to.

Each entry says where the weights live (a Hugging Face hub repo + file, or an open_clip tag),
which open_clip architecture they fit, whether that architecture needs QuickGELU (all weights
derived from OpenAI CLIP do), and whether the text tower is Long-CLIP (248 tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

LONG_CONTEXT = 248
SHORT_CONTEXT = 77
HF_HUB = "hf-hub:"  # open_clip's prefix of a Hugging Face hub id


def hf_hub_id(repo: str, filename: Optional[str] = None) -> str:
    """``hf-hub:OWNER/REPO`` (a repo, as open_clip's ``--model``) or ``hf-hub:OWNER/REPO/FILE`` (one
    file, as ``--pretrained``): the one place such an id is built."""
    return f"{HF_HUB}{repo}" + (f"/{filename}" if filename else "")


@dataclass(frozen=True)
class PretrainedSpec:
    name: str
    arch: str
    repo: Optional[str] = None  # Hugging Face hub repo id
    filename: Optional[str] = None  # file inside the repo
    tag: Optional[str] = None  # open_clip pretrained tag, when the weights come from open_clip
    quick_gelu: bool = True
    long_text: bool = False
    note: str = ""

    @property
    def context_length(self) -> int:
        return LONG_CONTEXT if self.long_text else SHORT_CONTEXT

    @property
    def source(self) -> str:
        return hf_hub_id(self.repo, self.filename) if self.repo else f"open_clip:{self.arch}/{self.tag}"


FARSLIP_REPO = "ZhenShiL/FarSLIP"

_SPECS = [
    PretrainedSpec("FarSLIP1-ViT-B-32", "ViT-B-32", FARSLIP_REPO, "FarSLIP1_ViT-B-32.pt",
                   note="stage 1 (RS5M); paper: ZSC 58.64, OVSS 29.87"),
    PretrainedSpec("FarSLIP2-ViT-B-32", "ViT-B-32", FARSLIP_REPO, "FarSLIP2_ViT-B-32.pt", long_text=True,
                   note="stage 2 (MGRS-200k), Long-CLIP text; paper: ZSC 60.12, OVSS 30.49"),
    PretrainedSpec("FarSLIP1-ViT-B-16", "ViT-B-16", FARSLIP_REPO, "FarSLIP1_ViT-B-16.pt",
                   note="stage 1 (RS5M); paper: ZSC 61.89, OVSS 35.44"),
    PretrainedSpec("FarSLIP2-ViT-B-16", "ViT-B-16", FARSLIP_REPO, "FarSLIP2_ViT-B-16.pt", long_text=True,
                   note="stage 2 (MGRS-200k), Long-CLIP text; paper: ZSC 62.24, OVSS 35.41"),
    PretrainedSpec("RemoteCLIP-ViT-B-32", "ViT-B-32", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt"),
    PretrainedSpec("RemoteCLIP-ViT-L-14", "ViT-L-14", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt"),
    PretrainedSpec("GeoRSCLIP-ViT-B-32", "ViT-B-32", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt"),
    PretrainedSpec("GeoRSCLIP-ViT-L-14", "ViT-L-14", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-L-14.pt"),
    PretrainedSpec("OpenAI-ViT-B-32", "ViT-B-32", tag="openai", note="paper: ZSC 39.66, OVSS 27.30"),
    PretrainedSpec("OpenAI-ViT-B-16", "ViT-B-16", tag="openai", note="paper: ZSC 46.76, OVSS 32.28"),
    PretrainedSpec("OpenAI-ViT-L-14", "ViT-L-14", tag="openai"),
]

REGISTRY: dict[str, PretrainedSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> Optional[PretrainedSpec]:
    """The registry entry for ``name`` (exact, then case-insensitive), or None."""
    if name in REGISTRY:
        return REGISTRY[name]
    lowered = {key.lower(): spec for key, spec in REGISTRY.items()}
    return lowered.get(name.lower())


def spec_for_file(path: str) -> Optional[PretrainedSpec]:
    """The entry whose released file name matches ``path``'s base name (e.g. a downloaded copy)."""
    base = PurePosixPath(str(path).replace("\\", "/")).name
    matches = [spec for spec in _SPECS if spec.filename and PurePosixPath(spec.filename).name == base]
    return matches[0] if len(matches) == 1 else None


def list_names() -> list[str]:
    return list(REGISTRY)


"""Named checkpoints resolve through a local Hugging Face cache laid out exactly as the hub lays it."""
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import torch

import farslip

REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """models--owner--name/{blobs/<sha256>, refs/main, snapshots/<rev>/<file> -> blob}."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(REVISION)
    for filename, src in files.items():
        data = src.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / REVISION / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def _offline_env(cache: Path) -> dict:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.pop("HF_HOME", None)
    return env


def _weights_digest(model) -> float:
    return float(sum(p.double().sum() for p in model.state_dict().values()))


def test_named_long_checkpoint_loads_offline_from_hub_cache(tmp_path):
    torch.manual_seed(0)
    source = farslip.create_model("ViT-B-32", long_text=True, force_quick_gelu=True)
    state = {k: v.half() for k, v in source.state_dict().items()}
    # the released stage-2 layout: two text tables + masks, in a training dict with module. prefixes
    merged = state["positional_embedding"]
    res = merged.clone()
    first = merged.clone()
    first[20:] = 0
    mask1 = torch.zeros(248, 1)
    mask1[:20] = 1
    state.update(positional_embedding=first, positional_embedding_res=res, mask1=mask1, mask2=1 - mask1)
    raw = tmp_path / "FarSLIP2_ViT-B-32.pt"
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in state.items()}}, raw)
    # the released stage-1 layout: a bare state dict
    torch.manual_seed(1)
    stage1 = farslip.create_model("ViT-B-32", force_quick_gelu=True)
    bare = tmp_path / "FarSLIP1_ViT-B-32.pt"
    torch.save({k: v.half() for k, v in stage1.state_dict().items()}, bare)
    cache = tmp_path / "hub"
    write_hub_cache(cache, "ZhenShiL/FarSLIP", {"FarSLIP2_ViT-B-32.pt": raw, "FarSLIP1_ViT-B-32.pt": bare})
    raw.unlink()
    bare.unlink()

    expected = farslip.create_model("ViT-B-32", long_text=True)
    expected.load_state_dict({k: v.half().float() for k, v in source.state_dict().items()})
    expected1 = farslip.create_model("ViT-B-32")
    expected1.load_state_dict({k: v.half().float() for k, v in stage1.state_dict().items()})
    code = ("import farslip\n"
            "for name in ('FarSLIP2-ViT-B-32', 'FarSLIP1-ViT-B-32'):\n"
            "    m = farslip.create_model(name)\n"
            "    act = type(m.visual.transformer.resblocks[0].mlp.gelu).__name__\n"
            "    print(m.context_length, act, float(sum(p.double().sum() for p in m.state_dict().values())))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_offline_env(cache), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()[-2:]
    for line, (want_ctx, model) in zip(lines, [("248", expected), ("77", expected1)]):
        ctx, act, digest = line.split()
        assert ctx == want_ctx and act == "QuickGELU"
        assert abs(float(digest) - _weights_digest(model)) < 1e-3 * max(1.0, abs(float(digest)))


def test_download_copies_from_cache_and_explains_missing_files(tmp_path):
    torch.manual_seed(0)
    raw = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    raw.write_bytes(b"not really weights, only bytes to copy")
    cache = tmp_path / "hub"
    write_hub_cache(cache, "chendelong/RemoteCLIP", {"RemoteCLIP-ViT-B-32.pt": raw})
    dest = tmp_path / "checkpoints"
    ok = subprocess.run(["sh", "-c", 'umask 022 && exec "$0" "$@"', sys.executable, "-m", "farslip", "download",
                         "RemoteCLIP-ViT-B-32", "--to", str(dest)],
                        env=_offline_env(cache), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert (dest / "RemoteCLIP-ViT-B-32.pt").read_bytes() == raw.read_bytes()
    assert stat.S_IMODE((dest / "RemoteCLIP-ViT-B-32.pt").stat().st_mode) == 0o644  # the umask's, not 0600
    assert ok.stdout.strip().endswith("RemoteCLIP-ViT-B-32.pt")

    missing = subprocess.run([sys.executable, "-m", "farslip", "download", "FarSLIP1-ViT-B-16"],
                             env=_offline_env(cache), capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2  # a user-side problem, as in every command
    assert "ZhenShiL/FarSLIP/FarSLIP1_ViT-B-16.pt" in missing.stderr
    assert "HF_HUB_OFFLINE" in missing.stderr and "--pretrained" in missing.stderr


def test_registry_and_file_name_inference(tmp_path):
    spec = farslip.REGISTRY["FarSLIP1-ViT-B-16"]
    assert (spec.arch, spec.repo, spec.filename, spec.long_text) == ("ViT-B-16", "ZhenShiL/FarSLIP",
                                                                     "FarSLIP1_ViT-B-16.pt", False)
    assert farslip.get_tokenizer("FarSLIP2-ViT-B-16")(["x"]).shape == (1, 248)
    assert farslip.get_tokenizer("FarSLIP1-ViT-B-16")(["x"]).shape == (1, 77)
    # a downloaded copy of a released file is recognised: QuickGELU follows it unless forced
    torch.manual_seed(0)
    tiny = farslip.create_model("ViT-Tiny-8")
    copy = tmp_path / "FarSLIP1_ViT-B-32.pt"  # a released name holding a tiny model's weights
    torch.save(tiny.state_dict(), copy)
    model = farslip.create_model("ViT-Tiny-8", str(copy))
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    model = farslip.create_model("ViT-Tiny-8", str(copy), force_quick_gelu=False)
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"

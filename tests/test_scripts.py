"""scripts/stage1.sh then scripts/stage2.sh, as a user calls them (tiny model, synthetic world)."""
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from farslip.synth import write_world

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "ViT-Tiny-8", "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--warmup", "1",
        "--epochs", "1"]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
def test_stage_scripts_chain_from_another_folder(tmp_path):
    world = write_world(tmp_path / "world", scale="tiny")
    env = dict(os.environ, LOGS="runs", MODEL="ViT-Tiny-8", MASTER_PORT=_free_port(), OMP_NUM_THREADS="1")
    env["PATH"] = str(Path(os.sys.executable).parent) + os.pathsep + env["PATH"]
    # relative data paths, called from outside the checkout
    shards = os.path.relpath(world["rs5m_train"], tmp_path)
    stage1 = subprocess.run(["bash", str(ROOT / "scripts/stage1.sh"), "1", shards, "--",
                             "--train-num-samples", "8", "--pretrained", "none", *TINY],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert stage1.returncode == 0, stage1.stdout[-3000:] + stage1.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "farslip1-ViT-Tiny-8" / "checkpoints" / "epoch_1.pt"
    assert checkpoint.is_file()

    env["MASTER_PORT"] = _free_port()
    stage2 = subprocess.run(["bash", str(ROOT / "scripts/stage2.sh"), "1",
                             os.path.relpath(world["mgrs_json"], tmp_path), os.path.relpath(world["mgrs_images"], tmp_path),
                             str(checkpoint.relative_to(tmp_path)), "--", *TINY, "--min-size", "8"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert stage2.returncode == 0, stage2.stdout[-3000:] + stage2.stderr[-3000:]
    final = torch.load(tmp_path / "runs" / "farslip2-ViT-Tiny-8" / "checkpoints" / "epoch_1.pt", weights_only=True)
    assert final["state_dict"]["positional_embedding"].shape[0] == 248  # stage 2 trains Long-CLIP text
    # QuickGELU follows what stage 1 recorded (random init: GELU), not a flag passed by hand
    first = torch.load(checkpoint, weights_only=True)["model_settings"]
    assert final["model_settings"]["quick_gelu"] is first["quick_gelu"] is False
    assert final["model_settings"]["context_length"] == 248
    params = (tmp_path / "runs" / "farslip2-ViT-Tiny-8" / "params.txt").read_text()
    assert "pretrained: " + str(checkpoint.relative_to(tmp_path)) in params

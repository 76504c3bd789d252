"""The bad-input suite: every broken input a user can hand the project gets a clear answer.

Each case builds one broken input, runs the library call or the real command on it, and asserts
the outcome: the exception type and a message naming the file / sample / flag (library), or the
exit status, a one-line message and no traceback (commands). See docs/BAD_INPUTS.md for the table.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import farslip
from farslip.models.checkpoint import CheckpointError, UnsafeCheckpointError

MODEL = "ViT-Tiny-8"


# ---------------------------------------------------------------- checkpoints (library)

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A good tiny checkpoint in the three formats, plus the folder to put broken copies in."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = farslip.create_model(MODEL)
    state = model.state_dict()
    torch.save(state, folder / "good.pt")
    torch.save(state, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "good.safetensors"))
    return folder, state


def _cut(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _safetensors(tensors: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


# name: (builder(folder, state) -> path, create_model keywords, exception, message pattern)
CHECKPOINT_CASES = {
    "empty file": (lambda f, s: _bytes(f / "empty.pt", b""), {},
                   CheckpointError, r"empty\.pt is empty \(0 bytes\)"),
    "truncated zip": (lambda f, s: _cut(f / "good.pt", f / "cut.pt"), {},
                      CheckpointError, r"cut\.pt is truncated or corrupted .*zip archive"),
    "truncated legacy pickle": (lambda f, s: _cut(f / "legacy.pt", f / "cut_legacy.pt"), {},
                                CheckpointError, r"cut_legacy\.pt is truncated or corrupted .*pickle"),
    "truncated safetensors": (lambda f, s: _cut(f / "good.safetensors", f / "cut.safetensors"), {},
                              CheckpointError, r"cut\.safetensors is truncated or corrupted .*safetensors"),
    "a directory": (lambda f, s: _folder(f / "folder.pt"), {}, CheckpointError, r"folder\.pt is a directory"),
    "a CSV passed as weights": (lambda f, s: _bytes(f / "bench.csv", b"filepath,label\na.jpg,0\n"), {},
                                CheckpointError, r"bench\.csv is not a checkpoint: it is a text file .*'filepath,label'"),
    "random bytes": (lambda f, s: _bytes(f / "noise.bin", bytes(range(256))), {},
                     CheckpointError, r"noise\.bin is not a checkpoint: it is an unknown binary format"),
    "pickle needing unsafe loading": (
        lambda f, s: _save({"state_dict": s, "args": argparse.Namespace(lr=1.0)}, f / "pickled.pt"), {},
        UnsafeCheckpointError, r"pickled\.pt: refused to unpickle .*argparse\.Namespace.*--unsafe-load"),
    "NaN weights": (lambda f, s: _save({**s, "logit_scale": torch.tensor(float("nan"))}, f / "nan.pt"), {},
                    CheckpointError, r"nan\.pt holds non-finite weights .*logit_scale"),
    "inf weights": (lambda f, s: _save({**s, "text_projection": s["text_projection"] * float("inf")}, f / "inf.pt"),
                    {}, CheckpointError, r"inf\.pt holds non-finite weights .*text_projection"),
    "another architecture": (lambda f, s: _save(farslip.create_model("ViT-Small-8").state_dict(), f / "small.pt"),
                             {}, CheckpointError, r"small\.pt does not fit CLIP: .*shape mismatch"),
    "long-text checkpoint into a short model": (
        lambda f, s: _save(farslip.create_model(MODEL, long_text=True).state_dict(), f / "long.pt"),
        {"long_text": False}, CheckpointError, r"long\.pt holds a 248-token .*long_text=False"),
    "safetensors with wrong keys": (
        lambda f, s: _safetensors({"not_a_weight": torch.zeros(2)}, f / "keys.safetensors"), {},
        CheckpointError, r"keys\.safetensors does not fit CLIP: missing keys: .*unexpected keys: not_a_weight"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_broken_checkpoint_is_refused_with_its_name(weights, case):
    folder, state = weights
    build, kwargs, error, pattern = CHECKPOINT_CASES[case]
    path = build(folder, state)
    with pytest.raises(error, match=pattern):
        farslip.create_model(MODEL, str(path), **kwargs)


def test_good_checkpoints_in_every_format_still_load(weights):
    folder, state = weights
    for name in ("good.pt", "legacy.pt", "good.safetensors"):
        loaded = farslip.create_model(MODEL, str(folder / name)).state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state), name


def test_broken_checkpoint_reaches_the_command_line_as_two_lines(weights, tmp_path):
    folder, _ = weights
    path = _cut(folder / "good.pt", tmp_path / "half.pt")
    image = tmp_path / "scene.png"
    Image.new("RGB", (40, 30), (10, 120, 30)).save(image)
    proc = subprocess.run([sys.executable, "-m", "farslip", "classify", str(image), "--model", MODEL,
                           "--pretrained", str(path), "--labels", "a,b", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "half.pt is truncated or corrupted" in proc.stderr


# ---------------------------------------------------------------- boxes (library)

@pytest.mark.parametrize("boxes, pattern", [
    ([torch.tensor([[0.0, 0.0, 64.0, 48.0]])], r"box 0 of image 0 is outside \[0, 1\] \(pixel coordinates"),
    ([torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.6, 0.2, 0.4, 0.9]])], r"box 1 of image 0 is inverted"),
    ([torch.zeros(0, 4), torch.tensor([[-0.5, 0.0, 0.5, 0.5]])], r"box 0 of image 1 is outside"),
])
def test_roi_features_refuses_pixel_and_inverted_boxes(boxes, pattern):
    tokens = torch.randn(len(boxes), 16, 8)
    with pytest.raises(ValueError, match=pattern):
        farslip.roi_features(tokens, boxes, grid=4)


def test_roi_features_accepts_boundary_boxes():
    tokens = torch.randn(1, 16, 8)
    out = farslip.roi_features(tokens, [torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.25, 0.75]])], grid=4)
    assert out.shape == (2, 8) and torch.isfinite(out).all()


# ---------------------------------------------------------------- the hub, offline

def test_offline_hub_retries_are_one_line_with_the_way_to_skip_them(tmp_path, monkeypatch, caplog):
    import huggingface_hub.utils._http as http

    from farslip.models.hub import CheckpointNotAvailable, hub_file

    monkeypatch.setattr(http.time, "sleep", lambda seconds: None)  # the retries, without their wait
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: every request fails at once
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    caplog.set_level(logging.WARNING)
    with pytest.raises(CheckpointNotAvailable, match="HF_HUB_OFFLINE=1"):
        hub_file("ZhenShiL/FarSLIP", "FarSLIP1_ViT-B-16.pt", cache_dir=str(tmp_path / "hub"))
    lines = [r.getMessage() for r in caplog.records]
    assert sum("HF_HUB_OFFLINE=1" in line for line in lines) == 1, lines
    assert not any(line.startswith("Retrying in") or "thrown while requesting" in line for line in lines), lines


def test_download_of_an_unavailable_file_exits_2_like_the_apps(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    proc = subprocess.run([sys.executable, "-m", "farslip", "download", "FarSLIP1-ViT-B-16"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "farslip download: error: FarSLIP1-ViT-B-16" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- benchmark files (library)

@pytest.mark.parametrize("text, pattern", [
    ("airport\n\nbeach\nforest\n", r"line 2 is blank; .*shift every later class index"),
    ("airport\n   \nbeach\n", r"line 2 is blank"),
    ("airport\nbeach\nairport\n", r"class 'airport' appears on lines 1 and 3"),
    ("\n\n", r"no class names"),
])
def test_class_files_that_would_shift_or_confuse_indices_are_refused(tmp_path, text, pattern):
    from farslip.eval.datasets import read_class_synonyms, read_classnames

    path = tmp_path / "classnames.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        read_classnames(path)
    with pytest.raises(ValueError, match=pattern):
        read_class_synonyms(path)


def test_trailing_blank_lines_of_a_class_file_are_fine(tmp_path):
    from farslip.eval.datasets import read_classnames

    path = tmp_path / "classnames.txt"
    path.write_text("airport\nbeach\n\n\n")
    assert read_classnames(path) == ["airport", "beach"]


def test_zero_byte_csv_is_named(tmp_path):
    from farslip.data.csv_data import read_pairs

    path = tmp_path / "val.csv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"val\.csv is empty: expected a header line"):
        read_pairs(str(path))


def test_nan_in_an_mgrs_bbox_drops_that_object_only(caplog):
    from farslip.data.mgrs import select_regions

    objects = [{"bbox": {"x1": float("nan"), "y1": 0, "x2": 90, "y2": 90}, "category": "harbor", "category_id": 0},
               {"bbox": {"x1": 0, "y1": 0, "x2": 90, "y2": 90}, "category": "bridge", "category_id": 3}]
    with caplog.at_level(logging.WARNING):
        picked = select_regions(objects, 100, 100, 4, 64, None, name="text_info.json item 7")
    assert [r.label for r in picked] == [3]
    assert "text_info.json item 7: ignoring object 0: bbox holds a NaN" in caplog.text

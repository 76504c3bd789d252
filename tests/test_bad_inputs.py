"""The bad-input suite: every broken input a user can hand the project gets a clear answer.

Each case builds one broken input, runs the library call or the real command on it, and asserts
the outcome: the exception type and a message naming the file / sample / flag (library), or the
exit status, a one-line message and no traceback (commands). See docs/BAD_INPUTS.md for the table.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
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


# ---------------------------------------------------------------- the trainer, through its command line

TRAIN = ["--model", MODEL, "--precision", "fp32", "--device", "cpu", "--workers", "0", "--batch-size", "2",
         "--method", "vanilla", "--warmup", "1", "--log-every-n-steps", "1", "--lr", "1e-4"]


def _train(tmp_path: Path, *flags: str, name: str = "run") -> int:
    """``farslip train`` in this process (the real entry point: farslip.cli.main)."""
    from farslip.cli import main

    return main(["train", *TRAIN, "--logs", str(tmp_path / "logs"), "--name", name, *flags])


def _one_error(capsys, *needles: str) -> str:
    """The single ``error:`` line a command printed (no traceback); it must contain every needle."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def rs5m(tmp_path_factory):
    from ._train_utils import write_rs5m

    return write_rs5m(tmp_path_factory.mktemp("rs5m"), shards=2, per_shard=4)


def _webdataset(spec: str, samples: int = 4) -> list[str]:
    return ["--train-data", spec, "--train-dataset-type", "webdataset", "--train-num-samples", str(samples)]


# name: (builder(folder, state) -> path, words the error line must hold besides the flag and file name)
TRAIN_PRETRAINED_CASES = {
    "truncated": (lambda f, s: _cut(f / "good.pt", f / "train_cut.pt"), "is truncated or corrupted"),
    "a directory": (lambda f, s: _folder(f / "weights_dir"), "is a directory, not a checkpoint file"),
    "a CSV": (lambda f, s: _bytes(f / "train.csv", b"filepath,title\na.jpg,x\n"), "is not a checkpoint: it is a text"),
    "needs unsafe unpickling": (
        lambda f, s: _save({"state_dict": s, "args": argparse.Namespace(lr=1.0)}, f / "train_pickled.pt"),
        "refused to unpickle"),
}


@pytest.mark.parametrize("case", list(TRAIN_PRETRAINED_CASES))
def test_train_names_a_bad_pretrained_file_in_one_line(weights, rs5m, tmp_path, capsys, case):
    folder, state = weights
    build, words = TRAIN_PRETRAINED_CASES[case]
    path = build(folder, state)
    assert _train(tmp_path, "--pretrained", str(path), *_webdataset(rs5m)) == 2
    _one_error(capsys, "farslip train: error: --pretrained", path.name, words)


def _training_checkpoint(model_name: str, path: Path) -> Path:
    model = farslip.create_model(model_name)
    torch.save({"epoch": 1, "step": 2, "state_dict": model.state_dict(), "optimizer": {}}, path)
    return path


@pytest.mark.parametrize("case", ["truncated", "plain weights", "another architecture", "pickled objects"])
def test_train_names_a_bad_resume_file_in_one_line(weights, rs5m, tmp_path, capsys, case):
    folder, state = weights
    if case == "truncated":
        path, words = _cut(folder / "good.pt", tmp_path / "resume_cut.pt"), "is truncated or corrupted"
    elif case == "pickled objects":
        path = _save({"epoch": 1, "step": 2, "state_dict": state, "optimizer": {}, "args": argparse.Namespace()},
                     tmp_path / "pickled_run.pt")
        words = "refused to unpickle"
    elif case == "plain weights":
        path, words = folder / "good.pt", "is not a farslip training checkpoint (missing"
    else:
        path, words = _training_checkpoint("ViT-Small-8", tmp_path / "small_run.pt"), "does not fit CLIP"
    assert _train(tmp_path, "--pretrained", "none", "--resume", str(path), *_webdataset(rs5m)) == 2
    _one_error(capsys, "farslip train: error: --resume", path.name, words)


def test_train_debug_shows_the_traceback_and_no_debug_does_not(weights, rs5m, tmp_path):
    folder, _ = weights
    cut = _cut(folder / "good.pt", tmp_path / "debug_cut.pt")
    base = [sys.executable, "-m", "farslip", "train", *TRAIN, "--logs", str(tmp_path / "logs"),
            "--pretrained", str(cut), *_webdataset(rs5m)]
    quiet = subprocess.run(base + ["--name", "quiet"], capture_output=True, text=True, timeout=300)
    loud = subprocess.run(base + ["--name", "loud", "--debug"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert "farslip train: error: --pretrained" in quiet.stderr and "debug_cut.pt is truncated" in quiet.stderr
    assert loud.returncode not in (0, 2) and "Traceback" in loud.stderr and "debug_cut.pt is truncated" in loud.stderr


@pytest.mark.parametrize("spec, words", [
    ("*.tarx", "matches no file"),
    ("missing-{0000..0002}.tar", "3 of 3 shard(s) do not exist, e.g."),
])
def test_train_shards_that_are_not_there_fail_at_start_up(tmp_path, capsys, spec, words):
    assert _train(tmp_path, "--pretrained", "none", *_webdataset(str(tmp_path / spec))) == 2
    _one_error(capsys, "farslip train: error: --train-data", words)


def test_train_on_shards_without_one_usable_sample_stops_naming_them(tmp_path, capsys):
    from ._data_utils import write_shard

    keys = [f"k{i}" for i in range(6)]
    write_shard(str(tmp_path / "broken-0000.tar"), keys, corrupt=set(keys))
    flags = ["--pretrained", "none", *_webdataset(str(tmp_path / "broken-0000.tar")), "--workers", "1"]
    assert _train(tmp_path, *flags) == 2  # bounded: a pass with no usable sample ends the run
    line = _one_error(capsys, "a whole pass over the shard", "broken-0000.tar", "gave no usable sample (6 bad",
                      "(in data loader worker 0)")
    assert "Caught" not in line


def test_a_long_run_of_bad_samples_stops_the_stream(tmp_path, monkeypatch):
    from farslip.data import rs5m
    from farslip.data.image_files import DataError
    from farslip.data.train_data import get_train_data

    from ._data_utils import char_tokenizer, make_args, with_views, write_shard

    keys = [f"k{i:02d}" for i in range(12)]
    write_shard(str(tmp_path / "bad-0000.tar"), keys, corrupt=set(keys[1:]))  # one good sample, then 11 bad
    monkeypatch.setattr(rs5m, "MAX_BAD_IN_A_ROW", 5)
    args = make_args(train_data=str(tmp_path / "bad-0000.tar"), train_num_samples=8, batch_size=2)
    with pytest.raises(DataError, match=r"5 bad samples in a row in the shard .*bad-0000\.tar \(the last: sample"):
        list(get_train_data(with_views(args, crops=False, objects=False), char_tokenizer, 32).dataloader)


def _mgrs(tmp_path: Path, items: int = 4) -> tuple[str, str]:
    from ._train_utils import write_mgrs

    return write_mgrs(tmp_path / "mgrs", items=items)


def _mgrs_flags(js: str, imgs: str) -> list[str]:
    return ["--pretrained", "none", "--train-data", js, "--train-dataset-type", "json", "--root-train-img-dir", imgs,
            "--method", "farslip2", "--loss-type", "global_itc", "local_itc"]


@pytest.mark.parametrize("case", ["truncated", "not a list", "empty list", "not text"])
def test_train_names_a_broken_mgrs_json(tmp_path, capsys, case):
    js, imgs = _mgrs(tmp_path)
    data = Path(js).read_bytes()
    broken = {"truncated": data[: len(data) // 2], "not a list": b'{"items": []}', "empty list": b"[]",
              "not text": b"\xff\xfe\x00\x81" * 8}[case]
    Path(js).write_bytes(broken)
    words = {"truncated": "not valid JSON", "not a list": "expected a JSON list of items", "empty list":
             "the list of items is empty", "not text": "cannot read MGRS annotations"}[case]
    assert _train(tmp_path, *_mgrs_flags(js, imgs)) == 2
    _one_error(capsys, "farslip train: error:", "text_info.json", words)


def test_train_on_mgrs_whose_images_are_all_missing_fails_at_start_up(tmp_path, capsys):
    js, _ = _mgrs(tmp_path)
    assert _train(tmp_path, *_mgrs_flags(js, str(tmp_path / "wrong_root"))) == 2
    _one_error(capsys, "text_info.json: no image found for every item under --root-train-img-dir",
               "wrong_root", "check --root-train-img-dir")


def test_train_batch_larger_than_the_data_fails_at_start_up(tmp_path, capsys):
    js, imgs = _mgrs(tmp_path, items=3)
    assert _train(tmp_path, *_mgrs_flags(js, imgs), "--batch-size", "8") == 2
    _one_error(capsys, "3 item(s) give no full batch of 8", "lower --batch-size to at most 3")


@pytest.mark.parametrize("device, words", [("cuda", "--device cuda: no CUDA GPU is available here"),
                                           ("cuda:3", "--device cuda:3: no CUDA GPU"),
                                           ("tpu", "--device 'tpu' is not a torch device")])
def test_train_device_that_is_not_there_is_a_start_up_error(rs5m, tmp_path, capsys, monkeypatch, device, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as done:
        _train(tmp_path, "--pretrained", "none", *_webdataset(rs5m), "--device", device)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.splitlines()) <= 4


# ---------------------------------------------------------------- training data: skipped, named, counted

def test_bad_samples_are_counted_in_the_log_and_the_checkpoint(tmp_path):
    from ._train_utils import write_rs5m

    spec = write_rs5m(tmp_path / "rs5m", shards=2, per_shard=5, corrupt=True)  # 8 good of 10
    assert _train(tmp_path, "--pretrained", "none", *_webdataset(spec, samples=8)) == 0
    run = tmp_path / "logs" / "run"
    log = (run / "out.log").read_text()
    assert "skipping sample 's0_001' of" in log and "rs-train-0000.tar: not a recognised image format" in log
    assert "skipping sample 's0_002' of" in log and "missing member (.caption / .txt)" in log
    assert "skipped_total 2" in log and "2 bad samples skipped" in log
    saved = torch.load(run / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    assert saved["skipped_total"] == 2
    # the run closed its handlers: nothing of it stays on the caller's root logger
    from farslip.train import main as train_main

    assert train_main._HANDLERS == []
    assert not any(getattr(h, "baseFilename", "").endswith("out.log") for h in logging.getLogger().handlers)


def _tar(path: Path, members: list[tuple[str, bytes]]) -> str:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _png(array) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _stream(spec: str, samples: int) -> list[dict]:
    from farslip.data.train_data import get_train_data

    from ._data_utils import char_tokenizer, make_args, with_views

    args = make_args(train_data=spec, train_num_samples=samples, batch_size=1)
    return list(get_train_data(with_views(args, crops=False, objects=False), char_tokenizer, 32).dataloader)


@pytest.mark.parametrize("layout", ["same key later in the shard", "a member twice in a row"])
def test_a_duplicated_key_in_a_tar_is_skipped_named_and_counted(tmp_path, caplog, layout):
    import numpy as np

    from ._data_utils import decode_text

    image = _png(np.full((20, 20, 3), 90, dtype=np.uint8))
    sample = lambda key: [(f"{key}.png", image), (f"{key}.txt", f"caption {key}".encode())]  # noqa: E731
    if layout == "same key later in the shard":
        members = sample("a") + sample("b") + sample("a")
    else:
        members = [("a.png", image), ("a.png", image), ("a.txt", b"caption a")] + sample("b")
    spec = _tar(tmp_path / "dup-0000.tar", members)
    with caplog.at_level(logging.WARNING):
        batches = _stream(spec, samples=2)
    texts = [decode_text(b["text"][0]) for b in batches]
    assert sum(int(b["skipped"]) for b in batches) == 1  # counted, in the batches' skipped
    assert "caption b" in texts
    named = [r.getMessage() for r in caplog.records if "skipping sample 'a' of" in r.getMessage()]
    assert named and "dup-0000.tar" in named[0]
    assert ("appears more than once" if layout.startswith("same") else "appears twice") in named[0]


def test_a_16_bit_png_is_scaled_to_8_bits_with_one_warning_naming_it(tmp_path, caplog):
    import numpy as np

    from farslip.data.image_files import open_image

    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "depth16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"  # and what Pillow alone makes of it: every non-zero value white
        assert np.asarray(raw.convert("RGB"))[0, :, 0].tolist() == [0, 255, 255, 255]
    with caplog.at_level(logging.WARNING):
        first = np.asarray(open_image(str(path), str(path)))
        again = np.asarray(open_image(str(path), str(path)))
    assert first.shape == (4, 4, 3) and (first == again).all()
    assert first[0, :, 0].tolist() == [0, 64, 128, 255] and (first == first[..., :1]).all()
    warnings = [r.getMessage() for r in caplog.records if "16-bit image" in r.getMessage()]
    assert len(warnings) == 1 and "depth16.png" in warnings[0] and "scaled to 8 bits" in warnings[0]


def test_a_16_bit_png_in_a_shard_is_not_white(tmp_path):
    import numpy as np

    values = np.full((24, 24), 257 * 60, dtype=np.uint16)
    spec = _tar(tmp_path / "deep-0000.tar", [("a.png", _png(values)), ("a.txt", b"a grey field")])
    from farslip.data.rs5m import decode_sample

    image, caption = decode_sample({"__key__": "a", "__url__": spec, "png": _png(values), "txt": b"a grey field"})
    assert caption == "a grey field" and set(np.asarray(image).ravel().tolist()) == {60}
    assert _stream(spec, samples=1)[0]["skipped"].item() == 0


@pytest.mark.parametrize("array, pattern", [
    ("float", r"float\.tif: a floating-point image \(mode F\) has no agreed value range"),
    ("int32", r"int32\.tif: a I image with values 0\.\.100000, outside the 16-bit range"),
])
def test_images_without_a_known_range_are_refused(tmp_path, array, pattern):
    import numpy as np

    from farslip.data.image_files import BadSample, open_image

    data = (np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4) if array == "float"
            else np.array([[0, 100000]] * 2, dtype=np.int32))
    path = tmp_path / f"{array}.tif"
    Image.fromarray(data).save(path)
    with pytest.raises(BadSample, match=pattern):
        open_image(str(path), str(path))


def test_mgrs_boxes_dropped_are_summarised_once_per_epoch_by_reason(tmp_path):
    import json

    js, imgs = _mgrs(tmp_path, items=4)
    items = json.loads(Path(js).read_text())
    items[0]["segment"] = [
        {"bbox": {"x1": 90, "y1": 10, "x2": 20, "y2": 90}, "category": "harbor", "category_id": 0},  # x2 < x1
        {"bbox": {"x1": 400, "y1": 400, "x2": 500, "y2": 480}, "category": "bridge", "category_id": 3},  # outside
        {"bbox": {"x1": 0, "y1": 0, "x2": 5, "y2": 5}, "category": "runway", "category_id": 1},  # 5 x 5 < 64 x 64
        {"bbox": {"x1": 10, "y1": 10, "x2": 90, "y2": 90}, "category": "runway", "category_id": 1},  # kept
    ]
    Path(js).write_text(json.dumps(items))
    assert _train(tmp_path, *_mgrs_flags(js, imgs), "--epochs", "2") == 0
    lines = [line for line in (tmp_path / "logs" / "run" / "out.log").read_text().splitlines()
             if "MGRS boxes dropped" in line]
    want = ("MGRS boxes dropped: 3 (1 inverted or empty (x2 <= x1 or y2 <= y1), 1 outside the image, "
            "1 below --min-size)")
    assert len(lines) == 2 and all(want in line for line in lines), lines
    assert "epoch 0:" in lines[0] and "epoch 1:" in lines[1]


def test_training_csv_rows_without_a_path_or_caption_are_counted(tmp_path, caplog):
    from farslip.data.csv_data import read_pairs_counted

    path = tmp_path / "pairs.csv"
    path.write_text("filepath,title\na.jpg,one\n,two\nc.jpg,\nd.jpg,four\n ,  \n")
    with caplog.at_level(logging.WARNING):
        items, rows = read_pairs_counted(str(path))
    assert [i.path for i in items] == ["a.jpg", "d.jpg"]
    assert rows == {"read": 5, "used": 2, "dropped": {"empty filepath": 2, "empty title": 1}}
    assert "pairs.csv: dropped 3 of 5 rows (2 with an empty filepath, 1 with an empty title; data rows 2, 3, 5)" \
        in caplog.text


# ---------------------------------------------------------------- evaluation and the apps

def _eval(*argv: str) -> int:
    from farslip.cli import main

    return main(["eval", *argv, "--model", MODEL, "--pretrained", "none", "--device", "cpu", "--workers", "0"])


def test_eval_counts_rows_with_an_empty_label_or_caption_in_results(tmp_path):
    import json

    from ._eval_utils import write_benchmarks

    root = write_benchmarks(tmp_path / "bench")
    csv = root / "RSICD" / "RSICD_img_txt_pairs_test.csv"
    csv.write_text(csv.read_text() + "RSICD/images/0.png,\n,a caption without an image\n")
    out = tmp_path / "out"
    assert _eval("classification", "--data-root", str(root), "--datasets", "aid", "--output", str(out / "c")) == 0
    assert _eval("retrieval", "--data-root", str(root), "--datasets", "RSICD", "--output", str(out / "r")) == 0
    cls = json.loads((out / "c" / "results.json").read_text())["classification"]["datasets"]["aid"]
    ret = json.loads((out / "r" / "results.json").read_text())["retrieval"]["datasets"]["RSICD"]
    assert cls["rows"] == {"read": 7, "used": 6, "dropped": {"empty label": 1}} and cls["num_images"] == 6
    assert ret["rows"] == {"read": 10, "used": 8, "dropped": {"empty filepath": 1, "empty title": 1}}
    assert re.search(r"\| AID +\| +classification \| +7 \| +6 \| +1 \| 1 empty label \|",
                     (out / "c" / "results.md").read_text())
    assert "1 empty filepath; 1 empty title" in (out / "r" / "results.md").read_text()


def test_eval_zero_byte_csv_fails_that_data_set_naming_the_file(tmp_path, capsys):
    import json

    csv = tmp_path / "mine.csv"
    csv.write_bytes(b"")
    assert _eval("classification", "--csv", str(csv), "--output", str(tmp_path / "out")) == 1  # a failed data set
    out, err = capsys.readouterr()
    assert "classification: mine FAILED: ValueError:" in out and "mine.csv is empty: expected a header line" in out
    assert "Traceback" not in err
    failed = json.loads((tmp_path / "out" / "results.json").read_text())["classification"]["failed"]
    assert "mine.csv is empty" in failed["mine"]


def _scene(path: Path, size=(40, 30)) -> Path:
    Image.new("RGB", size, (10, 120, 30)).save(path)
    return path


def test_classify_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from farslip.cli import main

    bomb = _scene(tmp_path / "huge.png", size=(80, 60))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4800 pixels: over twice the limit, as a real bomb
    assert main(["classify", str(bomb), "--labels", "a,b", "--model", MODEL, "--device", "cpu"]) == 2
    _one_error(capsys, "farslip classify: error:", "huge.png: refused by Pillow's decompression-bomb guard",
               "cut it into tiles or downscale it")


@pytest.mark.parametrize("command, flag, value, words", [
    ("classify", "--labels", "airport,beach,airport", "--labels: label 'airport' is given twice"),
    ("segment", "--classes", "water;building,roof;water", "--classes: class name 'water' is given twice"),
])
def test_a_label_given_twice_is_refused(tmp_path, capsys, command, flag, value, words):
    from farslip.cli import main

    image = _scene(tmp_path / "scene.png")
    assert main([command, str(image), flag, value, "--model", MODEL, "--device", "cpu",
                 *(["--out", str(tmp_path / "o.png")] if command == "segment" else [])]) == 2
    _one_error(capsys, f"farslip {command}: error:", words)


@pytest.mark.parametrize("command", ["classify", "segment", "eval"])
def test_device_cuda_without_a_gpu_is_one_line_in_every_command(tmp_path, capsys, monkeypatch, command):
    from farslip.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image = _scene(tmp_path / "scene.png")
    argv = {"classify": ["classify", str(image), "--labels", "a,b"],
            "segment": ["segment", str(image), "--classes", "a;b", "--out", str(tmp_path / "o.png")],
            "eval": ["eval", "classification", "--csv", str(tmp_path / "none.csv"), "--output", str(tmp_path / "e")]}
    assert main([*argv[command], "--model", MODEL, "--device", "cuda"]) == 2
    _one_error(capsys, "--device cuda: no CUDA GPU is available here", "use --device cpu")


def test_device_auto_is_every_default_and_picks_what_is_there(monkeypatch):
    from farslip.apps import build_classify_parser, build_segment_parser
    from farslip.errors import resolve_device
    from farslip.eval.cli import build_parser as eval_parser
    from farslip.train.args import build_parser as train_parser

    defaults = [build_classify_parser().get_default("device"), build_segment_parser().get_default("device"),
                train_parser().get_default("device")]
    eval_sub = eval_parser()._subparsers._group_actions[0].choices
    defaults += [eval_sub[task].get_default("device") for task in ("classification", "retrieval", "segmentation", "all")]
    assert defaults == ["auto"] * 7
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"--device cuda:1: there are only 1 CUDA device\(s\)"):
        resolve_device("cuda:1")


def test_synth_into_an_existing_world_is_one_line_and_exit_2(tmp_path, capsys):
    from farslip.cli import main

    out = tmp_path / "world"
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--workers", "1", "--no-progress"]) == 2
    _one_error(capsys, "farslip synth: error:", str(out), "--overwrite")


def test_fifty_bad_items_in_a_row_stop_a_file_data_set(tmp_path):
    from farslip.data.image_files import MAX_REPLACEMENTS, DataError, FileItem, ImageFileDataset
    from farslip.data.views import ViewMaker

    items = [FileItem(f"gone_{i}.png", f"caption {i}") for i in range(8)]
    dataset = ImageFileDataset(items, str(tmp_path), ViewMaker(lambda image: image))
    with pytest.raises(DataError, match=rf"{MAX_REPLACEMENTS} bad items in a row \(the last: .*gone_\d\.png: image "
                                        r"file not found\)"):
        dataset[(0, 3)]


def test_an_unreadable_shard_among_good_ones_is_passed_over_with_a_warning(rs5m, tmp_path, caplog):
    from farslip.data.rs5m import expand_shards

    garbage = tmp_path / "rs-train-0002.tar"
    garbage.write_bytes(b"\x00not a tar archive" * 64)
    spec = "::".join([*expand_shards(rs5m), str(garbage)])
    with caplog.at_level(logging.WARNING):
        batches = _stream(spec, samples=8)
    assert len(batches) == 8 and sum(int(b["skipped"]) for b in batches) == 0
    assert any("webdataset read error (continuing)" in r.getMessage() and "rs-train-0002.tar" in r.getMessage()
               for r in caplog.records)


def test_eval_a_missing_label_map_fails_that_set_naming_it(tmp_path, capsys):
    from ._eval_utils import write_segmentation

    root = write_segmentation(tmp_path / "ovss", name="MySet")
    (root / "MySet" / "ann_dir" / "val" / "tile1.png").unlink()
    assert _eval("segmentation", "--seg-dir", str(root / "MySet"), "--output", str(tmp_path / "out")) == 1
    out = capsys.readouterr().out
    assert "segmentation: MySet FAILED: FileNotFoundError: 1 label map(s) missing in" in out and "tile1.png" in out


def test_eval_with_no_registered_set_under_the_root_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _eval("classification", "--data-root", str(tmp_path / "empty"), "--output", str(tmp_path / "out")) == 2
    _one_error(capsys, "farslip eval: error: no registered data set of classification is present under",
               "farslip synth")


def test_a_16_bit_tile_is_segmented_as_its_8_bit_equivalent(tmp_path):
    import numpy as np

    from farslip.eval.segmentation import prepare_image

    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (24, 32), dtype=np.uint16)
    Image.fromarray(eight * 257).save(tmp_path / "tile16.png")
    Image.fromarray(eight.astype(np.uint8)).save(tmp_path / "tile8.png")
    with Image.open(tmp_path / "tile16.png") as deep, Image.open(tmp_path / "tile8.png") as plain:
        assert deep.mode == "I;16"
        assert torch.equal(prepare_image(deep, 64), prepare_image(plain, 64))

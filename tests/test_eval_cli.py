"""`farslip eval ...` end to end: the report files, exit status on failures, determinism, entry points."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import farslip
from farslip.cli import main as farslip_main
from farslip.synth import write_world
from farslip.eval.cli import main as eval_main
from tests import test_retrieval, test_scene_classification
from tests._eval_utils import write_benchmarks, write_segmentation

FAST = ["--model", "ViT-Tiny-8", "--workers", "0", "--batch-size", "16"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def _metrics(path: Path) -> dict:
    """results.json without times: what must repeat exactly."""
    data = json.loads((path / "results.json").read_text())
    return {task: {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in data[task]["datasets"].items()}
            for task in ("classification", "retrieval", "segmentation") if task in data}


def test_eval_all_on_the_synthetic_world(tmp_path):
    world = Path(write_world(tmp_path / "world", scale="tiny")["root"])
    out = tmp_path / "out"
    status = farslip_main(["eval", "all", *FAST, "--data-root", str(world / "benchmarks"),
                           "--seg-data-root", str(world / "ovss"), "--cls-datasets", "aid,eurosat",
                           "--ret-datasets", "RSICD,SkyScript", "--seg-datasets", "LoveDA,OpenEarthMap",
                           "--num-examples", "2", "--output", str(out)])
    assert status == 0
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["model"] == "ViT-Tiny-8" and data["model"]["context_length"] == 77
    assert set(data["classification"]["datasets"]) == {"aid", "eurosat"}
    assert data["classification"]["datasets"]["aid"]["num_images"] > 0
    assert data["retrieval"]["datasets"]["SkyScript"]["caption_key"] == "title_multi_objects"
    assert data["retrieval"]["datasets"]["RSICD"]["caption_prefix"] == "a satellite image. "
    assert data["segmentation"]["datasets"]["LoveDA"]["reduce_zero_label"] is True
    assert data["segmentation"]["datasets"]["OpenEarthMap"]["reduce_zero_label"] is False
    for name in ("LoveDA", "OpenEarthMap"):
        pngs = data["segmentation"]["datasets"][name]["examples"]
        assert len(pngs) == 2 and all((out / p).is_file() for p in pngs)
    table = (out / "results.md").read_text()
    assert "| ViT-Tiny-8 (random weights) |" in table and "RSICD img->txt" in table and "LoveDA" in table
    assert data["model"]["random_weights"] is True and data["model"]["weights"] is None
    assert f"{data['segmentation']['mean_mIoU']:.2f}" in table


def test_same_model_twice_gives_identical_numbers(bench, tmp_path):
    weights = tmp_path / "tiny.pt"
    torch.save(farslip.create_model("ViT-Tiny-8").state_dict(), weights)
    seg_root = write_segmentation(tmp_path / "ovss")
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        assert farslip_main(["eval", "all", *FAST, "--pretrained", str(weights), "--data-root", str(bench),
                             "--seg-data-root", str(seg_root), "--cls-datasets", "aid", "--ret-datasets", "RSICD",
                             "--seg-datasets", "LoveDA", "--output", str(out)]) == 0
        runs.append(_metrics(out))
    assert set(runs[0]) == {"classification", "retrieval", "segmentation"}
    assert runs[0] == runs[1]
    info = json.loads((tmp_path / "run0" / "results.json").read_text())["model"]
    assert info["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_failing_dataset_exit_status_and_keep_going(bench, tmp_path, capsys):
    stop = tmp_path / "stop"
    assert farslip_main(["eval", "classification", *FAST, "--data-root", str(bench), "--datasets", "fmow,aid",
                         "--output", str(stop)]) == 1
    data = json.loads((stop / "results.json").read_text())
    assert str(bench / "fmow") in data["classification"]["failed"]["fmow"]
    assert data["classification"]["datasets"] == {}  # stopped at the first failure
    go = tmp_path / "go"
    assert farslip_main(["eval", "classification", *FAST, "--data-root", str(bench), "--datasets", "fmow,aid",
                         "--keep-going", "--output", str(go)]) == 1
    data = json.loads((go / "results.json").read_text())
    assert list(data["classification"]["datasets"]) == ["aid"] and "fmow" in data["classification"]["failed"]
    assert "fmow" in (go / "results.md").read_text()
    assert "fmow FAILED" in capsys.readouterr().out


def test_unknown_dataset_is_a_usage_error(bench, tmp_path, capsys):
    assert farslip_main(["eval", "retrieval", *FAST, "--data-root", str(bench), "--datasets", "nope",
                         "--output", str(tmp_path)]) == 2
    assert "RSICD" in capsys.readouterr().err  # lists the registered names


def test_data_root_from_environment(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("FARSLIP_DATA", str(bench))
    assert eval_main(["retrieval", *FAST, "--datasets", "RSICD", "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["retrieval"]["datasets"]["RSICD"]["num_images"] == 4


def test_one_module_entry_point(bench, tmp_path):
    """`python -m farslip.eval TASK ...` is `farslip eval TASK ...`; the task modules are no entry points."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "farslip.eval", "classification", *FAST, "--data-root", str(bench),
                           "--datasets", "aid", "--output", str(tmp_path / "a")], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "classification: mean_top1 = " in done.stdout and (tmp_path / "a" / "results.json").is_file()
    absent = subprocess.run([sys.executable, "-m", "farslip.eval", "segmentation", *FAST, "--data-root", str(bench),
                             "--datasets", "VDD", "--output", str(tmp_path / "s")], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert absent.returncode == 1, absent.stderr  # no VDD folder here: the set fails, the report says so
    assert "VDD FAILED" in absent.stdout
    for task in ("classification", "retrieval", "segmentation"):
        source = (root / "src" / "farslip" / "eval" / f"{task}.py").read_text()
        assert "__main__" not in source and "def main(" not in source, task


def test_seed_wrappers(bench, tmp_path):
    seed = ["--model-arch", "ViT-Tiny-8", "--model-name", "FarSLIP1", "--use-long-clip", "--workers", "0",
            "--data-root", str(bench)]
    assert test_scene_classification.main([*seed, "--datasets", "eurosat", "--output", str(tmp_path / "c")]) == 0
    data = json.loads((tmp_path / "c" / "results.json").read_text())
    assert data["model"]["label"] == "FarSLIP1" and data["model"]["context_length"] == 248
    assert test_retrieval.main([*seed, "--datasets", "RSICD", "--output", str(tmp_path / "r")]) == 0
    # the wrappers hold nothing pytest would collect
    for module in (test_scene_classification, test_retrieval):
        assert not [n for n in vars(module) if n.lower().startswith("test")]


def test_seed_module_path_runs_from_a_checkout():
    """`python -m tests.test_scene_classification --help` from the repository root, as the seed's README runs it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "tests.test_scene_classification", "--help"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--model-arch" in done.stdout and "--data-root" in done.stdout


def test_fp16_runs_every_task_on_cpu(bench, tmp_path):
    """--precision fp16 (the paper framework's GPU setting) for classification, retrieval and
    segmentation; on the CPU the half model's embeddings match the float ones closely."""
    from farslip.transforms import eval_transform
    from farslip.eval.encode import Runtime, encode_image_files, encode_texts

    weights = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(farslip.create_model("ViT-Tiny-8").state_dict(), weights)
    out = tmp_path / "fp16"
    assert farslip_main(["eval", "all", *FAST, "--pretrained", str(weights), "--precision", "fp16",
                         "--data-root", str(bench), "--seg-data-root", str(write_segmentation(tmp_path / "ovss")),
                         "--cls-datasets", "aid", "--ret-datasets", "RSICD", "--seg-datasets", "LoveDA",
                         "--num-examples", "0", "--output", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["precision"] == "fp16"
    assert 0 <= data["classification"]["mean_top1"] <= 100 and 0 <= data["segmentation"]["mean_mIoU"] <= 100
    assert 0 < data["retrieval"]["mean_mean_recall"] <= 100

    full = farslip.create_model("ViT-Tiny-8", str(weights)).eval()
    half = farslip.create_model("ViT-Tiny-8", str(weights), precision="fp16").eval()
    assert half.visual.conv1.weight.dtype == torch.float16
    paths = sorted((bench / "aid" / "images").glob("*.png"))
    transform = eval_transform(full.visual.image_size)
    tokenizer = farslip.get_tokenizer(full)
    texts = ["a satellite photo of forest.", "a satellite image of desert"]
    for run_full, run_half in [(Runtime(8, 0, "cpu", "fp32"), Runtime(8, 0, "cpu", "fp16"))]:
        images = (encode_image_files(full, paths, transform, run_full, "x"),
                  encode_image_files(half, paths, transform, run_half, "x"))
        captions = (encode_texts(full, tokenizer, texts, run_full, "x"), encode_texts(half, tokenizer, texts, run_half, "x"))
        for a, b in (images, captions):
            assert b.dtype == torch.float32 and (a * b).sum(-1).min() > 0.999


def test_window_geometry_flag(capsys):
    from farslip.eval.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["segmentation", "--model", "ViT-Tiny-8"])
    assert args.window_geometry == "reference" and args.long_side is None
    assert parser.parse_args(["all", "--model", "M", "--window-geometry", "model"]).window_geometry == "model"
    with pytest.raises(SystemExit):
        parser.parse_args(["segmentation", "--model", "M", "--window-geometry", "scaled"])
    assert "invalid choice: 'scaled'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["segmentation", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--window-geometry {reference,model}" in text and "each window resized to the model's input" in text

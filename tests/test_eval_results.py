"""Results as users expect them: exact counts, R@100, one folder per model, no silent overwrite,
the merged multi-run report, absent data sets listed, titled segmentation panels."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import farslip
from farslip.cli import main as farslip_main
from farslip.synth import write_world
from farslip.eval.metrics import retrieval_recall, topk_accuracy
from farslip.eval.registry import DISPLAY_NAMES, SEGMENTATION
from farslip.eval.report import palette, panel
from farslip.eval.segmentation import dataset_present
from tests._eval_utils import write_benchmarks, write_segmentation

FAST = ["--model", "ViT-Tiny-8", "--workers", "0", "--batch-size", "16"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return Path(write_world(tmp_path_factory.mktemp("world"), scale="tiny")["root"])


def test_topk_counts_hand_worked():
    logits = torch.tensor([[0.9, 0.1, 0.0, 0.0],   # target 0: rank 1
                           [0.5, 0.2, 0.3, 0.1],   # target 2: rank 2
                           [0.4, 0.3, 0.2, 0.1]])  # target 3: rank 4
    acc = topk_accuracy(logits, torch.tensor([0, 2, 3]), ks=(1, 2, 5))
    assert (acc["num_samples"], acc["top1_hits"], acc["top2_hits"], acc["top5_hits"]) == (3, 1, 2, 3)
    assert acc["top1"] == 100 / 3 and acc["top2"] == 200 / 3  # exact: counts / total, in double precision


def test_retrieval_hits_and_r100_hand_worked():
    """Two images, 120 captions on a fan of angles: image A's positive ranks 100th, B's 101st."""
    delta, step = 0.0005, 0.001
    images = torch.tensor([[1.0, 0.0], [math.cos(delta), math.sin(delta)]])
    angles = torch.tensor([-(j + 1) * step for j in range(120)])
    texts = torch.stack([angles.cos(), angles.sin()], dim=1)
    pairs = torch.tensor([[0, 99], [1, 100]])  # A <-> c99, B <-> c100
    r = retrieval_recall(images, texts, pairs)
    # image -> text: captions rank by angle, so c99 is A's 100th and c100 is B's 101st
    assert r["image_to_text_queries"] == 2
    assert [r[f"image_to_text_hits@{k}"] for k in (1, 5, 10, 100)] == [0, 0, 0, 1]
    assert r["image_to_text_R@100"] == 50.0
    # text -> image: 120 queries, only c99 and c100 have a positive; A is nearer to both
    assert r["text_to_image_queries"] == 120
    assert [r[f"text_to_image_hits@{k}"] for k in (1, 5, 10, 100)] == [1, 2, 2, 2]
    assert r["text_to_image_R@1"] == 100 / 120
    # the paper's cells and the six-way mean leave R@100 out
    assert r["image_to_text_mean"] == 0.0
    assert r["text_to_image_mean"] == pytest.approx((100 / 120 + 200 / 120 + 200 / 120) / 3)
    assert r["mean_recall"] == pytest.approx((100 / 120 + 200 / 120 + 200 / 120) / 6)


def test_results_json_keeps_the_counts_behind_every_rate(bench, tmp_path):
    out = tmp_path / "out"
    assert farslip_main(["eval", "classification", *FAST, "--data-root", str(bench), "--output", str(out)]) == 0
    assert farslip_main(["eval", "retrieval", *FAST, "--data-root", str(bench), "--output", str(tmp_path / "r")]) == 0
    cls = json.loads((out / "results.json").read_text())["classification"]["datasets"]["aid"]
    assert cls["num_samples"] == cls["num_images"] == 6  # the empty-label row is not counted
    for k in (1, 5):
        assert cls[f"top{k}"] == 100.0 * cls[f"top{k}_hits"] / cls["num_samples"]
    assert cls["top5_hits"] == 6  # three classes: every image within the top 5
    ret = json.loads((tmp_path / "r" / "results.json").read_text())["retrieval"]["datasets"]["RSICD"]
    # 4 images; 8 captions of which "forest seen from above" is written twice: 7 distinct queries
    assert (ret["image_to_text_queries"], ret["text_to_image_queries"]) == (4, 7)
    for d in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10, 100):
            assert ret[f"{d}_R@{k}"] == 100.0 * ret[f"{d}_hits@{k}"] / ret[f"{d}_queries"]
        assert ret[f"{d}_hits@100"] == ret[f"{d}_queries"]  # fewer keys than 100
    table = (out / "results.md").read_text()
    assert f"{cls['top1_hits']}/6" in table and "| AID" in table  # counts and paper names in results.md
    assert "-----:|" in table  # numbers right-aligned


def test_default_output_folder_per_model_and_no_silent_overwrite(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "epoch_3.pt"
    torch.save(farslip.create_model("ViT-Tiny-8", "none").state_dict(), weights)
    args = ["eval", "classification", *FAST, "--data-root", str(bench), "--datasets", "aid"]
    assert farslip_main([*args, "--pretrained", "none"]) == 0
    assert farslip_main([*args, "--pretrained", str(weights)]) == 0
    assert farslip_main([*args, "--pretrained", str(weights), "--model-name", "mine"]) == 0
    assert sorted(p.name for p in (tmp_path / "eval_results").iterdir()) == \
        ["ViT-Tiny-8-epoch_3", "ViT-Tiny-8-random", "mine-epoch_3"]
    target = tmp_path / "eval_results" / "ViT-Tiny-8-epoch_3" / "results.json"
    before = target.read_bytes()
    capsys.readouterr()
    # the same run again: refused at start-up, nothing touched
    assert farslip_main([*args, "--pretrained", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "eval_results/ViT-Tiny-8-epoch_3/results.json" in err and "--overwrite" in err and "--skip-existing" in err
    assert target.read_bytes() == before
    # --skip-existing: exit 0, nothing touched
    assert farslip_main([*args, "--pretrained", str(weights), "--skip-existing"]) == 0
    assert "skipped" in capsys.readouterr().out and target.read_bytes() == before
    # --overwrite: replaced
    assert farslip_main([*args, "--pretrained", str(weights), "--datasets", "eurosat", "--overwrite"]) == 0
    assert list(json.loads(target.read_text())["classification"]["datasets"]) == ["eurosat"]
    assert farslip_main([*args, "--overwrite", "--skip-existing"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_overwrite_removes_the_replaced_runs_panels(tmp_path):
    seg = write_segmentation(tmp_path / "ovss", name="LoveDA")
    write_segmentation(seg, name="Vaihingen")
    out = tmp_path / "out"
    args = ["eval", "segmentation", *FAST, "--data-root", str(seg), "--output", str(out)]
    assert farslip_main([*args, "--datasets", "LoveDA,Vaihingen"]) == 0
    assert sorted(p.name.split("_")[0] for p in (out / "segmentation").iterdir()) == ["LoveDA"] * 2 + ["Vaihingen"] * 2
    assert farslip_main([*args, "--datasets", "LoveDA", "--overwrite"]) == 0
    assert sorted(p.name.split("_")[0] for p in (out / "segmentation").iterdir()) == ["LoveDA"] * 2


def _md_table(text: str, title: str) -> list[list[str]]:
    """The rows of the Markdown table under ``## title`` (header first), cells stripped."""
    block = text.split(f"## {title}", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return [rows[0], *rows[2:]]


def test_eval_report_merges_runs_into_the_paper_tables(world, bench, tmp_path, capsys):
    weights = tmp_path / "trained.pt"
    torch.save(farslip.create_model("ViT-Tiny-8", "none").state_dict(), weights)
    runs = {"rand": ["--pretrained", "none"], "file": ["--pretrained", str(weights), "--model-name", "Tiny"],
            "file2": ["--pretrained", str(weights), "--model-name", "Tiny"]}
    common = ["--data-root", str(world / "benchmarks"), "--seg-data-root", str(world / "ovss")]
    assert farslip_main(["eval", "all", *FAST, *common, *runs["rand"], "--output", str(tmp_path / "rand")]) == 0
    assert farslip_main(["eval", "all", *FAST, *common, *runs["file"], "--cls-datasets", "aid,nwpu",
                         "--tasks", "classification,segmentation", "--output", str(tmp_path / "file")]) == 0
    assert farslip_main(["eval", "classification", *FAST, "--data-root", str(world / "benchmarks"), *runs["file2"],
                         "--output", str(tmp_path / "file2")]) == 0
    capsys.readouterr()
    report = tmp_path / "report"
    assert farslip_main(["eval", "report", str(tmp_path / "rand"), str(tmp_path / "file" / "results.json"),
                         str(tmp_path / "file2"), "--output", str(report)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (report / "report.md").read_text().strip()
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in runs}

    top1 = _md_table(printed, "Zero-shot scene classification, top-1 accuracy (%)")
    assert top1[0] == ["Method", "SkyScript", "AID", "EuroSAT", "fMoW", "Million-AID", "PatternNet", "RSI-CB256",
                       "NWPU-RESISC45", "Mean"]
    labels = [row[0] for row in top1[1:]]
    assert labels == ["ViT-Tiny-8 (random weights)", "Tiny [file]", "Tiny [file2]"]  # same label: folder added
    rand = results["rand"]["classification"]
    assert top1[1][2] == f"{rand['datasets']['aid']['top1']:.2f}" and top1[1][-1] == f"{rand['mean_top1']:.2f}"
    # the run of two sets: other cells empty, mean marked as partial
    assert top1[2][3] == "-" and top1[2][-1].endswith("*")
    assert top1[2][-1] == f"{results['file']['classification']['mean_top1']:.2f}*"
    assert "not comparable" in printed and "random (untrained) weights" in printed
    # right-aligned number columns
    rule = printed.split("## Zero-shot scene classification, top-1", 1)[1].splitlines()[3]
    assert rule.startswith("|-") and rule.count(":|") == len(top1[0]) - 1

    ret = _md_table(printed, "Zero-shot image-text retrieval, mean of R@1/5/10 per direction (%)")
    assert ret[0][1:3] == ["RSICD img->txt", "RSICD txt->img"] and "UCM-Captions img->txt" in ret[0]
    assert [row[0] for row in ret[1:]] == ["ViT-Tiny-8 (random weights)"]  # only that run did retrieval
    assert ret[1][1] == f"{results['rand']['retrieval']['datasets']['RSICD']['image_to_text_mean']:.2f}"

    seg = _md_table(printed, "Open-vocabulary semantic segmentation, mIoU (%)")
    present = [n for n in SEGMENTATION if dataset_present(world / "ovss", n)]
    assert seg[0] == ["Method", *(DISPLAY_NAMES[n] for n in present), "Mean"]
    assert [row[0] for row in seg[1:]] == ["ViT-Tiny-8 (random weights)", "Tiny [file]"]

    with open(report / "classification.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == top1[0] and [r[0] for r in rows[1:]] == labels
    assert rows[2][3] == "" and rows[2][-1] == top1[2][-1].rstrip("*")  # CSV: empty, plain numbers
    assert sorted(p.name for p in report.iterdir()) == ["classification.csv", "classification_top5.csv",
                                                         "report.md", "retrieval.csv", "segmentation.csv"]
    assert farslip_main(["eval", "report", str(tmp_path / "nothing-here")]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_eval_all_evaluates_what_is_present_and_lists_the_rest(world, tmp_path, capsys):
    common = [*FAST, "--data-root", str(world / "benchmarks"), "--seg-data-root", str(world / "ovss")]
    out = tmp_path / "all"
    assert farslip_main(["eval", "all", *common, "--tasks", "segmentation", "--output", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())["segmentation"]
    present = [n for n in SEGMENTATION if dataset_present(world / "ovss", n)]
    assert 0 < len(present) < len(SEGMENTATION)
    assert list(data["datasets"]) == present and data["failed"] == {}
    assert data["absent"] == [n for n in SEGMENTATION if n not in present]
    assert "Not evaluated (absent" in (out / "results.md").read_text()
    assert "absent, not evaluated" in capsys.readouterr().out
    # named explicitly: an absent set fails, with its path
    missing = data["absent"][0]
    assert farslip_main(["eval", "all", *common, "--tasks", "segmentation", "--seg-datasets", missing,
                         "--output", str(tmp_path / "named")]) == 1
    failed = json.loads((tmp_path / "named" / "results.json").read_text())["segmentation"]["failed"]
    assert str(world / "ovss" / missing) in failed[missing]
    # nothing at all under the roots: a usage error naming them, before any model is built
    empty = tmp_path / "empty"
    empty.mkdir()
    assert farslip_main(["eval", "all", *FAST, "--data-root", str(empty), "--output", str(tmp_path / "e")]) == 2
    assert str(empty) in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_segmentation_panel_has_titles_and_a_legend():
    truth = np.zeros((20, 30), dtype=np.uint8)
    truth[:, 15:] = 2
    truth[:2, :2] = 255
    pred = np.ones((20, 30), dtype=np.uint8)
    image = np.full((20, 30, 3), 128, dtype=np.uint8)
    classes = ["water", "forest", "road", "building"]
    picture = np.asarray(panel({"image": image, "truth": truth, "prediction": pred}, classes))
    colours = palette(len(classes))
    assert picture.shape[0] > 20 + 2 * 8 and picture.shape[1] >= 3 * 30  # a title row above, a legend below
    image_rows = [r for r in range(picture.shape[0]) if (picture[r, :30] == 128).all()]
    assert image_rows and image_rows[0] > 0 and (picture[: image_rows[0]] < 100).any()  # dark title text above
    below = picture[image_rows[-1] + 1:].reshape(-1, 3)  # everything under the images: the legend
    for c in (0, 1, 2):  # shown classes get a swatch
        assert (below == colours[c]).all(axis=1).any(), classes[c]
    assert not (below == colours[3]).all(axis=1).any()  # a class in neither map: no swatch
    assert (below == 0).all(axis=1).any()  # the ignored label's black swatch

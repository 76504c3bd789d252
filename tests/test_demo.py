"""The demo: exact chance levels (checked by simulation) and, under -m slow, the whole run."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from farslip.synth import write_world
from farslip.demo import HEADERS, PRESETS, chance_levels, main
from farslip.eval.datasets import load_label_map, read_class_synonyms, segmentation_pairs
from farslip.eval.metrics import IoUAccumulator, deduplicate_pairs, retrieval_recall
from farslip.eval.registry import RETRIEVAL, SEGMENTATION


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"), scale="tiny")


def test_chance_levels_match_random_rankings_and_labellings(tiny_world):
    chance = chance_levels(tiny_world)
    assert chance["classification"] == pytest.approx(10.0)  # ten scene classes

    rng = np.random.default_rng(0)
    bench = Path(tiny_world["benchmarks"])
    simulated = []
    for spec in RETRIEVAL.values():
        frame = pd.read_csv(bench / spec.csv, keep_default_na=False)
        _, _, pairs = deduplicate_pairs(list(frame["filepath"]), list(frame[spec.caption_key]))
        n_img, n_txt = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
        trials = [retrieval_recall(torch.from_numpy(rng.normal(size=(n_img, 8))).float(),
                                   torch.from_numpy(rng.normal(size=(n_txt, 8))).float(), pairs)["mean_recall"]
                  for _ in range(400)]
        simulated.append(np.mean(trials))
    assert chance["retrieval"] == pytest.approx(np.mean(simulated), abs=1.0)

    ovss = Path(tiny_world["ovss"])
    per_set = []
    for spec in SEGMENTATION.values():
        found = spec.find(ovss)
        if found is None:
            continue
        k = len(read_class_synonyms(found.folder / "classes.txt"))
        truths = [load_label_map(ann, spec.reduce_zero_label) for _, ann in
                  segmentation_pairs(found.images, found.labels, spec.ann_suffix, spec.img_suffix)]
        acc = IoUAccumulator(k)
        for truth in truths:
            acc.update(rng.integers(0, k, size=truth.shape), truth)
        per_set.append(acc.miou())
    assert chance["segmentation"] == pytest.approx(np.mean(per_set), abs=0.5)


@pytest.mark.slow
def test_demo_reduced_trained_models_beat_untrained_and_chance(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` passes it
    out = tmp_path / "demo"
    assert main(["--out", "demo", "--preset", "reduced"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for path in ["summary.md", "summary.png", "segmentation_overlays.png", "checkpoints/untrained.pt",
                 "logs/stage1/checkpoints/epoch_latest.pt", "logs/stage2/checkpoints/epoch_latest.pt"]:
        assert (out / path).is_file(), path
    for row in ("untrained", "stage 1", "stage 2"):
        assert Path(summary["results"][row]).is_file()
    # stage 2 really started from stage 1's checkpoint
    assert str(out / "logs/stage1/checkpoints/epoch_latest.pt") in (out / "logs/stage2/params.txt").read_text()
    required = {"classification": 30.0, "retrieval": 20.0, "segmentation": 0.5}  # points above max(untrained, chance)
    for row in ("stage 1", "stage 2"):
        for task, margin in required.items():
            got = summary["margins_over_untrained_and_chance"][row][task]
            assert got >= margin, f"{row} {HEADERS[task]}: margin {got:.2f} < {margin}"
    printed = capsys.readouterr().out
    assert "| stage 2 |" in printed and "segmentation_overlays.png" in printed

"""Zero-shot classification and retrieval through the Python API, against slow per-item references."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import farslip
from farslip.transforms import eval_transform
from farslip.eval import DatasetFailed, evaluate_classification, evaluate_retrieval
from farslip.eval.classification import PROMPTS
from tests._eval_utils import write_benchmarks

RUN = dict(batch_size=4, workers=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = farslip.create_model("ViT-Tiny-8").eval()
    return model, farslip.get_tokenizer(model)


@torch.no_grad()
def reference_top1(model, tokenizer, root: Path, dataset: str) -> float:
    """One image and one prompt at a time, names mapped by hand: the protocol written out slowly."""
    names = (root / dataset / "classnames.txt").read_text().split("\n")[:3]
    classes = []
    for name in names:
        prompts = torch.stack([F.normalize(model.encode_text(tokenizer([p.format(name)]))[0], dim=-1) for p in PROMPTS])
        classes.append(F.normalize(prompts.mean(0), dim=-1))
    weights = torch.stack(classes)
    transform = eval_transform(model.visual.image_size)
    hits = total = 0
    with open(root / dataset / f"{dataset}_img_txt_pairs_test.csv") as handle:
        for row in csv.DictReader(handle):
            if not row["label"]:
                continue
            target = names.index(row["label"]) if row["label"] in names else int(row["label"])
            image = transform(Image.open(root / row["filepath"]).convert("RGB"))[None]
            score = F.normalize(model.encode_image(image)[0], dim=-1) @ weights.T
            hits += int(score.argmax()) == target
            total += 1
    return 100.0 * hits / total


def test_classification_matches_reference_with_string_and_integer_labels(bench, tiny):
    model, tokenizer = tiny
    result = evaluate_classification(model, tokenizer, bench, ["aid", "eurosat"], **RUN)
    aid, eurosat = result["datasets"]["aid"], result["datasets"]["eurosat"]
    assert aid["num_images"] == eurosat["num_images"] == 6  # the empty-label row is dropped
    assert aid["top1"] == pytest.approx(reference_top1(model, tokenizer, bench, "aid"))
    # same images, labels once as names and once as indices: same scores
    assert eurosat["top1"] == pytest.approx(aid["top1"]) and eurosat["top5"] == pytest.approx(aid["top5"])
    assert aid["top5"] == pytest.approx(100.0)  # 3 classes: top-5 includes every class
    assert result["mean_top1"] == pytest.approx((aid["top1"] + eurosat["top1"]) / 2)


def test_custom_csv_and_case_insensitive_names(bench, tiny):
    model, tokenizer = tiny
    registered = evaluate_classification(model, tokenizer, bench, ["AID"], **RUN)
    custom = evaluate_classification(model, tokenizer, bench, csv="aid/aid_img_txt_pairs_test.csv",
                                     classnames=bench / "aid" / "classnames.txt", name="mine", **RUN)
    assert list(registered["datasets"]) == ["aid"] and list(custom["datasets"]) == ["mine"]
    assert custom["datasets"]["mine"]["top1"] == pytest.approx(registered["datasets"]["aid"]["top1"])


def test_missing_dataset_directory_names_the_path(bench, tiny):
    model, tokenizer = tiny
    with pytest.raises(DatasetFailed, match=str(bench / "fmow")):
        evaluate_classification(model, tokenizer, bench, ["fmow"], **RUN)
    kept = evaluate_classification(model, tokenizer, bench, ["fmow", "aid"], keep_going=True, **RUN)
    assert list(kept["datasets"]) == ["aid"] and str(bench / "fmow") in kept["failed"]["fmow"]


def test_missing_image_names_the_file(bench, tiny, tmp_path):
    model, tokenizer = tiny
    (tmp_path / "bad.csv").write_text("filepath,label\naid/images/0.png,forest\nnowhere/gone.png,forest\n")
    with pytest.raises(DatasetFailed, match="gone.png"):
        evaluate_classification(model, tokenizer, bench, csv=tmp_path / "bad.csv",
                                classnames=bench / "aid" / "classnames.txt", **RUN)


@torch.no_grad()
def test_retrieval_matches_reference(bench, tiny):
    model, tokenizer = tiny
    result = evaluate_retrieval(model, tokenizer, bench, ["RSICD"], **RUN)["datasets"]["RSICD"]
    with open(bench / "RSICD" / "RSICD_img_txt_pairs_test.csv") as handle:
        rows = [(r["filepath"], r["title"]) for r in csv.DictReader(handle)]
    images = sorted({r[0] for r in rows})
    captions = sorted({r[1] for r in rows})
    assert (result["num_images"], result["num_captions"]) == (len(images), len(captions)) == (4, 7)
    transform = eval_transform(model.visual.image_size)
    img = torch.stack([F.normalize(model.encode_image(transform(Image.open(bench / p).convert("RGB"))[None])[0], dim=-1)
                       for p in images])
    txt = torch.stack([F.normalize(model.encode_text(tokenizer(["a satellite image. " + c]))[0], dim=-1)
                       for c in captions])
    sims = img @ txt.T
    # image -> text R@1 by a full sort, positives from the rows
    hits = [captions[int(sims[i].argsort(descending=True)[0])] in {c for p, c in rows if p == path}
            for i, path in enumerate(images)]
    assert result["image_to_text_R@1"] == pytest.approx(100.0 * sum(hits) / len(hits))
    hits = [images[int(sims[:, j].argsort(descending=True)[0])] in {p for p, c in rows if c == caption}
            for j, caption in enumerate(captions)]
    assert result["text_to_image_R@1"] == pytest.approx(100.0 * sum(hits) / len(hits))
    assert result["text_to_image_R@10"] == pytest.approx(100.0)  # 4 images: all within the top 10


def test_long_text_model_tokenises_at_248(bench):
    model = farslip.create_model("ViT-Tiny-8", long_text=True).eval()
    tokenizer = farslip.get_tokenizer(model)
    assert tokenizer(["a satellite image"]).shape[-1] == 248
    result = evaluate_retrieval(model, tokenizer, bench, ["RSICD"], **RUN)
    assert 0.0 <= result["mean_mean_recall"] <= 100.0


@pytest.mark.parametrize("precision", ["bf16", "amp_bf16"])
def test_reduced_precision_runs_end_to_end(bench, precision):
    """A bf16-cast model gets bf16 images; autocast runs an fp32 model in bf16: both must work."""
    model = farslip.create_model("ViT-Tiny-8", precision=precision).eval()
    result = evaluate_classification(model, farslip.get_tokenizer(model), bench, ["aid"],
                                     **{**RUN, "precision": precision})
    assert result["datasets"]["aid"]["num_images"] == 6 and 0.0 <= result["mean_top1"] <= 100.0

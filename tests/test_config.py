"""The typed training config (farslip.config): built once from the flags, frozen, recorded in
checkpoints and read back (also from the flat ``train_args`` of earlier checkpoints); the library
takes it, never an ``argparse.Namespace``; the stage-2 jitter follows the method."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json

import pytest
import torch

from farslip.config import SECTIONS, DataConfig, TrainConfig, World
from farslip.train import checkpoint
from farslip.train.args import build_parser, parse_args, parse_namespace

from ._imports import module_files
from ._train_utils import make_args

STAGE2 = ["--train-data", "x.json", "--root-train-img-dir", ".", "--method", "farslip2",
          "--pretrained", "none", "--model", "ViT-Tiny-8"]
DERIVED = {"crops", "objects", "object_pixels", "distill_views"}


def test_every_flag_is_one_field_of_one_section():
    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    owners: dict[str, list[str]] = {}
    for name, section in SECTIONS.items():
        for field in dataclasses.fields(section):
            owners.setdefault(field.name, []).append(name)
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}  # names are unique across sections
    assert set(owners) == dests | DERIVED  # nothing dropped, nothing invented


def test_the_config_is_frozen_and_typed():
    cfg = parse_args(STAGE2)
    assert isinstance(cfg, TrainConfig) and isinstance(cfg.data, DataConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data = None
    changed = cfg.replace("optim", lr=0.5)
    assert changed.optim.lr == 0.5 and cfg.optim.lr == 1e-6 and changed.data is cfg.data
    assert cfg.method.loss_type == ("global_itc", "distill", "local_itc")  # tuples: hashable, immutable
    assert cfg.run.device == "cpu" and cfg.model.model == "ViT-Tiny-8"  # resolved once, at parse time
    hash(cfg)  # every field is immutable


def test_the_record_is_plain_data_and_reads_back():
    cfg = parse_args([*STAGE2, "--report-to", "tensorboard", "--w-l", "0.25", "--name", "r"])
    record = cfg.record()
    assert set(record) == set(SECTIONS)
    assert json.loads(json.dumps(record)) == record  # str/int/float/bool/None and lists only
    assert record["method"]["loss_type"] == ["global_itc", "distill", "local_itc"]
    assert TrainConfig.from_record(record) == cfg
    flat = cfg.flat()
    assert flat["w_l"] == 0.25 and flat["report_to"] == ["tensorboard"] and len(flat) == sum(
        len(dataclasses.fields(s)) for s in SECTIONS.values())
    with pytest.raises(ValueError, match="lacks .*train_data"):
        TrainConfig.from_record({k: v for k, v in flat.items() if k != "train_data"})


def test_a_checkpoint_of_an_earlier_version_reads_its_flat_train_args():
    """Earlier checkpoints recorded ``vars(args)`` flat: every flag, the derived fields and the
    per-process ones (rank, world size, ...), and no --color-jitter (MGRS json was jittered)."""
    for argv in (STAGE2, ["--train-data", "x.json", "--root-train-img-dir", ".", "--method", "farslip1",
                          "--local-method", "objects", "--pretrained", "none", "--model", "ViT-Tiny-8"]):
        a = parse_namespace(argv)
        old = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(a).items() if k != "color_jitter"}
        old.update(rank=0, world_size=1, local_rank=0, distributed=False, horovod=False, name="old")
        cfg = checkpoint.train_config({"train_args": old})
        want = parse_args(argv).replace("run", name="old").replace("data", color_jitter=True)
        assert cfg == want
    assert checkpoint.train_config({checkpoint.CONFIG_KEY: want.record()}) == want
    with pytest.raises(ValueError, match="records no training settings"):
        checkpoint.train_config({"state_dict": {}})


@pytest.mark.parametrize("flags,jitter", [
    (["--method", "farslip2"], True),                                   # the stage-2 recipe
    (["--method", "farslip1", "--local-method", "objects"], False),     # stage 1 on MGRS json: no jitter
    (["--method", "farslip1", "--local-method", "objects", "--color-jitter"], True),
    (["--method", "farslip2", "--no-color-jitter"], False),
    (["--method", "vanilla"], False),
])
def test_the_stage2_jitter_follows_the_method_not_the_file_format(flags, jitter):
    argv = ["--train-data", "x.json", "--root-train-img-dir", ".", "--pretrained", "none", "--model", "ViT-Tiny-8"]
    assert parse_args(argv + flags).data.color_jitter is jitter


def test_the_loader_jitters_exactly_when_the_config_says(tmp_path):
    import farslip
    from farslip.data.train_data import get_train_data

    from ._train_utils import write_mgrs

    js, imgs = write_mgrs(tmp_path / "mgrs", items=4)
    base = parse_args(["--train-data", js, "--root-train-img-dir", imgs, "--method", "farslip2", "--pretrained",
                       "none", "--model", "ViT-Tiny-8", "--batch-size", "2", "--workers", "0"]).data
    tok = farslip.get_tokenizer("ViT-Tiny-8")

    def first(data):
        return next(iter(get_train_data(data, tok, 32, seed=3).dataloader))

    on, off = first(base), first(dataclasses.replace(base, color_jitter=False))
    assert base.color_jitter and not torch.equal(on["image"], off["image"])
    assert torch.equal(off["image"], first(dataclasses.replace(base, color_jitter=False))["image"])
    assert torch.equal(on["image"], first(base)["image"])  # the draws come from the seed


def test_library_entry_points_refuse_a_namespace(tmp_path):
    from farslip.data.train_data import get_train_data
    from farslip.train.main import Trainer
    from farslip.train.step import make_plan

    a = parse_namespace(STAGE2)
    with pytest.raises(TypeError, match="MethodConfig"):
        make_plan(a)
    with pytest.raises(TypeError, match="DataConfig"):
        get_train_data(a, None, 32)
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(a, tmp_path)
    assert World().rank == 0 and World().world_size == 1  # one process unless torchrun says otherwise


def _namespace_annotations(tree: ast.AST) -> list[str]:
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            for arg in args:
                if arg.annotation is not None and "Namespace" in ast.unparse(arg.annotation):
                    hits.append(f"{node.name}({arg.arg})")
    return hits


def test_no_library_function_takes_a_namespace():
    """Below the command-line front ends (the parsers, the CLI plumbing, the tools), no function
    is annotated to take an ``argparse.Namespace``, and no library module imports argparse."""
    from .test_layering import TOOLS, layer_of

    fronts = {"farslip.cli", "farslip.errors", "farslip.train.args"}
    offenders = []
    for module, path in module_files().items():
        if module in fronts or layer_of(module) == TOOLS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports_argparse = any(isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names)
                               for n in ast.walk(tree))
        offenders += [f"{module}: imports argparse"] * imports_argparse
        offenders += [f"{module}: {hit}" for hit in _namespace_annotations(tree)]
    assert offenders == []
    # the check itself sees an annotated parameter
    assert _namespace_annotations(ast.parse("def f(args: argparse.Namespace): pass")) == ["f(args)"]
    assert isinstance(parse_namespace(STAGE2), argparse.Namespace)

"""`python scripts/bench.py train`: training-step throughput, peak memory and FLOPs.

For each model and each method / teacher mode, one :class:`~farslip.train.main.Trainer` runs
full optimiser steps on an in-memory batch with every local view present (the most work a
batch can ask for). Reported per configuration: samples/s, peak memory (CUDA allocator peak on
a GPU; the process's peak RSS so far on CPU, which only grows), the FLOPs one step performs
(forward + backward, counted by ``torch.utils.flop_counter``) and the FLOPs it *needs*: each
encoding a loss uses, counted alone (texts without their padding), times 3 for the student
(forward + backward) and times 1 for the gradient-free teacher. ``done / needed`` near 1
means no wasted encoding. (The counter misses part of ``nn.MultiheadAttention``'s inference
fast path, which the eval-mode teacher takes under ``no_grad``; the teacher is therefore
counted by running it, so both columns undercount it alike.)
The data pipeline has its own benchmark (``scripts/bench.py data``).

More measurements, each its own sub-command:

* ``python scripts/bench.py train teacher``: the EMA teacher's memory (parameter + buffer
  bytes, and the process's peak RSS in a fresh process) and the time of one EMA update, the
  vision-only teacher with its fused ``torch._foreach_lerp_`` against the whole-CLIP teacher
  and the Python loop over ``state_dict()`` it replaced.
* ``python scripts/bench.py train syncs``: host synchronisations per training step, counted
  on any device by the ops that make the host wait for a CUDA device (see :class:`SyncCounter`).
* ``python scripts/bench.py train guard``: the divergence guard's per-step gradient check (one
  pass over the gradients) against none, on one trainer, timed round-robin.
* ``python scripts/bench.py train resume``: a step checkpoint's write/load time and size, and the
  cost of a mid-epoch resume passing over k RS5M samples undecoded (:mod:`.bench_resume`).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import farslip
from farslip.models.text import encode_text

from .args import parse_args
from .main import Trainer
from .step import encode_views, make_plan
from .teacher import Teacher

CONFIGS = {
    "vanilla": ["--method", "vanilla"],
    "farslip1/active": ["--method", "farslip1", "--use-imagecrop-aug"],
    "farslip1/ema": ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "ema"],
    "farslip1/frozen": ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "frozen"],
    "farslip2/active": ["--method", "farslip2", "--train-dataset-type", "json"],
    "farslip2/ema": ["--method", "farslip2", "--train-dataset-type", "json", "--distill-type", "ema"],
}


def full_batch(model, batch_size: int, boxes: int, *, crops: bool, objects: bool) -> dict:
    """A batch with every view slot filled (random pixels, boxes, category labels)."""
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    tok = farslip.get_tokenizer(model)
    b, n = batch_size, boxes
    batch = {"image": torch.randn(b, 3, size, size),
             "text": tok([f"a satellite image of scene {i}" for i in range(b)])}
    corner = torch.rand(b, n, 2) * 0.5
    box = torch.cat([corner, corner + 0.5], dim=-1)
    for prefix, wanted in (("crop", crops), ("obj", objects)):
        if wanted:
            batch[prefix] = torch.randn(b * n, 3, size, size)
            batch[f"{prefix}_box"], batch[f"{prefix}_valid"] = box, torch.ones(b, n, dtype=torch.bool)
    if objects:
        labels = torch.randint(0, 8, (b * n,))
        batch["obj_text"] = tok([f"a satellite image of class {int(y)}" for y in labels])
        batch["obj_label"] = labels
    return batch


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def needed_flops(trainer: Trainer, batch: dict) -> int:
    """FLOPs of the encodings the losses use, each counted alone (see the module docstring)."""
    plan, model = trainer.plan, trainer.model
    total = 0

    def forward(images, need):
        return _flops(lambda: encode_views(model, images, need, plan.last_attn))

    with torch.no_grad():
        total += 3 * forward(batch["image"], plan.image_need)
        if plan.global_itc:
            total += 3 * _flops(lambda: encode_text(model, batch["text"]))
        if plan.distill:
            views = batch[plan.distill_views]
            if plan.student_distill:
                total += 3 * forward(views, plan.distill_need)
            else:  # the teacher itself (eval mode: see the module docstring)
                total += _flops(lambda: trainer.teacher.encoder(views))
        if plan.local_itc:
            keep = batch["obj_label"] >= 0
            if plan.local_need:
                total += 3 * forward(batch["obj"][keep], plan.local_need)
            texts = torch.unique(batch["obj_text"][keep], dim=0)
            total += 3 * _flops(lambda: encode_text(model, texts))
    return total


def _bench_trainer(model_name: str, flags: list[str], args: argparse.Namespace,
                   device: torch.device):
    """A Trainer for ``flags`` and a full batch on ``device`` (no data on disk)."""
    data = "bench.json" if "json" in flags else "bench.tar"
    argv = ["--train-data", data, "--root-train-img-dir", ".", "--model", model_name,
            "--pretrained", "none", "--precision", args.precision, "--device", device.type,
            "--batch-size", str(args.batch_size), "--max-boxes", str(args.boxes),
            "--train-num-samples", str(args.batch_size), *flags]
    targs = parse_args(argv)
    targs.rank, targs.world_size, targs.distributed, targs.local_rank = 0, 1, False, 0
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(targs, device, Path(tmp))
    batch = full_batch(trainer.model, args.batch_size, args.boxes,
                       crops=targs.crops, objects=targs.objects)
    batch = {k: v.to(device) for k, v in batch.items()}
    return trainer, batch


def bench_one(model_name: str, label: str, flags: list[str], args: argparse.Namespace,
              device: torch.device) -> dict:
    trainer, batch = _bench_trainer(model_name, flags, args, device)
    done = _flops(lambda: trainer.train_step(batch))
    need = needed_flops(trainer, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.train_step(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = (time.perf_counter() - start) / args.steps
    return {"model": model_name, "config": label, "device": str(device),
            "batch_size": args.batch_size, "boxes": args.boxes,
            "samples_per_s": args.batch_size / seconds, "step_s": seconds,
            "peak_mib": peak, "gflops_done": done / 1e9, "gflops_needed": need / 1e9,
            "done_over_needed": done / need if need else float("nan")}


def table(rows: list[dict]) -> str:
    head = "| model | config | device | samples/s | step s | peak MiB | GFLOP done | GFLOP needed | done/needed |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['device']} | {r['samples_per_s']:.1f} "
                     f"| {r['step_s']:.3f} | {r['peak_mib']:.0f} | {r['gflops_done']:.2f} "
                     f"| {r['gflops_needed']:.2f} | {r['done_over_needed']:.3f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- host syncs
# ops after which the host waits for a CUDA device: a value read back (item, bool, int,
# float), or an output whose size depends on the data (nonzero, boolean-mask indexing,
# unique, repeat_interleave without output_size)
_SYNC_ALWAYS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2",
                "unique_dim", "unique_consecutive", "unique_dim_consecutive", "equal"}
_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}


def _bool_indices(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _in_optimizer() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if "torch/optim/" in frame.f_code.co_filename.replace("\\", "/"):
            return True
        frame = frame.f_back
    return False


class SyncCounter(TorchDispatchMode):
    """Counts the ops that synchronise the host with a CUDA device, on any device.

    Seen at the dispatcher, so it works on CPU. Not counted: scalar reads inside
    ``torch.optim`` (AdamW keeps its step counters on the host unless capturable/fused).
    Device-to-host copies (``.cpu()``, ``.tolist()``) are not visible on a CPU run and must
    be counted by reading the code.
    """

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" and _in_optimizer():
            pass  # AdamW's step counters: host tensors on CUDA too (not capturable/fused)
        elif name in _SYNC_ALWAYS:
            self.counts[name] += 1
        elif name in _INDEXING and _bool_indices(args):
            self.counts[f"{name}(bool mask)"] += 1
        elif name == "repeat_interleave" and kwargs.get("output_size") is None and any(
                torch.is_tensor(a) and a.ndim > 0 for a in args[:2]):
            self.counts[name] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def syncs_main(argv: list[str] | None = None) -> int:
    """`bench.py train syncs`: host syncs of one training step per configuration."""
    parser = argparse.ArgumentParser(prog="bench.py train syncs", description=syncs_main.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="ViT-Tiny-8")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=4)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "amp", "amp_bf16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    device = torch.device(args.device)
    print("| config | host syncs per step | of which the divergence guard | by op |")
    print("|---|---|---|---|")
    for label in args.configs.split(","):
        trainer, batch = _bench_trainer(args.model, CONFIGS[label], args, device)
        trainer.train_step(batch)  # warm-up (lazy state)
        with SyncCounter() as step:
            trainer.train_step(batch)
        terms = {k: torch.zeros((), device=device) for k in trainer.divergence.terms}
        with SyncCounter() as guard:
            trainer.divergence.observe(2, terms, torch.zeros((), device=device),
                                       trainer.model.logit_scale, 1e-6)
            trainer.divergence.observe_skip(2, torch.zeros((), dtype=torch.bool, device=device))
        ops = ", ".join(f"{k} {v}" for k, v in sorted(step.counts.items()))
        print(f"| {label} | {step.total} | {guard.total} | {ops} |", flush=True)
    return 0


# --------------------------------------------------------------------------- EMA teacher
_RSS_CHILD = """
import copy, resource, sys, torch, farslip
from farslip.train.bench import ema_plan
from farslip.train.teacher import Teacher
name, variant = sys.argv[1], sys.argv[2]
model = farslip.create_model(name)
if variant == "whole":  # the teacher as it was: a deep copy of the whole CLIP
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
elif variant == "tower":
    teacher = Teacher("ema", model, ema_plan(name))
import gc; gc.collect()
rss = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")][0]
print(rss / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def ema_plan(name: str):
    """The Plan of stage 1 with an EMA teacher (what the teacher measurements build)."""
    return make_plan(parse_args(["--train-data", "bench.tar", "--train-num-samples", "1",
                                 "--method", "farslip1", "--use-imagecrop-aug", "--distill-type",
                                 "ema", "--pretrained", "none", "--model", name]))


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


@torch.no_grad()
def _loop_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """The EMA update as it was: a Python loop over ``state_dict()`` with one lerp per tensor."""
    target_state = teacher.state_dict()
    for name, value in student.state_dict().items():
        target = target_state[name]
        if target.is_floating_point():
            target.lerp_(value.to(target.dtype), 1.0 - momentum)
        else:
            target.copy_(value)


def _interleaved_median_s(fns: dict, repeat: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (so machine load hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeat):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def teacher_main(argv: list[str] | None = None) -> int:
    """`bench.py train teacher`: EMA teacher memory and update time, vision tower vs whole CLIP."""
    parser = argparse.ArgumentParser(prog="bench.py train teacher", description=teacher_main.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-B-32,ViT-B-16")
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed EMA updates per variant (median; variants timed round-robin)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS runs")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        student = farslip.create_model(name, device=device)
        teacher = Teacher("ema", student, ema_plan(name))
        whole = copy.deepcopy(student).eval().requires_grad_(False)
        tower_loop = copy.deepcopy(student.visual).eval().requires_grad_(False)
        ms = _interleaved_median_s({
            "loop_whole_ms": lambda: _loop_update(whole, student, 0.99),
            "loop_tower_ms": lambda: _loop_update(tower_loop, student.visual, 0.99),
            "foreach_tower_ms": lambda: teacher.update(student)}, args.repeat, device)
        row = {"model": name, "device": str(device),
               "whole_mib": _bytes(whole) / 2**20, "tower_mib": _bytes(teacher.module) / 2**20,
               **{k: 1e3 * v for k, v in ms.items()}}
        if not args.no_rss and device.type == "cpu":
            for variant in ("none", "whole", "tower"):
                out = subprocess.run([sys.executable, "-c", _RSS_CHILD, name, variant], check=True,
                                     capture_output=True, text=True).stdout
                now, peak = out.strip().splitlines()[-1].split()
                row[f"rss_{variant}_mib"], row[f"peak_rss_{variant}_mib"] = float(now), float(peak)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    rss = all("rss_none_mib" in r for r in rows)
    head = ("| model | teacher MiB: whole CLIP | vision tower | EMA update ms: loop, whole CLIP | "
            "loop, tower | foreach, tower | before / after |")
    if rss:
        head += " RSS MiB after building: no teacher | + whole CLIP | + tower | peak RSS MiB: no teacher | + whole CLIP | + tower |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        line = (f"| {r['model']} | {r['whole_mib']:.0f} | {r['tower_mib']:.0f} | "
                f"{r['loop_whole_ms']:.1f} | {r['loop_tower_ms']:.1f} | {r['foreach_tower_ms']:.1f} | "
                f"{r['loop_whole_ms'] / r['foreach_tower_ms']:.2f} |")
        if rss:
            line += "".join(f" {r[f'{kind}_{v}_mib']:.0f} |" for kind in ("rss", "peak_rss")
                            for v in ("none", "whole", "tower"))
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def guard_main(argv: list[str] | None = None) -> int:
    """`bench.py train guard`: a training step with the per-step gradient check and without."""
    parser = argparse.ArgumentParser(prog="bench.py train guard", description=guard_main.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-Tiny-8,ViT-B-32")
    parser.add_argument("--config", default="farslip1/ema", choices=tuple(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (round-robin)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "amp_bf16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    device = torch.device(args.device)
    print("| model | config | step s, gradient check every step | step s, no gradient check | ratio |"
          " gradient norm alone s |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        trainer, batch = _bench_trainer(name, CONFIGS[args.config], args, device)
        guard = trainer.divergence

        def step(every: int):
            def run():
                guard.grads_every = every
                trainer.train_step(batch)
            return run

        times = _interleaved_median_s({"on": step(1), "off": step(0)}, args.steps, device)
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norm = _interleaved_median_s({"norm": lambda: torch.nn.utils.get_total_norm(grads)},
                                     args.steps, device)["norm"]
        print(f"| {name} | {args.config} | {times['on']:.4f} | {times['off']:.4f} | "
              f"{times['on'] / times['off']:.3f} | {norm:.4f} |", flush=True)
    return 0


def resume_main(argv: list[str]) -> int:
    from .bench_resume import main as run

    return run(argv)


SUBCOMMANDS = {"teacher": teacher_main, "syncs": syncs_main, "guard": guard_main,
               "resume": resume_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    return steps_main(argv)


def steps_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py train", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-Tiny-8,ViT-B-32")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=4, help="local views per image (all valid)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "amp", "amp_bf16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    device = torch.device(args.device)
    rows = []
    for model_name in args.models.split(","):
        for label in args.configs.split(","):
            rows.append(bench_one(model_name, label, CONFIGS[label], args, device))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

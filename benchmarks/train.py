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

Each timed step starts from the CPU batch as the loader hands it over (uint8 views, pinned on a
GPU): host-side bookkeeping, the copy to the device and the normalisation are the step's
"data" phase; the others are the teacher (targets and EMA update), forward (student and
losses), backward and optimizer. On a GPU the phases are timed in a second pass with a
synchronisation at each boundary (the throughput pass has none). "time/FLOP vs vanilla" is
(step time / vanilla's) / (FLOPs done / vanilla's): 1 means the step's time follows its work
(step time = CPU time of the process on a CPU, where "samples per CPU-s" with ``--threads 1``
is the per-core rate that other jobs on a shared machine barely change; wall time on a GPU).
"reads/step" counts the operations inside one step that read tensor values on the host
(:class:`~farslip.train.syncs.HostReads`; each is a host sync on a GPU).
The data pipeline has its own benchmark (``scripts/bench.py data``).

More measurements, each its own sub-command:

* ``python scripts/bench.py train teacher``: the EMA teacher's memory (parameter + buffer
  bytes, and the process's peak RSS in a fresh process) and the time of one EMA update, the
  vision-only teacher with its fused ``torch._foreach_lerp_`` against the whole-CLIP teacher
  and the Python loop over ``state_dict()`` it replaced.
* ``python scripts/bench.py train syncs``: host synchronisations inside one training step,
  counted on any device by :class:`~farslip.train.syncs.HostReads`, for the prepared batch the
  trainer steps on and for the same batch unprepared (the step then reads values itself).
* ``python scripts/bench.py train guard``: the divergence guard's per-step gradient check (one
  pass over the gradients) against none, on one trainer, timed round-robin.
* ``python scripts/bench.py train optimizer``: one AdamW step, the multi-tensor (foreach)
  update against the per-parameter loop, timed round-robin.
* ``python scripts/bench.py train resume``: a step checkpoint's write/load time and size, and the
  cost of a mid-epoch resume passing over k RS5M samples undecoded (:mod:`benchmarks.train_resume`).
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
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import farslip
from farslip.atomic import atomic_write
from farslip.data.transforms import normalize_views
from farslip.models.text import encode_text
from farslip.train.args import parse_args
from farslip.train.main import Trainer, to_device
from farslip.train.step import encode_views, make_plan
from farslip.train.syncs import HostReads, step_host_reads
from farslip.train.teacher import Teacher

ROOT = Path(__file__).resolve().parents[1]  # the checkout: benchmarks/ is not installed
CONFIGS = {
    "vanilla": ["--method", "vanilla"],
    "farslip1/active": ["--method", "farslip1", "--use-imagecrop-aug"],
    "farslip1/ema": ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "ema"],
    "farslip1/frozen": ["--method", "farslip1", "--use-imagecrop-aug", "--distill-type", "frozen"],
    "farslip2/active": ["--method", "farslip2", "--train-dataset-type", "json"],
    "farslip2/ema": ["--method", "farslip2", "--train-dataset-type", "json", "--distill-type", "ema"],
    "farslip2/objects": ["--method", "farslip2", "--train-dataset-type", "json", "--local-method", "objects"],
    "farslip2/roi": ["--method", "farslip2", "--train-dataset-type", "json", "--local-itc-align", "roi"],
}
PHASES = ("data", "teacher", "forward", "backward", "optimizer")


def full_batch(model, batch_size: int, boxes: int, *, crops: bool, objects: bool) -> dict:
    """A CPU batch with every view slot filled, as the loader gives it (uint8 pixels, boxes,
    category labels)."""
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    tok = farslip.get_tokenizer(model)
    b, n = batch_size, boxes

    def pixels(count):
        return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8)

    batch = {"image": pixels(b),
             "text": tok([f"a satellite image of scene {i}" for i in range(b)])}
    corner = torch.rand(b, n, 2) * 0.5
    box = torch.cat([corner, corner + 0.5], dim=-1)
    for prefix, wanted in (("crop", crops), ("obj", objects)):
        if wanted:
            batch[prefix] = pixels(b * n)
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
    batch = normalize_views(batch)
    total = 0

    def forward(images, need):
        return _flops(lambda: encode_views(model, images, need, plan.last_attn))

    with torch.no_grad():
        total += 3 * forward(batch["image"], plan.image_need)
        if plan.global_itc:
            total += 3 * _flops(lambda: encode_text(model, batch["text"]))
        shared = plan.student_distill and plan.distill_views == "obj"
        if plan.distill:
            views = batch[plan.distill_views]
            if shared:  # one encoding of every object crop serves both losses
                total += 3 * forward(views, plan.obj_need)
            elif plan.student_distill:
                total += 3 * forward(views, plan.distill_need)
            else:  # the teacher itself (eval mode: see the module docstring)
                total += _flops(lambda: trainer.teacher.encoder(views))
        if plan.local_itc:
            keep = batch["obj_label"] >= 0 if plan.mpcl else torch.ones_like(batch["obj_label"], dtype=torch.bool)
            if plan.local_need and not shared:
                total += 3 * forward(batch["obj"][keep], plan.local_need)
            texts = torch.unique(batch["obj_text"][keep], dim=0)
            total += 3 * _flops(lambda: encode_text(model, texts))
    return total


class PhaseTimer:
    """``Trainer.phase``: time per phase name: wall time synchronising CUDA at each boundary
    on a GPU, this process's CPU time on a CPU (which other jobs on the machine barely move)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.clock = time.perf_counter if self.cuda else time.process_time
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str):
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: PhaseTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        if self.timer.cuda:
            torch.cuda.synchronize()
        self.start = self.timer.clock()

    def __exit__(self, *exc):
        if self.timer.cuda:
            torch.cuda.synchronize()
        self.timer.seconds[self.name] += self.timer.clock() - self.start


host_reads = step_host_reads  # the name the GPU check and older notes use


def _bench_trainer(model_name: str, flags: list[str], args: argparse.Namespace,
                   device: torch.device):
    """A Trainer for ``flags`` and a full CPU batch as the loader hands it over (uint8 views,
    pinned on a GPU); :func:`device_batch` prepares and moves it (no data on disk)."""
    data = "bench.json" if "json" in flags else "bench.tar"
    argv = ["--train-data", data, "--root-train-img-dir", ".", "--model", model_name,
            "--pretrained", "none", "--precision", args.precision, "--device", device.type,
            "--batch-size", str(args.batch_size), "--max-boxes", str(args.boxes),
            "--train-num-samples", str(args.batch_size), *flags]
    cfg = parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
    cpu = full_batch(trainer.model, args.batch_size, args.boxes,
                     crops=cfg.data.crops, objects=cfg.data.objects)
    if device.type == "cuda":
        cpu = {k: v.pin_memory() for k, v in cpu.items()}
    return trainer, cpu


def device_batch(trainer: Trainer, cpu: dict) -> dict:
    """What the training loop gives ``train_step``: the prepared batch on the device."""
    return to_device(trainer.prepare(cpu), trainer.device)


def bench_one(model_name: str, label: str, flags: list[str], args: argparse.Namespace,
              device: torch.device) -> dict:
    trainer, cpu = _bench_trainer(model_name, flags, args, device)

    def step(batch=None):
        if batch is None:
            with trainer.phase("data"):
                batch = device_batch(trainer, cpu)
        return trainer.train_step(batch)

    ready = device_batch(trainer, cpu)
    done = _flops(lambda: trainer.train_step(ready))
    need = needed_flops(trainer, ready)
    reads = host_reads(trainer, ready).total
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    timer = PhaseTimer(device)
    if device.type != "cuda":
        trainer.phase = timer  # no synchronisation: the split costs nothing on a CPU
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = (time.perf_counter() - start) / args.steps
    cpu_seconds = (time.process_time() - cpu_start) / args.steps
    if device.type == "cuda":  # a second pass for the split (it synchronises at each phase)
        trainer.phase = timer
        for _ in range(args.steps):
            step()
    total = sum(timer.seconds.values()) or float("nan")
    split = {f"{p}_frac": timer.seconds.get(p, 0.0) / total for p in PHASES}
    return {"model": model_name, "config": label, "device": str(device),
            "precision": args.precision, "batch_size": args.batch_size, "boxes": args.boxes,
            "samples_per_s": args.batch_size / seconds, "step_s": seconds, "cpu_step_s": cpu_seconds,
            "samples_per_cpu_s": args.batch_size / cpu_seconds,
            "peak_mib": peak, "gflops_done": done / 1e9, "gflops_needed": need / 1e9,
            "done_over_needed": done / need if need else float("nan"),
            "host_reads_per_step": reads, **split}


def step_time(row: dict) -> float:
    """The step time the ratios use: CPU time on a CPU (robust on a shared machine), else wall."""
    return row["cpu_step_s"] if row["device"] == "cpu" else row["step_s"]


def add_ratios(rows: list[dict]) -> None:
    """``time_per_flop_vs_vanilla`` for each row whose model also has a vanilla row."""
    base = {r["model"]: r for r in rows if r["config"] == "vanilla"}
    for r in rows:
        v = base.get(r["model"])
        r["time_per_flop_vs_vanilla"] = (
            (step_time(r) / step_time(v)) / (r["gflops_done"] / v["gflops_done"]) if v else float("nan"))


def table(rows: list[dict]) -> str:
    head = ("| model | config | samples/s | samples per CPU-s | GFLOP done | GFLOP needed | done/needed "
            "| time/FLOP vs vanilla | data | teacher | forward | backward | optimizer | reads/step | peak MiB |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        split = " | ".join(f"{100 * r[f'{p}_frac']:.0f} %" for p in PHASES)
        lines.append(f"| {r['model']} | {r['config']} | {r['samples_per_s']:.1f} | {r['samples_per_cpu_s']:.2f} "
                     f"| {r['gflops_done']:.2f} | {r['gflops_needed']:.2f} | {r['done_over_needed']:.3f} "
                     f"| {r['time_per_flop_vs_vanilla']:.2f} | {split} | {r['host_reads_per_step']} "
                     f"| {r['peak_mib']:.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- host syncs
def syncs_main(argv: list[str] | None = None) -> int:
    """`bench.py train syncs`: host syncs inside one training step per configuration."""
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
    print(f"{args.model}, batch {args.batch_size} x {args.boxes} views, {args.precision}, {device}\n")
    print("| config | host syncs per step | of which the divergence guard | by op "
          "| without host-side preparation | by op |")
    print("|---|---|---|---|---|---|")

    def ops(reads: HostReads) -> str:
        return ", ".join(f"`{k}` {v}" for k, v in sorted(reads.counts.items())) or "-"

    for label in args.configs.split(","):
        trainer, cpu = _bench_trainer(args.model, CONFIGS[label], args, device)
        trainer.train_step(device_batch(trainer, cpu))  # warm-up (lazy state)
        step = host_reads(trainer, device_batch(trainer, cpu))
        raw = host_reads(trainer, to_device(cpu, device))  # the step prepares on the device
        terms = {k: torch.zeros((), device=device) for k in trainer.divergence.terms}
        with HostReads() as guard:
            trainer.divergence.observe(2, terms, torch.zeros((), device=device),
                                       trainer.model.logit_scale, 1e-6)
            trainer.divergence.observe_skip(2, torch.zeros((), dtype=torch.bool, device=device))
        print(f"| {label} | {step.total} | {guard.total} | {ops(step)} | {raw.total} | {ops(raw)} |",
              flush=True)
    return 0


# --------------------------------------------------------------------------- EMA teacher
_RSS_CHILD = """
import copy, resource, sys
sys.path.insert(0, sys.argv[3])  # the checkout holding benchmarks/
import torch, farslip
from benchmarks.train import ema_plan
from farslip.train.teacher import Teacher
name, variant = sys.argv[1], sys.argv[2]
model = farslip.create_model(name, pretrained="none")
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
                                 "ema", "--pretrained", "none", "--model", name]).method)


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


def _interleaved_median_s(fns: dict, repeat: int, device: torch.device,
                          cpu_time: bool = False) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (so machine load hits all alike).

    ``cpu_time``: this process's CPU time instead of wall time (on a CPU device only: a
    single-threaded run then barely feels other jobs on the machine).
    """
    clock = time.process_time if cpu_time and device.type == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeat):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(clock() - start)
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
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a CPU the update times are this process's CPU time)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        student = farslip.create_model(name, pretrained="none", device=device)
        teacher = Teacher("ema", student, ema_plan(name))
        whole = copy.deepcopy(student).eval().requires_grad_(False)
        tower_loop = copy.deepcopy(student.visual).eval().requires_grad_(False)
        ms = _interleaved_median_s({
            "loop_whole_ms": lambda: _loop_update(whole, student, 0.99),
            "loop_tower_ms": lambda: _loop_update(tower_loop, student.visual, 0.99),
            "foreach_tower_ms": lambda: teacher.update(student)}, args.repeat, device, cpu_time=True)
        row = {"model": name, "device": str(device),
               "whole_mib": _bytes(whole) / 2**20, "tower_mib": _bytes(teacher.module) / 2**20,
               **{k: 1e3 * v for k, v in ms.items()}}
        if not args.no_rss and device.type == "cpu":
            for variant in ("none", "whole", "tower"):
                out = subprocess.run([sys.executable, "-c", _RSS_CHILD, name, variant, str(ROOT)], check=True,
                                     capture_output=True, text=True).stdout
                now, peak = out.strip().splitlines()[-1].split()
                row[f"rss_{variant}_mib"], row[f"peak_rss_{variant}_mib"] = float(now), float(peak)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    rss = all("rss_none_mib" in r for r in rows)
    print(f"device {device}, torch threads {torch.get_num_threads()}, EMA update: "
          f"{'CPU' if device.type == 'cpu' else 'wall'} time, median of {args.repeat}\n")
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
        atomic_write(args.json, json.dumps(rows, indent=1))
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
        trainer, cpu = _bench_trainer(name, CONFIGS[args.config], args, device)
        batch = device_batch(trainer, cpu)
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


def optimizer_main(argv: list[str] | None = None) -> int:
    """`bench.py train optimizer`: one AdamW step over a CLIP's parameters, the multi-tensor
    (foreach) update the trainer asks for against the per-parameter loop."""
    from farslip.train.main import param_groups

    parser = argparse.ArgumentParser(prog="bench.py train optimizer", description=optimizer_main.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-Tiny-8,ViT-B-32,ViT-B-16")
    parser.add_argument("--repeat", type=int, default=10, help="timed steps per variant (median, round-robin)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a CPU the times are this process's CPU time)")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = "CPU" if device.type == "cpu" else "wall"
    print(f"device {device}, torch threads {torch.get_num_threads()}, {clock} time, median of {args.repeat}\n")
    print("| model | parameters (M) | AdamW step ms: per-parameter loop | foreach | loop / foreach |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        models = {k: farslip.create_model(name, pretrained="none", device=device) for k in ("loop", "foreach")}
        fns = {}
        for key, model in models.items():
            for p in model.parameters():
                p.grad = torch.randn_like(p) * 1e-3
            opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-5, foreach=key == "foreach")
            fns[key] = opt.step
        ms = {k: 1e3 * v for k, v in _interleaved_median_s(fns, args.repeat, device, cpu_time=True).items()}
        count = sum(p.numel() for p in models["loop"].parameters()) / 1e6
        print(f"| {name} | {count:.1f} | {ms['loop']:.1f} | {ms['foreach']:.1f} | {ms['loop'] / ms['foreach']:.2f} |",
              flush=True)
    return 0


def resume_main(argv: list[str]) -> int:
    from benchmarks.train_resume import main as run

    return run(argv)


SUBCOMMANDS = {"teacher": teacher_main, "syncs": syncs_main, "guard": guard_main,
               "optimizer": optimizer_main, "resume": resume_main}


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
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice; 1 for per-core numbers)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = []
    for model_name in args.models.split(","):
        for label in args.configs.split(","):
            rows.append(bench_one(model_name, label, CONFIGS[label], args, device))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    add_ratios(rows)
    print(f"device {device}, precision {args.precision}, batch {args.batch_size} x {args.boxes} views, "
          f"torch threads {torch.get_num_threads()}")
    print(table(rows))
    if args.json:
        atomic_write(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

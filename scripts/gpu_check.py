#!/usr/bin/env python
"""The prepared accelerator check (run it through ``scripts/gpu_check.sh``).

Parts, each a subprocess with its own time limit, results written after each one to
``OUT/results.json`` and ``OUT/results.md`` (so a part that runs out of time leaves the others):

  env       torch / CUDA / device facts
  world     the synthetic world (every real data format) written once, with all cores
  tests     the CUDA subset of the tests (``pytest -m cuda tests/test_cuda.py``)
  steps     farslip1 and farslip2 steps of ViT-B-16 in fp32, amp (fp16 + GradScaler) and
            amp_bf16: first-step losses, their differences to fp32 (and to the CPU's fp32),
            and the host syncs one step makes (``torch.cuda.set_sync_debug_mode``)
  single    the trainer in one plain process on the device (no torch.distributed, no NCCL)
  torchrun  a one-process ``torchrun`` of the trainer with NCCL on the synthetic MGRS data
  train     ViT-B-16 training throughput (``scripts/bench.py train``, amp_bf16) for vanilla /
            farslip1 active / farslip1 EMA / farslip2 at the recipe's batch and a larger one,
            with MFU against the H200's dense bf16 peak
  data      loader samples/s with 0 workers (one core) and with all cores
  eval      evaluation images/s (``scripts/bench.py eval``)
  estimate  loader cores one GPU needs at the measured step rate

``--dry-run`` runs every part on the CPU at tiny size (ViT-Tiny-8, tiny world, a step or two)
and writes the same files: that is what the test suite checks where no GPU is lent. Nothing
is downloaded: models have random weights, data is synthetic.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # the checkout's library and its benchmarks/

PARTS = ("env", "world", "tests", "steps", "single", "torchrun", "train", "data", "eval", "estimate")
H200_BF16_DENSE_TFLOPS = 989.4  # NVIDIA H100/H200 SXM tensor-core bf16, dense (1979 with 2:4 sparsity)
TRAIN_CONFIGS = "vanilla,farslip1/active,farslip1/ema,farslip2/active"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                   help="every part on the CPU at tiny size (no GPU needed)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="results folder")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="the whole check's time limit in seconds: each part's process gets what is left "
                        "(the check must fit 8 minutes with the machine's start)")
    p.add_argument("--step-worker", default=None, help=argparse.SUPPRESS)  # internal: the steps part
    return p.parse_args(argv)


class Check:
    """Runs the parts and keeps the results file current."""

    def __init__(self, opts):
        self.opts = opts
        self.dry = opts.dry_run
        self.out = Path(opts.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()
        self.results = {"dry_run": self.dry, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "python": sys.executable, "parts": {}}
        self.device = "cpu" if self.dry else "cuda"
        self.cores = os.cpu_count() or 1
        self.world = self.out / "world"

    # ------------------------------------------------------------------ plumbing
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save(self) -> None:
        from farslip.atomic import atomic_write

        self.results["elapsed_s"] = round(self.elapsed(), 1)
        atomic_write(self.out / "results.json", json.dumps(self.results, indent=1, default=str) + "\n")
        atomic_write(self.out / "results.md", markdown(self.results))

    def run(self, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        """A subprocess in the repository root; its status, time and output tail.

        Its time limit is ``timeout`` or what is left of ``--budget-s``, whichever is less, so
        the whole check ends within the budget (plus the start-up of the last part's process).
        """
        left = self.opts.budget_s - self.elapsed()
        limit = max(1.0, min(timeout, left))
        started = time.perf_counter()
        full_env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PYTHONUNBUFFERED": "1", **(env or {})}
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=limit)
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as err:
            out = err.stdout or ""
            rc, out = f"timeout after {limit:.0f} s", out.decode(errors="replace") if isinstance(out, bytes) else out
        return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - started, 1),
                "tail": out[-3000:]}

    def part(self, name: str, fn) -> None:
        if self.elapsed() > self.opts.budget_s:
            self.results["parts"][name] = {"status": "not run: the time budget was spent"}
        else:
            started = time.perf_counter()
            try:
                result = fn()
                result.setdefault("status", "ok")
            except Exception as err:  # one broken part must not lose the others' results
                result = {"status": f"error: {type(err).__name__}: {err}"}
            result["part_seconds"] = round(time.perf_counter() - started, 1)
            self.results["parts"][name] = result
        self.save()
        print(f"[gpu_check] {name}: {self.results['parts'][name]['status']} "
              f"({self.elapsed():.0f} s so far)", flush=True)

    def json_of(self, path: Path):
        return json.loads(path.read_text()) if path.exists() else None

    @staticmethod
    def status(run: dict) -> str:
        return "ok" if run["rc"] == 0 else f"failed (rc {run['rc']})"

    # ------------------------------------------------------------------ parts
    def env(self) -> dict:
        import torch

        info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                "cuda": torch.version.cuda, "cpu_count": self.cores, "platform": platform.platform()}
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                        capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            info["nvidia_smi"] = f"not available ({type(err).__name__})"
        if not self.dry and not info["cuda_available"]:
            info["status"] = "error: no CUDA device (use --dry-run on a machine without one)"
        return info

    def write_world(self) -> dict:
        scale = "tiny" if self.dry else "small"
        workers = 1 if self.dry else min(self.cores, 16)
        run = self.run([sys.executable, "-m", "farslip", "synth", "--out", str(self.world), "--scale", scale,
                        "--workers", str(workers), "--overwrite", "--no-progress"], timeout=240)
        return {"status": self.status(run), "scale": scale, "run": run}

    def tests(self) -> dict:
        run = self.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py",
                        "-p", "no:cacheprovider"], timeout=240, env={"FARSLIP_TEST_DEVICE": self.device})
        counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|error|errors)", run["tail"]))
        return {"status": self.status(run), "device": self.device, "counts": counts, "run": run}

    def steps(self) -> dict:
        path = self.out / "steps.json"
        run = self.run([sys.executable, str(Path(__file__)), "--step-worker", str(path),
                        *(["--dry-run"] if self.dry else [])], timeout=240)
        return {"status": self.status(run), "rows": self.json_of(path), "run": run}

    def _trainer_run(self, name: str, launcher: list[str], backend: str | None) -> dict:
        """``farslip.train`` on the synthetic MGRS data (farslip2, one epoch and its checkpoint),
        started by ``launcher``; its logged rates."""
        device = "cpu" if self.dry else "cuda"
        model = "ViT-Tiny-8" if self.dry else "ViT-B-16"
        logs = self.out / "runs"
        cmd = [*launcher, "-m", "farslip.train", "--train-data", str(self.world / "mgrs" / "text_info.json"),
               "--root-train-img-dir", str(self.world / "mgrs" / "global_imgs"), "--method", "farslip2",
               "--model", model, "--pretrained", "none", "--device", device,
               "--precision", "fp32" if self.dry else "amp_bf16", "--batch-size", "4",
               "--workers", "1" if self.dry else "4", "--epochs", "1", "--log-every-n-steps", "1",
               "--logs-root", str(logs), "--name", f"{name}-{int(time.time())}",
               *(["--dist-backend", backend] if backend else [])]
        run = self.run(cmd, timeout=240)
        rates = [float(x) for x in re.findall(r"samples_per_s ([0-9.]+)", run["tail"])]
        ckpt = list(logs.glob(f"{name}-*/checkpoints/epoch_1.pt"))
        status = self.status(run)
        if status == "ok" and not ckpt:
            status = "failed: no checkpoint written"
        return {"status": status, "backend": backend or "none",
                "steps_logged": len(rates), "samples_per_s_last": rates[-1] if rates else None, "run": run}

    def single(self) -> dict:
        """One process on one device, no torch.distributed at all (what a one-GPU user runs)."""
        return self._trainer_run("single", [sys.executable], None)

    def torchrun(self) -> dict:
        """A one-process ``torchrun`` (the process group is initialised: NCCL on CUDA, gloo on CPU)."""
        return self._trainer_run("torchrun", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=1"], "gloo" if self.dry else "nccl")

    def train(self) -> dict:
        if self.dry:
            plans = [("ViT-Tiny-8", 2, "fp32", 1)]
        else:
            plans = [("ViT-B-16", 10, "amp_bf16", 10), ("ViT-B-16", 32, "amp_bf16", 6)]
        rows, runs = [], []
        for model, batch, precision, steps in plans:
            path = self.out / f"train_{model}_b{batch}.json"
            run = self.run([sys.executable, "scripts/bench.py", "train", "--models", model, "--configs",
                            TRAIN_CONFIGS, "--batch-size", str(batch), "--precision", precision,
                            "--device", self.device, "--steps", str(steps), "--json", str(path)], timeout=200)
            runs.append(run)
            for r in self.json_of(path) or []:
                r["mfu_vs_bf16_peak"] = r["gflops_done"] * 1e9 / r["step_s"] / (H200_BF16_DENSE_TFLOPS * 1e12)
                rows.append(r)
        ok = all(r["rc"] == 0 for r in runs)
        return {"status": "ok" if ok else "failed", "peak_tflops": H200_BF16_DENSE_TFLOPS, "rows": rows,
                "runs": runs}

    def data(self) -> dict:
        workers = ["0", "1"] if self.dry else ["0", str(self.cores // 2), str(self.cores)]
        path = self.out / "data.json"
        run = self.run([sys.executable, "scripts/bench.py", "data", "--world", str(self.world), "--workers",
                        *workers, "--batches", "2" if self.dry else "20", "--batch-size", "2" if self.dry else "10",
                        "--out", str(path)], timeout=240)
        found = self.json_of(path)
        return {"status": self.status(run), "rows": found["results"] if found else None, "run": run}

    def eval(self) -> dict:
        path = self.out / "eval.json"
        model, precision = ("ViT-Tiny-8", "fp32") if self.dry else ("ViT-B-16", "amp_bf16")
        run = self.run([sys.executable, "scripts/bench.py", "eval", "--models", model, "--device", self.device,
                        "--precision", precision, "--world", str(self.world), "--workers",
                        "0" if self.dry else "8", "--json", str(path)], timeout=240)
        return {"status": self.status(run), "rows": self.json_of(path), "run": run}

    def estimate(self) -> dict:
        """Loader cores per GPU = the step's samples/s / one core's loader samples/s."""
        parts = self.results["parts"]
        train = parts.get("train", {}).get("rows") or []
        data = parts.get("data", {}).get("rows") or []
        per_core = {r["pipeline"]: r["samples_per_s"] for r in data if r["workers"] == 0}
        pipeline = {"farslip1": "rs5m-multicrop", "farslip2": "mgrs-objects", "vanilla": "rs5m-multicrop"}
        rows = []
        for r in train:
            p = pipeline[r["config"].split("/")[0]]
            if p in per_core:
                rows.append({"config": r["config"], "batch_size": r["batch_size"], "gpu_samples_per_s":
                             r["samples_per_s"], "pipeline": p, "per_core_samples_per_s": per_core[p],
                             "cores_needed": r["samples_per_s"] / per_core[p]})
        return {"status": "ok" if rows else "no data (train or data part missing)", "rows": rows}


# ---------------------------------------------------------------------- the steps part (own process)
STEP_METHODS = {
    "vanilla": ["--method", "vanilla", "--train-data", "x.tar", "--train-num-samples", "8"],
    "farslip1": ["--method", "farslip1", "--use-imagecrop-aug", "--train-data", "x.tar",
                 "--train-num-samples", "8"],
    "farslip2": ["--method", "farslip2", "--train-data", "x.json", "--root-train-img-dir", "."],
}


def step_worker(path: str, dry: bool) -> int:
    """First-step losses of each method in fp32 on the CPU and fp32 / amp / amp_bf16 on the
    device (same weights, same batch), and what one later step reads on the host: the
    :class:`~farslip.train.syncs.HostReads` count on every device, and on CUDA the syncs that
    ``torch.cuda.set_sync_debug_mode`` reports."""
    import torch

    from farslip.train.args import parse_args as train_args
    from benchmarks.train import full_batch
    from farslip.train.syncs import step_cuda_syncs, step_host_reads as host_reads
    from farslip.train.main import Trainer, to_device

    device = torch.device("cpu" if dry else "cuda")
    model = "ViT-Tiny-8" if dry else "ViT-B-16"
    batch_size = 2 if dry else 8
    if not dry:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the differences
        torch.backends.cudnn.allow_tf32 = False
    runs = [("fp32", torch.device("cpu")), ("fp32", device), ("amp", device), ("amp_bf16", device)]
    rows = []
    for method, flags in STEP_METHODS.items():
        first = {}
        for precision, dev in runs:
            key = f"{precision}@{dev.type}"
            if key in first:  # the dry run: cpu fp32 twice
                continue
            cfg = train_args([*flags, "--model", model, "--pretrained", "none", "--precision", precision,
                              "--device", dev.type, "--batch-size", str(batch_size), "--lr", "1e-5"])
            torch.manual_seed(0)
            trainer = Trainer(cfg, Path("."))
            torch.manual_seed(1)
            cpu_batch = full_batch(trainer.model, batch_size, 4, crops=cfg.data.crops, objects=cfg.data.objects)
            if dev.type == "cuda":
                cpu_batch = {k: v.pin_memory() for k, v in cpu_batch.items()}
            terms = trainer.train_step(to_device(trainer.prepare(cpu_batch), dev))
            first[key] = {k: float(v) for k, v in terms.items()}
            reads = host_reads(trainer, to_device(trainer.prepare(cpu_batch), dev))
            syncs = None
            if dev.type == "cuda":
                syncs = step_cuda_syncs(trainer, to_device(trainer.prepare(cpu_batch), dev))
            ref = first.get(f"fp32@{device.type}", first["fp32@cpu"])
            rows.append({"method": method, "model": model, "batch_size": batch_size, "precision": precision,
                         "device": dev.type, "losses": first[key],
                         "abs_diff_vs_fp32_same_device": {k: abs(v - ref[k]) for k, v in first[key].items()},
                         "abs_diff_vs_fp32_cpu": {k: abs(v - first["fp32@cpu"][k]) for k, v in first[key].items()},
                         "host_reads_per_step": reads.total, "host_reads_by_op": dict(reads.counts),
                         "cuda_syncs_per_step": None if syncs is None else len(syncs),
                         "cuda_syncs": syncs})
            del trainer
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    Path(path).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


# ---------------------------------------------------------------------- report
def markdown(results: dict) -> str:
    lines = [f"# gpu_check results ({'dry run, CPU' if results['dry_run'] else 'CUDA'})", "",
             f"started {results['started']}, {results.get('elapsed_s', 0)} s, python {results['python']}", "",
             "| part | status | seconds |", "|---|---|---|"]
    for name, part in results["parts"].items():
        lines.append(f"| {name} | {part.get('status')} | {part.get('part_seconds', '-')} |")
    parts = results["parts"]
    env = parts.get("env", {})
    if env:
        lines += ["", f"torch {env.get('torch')}, CUDA {env.get('cuda')}, device {env.get('device', '-')}, "
                      f"{env.get('cpu_count')} CPUs; nvidia-smi: {env.get('nvidia_smi')}"]
    tests = parts.get("tests", {})
    if tests.get("counts") is not None:
        lines += ["", f"CUDA subset of the tests on {tests.get('device')}: {tests['counts']}"]
    if parts.get("steps", {}).get("rows"):
        lines += ["", "| method | precision | device | loss | global_itc | distill | local_itc "
                      "| |loss - fp32| | |loss - CPU fp32| | host reads / step | CUDA syncs / step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in parts["steps"]["rows"]:
            ls = r["losses"]
            lines.append(f"| {r['method']} | {r['precision']} | {r['device']} | {ls['loss']:.6f} "
                         f"| {ls.get('global_itc', float('nan')):.6f} | {ls.get('distill', float('nan')):.6f} "
                         f"| {ls.get('local_itc', float('nan')):.6f} "
                         f"| {r['abs_diff_vs_fp32_same_device']['loss']:.2e} "
                         f"| {r['abs_diff_vs_fp32_cpu']['loss']:.2e} | {r['host_reads_per_step']} "
                         f"| {'-' if r['cuda_syncs_per_step'] is None else r['cuda_syncs_per_step']} |")
    for key, what in (("single", "one plain process (no process group)"), ("torchrun", "torchrun, 1 process")):
        tr = parts.get(key, {})
        if tr.get("backend"):
            lines += ["", f"{what}, backend {tr.get('backend')}: {tr.get('status')}, "
                          f"{tr.get('steps_logged')} steps logged, last {tr.get('samples_per_s_last')} samples/s"]
    if parts.get("train", {}).get("rows"):
        lines += ["", f"| model | config | batch | precision | samples/s | step ms | GFLOP/step | MFU vs "
                      f"{H200_BF16_DENSE_TFLOPS:.0f} TFLOP/s | data/teacher/fwd/bwd/opt | host reads |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in parts["train"]["rows"]:
            split = "/".join(f"{100 * r[f'{p}_frac']:.0f}" for p in ("data", "teacher", "forward", "backward",
                                                                       "optimizer"))
            lines.append(f"| {r['model']} | {r['config']} | {r['batch_size']} | {r['precision']} "
                         f"| {r['samples_per_s']:.1f} | {1e3 * r['step_s']:.1f} | {r['gflops_done']:.1f} "
                         f"| {100 * r['mfu_vs_bf16_peak']:.1f} % | {split} % | {r['host_reads_per_step']} |")
    if parts.get("data", {}).get("rows"):
        lines += ["", "| pipeline | workers | samples/s | per worker |", "|---|---|---|---|"]
        for r in parts["data"]["rows"]:
            lines.append(f"| {r['pipeline']} | {r['workers']} | {r['samples_per_s']:.1f} "
                         f"| {r['samples_per_s_per_worker']:.1f} |")
    if parts.get("eval", {}).get("rows"):
        lines += ["", "| model | task | images/s | text side s |", "|---|---|---|---|"]
        for r in parts["eval"]["rows"]:
            lines.append(f"| {r['model']} | {r['task']} | {r['images_per_s']:.1f} | {r['text_seconds']:.2f} |")
    if parts.get("estimate", {}).get("rows"):
        lines += ["", "| config | batch | GPU samples/s | loader | per core | cores needed |", "|---|---|---|---|---|---|"]
        for r in parts["estimate"]["rows"]:
            lines.append(f"| {r['config']} | {r['batch_size']} | {r['gpu_samples_per_s']:.1f} | {r['pipeline']} "
                         f"| {r['per_core_samples_per_s']:.1f} | {r['cores_needed']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.step_worker:
        return step_worker(opts.step_worker, opts.dry_run)
    wanted = opts.parts.split(",")
    unknown = set(wanted) - set(PARTS)
    if unknown:
        print(f"gpu_check: unknown parts {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    check = Check(opts)
    steps = {"env": check.env, "world": check.write_world, "tests": check.tests, "steps": check.steps,
             "single": check.single, "torchrun": check.torchrun, "train": check.train, "data": check.data, "eval": check.eval,
             "estimate": check.estimate}
    for name in PARTS:
        if name in wanted:
            check.part(name, steps[name])
    failed = [n for n, p in check.results["parts"].items() if p.get("status") != "ok"]
    print(f"[gpu_check] results in {check.out / 'results.json'} and results.md"
          + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

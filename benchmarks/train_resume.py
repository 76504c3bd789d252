"""`python scripts/bench.py train resume`: what step checkpoints and a mid-epoch resume cost.

Two measurements (docs/TRAINING.md, "Running a multi-day job"):

* ``checkpoint``: for each model, a :class:`~farslip.train.main.Trainer` with the recipe's
  settings (farslip1, active teacher unless ``--distill-type`` says otherwise, random init) whose
  AdamW state exists (one optimizer step on zero gradients), written the way the trainer writes a
  step checkpoint (``checkpoint.save_step``: model, optimizer, scaler, teacher, RNG states,
  guard counters, model record and flags, data position; temporary file, fsync, rename): seconds to write, file size, seconds to load it back
  with ``weights_only=True`` (what a resume reads). Median of ``--repeats`` writes.
* ``skip``: RS5M-format shards with realistic JPEGs (``--jpeg-px`` squared, noisy, about
  100-200 KB each; written to a temporary folder) read by one worker of the training stream
  (``--workers 0``, one torch thread). For each k, the stream is resumed after k raw samples and
  timed to its first batch; ``k = 0`` is a fresh start (shuffle-buffer fill included), so
  ``skip_s = t(k) - t(0)`` is the cost of passing over k samples undecoded. For comparison,
  ``decode_s`` is what producing k samples (decode + views + collate, timed on the batches after
  the first) would cost.

The numbers depend on the disk and the page cache: the shards are read right after being
written, so they come from memory; a cold read adds k x sample size / disk bandwidth.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from farslip.atomic import atomic_write


def trainer_for(model: str, distill_type: str, folder: Path):
    from farslip.train.args import parse_args
    from farslip.train.main import Trainer

    argv = ["--train-data", "bench.tar", "--train-num-samples", "10", "--model", model,
            "--pretrained", "none", "--precision", "fp32", "--device", "cpu", "--use-imagecrop-aug",
            "--distill-type", distill_type, "--save-every-n-steps", "1000"]
    cfg = parse_args(argv).replace("run", name="bench")
    trainer = Trainer(cfg, folder)
    for p in trainer.model.parameters():  # AdamW allocates its state at the first step
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return trainer


def bench_checkpoint(model: str, distill_type: str, repeats: int, folder: Path) -> dict:
    from farslip.train import checkpoint

    trainer = trainer_for(model, distill_type, folder)
    position = {"epoch": 0, "batches": 1000, "kind": "stream", "world_size": 1, "batch_size": 10,
                "num_batches": 507019, "seed": 0, "workers": 4, "streams": [[[2500, 250]] * 4]}
    payload = trainer._payload(0, [trainer._rank_state()], position)
    writes, loads, size = [], [], 0
    for r in range(repeats):
        trainer.step = 1000 * (r + 1)
        payload["step"] = trainer.step
        start = time.perf_counter()
        path = checkpoint.save_step(folder, payload, keep=1)
        writes.append(time.perf_counter() - start)
        size = path.stat().st_size
        start = time.perf_counter()
        checkpoint.load(path)
        loads.append(time.perf_counter() - start)
    params = sum(p.numel() for p in trainer.model.parameters())
    teacher = sum(v.numel() for v in (trainer.teacher.state_dict() or {}).values())
    for _, path in checkpoint.step_files(folder):
        path.unlink()
    return {"part": "checkpoint", "model": model, "teacher": distill_type,
            "params_m": params / 1e6, "teacher_m": teacher / 1e6, "size_mb": size / 1e6,
            "write_s": statistics.median(writes), "load_s": statistics.median(loads),
            "repeats": repeats}


def noisy_jpeg(seed: int, px: int, quality: int = 90) -> bytes:
    """A smooth random scene plus pixel noise: JPEG sizes like real aerial photos (~100-200 KB)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(px // 32, px // 32, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((px, px), Image.BICUBIC), dtype=np.int16)
    image = np.clip(image + rng.normal(0, 18, size=image.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_shards(folder: Path, shards: int, per_shard: int, px: int) -> tuple[str, float]:
    """RS5M-format shards; returns (the --train-data spec, mean JPEG size in KB)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [noisy_jpeg(i, px) for i in range(16)]  # cycled: sizes and decode cost are realistic
    for s in range(shards):
        with tarfile.open(folder / f"bench-train-{s:04d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"s{s}_{i:06d}"
                for ext, data in (("img_content", images[(s * per_shard + i) % len(images)]),
                                  ("caption", f"an aerial photo number {i} of shard {s}".encode()),
                                  ("img_name", f"{key}.jpg".encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    spec = str(folder / ("bench-train-{0000..%04d}.tar" % (shards - 1)))
    return spec, sum(map(len, images)) / len(images) / 1e3


def stream_times(spec: str, skip: int, batch_size: int, after: int) -> tuple[float, float]:
    """(seconds from creating the stream to its first batch, resumed after ``skip`` raw samples;
    seconds per sample of the ``after`` batches that follow, i.e. decode + views + collate)."""
    import farslip
    from farslip.data.train_data import get_train_data

    from farslip.train.args import parse_args

    tokenizer = farslip.get_tokenizer("ViT-B-16")
    data = parse_args(["--train-data", spec, "--train-num-samples", str(skip + (after + 2) * batch_size),
                       "--batch-size", str(batch_size), "--workers", "0", "--method", "farslip1",
                       "--use-imagecrop-aug", "--pretrained", "none", "--model", "ViT-B-16"]).data
    start = time.perf_counter()
    info = get_train_data(data, tokenizer, 224)
    if skip:
        info.resume_at(0, skip // batch_size, [(skip, skip // batch_size)])
    batches = iter(info.dataloader)
    next(batches)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(after):
        next(batches)
    return first, (time.perf_counter() - start) / (after * batch_size)


def bench_skip(ks: list[int], shards: int, per_shard: int, px: int, batch_size: int,
               repeats: int, folder: Path) -> list[dict]:
    spec, kb = write_shards(folder, shards, per_shard, px)
    stream_times(spec, 0, batch_size, 1)  # warm-up: imports, tokenizer, page cache
    runs = {k: [stream_times(spec, k, batch_size, 3) for _ in range(repeats)] for k in [0, *ks]}
    fresh = statistics.median(t for t, _ in runs[0])
    decode = statistics.median(d for k in runs for _, d in runs[k])
    rows = []
    for k in ks:
        t = statistics.median(t for t, _ in runs[k])
        rows.append({"part": "skip", "k": k, "jpeg_kb": kb, "shard_samples": per_shard,
                     "first_batch_s": t, "fresh_first_batch_s": fresh, "skip_s": t - fresh,
                     "skip_ms_per_sample": 1e3 * (t - fresh) / k, "decode_ms_per_sample": 1e3 * decode,
                     "decode_s": decode * k})
    return rows


def table(rows: list[dict]) -> str:
    out = []
    ck = [r for r in rows if r["part"] == "checkpoint"]
    if ck:
        out += ["| model | teacher | params (M) | teacher params (M) | file MB | write s | load s |",
                "|---|---|---:|---:|---:|---:|---:|"]
        out += [f"| {r['model']} | {r['teacher']} | {r['params_m']:.1f} | {r['teacher_m']:.1f} "
                f"| {r['size_mb']:.0f} | {r['write_s']:.2f} | {r['load_s']:.2f} |" for r in ck]
    sk = [r for r in rows if r["part"] == "skip"]
    if sk:
        out += ["", f"JPEGs of {sk[0]['jpeg_kb']:.0f} KB on average, {sk[0]['shard_samples']} "
                f"samples per shard; a fresh stream's first batch: {sk[0]['fresh_first_batch_s']:.2f} s",
                "", "| k samples passed over | first batch s | skip s | skip ms/sample | decode ms/sample | decoding them instead s |",
                "|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['k']} | {r['first_batch_s']:.2f} | {r['skip_s']:.2f} "
                f"| {r['skip_ms_per_sample']:.2f} | {r['decode_ms_per_sample']:.1f} | {r['decode_s']:.1f} |"
                for r in sk]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.py train resume", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["checkpoint", "skip"], choices=("checkpoint", "skip"))
    p.add_argument("--models", default="ViT-B-32,ViT-B-16")
    p.add_argument("--distill-type", default="active", choices=("active", "ema", "frozen"),
                   help="teacher of the checkpointed trainer (active: the recipe, no teacher state)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, nargs="+", default=[100, 1000], help="samples passed over")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--shard-samples", type=int, default=4000,
                   help="enough for k plus the shuffle buffer (500 before the first sample, 2000 in all)")
    p.add_argument("--jpeg-px", type=int, default=448, help="side of the JPEGs in the shards")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    p.add_argument("--json", default="bench_out/resume.json", help="results file")
    opts = p.parse_args(argv)
    if max(opts.k) + 3000 > opts.shards * opts.shard_samples:
        p.error("--shards x --shard-samples must exceed every --k by 3000 (the shuffle buffer and "
                "the timed batches stay within one pass)")
    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(1)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=opts.dir, prefix="farslip-bench-resume-") as tmp:
        if "checkpoint" in opts.parts:
            for model in opts.models.split(","):
                rows.append(bench_checkpoint(model, opts.distill_type, opts.repeats, Path(tmp)))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if "skip" in opts.parts:
            rows += bench_skip(opts.k, opts.shards, opts.shard_samples, opts.jpeg_px,
                               opts.batch_size, opts.repeats, Path(tmp) / "shards")
    print(table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(opts.json)), exist_ok=True)
    atomic_write(opts.json, json.dumps({"cpu_count": os.cpu_count(), "results": rows}, indent=1))
    print(f"\nwritten {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

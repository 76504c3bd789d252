"""Data pipeline throughput: ``python scripts/bench.py data [options]``.

Times the training loaders alone (no model) on the synthetic world: RS5M webdataset with N
random crops per image (stage 1) and MGRS json with object views plus N random crops under
the stage-2 jitter (stage 2), for each worker count. Reports samples/s overall and per worker
(time to the first batch, i.e. worker start-up and shuffle-buffer fill, is reported apart and
excluded from the rate). The benchmark process uses one torch thread, as each DataLoader worker
does, so ``workers=0`` measures one core and per-worker rates compare. Prints a Markdown table
and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Optional

from tqdm import tqdm

PIPELINES = ("rs5m-multicrop", "mgrs-objects")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench.py data", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--world", default=None,
                   help="folder holding a synthetic world (farslip synth); default: write one to a temp dir")
    p.add_argument("--scale", default="small", choices=("small", "medium"), help="size of a freshly written world")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="dataloader worker counts to time")
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    p.add_argument("--image-size", type=int, default=224, help="model input size (ViT-B: 224)")
    p.add_argument("--batch-size", type=int, default=10, help="per-rank batch (the recipe's 10)")
    p.add_argument("--max-boxes", type=int, default=4, help="local views per image (N)")
    p.add_argument("--batches", type=int, default=8, help="timed batches per configuration (after the first)")
    p.add_argument("--out", default="bench_out/data.json", help="JSON results file")
    return p.parse_args(argv)


def world_paths(folder: Optional[str], scale: str) -> dict:
    """Paths of an existing world in ``folder``, or of a fresh one written to a temp dir."""
    from farslip.synth import write_world

    if folder is None:
        return write_world(tempfile.mkdtemp(prefix="farslip-bench-"), scale=scale)
    root = os.path.abspath(folder)
    shards = sorted(n for n in os.listdir(os.path.join(root, "rs5m")) if "-train-" in n)
    return {
        "rs5m_train": "::".join(os.path.join(root, "rs5m", n) for n in shards),
        "mgrs_json": os.path.join(root, "mgrs", "text_info.json"),
        "mgrs_images": os.path.join(root, "mgrs", "global_imgs"),
    }


def loader_args(pipeline: str, world: dict, opts: argparse.Namespace, workers: int) -> tuple[argparse.Namespace, dict]:
    """The trainer-style args and get_train_data keywords of one pipeline."""
    common = dict(
        train_dataset_name="bench", root_train_img_dir=None, val_data=None, root_val_img_dir=None,
        local_method="randomcrops", max_boxes=opts.max_boxes, min_size=64, max_size=1024,
        batch_size=opts.batch_size, workers=workers, seed=0, dataset_resampled=False, world_size=1, rank=0,
    )
    if pipeline == "rs5m-multicrop":
        args = dict(common, train_data=world["rs5m_train"], train_dataset_type="webdataset", method="farslip1",
                    train_num_samples=(opts.batches + 1) * opts.batch_size)
        return argparse.Namespace(**args), dict(crops=True, objects=False)
    args = dict(common, train_data=world["mgrs_json"], root_train_img_dir=world["mgrs_images"],
                train_dataset_type="json", method="farslip2", train_num_samples=None)
    return argparse.Namespace(**args), dict(crops=True, objects=True)


def time_loader(info, batches: int) -> dict:
    """Iterate ``batches`` + 1 batches (epochs repeat as needed); the first one is timed apart."""
    start = time.perf_counter()
    first = None
    samples = views = done = epoch = 0
    while done <= batches:
        info.set_epoch(epoch)
        for batch in info.dataloader:
            if first is None:
                first = time.perf_counter() - start
                start = time.perf_counter()
            else:
                samples += batch["image"].shape[0]
                views += sum(batch[k].shape[0] for k in ("crop", "obj") if k in batch)
            done += 1
            if done > batches:
                break
        epoch += 1
    elapsed = time.perf_counter() - start
    return {"first_batch_s": first, "samples": samples, "local_views": views, "seconds": elapsed,
            "samples_per_s": samples / elapsed}


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    import torch

    import farslip
    from farslip.atomic import atomic_write
    from farslip.data.train_data import get_train_data

    world = world_paths(opts.world, opts.scale)
    tokenizer = farslip.get_tokenizer("ViT-B-32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    try:
        for pipeline, workers in tqdm([(p, w) for p in opts.pipelines for w in opts.workers], desc="data bench"):
            args, views = loader_args(pipeline, world, opts, workers)
            info = get_train_data(args, tokenizer, opts.image_size, **views)
            row = {"pipeline": pipeline, "workers": workers, "image_size": opts.image_size,
                   "batch_size": opts.batch_size, "max_boxes": opts.max_boxes, **time_loader(info, opts.batches)}
            row["samples_per_s_per_worker"] = row["samples_per_s"] / max(workers, 1)
            results.append(row)
            del info  # stops persistent workers before the next configuration starts its own
    finally:
        torch.set_num_threads(threads)
    atomic_write(opts.out, json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))
    print("| pipeline | workers | samples/s | samples/s per worker | local views/s | first batch (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['pipeline']} | {r['workers']} | {r['samples_per_s']:.1f} | {r['samples_per_s_per_worker']:.1f} "
              f"| {r['local_views'] / r['seconds']:.1f} | {r['first_batch_s']:.2f} |")
    print(f"\nwritten {opts.out}")
    return 0

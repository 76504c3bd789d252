"""Data pipeline throughput: ``python scripts/bench.py data [options]``.

Times the training loaders alone (no model) on the synthetic world: RS5M webdataset with N
random crops per image (stage 1) and MGRS json with object views plus N random crops under
the stage-2 jitter (stage 2), for each worker count. Reports samples/s overall and per worker
(time to the first batch, i.e. worker start-up and shuffle-buffer fill, is reported apart and
excluded from the rate). The benchmark process uses one torch thread, as each DataLoader worker
does, so ``workers=0`` measures one core and per-worker rates compare. Each configuration is
timed for every ``--view-resize`` kernel asked for (torch's uint8 bicubic, PIL's), in one run.
MGRS builds the object crops of ``--object-pixels`` (default: the labelled ones, what the
default stage-2 recipe's MPCL region loss reads; ``all`` is what a loss on every object needs).
Prints a Markdown table and writes JSON.

``python scripts/bench.py data kernels`` times the per-view kernels alone, each against what it
replaced, round-robin in one process (CPU time, one thread): the bicubic resize of a random crop
to 224 px (torch's uint8 kernel on the decoded array vs PIL's crop + resize), the hue shift
(table lookup vs torchvision's ``adjust_hue``), the whole stage-2 colour jitter of a torch-resized
view (brightness, contrast, saturation and hue, the view's planes merged into a PIL image for
torchvision's functions vs numpy on the planes, same pixels) and the normalisation a worker no
longer does (``ToTensor`` + ``Normalize`` vs handing over the uint8 view).
"""
from __future__ import annotations

import argparse
import inspect
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
    p.add_argument("--view-resize", nargs="+", default=["torch"], choices=("torch", "pil"),
                   help="resize kernels to time (the trainer's --view-resize)")
    p.add_argument("--object-pixels", default="labelled", choices=("all", "labelled", "none"),
                   help="MGRS object crops to build (the trainer derives it from its losses)")
    p.add_argument("--out", default="bench_out/data.json", help="JSON results file")
    return p.parse_args(argv)


def world_paths(folder: Optional[str], scale: str) -> dict:
    """Paths of an existing world in ``folder``, or of a fresh one written to a temp dir."""
    if folder is None:
        from farslip.synth import write_world

        return write_world(tempfile.mkdtemp(prefix="farslip-bench-"), scale=scale)
    root = os.path.abspath(folder)
    shards = sorted(n for n in os.listdir(os.path.join(root, "rs5m")) if "-train-" in n)
    return {
        "rs5m_train": "::".join(os.path.join(root, "rs5m", n) for n in shards),
        "mgrs_json": os.path.join(root, "mgrs", "text_info.json"),
        "mgrs_images": os.path.join(root, "mgrs", "global_imgs"),
    }


def loader_args(pipeline: str, world: dict, opts: argparse.Namespace, workers: int,
                resize: str = "torch") -> tuple[argparse.Namespace, dict]:
    """The flag-named settings and view keywords of one pipeline (``crops``, ``objects``,
    ``object_pixels``); :func:`build_loader` hands them to the library under test."""
    common = dict(view_resize=resize,
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
    return argparse.Namespace(**args), dict(crops=True, objects=True,
                                            object_pixels=getattr(opts, "object_pixels", "all"))


def build_loader(args: argparse.Namespace, views: dict, tokenizer, image_size: int):
    """``get_train_data`` of the checkout under test: a ``DataConfig`` (this version), or the
    flag namespace and view keywords of earlier ones (with an older checkout's ``src`` on
    PYTHONPATH, this file measures that checkout's pipeline the same way)."""
    from farslip.data.train_data import get_train_data

    try:
        from farslip.config import DataConfig
    except ImportError:  # before typed configs: a namespace plus keywords
        if "object_pixels" not in inspect.signature(get_train_data).parameters:
            views = {k: v for k, v in views.items() if k != "object_pixels"}
        return get_train_data(args, tokenizer, image_size, **views)
    names = set(DataConfig.__dataclass_fields__)
    settings = {k: v for k, v in vars(args).items() if k in names}
    # the stage-2 jitter belongs to stage 2 (farslip2), as the trainer derives it
    data = DataConfig(**settings, color_jitter=args.method == "farslip2", use_imagecrop_aug=True,
                      **{"object_pixels": "all", **views})
    return get_train_data(data, tokenizer, image_size, seed=args.seed, rank=args.rank,
                          world_size=args.world_size)


def time_loader(info, batches: int) -> dict:
    """Iterate ``batches`` + 1 batches (epochs repeat as needed); the first one is timed apart.

    Besides wall time, the CPU time of this process: with ``workers=0`` that is the loader's
    own cost, which other jobs on a shared machine barely change (``samples_per_cpu_s``).
    """
    start = time.perf_counter()
    first = cpu_start = None
    samples = views = done = epoch = 0
    while done <= batches:
        info.set_epoch(epoch)
        for batch in info.dataloader:
            if first is None:
                first = time.perf_counter() - start
                start, cpu_start = time.perf_counter(), time.process_time()
            else:
                samples += batch["image"].shape[0]
                views += sum(batch[k].shape[0] for k in ("crop", "obj") if k in batch)
            done += 1
            if done > batches:
                break
        epoch += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"first_batch_s": first, "samples": samples, "local_views": views, "seconds": elapsed,
            "cpu_seconds": cpu, "samples_per_s": samples / elapsed, "samples_per_cpu_s": samples / cpu}


def kernels_main(argv: list[str]) -> int:
    """`bench.py data kernels`: per-view kernels, new vs old (see the module docstring)."""
    import random
    import statistics

    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.transforms.functional as TF
    from PIL import Image

    from farslip.data.jitter import JitterDraw, adjust_hue, apply_jitter, hue_tables, jitter_planes
    from farslip.data.transforms import squash_transform

    p = argparse.ArgumentParser(prog="scripts/bench.py data kernels", description=kernels_main.__doc__)
    p.add_argument("--world", default=None, help="synthetic world folder (default: write a small one)")
    p.add_argument("--images", type=int, default=8, help="MGRS scenes to take views of")
    p.add_argument("--repeat", type=int, default=20, help="timed rounds (median per kernel)")
    p.add_argument("--image-size", type=int, default=224)
    opts = p.parse_args(argv)
    torch.set_num_threads(1)
    world = world_paths(opts.world, "small")
    folder = world["mgrs_images"]
    names = sorted(os.path.join(d, n) for d, _, files in os.walk(folder) for n in files)[: opts.images]
    images = [Image.open(n).convert("RGB") for n in names]
    arrays = [torch.from_numpy(np.array(im)) for im in images]
    rng = random.Random(0)
    boxes = []
    for im in images:
        w, h = im.size
        x1, y1 = rng.randrange(w // 2), rng.randrange(h // 2)  # a crop of 1/4 .. 1 of each side
        boxes.append((x1, y1, x1 + rng.randrange(w // 4, w - x1 + 1), y1 + rng.randrange(h // 4, h - y1 + 1)))
    s = opts.image_size
    views = [im.crop(b).resize((s, s), Image.BICUBIC) for im, b in zip(images, boxes)]
    finish = squash_transform(s).transforms[-2:]  # ToTensor, Normalize
    hue_tables()  # built once per process (before the loader's workers fork): not timed

    def pil_resize():
        for im, b in zip(images, boxes):
            im.crop(b).resize((s, s), Image.BICUBIC)

    def torch_resize():
        for a, (x1, y1, x2, y2) in zip(arrays, boxes):
            F.interpolate(a[y1:y2, x1:x2].permute(2, 0, 1)[None], size=(s, s), mode="bicubic",
                          antialias=True, align_corners=False)

    def tv_hue():
        for v in views:
            TF.adjust_hue(v, 0.07)

    def table_hue():
        for v in views:
            adjust_hue(v, 0.07)

    planes = [torch.from_numpy(np.array(v)).permute(2, 0, 1).contiguous() for v in views]
    every = JitterDraw((0, 1, 2, 3), (1.2, 0.8, 1.1, 0.07), False)  # all four adjustments

    def pil_jitter():  # what a jittered torch view went through before: planes -> PIL -> planes
        for p in planes:
            image = Image.merge("RGB", [Image.fromarray(c) for c in p.numpy()])
            torch.from_numpy(np.array(apply_jitter(image, every))).permute(2, 0, 1)

    def planes_jitter():
        for p in planes:
            torch.from_numpy(jitter_planes(p.numpy(), every))

    def normalise():
        for v in views:
            finish[1](finish[0](v))

    def uint8():
        for v in views:
            torch.from_numpy(np.array(v)).permute(2, 0, 1)

    kernels = {"resize: PIL crop + resize": pil_resize, "resize: torch uint8": torch_resize,
               "hue: torchvision adjust_hue": tv_hue, "hue: table lookup": table_hue,
               "jitter, all four: PIL (torchvision + table hue)": pil_jitter, "jitter, all four: numpy on the planes":
                   planes_jitter,
               "worker output: ToTensor + Normalize": normalise, "worker output: uint8": uint8}
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for fn in kernels.values():
        fn()
    for _ in range(opts.repeat):
        for key, fn in kernels.items():
            start = time.process_time()
            fn()
            times[key].append(time.process_time() - start)
    ms = {k: 1e3 * statistics.median(v) / len(images) for k, v in times.items()}
    print(f"{len(images)} MGRS scenes ({images[0].size[0]} px), views of {s} px, one thread, CPU time, "
          f"median of {opts.repeat}\n")
    print("| kernel | old (ms / view) | new (ms / view) | old / new |")
    print("|---|---:|---:|---:|")
    keys = list(ms)
    for old, new in zip(keys[::2], keys[1::2]):
        what = old.split(":")[0]
        print(f"| {what}: {old.split(': ')[1]} -> {new.split(': ')[1]} | {ms[old]:.3f} | {ms[new]:.3f} "
              f"| {ms[old] / ms[new]:.2f} |")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "kernels":
        return kernels_main(argv[1:])
    opts = parse_args(argv)
    import torch

    import farslip
    from farslip.atomic import atomic_write
    from farslip.data.train_data import get_train_data

    world = world_paths(opts.world, opts.scale)
    tokenizer = farslip.get_tokenizer("ViT-B-32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # an older loader (before --view-resize and object_pixels) is timed as it is: with an older
    # checkout's src on PYTHONPATH this file measures that checkout's pipeline the same way
    current = ("object_pixels" in inspect.signature(get_train_data).parameters
               or "data" in inspect.signature(get_train_data).parameters)
    resizes = opts.view_resize if current else ["pil (float views)"]
    results = []
    try:
        configs = [(p, w, r) for p in opts.pipelines for w in opts.workers for r in resizes]
        for pipeline, workers, resize in tqdm(configs, desc="data bench"):
            args, views = loader_args(pipeline, world, opts, workers, resize)
            if not current:
                views.pop("object_pixels", None)
            info = build_loader(args, views, tokenizer, opts.image_size)
            pixels = views.get("object_pixels", "all" if pipeline == "mgrs-objects" else "-")
            row = {"pipeline": pipeline, "workers": workers, "view_resize": resize,
                   "object_pixels": pixels, "image_size": opts.image_size,
                   "batch_size": opts.batch_size, "max_boxes": opts.max_boxes, **time_loader(info, opts.batches)}
            row["samples_per_s_per_worker"] = row["samples_per_s"] / max(workers, 1)
            results.append(row)
            del info  # stops persistent workers before the next configuration starts its own
    finally:
        torch.set_num_threads(threads)
    atomic_write(opts.out, json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))
    print("| pipeline | resize | object crops | workers | samples/s | samples/s per worker | local views/s "
          "| first batch (s) | samples per CPU-s (workers 0) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        per_cpu = f"{r['samples_per_cpu_s']:.1f}" if r["workers"] == 0 else "-"
        print(f"| {r['pipeline']} | {r['view_resize']} | {r['object_pixels']} | {r['workers']} "
              f"| {r['samples_per_s']:.1f} | {r['samples_per_s_per_worker']:.1f} "
              f"| {r['local_views'] / r['seconds']:.1f} | {r['first_batch_s']:.2f} | {per_cpu} |")
    print(f"\nwritten {opts.out}")
    return 0

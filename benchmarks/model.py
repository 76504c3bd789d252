"""`python scripts/bench.py model`: the dense path's cost against the obvious alternatives.

Measured in one run, reported as ratios: the segearth attention as ``dense_block`` computes it
(one fused SDPA call per softmax term) against one SDPA call over the stacked q/k/v terms and
against explicit softmax attention,
asking for one branch of the last block against asking for both, and the text tower on 80
prompts trimmed to their longest one (``farslip.encode_text``) against the full context.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from farslip.atomic import atomic_write
from farslip.models.dense import _split_heads, dense_block, encode_dense
from farslip.models.factory import create_model, get_tokenizer
from farslip.models.text import encode_text


def _timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def _segearth_stacked(block, x):
    """The alternative to ``dense_block``'s three SDPA calls: one call over the stacked terms."""
    attn = block.attn
    q, k, v = (_split_heads(t, attn.num_heads)
               for t in F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    stacked = torch.cat([q, k, v], dim=0)
    out = F.scaled_dot_product_attention(stacked, stacked, v.repeat(3, 1, 1, 1)).unflatten(0, (3, -1)).sum(0)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _segearth_explicit(block, x):
    attn = block.attn
    q, k, v = (_split_heads(t, attn.num_heads)
               for t in F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    scale = q.shape[-1] ** -0.5
    weights = sum(torch.softmax(t @ t.transpose(-1, -2) * scale, dim=-1) for t in (q, k, v))
    return attn.out_proj((weights @ v).transpose(1, 2).flatten(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py model", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default="ViT-Small-8,ViT-B-32,ViT-B-16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        size = model.visual.image_size
        size = size if isinstance(size, int) else size[0]
        images = torch.randn(args.batch_size, 3, size, size)
        with torch.inference_mode():
            x = model.visual._embeds(images)
            for block in list(model.visual.transformer.resblocks)[:-1]:
                x = block(x)
            last = model.visual.transformer.resblocks[-1]
            t_sdpa = _timeit(lambda: dense_block(last, x, "segearth"), args.repeat)
            t_stacked = _timeit(lambda: _segearth_stacked(last, x), args.repeat)
            t_explicit = _timeit(lambda: _segearth_explicit(last, x), args.repeat)
            t_both = _timeit(lambda: encode_dense(model, images, need=("cls", "tokens")), args.repeat)
            t_tokens = _timeit(lambda: encode_dense(model, images, need=("tokens",)), args.repeat)
            t_cls = _timeit(lambda: model.encode_image(images), args.repeat)
            prompts = get_tokenizer(model)([t("a storage tank") for t in OPENAI_IMAGENET_TEMPLATES])
            t_text_full = _timeit(lambda: model.encode_text(prompts), args.repeat)
            t_text_trim = _timeit(lambda: encode_text(model, prompts), args.repeat)
        rows.append(dict(model=name, batch=args.batch_size, segearth_ms=1e3 * t_sdpa,
                         stacked_over_sdpa=t_stacked / t_sdpa, explicit_over_sdpa=t_explicit / t_sdpa,
                         encode_both_ms=1e3 * t_both, tokens_only_over_both=t_tokens / t_both,
                         encode_image_over_both=t_cls / t_both,
                         images_per_s_both=args.batch_size / t_both, text_80_prompts_ms=1e3 * t_text_trim,
                         text_full_over_trimmed=t_text_full / t_text_trim))
    print("| model | batch | segearth last block (ms) | one stacked SDPA call / three | explicit softmax / SDPA "
          "| cls+tokens (ms) | tokens only / both | encode_image / both | img/s (both) "
          "| 80 prompts, trimmed (ms) | full context / trimmed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['segearth_ms']:.1f} | {r['stacked_over_sdpa']:.2f} | "
              f"{r['explicit_over_sdpa']:.2f} | {r['encode_both_ms']:.1f} | {r['tokens_only_over_both']:.2f} | "
              f"{r['encode_image_over_both']:.2f} | {r['images_per_s_both']:.1f} | {r['text_80_prompts_ms']:.1f} | "
              f"{r['text_full_over_trimmed']:.2f} |")
    if args.json:
        atomic_write(args.json, json.dumps(rows, indent=2))
    return 0

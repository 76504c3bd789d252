"""Slow, explicit reference computations for the model numerics (written independently of the
library: per-head loops, explicit softmaxes, explicit bilinear sampling)."""
from __future__ import annotations

import math

import torch


def run_to_last_block(model, images):
    visual = model.visual
    x = visual._embeds(images)
    for block in list(visual.transformer.resblocks)[:-1]:
        x = block(x)
    return x


def dense_tokens_reference(model, images, variant):
    visual = model.visual
    x = run_to_last_block(model, images)
    block = visual.transformer.resblocks[-1]
    z = block.ln_1(x)
    width = z.shape[-1]
    heads = block.attn.num_heads
    d = width // heads
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    q = z @ w[:width].T + b[:width]
    k = z @ w[width:2 * width].T + b[width:2 * width]
    v = z @ w[2 * width:].T + b[2 * width:]

    def softmax_attn(left, right):
        scores = left @ right.transpose(-1, -2) / math.sqrt(d)
        scores = scores - scores.max(dim=-1, keepdim=True).values
        e = scores.exp()
        return e / e.sum(dim=-1, keepdim=True)

    per_head = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        qh, kh, vh = q[..., cols], k[..., cols], v[..., cols]
        if variant == "segearth":
            weights = softmax_attn(qh, qh) + softmax_attn(kh, kh) + softmax_attn(vh, vh)
        elif variant == "sclip":
            weights = softmax_attn(qh, qh) + softmax_attn(kh, kh)
        elif variant == "clearclip":
            weights = softmax_attn(qh, qh)
        elif variant == "vanilla":
            weights = softmax_attn(qh, kh)
        elif variant == "maskclip":
            weights = torch.eye(qh.shape[-2]).expand(qh.shape[0], -1, -1)
        else:
            raise ValueError(variant)
        per_head.append(weights @ vh)
    out = torch.cat(per_head, dim=-1) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    if variant == "maskclip":
        out = x + out
        out = out + block.mlp(block.ln_2(out))
    tokens = visual.ln_post(out[:, 1:]) @ visual.proj
    return tokens


def bilinear(fmap, y, x):
    """torchvision-style bilinear read of fmap [D, H, W] at continuous (y, x)."""
    _, height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[:, y0, x0] + (1 - ly) * lx * fmap[:, y0, x1]
            + ly * (1 - lx) * fmap[:, y1, x0] + ly * lx * fmap[:, y1, x1])


def roi_reference(tokens, boxes, grid):
    """Region features by explicit sampling: aligned boxes, g x g bins, adaptive samples, mean."""
    gh, gw = grid
    out = []
    for image, image_boxes in zip(tokens, boxes):
        fmap = image.T.reshape(-1, gh, gw)
        for box in image_boxes.tolist():
            x1, y1, x2, y2 = box[0] * gw - 0.5, box[1] * gh - 0.5, box[2] * gw - 0.5, box[3] * gh - 0.5
            bin_h, bin_w = (y2 - y1) / gh, (x2 - x1) / gw
            ny, nx = math.ceil((y2 - y1) / gh), math.ceil((x2 - x1) / gw)
            total = torch.zeros(fmap.shape[0], dtype=fmap.dtype)
            for by in range(gh):
                for bx in range(gw):
                    acc = torch.zeros_like(total)
                    for iy in range(ny):
                        for ix in range(nx):
                            yy = y1 + by * bin_h + (iy + 0.5) * bin_h / ny
                            xx = x1 + bx * bin_w + (ix + 0.5) * bin_w / nx
                            acc = acc + bilinear(fmap, yy, xx)
                    total = total + acc / (ny * nx)
            region = total / (gh * gw)
            out.append(region / region.norm())
    return torch.stack(out)


def stretch_reference(table, keep=20):
    rows = [table[i] for i in range(keep)]
    for i in range(table.shape[0] - keep - 1):
        for r in range(4):
            rows.append(((4 - r) * table[keep + i] + r * table[keep + i + 1]) / 4)
    last, before = table[-1], table[-2]
    for r in range(4):
        rows.append(last + r * (last - before) / 4)
    return torch.stack(rows)

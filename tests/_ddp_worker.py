"""One rank of the 2-process DDP check (run by tests/test_train_ddp.py under torchrun, gloo).

Each rank builds the same tiny model and its own half batch, runs the student through DDP,
computes global ITC + multi-positive region ITC, backpropagates, and saves the losses and the
(DDP-averaged) gradients for both ``--gather-with-grad`` settings.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from farslip.losses import global_itc_loss
from farslip.train.step import StudentFeatures, compute_losses, make_plan

from ._train_utils import make_args, make_batch, tiny_model

LABELS = ((0, 1, 0, -1, 2), (2, 2, -1, 1, 0))
FLAGS = ("--method", "farslip2", "--loss-type", "global_itc", "local_itc", "--w-l", "0.7")


def losses_and_grads(model, batch, *, gather_with_grad: bool, rank: int, world: int):
    """Loss terms and parameter gradients for ``batch`` (DDP-wrapped when world > 1)."""
    args = make_args(*FLAGS)
    plan = make_plan(args.method)
    student = StudentFeatures(model, plan)
    if world > 1:
        student = DistributedDataParallel(student)
    model.zero_grad(set_to_none=True)
    feats = student(batch)
    terms = compute_losses(plan, feats, batch, grid=model.visual.grid_size,
                           weights={"w_g": 1.0, "w_d": 0.0, "w_l": 0.7},
                           clip_loss=global_itc_loss(gather_with_grad=gather_with_grad,
                                                     rank=rank, world_size=world),
                           gather_with_grad=gather_with_grad, rank=rank, world_size=world)
    terms["loss"].backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return {k: v.detach() for k, v in terms.items()}, grads


def main(out: str) -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {}
    for gwg in (False, True):
        model = tiny_model()
        batch = make_batch(model, b=3, seed=10 + rank, labels=LABELS[rank])
        result[gwg] = losses_and_grads(model, batch, gather_with_grad=gwg, rank=rank, world=world)
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

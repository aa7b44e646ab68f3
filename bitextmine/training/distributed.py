"""Multi-process training through torchrun: process-group setup and gathers that keep gradients.

``torchrun --nproc_per_node N -m bitextmine train ...`` (or the multi-node form) sets RANK,
WORLD_SIZE and LOCAL_RANK; :func:`setup` joins the group (NCCL on GPUs, gloo on CPU). Each
process encodes its slice of the global batch; :func:`gather_with_grad` concatenates every
process's sentence vectors so each local query is ranked against the whole global batch, and its
backward sums the gradients every process computed for the local rows. With DDP averaging the
parameter gradients, N processes x b pairs then step exactly like one process with N x b pairs
(tested on CPU with gloo).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bitextmine.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        from bitextmine.models.loader import resolve_device

        dev = resolve_device(device)
    elif torch.cuda.is_available():
        per_node, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if per_node > gpus:  # NCCL refuses two ranks on one GPU
            raise ConfigError(f"{per_node} processes per node but {gpus} GPU(s) visible: use --nproc_per_node {gpus}, "
                              "or --device cpu to train on CPUs (gloo)")
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local, dev)


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns, for the local rows, the sum of every process's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = rank, x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # gloo has no reduce_scatter; this is its equivalent here
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) from all processes, rank order; differentiable."""
    if not info.distributed:
        return x
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """all_gather without gradient (keys, counts)."""
    if not info.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.distributed:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast_object(obj, info: DistInfo):
    """The main process's ``obj`` (picklable, e.g. a temporary folder's path) on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

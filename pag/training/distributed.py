"""Data-parallel training under `torchrun --nproc_per_node=N -m pag train ...`.

Design (the same run as one process with the same global batch):

* **Launch.** torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; with WORLD_SIZE > 1 `pag train`
  joins a process group (gloo on CPU, nccl on CUDA, device `cuda:LOCAL_RANK`). Without them,
  or with WORLD_SIZE 1, nothing changes: no process group, no wrapper, same checkpoints.
* **Data.** Every rank builds the same epoch batches from (seed, epoch) as one process and takes
  its contiguous slice of each: `training.batch_size` is the global batch, each rank trains on
  batch_size / world_size images per step (not divisible: an error before anything is written).
  Augmentation seeds depend on (seed, epoch, sample index) only, so every image is cropped and
  flipped exactly as in one process.
* **Gradients.** DDP averages gradients over ranks; each rank's loss is its local mean.
* **BatchNorm.** Statistics are synchronised over ranks (`sync_batchnorm`): PyTorch's
  SyncBatchNorm needs a GPU, so every BatchNorm2d computes its batch mean and variance from
  sums all-reduced with autograd (`torch.distributed.nn.all_reduce`, whose backward all-reduces
  the gradients), on CPU and CUDA alike. Parameter and buffer names are unchanged.
* **Exactness.** With synchronised BatchNorm the forward is the one-process forward on the
  global batch, and the averaged gradient is the one-process gradient wherever the loss is a
  mean over images (depth's per-image scale-invariant loss) or over equally many elements per
  rank. Semantic, boundary and normal losses average over the *labelled* pixels of the batch;
  when the ranks' shares hold different numbers of labelled pixels, the mean of rank means
  differs from the global mean (a reweighting of images within a step). Beyond that the
  results differ only by floating-point summation order. The sums are taken in float64:
  BatchNorm's variance is E[x^2] - E[x]^2 of all-reduced sums, which in float32 cancels
  badly on small batches (it gave 13 % gradient errors at one image per rank).
  Random draws in a forward (Gumbel noise of PAG, MP-PAG and
  layer-skipping gates) come from each rank's own generator, seeded from (seed, rank): equal
  in distribution to one process, not bit for bit.
* **Unused parameters.** Every method runs every parameter in every training forward (masked
  execution: gates multiply, SACT masks units, truncation deletes its dropped blocks), so DDP
  runs with `find_unused_parameters=False`; `UNUSED_PARAMETER_METHODS` lists methods that
  would need it (none). A zero gradient (a head with loss weight 0) is still a gradient.
* **Files.** Only rank 0 writes params.yaml, checkpoints and metrics.json; logged losses are
  averaged over ranks, so every rank sees the same values and a NaN stops every rank at the
  same step. Checkpoints of a distributed run add `world_size` and every rank's generator
  states (`rng_ranks`); a run resumes only with the world size it was started with.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pag.errors import PagError

UNUSED_PARAMETER_METHODS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise PagError(f"torchrun environment is malformed: {exc}") from None
    if size < 1 or not 0 <= rank < size:
        raise PagError(f"torchrun environment is malformed: RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size, local)


def per_rank_batch(batch_size: int, world: World) -> int:
    if batch_size % world.size:
        raise PagError(
            f"training.batch_size {batch_size} is the global batch and must be divisible by "
            f"the number of processes ({world.size})"
        )
    return batch_size // world.size


def shard(batches: list[list[int]], world: World) -> list[list[int]]:
    """Each global batch's contiguous slice for this rank."""
    if not world.distributed:
        return batches
    share = per_rank_batch(len(batches[0]), world) if batches else 0
    start = world.rank * share
    return [batch[start : start + share] for batch in batches]


def device_for(device: torch.device, world: World) -> torch.device:
    if device.type == "cuda" and world.distributed:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the process group for a distributed run (not when one is already joined: tests and
    callers may own it), and leave it afterwards."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def wrap(model: nn.Module, world: World, device: torch.device, method: str) -> nn.Module:
    """The model to call in training: itself, or a DDP wrapper with synchronised BatchNorm."""
    if not world.distributed:
        return model
    sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=method in UNUSED_PARAMETER_METHODS,
    )


def average(values: Tensor, world: World) -> Tensor:
    """The mean over ranks of a tensor of floats (the logged loss terms)."""
    if world.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def gather_objects(obj, world: World) -> list:
    if not world.distributed:
        return [obj]
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


# -- synchronised BatchNorm ----------------------------------------------------------------------


def _synced_forward(self, x: Tensor) -> Tensor:
    if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
        return self._local_forward(x)
    channels = x.shape[1]
    count = x.numel() // channels * dist.get_world_size()  # equal shares on every rank
    if count == 1:  # (PooledBatchNorm2d's case) a single value per channel overall
        return self._local_forward(x)
    xf = x.double()  # E[x^2] - mean^2 cancels badly in float32 on small batches
    dims = [0, *range(2, x.dim())]
    sums = torch.cat([xf.sum(dims), (xf * xf).sum(dims)])
    sums = _AllReduce.apply(sums)
    mean = sums[:channels] / count
    var = (sums[channels:] / count - mean * mean).clamp(min=0)
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked += 1
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
            self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
            unbiased = var.detach() * (count / (count - 1))
            self.running_var.mul_(1 - factor).add_(factor * unbiased)
    shape = (1, channels) + (1,) * (x.dim() - 2)
    out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out.to(x.dtype)


class _AllReduce(torch.autograd.Function):
    """Sum over ranks; the gradient is the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


_SYNCED: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(
            f"Synced{cls.__name__}",
            (cls,),
            {"forward": _synced_forward, "_local_forward": cls.forward},
        )
    return _SYNCED[cls]


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm2d (subclasses included) of `model` normalise with statistics over
    all ranks in training; in place, names and state dict unchanged."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and type(module) not in _SYNCED.values():
            module.__class__ = _synced_class(type(module))
    return model


__all__ = [
    "UNUSED_PARAMETER_METHODS",
    "World",
    "average",
    "barrier",
    "device_for",
    "gather_objects",
    "per_rank_batch",
    "process_group",
    "shard",
    "sync_batchnorm",
    "world_from_env",
]

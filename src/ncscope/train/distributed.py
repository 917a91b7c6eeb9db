"""torch.distributed helpers for the trainer (DistributedDataParallel under ``torchrun``).

Conventions:

* :func:`setup_distributed` joins an existing process group, or creates one from the
  ``torchrun`` environment (``WORLD_SIZE > 1``; gloo on CPU, NCCL on CUDA), or runs alone.
* The training order is :class:`torch.utils.data.DistributedSampler` with ``seed`` and
  ``set_epoch(epoch)`` for every world size (one process: ``num_replicas=1``), and the per-rank
  batch is ``batch_size / world_size``, so global batch ``k`` holds the same examples in one
  process and in ``W`` processes (see :func:`epoch_batches`).
* Measurement passes shard the data without padding, rank ``r`` taking ``r::W``
  (:func:`shard_indices`); accumulators are then summed with ``all_reduce``.
* Only rank 0 writes result files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "cleanup_distributed",
    "current_dist",
    "derive_seed",
    "epoch_batches",
    "setup_distributed",
    "shard_indices",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process; ``owns_group``: we created the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 (the only one that writes files)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def setup_distributed(device_type: str = "cpu") -> DistInfo:
    """Join or create the default process group; single-process :class:`DistInfo` otherwise.

    An already initialised group (e.g. created by the caller, or by ``torch.multiprocessing``
    with a ``file://`` init method) is used as is. Otherwise, when ``torchrun`` set
    ``WORLD_SIZE > 1``, a group is created with ``init_method="env://"`` and the gloo (CPU) or
    NCCL (CUDA) backend; :func:`cleanup_distributed` destroys only a group created here.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns_group=True)


def current_dist() -> DistInfo:
    """The already initialised process group as a :class:`DistInfo` (never creates one)."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, dist.get_world_size(), local, owns_group=False)
    return DistInfo()


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op for one process); returns ``t``."""
    if info.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (numpy ``SeedSequence``): independent streams for
    (seed, epoch, rank, purpose) without any state to checkpoint."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def shard_indices(n: int, info: DistInfo) -> list[int]:
    """Indices ``rank::world_size`` of ``range(n)``: every example on exactly one rank."""
    return list(range(info.rank, n, info.world_size))


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, info: DistInfo
) -> list[tuple[list[int], list[bool]]]:
    """This rank's training batches of (0-based) ``epoch``: ``(indices, is_padding)`` pairs.

    The order is ``DistributedSampler(num_replicas=W, rank=r, shuffle=True, seed=seed)`` after
    ``set_epoch(epoch)`` (``randperm(n)`` seeded with ``seed + epoch``, padded by repeating its
    head to a multiple of ``W``, rank ``r`` taking positions ``r::W``); ``batch_size`` is the
    global batch, each rank takes ``batch_size / W``. ``is_padding`` marks the repeated examples
    (positions ``>= n``), which train but are not counted twice in measurements.
    """
    world = info.world_size
    if batch_size % world:
        raise ValueError(
            f"batch_size={batch_size} must be divisible by the number of processes ({world})"
        )
    sampler = DistributedSampler(
        range(n), num_replicas=world, rank=info.rank, shuffle=True, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    local = list(sampler)
    pad = [info.rank + i * world >= n for i in range(len(local))]
    per_rank = batch_size // world
    return [
        (local[i : i + per_rank], pad[i : i + per_rank]) for i in range(0, len(local), per_rank)
    ]

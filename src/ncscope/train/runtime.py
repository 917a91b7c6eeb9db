"""Process set-up of a training run: device, threads, determinism, DDP and global seeds."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ncscope.train.config import TrainConfig
from ncscope.train.distributed import DistInfo, cleanup_distributed, setup_distributed

__all__ = ["resolve_device", "seed_globals", "training_runtime"]


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """The ``torch.device`` of ``TrainConfig.device`` (``"auto"``: CUDA when available); under
    DDP ``"cuda"`` is this process's ``local_rank``. Asking for CUDA without it is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but CUDA is not available (use device='cpu')")
        return torch.device("cuda", info.local_rank if info.active else torch.cuda.current_device())
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available (use device='cpu')")
    return torch.device(name)


def seed_globals(seed: int) -> None:
    """Seed the global ``torch``, ``numpy`` and ``random`` generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


@contextmanager
def training_runtime(config: TrainConfig) -> Iterator[tuple[DistInfo, torch.device]]:
    """Set up a run and yield ``(dist, device)``; everything is restored on exit.

    Joins the process group when launched by ``torchrun`` (gloo on CPU, NCCL on CUDA), sets
    ``config.threads`` and ``torch.use_deterministic_algorithms(config.deterministic, None =
    on for CPU, warn only)``; afterwards restores the thread count and determinism flags and
    leaves the process group.
    """
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    dev = config.device
    cuda = dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())
    info = setup_distributed("cuda" if cuda else "cpu")
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        device = resolve_device(config.device, info)
        det = config.deterministic if config.deterministic is not None else device.type == "cpu"
        torch.use_deterministic_algorithms(det, warn_only=True)
        yield info, device
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        cleanup_distributed(info)

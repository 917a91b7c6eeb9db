"""Process set-up of a training run: device, threads, determinism, DDP and global seeds; the
checks run before a run folder is created (device exists, model fits the data)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ncscope.train.config import TrainConfig
from ncscope.train.distributed import DistInfo, cleanup_distributed, setup_distributed

__all__ = ["check_device", "precision_context", "probe_forward", "probe_sections",
           "resolve_device", "seed_globals", "to_memory_format", "training_runtime"]


def check_device(name: str, key: str = "device") -> None:
    """Raise a one-line ``RuntimeError`` naming ``key`` when device ``name`` does not exist
    here (``cuda`` without CUDA, ``cuda:3`` on a machine with fewer GPUs, a bad name)."""
    if name in ("auto", "cpu"):
        return
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RuntimeError(f"{key}={name!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{key}={name!r} but CUDA is not available here "
                               "(use device=cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"{key}={name!r} but only {torch.cuda.device_count()} CUDA "
                               "device(s) exist")


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """The ``torch.device`` of ``TrainConfig.device`` (``"auto"``: CUDA when available); under
    DDP ``"cuda"`` is this process's ``local_rank``. Asking for CUDA without it is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(name)
    if name == "cuda":
        return torch.device("cuda", info.local_rank if info.active else torch.cuda.current_device())
    return torch.device(name)


def probe_forward(model: nn.Module, data: Dataset, device: torch.device | str, *,
                  what: str = "the model") -> None:
    """One forward pass of two training samples (eval mode, no gradients, no random numbers
    drawn; every module's mode restored): a model that does not fit the data raises a
    one-line ``ValueError`` here, before any folder is created."""
    from ncscope.train.tracking import fetch_batch

    n = len(data)  # type: ignore[arg-type]
    x, _ = fetch_batch(data, [0, min(1, n - 1)])
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(x.to(device))
    except Exception as exc:  # noqa: BLE001 - any failure means the shapes do not fit
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        raise ValueError(f"{what} does not fit the data (input shape "
                         f"{tuple(x.shape[1:])}): {first}") from None
    finally:
        for m, mode in modes.items():
            m.training = mode


def probe_sections(data: Any, model: Any) -> tuple[Dataset, nn.Module]:
    """Load the training split of a ``data`` section, build the ``model`` section for it
    (the global random state is left untouched) and :func:`probe_forward` it; the error of a
    mismatch names ``model.name`` and ``data.dataset``. Returns ``(train_set, model)``."""
    train_set = data.load("train")
    with torch.random.fork_rng(devices=[]):
        net = model.build(getattr(train_set, "info", None) or data.dataset)
    probe_forward(net, train_set, "cpu", what=f"model.name={model.resolved_name(data.dataset)}"
                  f" on data.dataset={data.dataset}")
    return train_set, net


def precision_context(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """The context the training passes run in: nothing for ``"fp32"``, ``torch.autocast`` to
    bfloat16 on ``device``'s type for ``"bf16"`` (matrix products and convolutions in bf16,
    reductions and losses in float32 as autocast decides; inputs, parameters, gradients and
    optimiser state stay float32)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision={precision!r} is not supported; use 'fp32' or 'bf16'")


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels-last layout when asked and it is an image batch (4-D), else ``x``."""
    if channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


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
    check_device(dev)  # before joining a process group or touching anything
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

"""Random draws of the attacks and noise sources, from a generator on any device.

Every sampler draws exactly as ``torch.empty_like(x).<dist>_(generator=gen)`` would (so the
global RNG stream, ``gen=None``, gives the draws of torchattacks and the reference codes); a
generator on another device draws there and the result is moved to the input's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ncscope.attacks.steps import bview, l2norm

__all__ = [
    "gaussian_l2",
    "normal",
    "randint",
    "random_sign",
    "same_device",
    "uniform",
    "uniform_l2_ball",
    "uniform_linf",
]


def same_device(gen: torch.Generator, device: torch.device) -> bool:
    """Whether ``gen`` draws on ``device`` (``cuda`` and ``cuda:0`` are the same)."""
    g = gen.device
    return g.type == device.type and (g.index or 0) == (device.index or 0)


def uniform(like: Tensor, low: float, high: float, gen: torch.Generator | None) -> Tensor:
    """``U(low, high)`` shaped like ``like`` (same draws as ``empty_like(like).uniform_``)."""
    if gen is None or same_device(gen, like.device):
        return torch.empty_like(like).uniform_(low, high, generator=gen)
    out = torch.empty(like.shape, dtype=like.dtype, device=gen.device)
    return out.uniform_(low, high, generator=gen).to(like.device)


def normal(like: Tensor, gen: torch.Generator | None) -> Tensor:
    """``N(0, 1)`` shaped like ``like`` (same draws as ``empty_like(like).normal_``)."""
    if gen is None or same_device(gen, like.device):
        return torch.empty_like(like).normal_(generator=gen)
    out = torch.empty(like.shape, dtype=like.dtype, device=gen.device)
    return out.normal_(generator=gen).to(like.device)


def randint(high: int, shape: tuple[int, ...], device: torch.device,
            gen: torch.Generator | None) -> Tensor:
    """Integers uniform in ``[0, high)`` of ``shape`` on ``device``."""
    dev = device if gen is None else gen.device
    return torch.randint(high, shape, device=dev, generator=gen).to(device)


def uniform_linf(x: Tensor, eps: float, gen: torch.Generator | None) -> Tensor:
    """Uniform draw from the l_inf ball, ``clip_[0,1](x + U(-eps, eps))`` (PGD's random start,
    Madry et al. 2018; torchattacks' ``PGD``)."""
    return (x + uniform(x, -eps, eps, gen)).clamp_(0.0, 1.0)


def uniform_l2_ball(x: Tensor, eps: float, gen: torch.Generator | None) -> Tensor:
    """Gaussian direction at radius ``r * eps``, ``r ~ U(0, 1)`` per example, clipped to [0, 1]
    (the l2 random start of torchattacks' ``PGDL2`` and of Rice et al. 2020)."""
    d = normal(x, gen)
    n = l2norm(d)
    r = uniform(n, 0.0, 1.0, gen)
    d = d * bview(r / n.clamp_min(torch.finfo(n.dtype).tiny) * eps, x.ndim)
    return (x + d).clamp_(0.0, 1.0)


def random_sign(x: Tensor, eps: float, gen: torch.Generator | None) -> Tensor:
    """Random corner of the l_inf ball: ``clip(x + eps * sign(N(0, I)), 0, 1)``."""
    return (x + eps * torch.sign(normal(x, gen))).clamp_(0.0, 1.0)


def gaussian_l2(x: Tensor, radius: float, gen: torch.Generator | None) -> Tensor:
    """Gaussian direction rescaled to l2 norm ``radius``, then clipped to [0, 1]."""
    d = normal(x, gen)
    n = l2norm(d).clamp_min(torch.finfo(d.dtype).tiny)
    return (x + d * bview(radius / n, x.ndim)).clamp_(0.0, 1.0)

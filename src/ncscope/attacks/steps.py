"""Projected steps of l_inf and l2 gradient attacks, and the per-example tensor helpers.

Madry et al., ICLR 2018: a step ``x + alpha * sign(g)`` (l_inf) or ``x + alpha * g / ||g||``
(l2), then the projection onto the ball around the clean input and the clip to [0, 1], in
torchattacks' order (same float path, so the same outputs bit for bit).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NORM_EPS", "bview", "l2_project", "l2_step", "l2norm", "linf_bounds", "linf_step"]

#: Added to per-example gradient norms before dividing (as torchattacks' ``eps_for_division``).
NORM_EPS = 1e-10


def bview(t: Tensor, ndim: int) -> Tensor:
    """Reshape a per-example vector ``(B,)`` to broadcast against a ``(B, ...)`` batch."""
    return t.view((t.shape[0],) + (1,) * (ndim - 1))


def l2norm(t: Tensor) -> Tensor:
    """Per-example l2 norm of a ``(B, ...)`` tensor (float32 or wider, as torchattacks)."""
    return torch.linalg.vector_norm(t.flatten(1), ord=2, dim=1)


def linf_bounds(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(max(x - eps, 0), min(x + eps, 1))``: the l_inf ball intersected with [0, 1]."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def linf_step(x_adv: Tensor, grad: Tensor, alpha: float, lo: Tensor, hi: Tensor) -> Tensor:
    """``clip_[lo, hi](x_adv + alpha * sign(grad))`` with ``(lo, hi)`` from :func:`linf_bounds`:
    the l_inf projection and the box clip in one op."""
    return torch.add(x_adv.detach(), torch.sign(grad), alpha=alpha).clamp_(lo, hi)


def l2_project(x: Tensor, x_new: Tensor, eps: float) -> Tensor:
    """Project ``x_new`` onto the l2 ball of radius ``eps`` around ``x``, then clip to [0, 1]
    (torchattacks' PGDL2 order: ``delta *= min(eps / ||delta||, 1)``)."""
    delta = x_new - x
    n = l2norm(delta)
    factor = torch.where(n > eps, eps / n.clamp_min(torch.finfo(n.dtype).tiny),
                         torch.ones_like(n))
    return (x + delta * bview(factor, x.ndim)).clamp_(0.0, 1.0)


def l2_step(x: Tensor, x_adv: Tensor, grad: Tensor, alpha: float, eps: float) -> Tensor:
    """Normalised-gradient step ``x_adv + alpha * g / (||g|| + 1e-10)``, l2 projection, box."""
    gn = l2norm(grad) + NORM_EPS
    x_new = x_adv.detach() + alpha * (grad / bview(gn, grad.ndim))
    return l2_project(x, x_new, eps)

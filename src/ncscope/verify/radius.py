"""Certified radii of one sample: the certified *collapse* radius, the certified logit radius
and the empirical PGD radius.

*Certified collapse radius* (an extension of relaxed reachability, Tran et al., CAV 2021,
to the geometry of Neural Collapse — Papyan, Han & Donoho, PNAS 2020, NC4: the network decides
like the nearest class mean): the ℓ∞ ball of radius ε around ``x`` is propagated to the
penultimate layer (the input of the final ``nn.Linear``), and for every competing class ``j`` one
LP maximises, over the star of features ``h``,

    ‖h − μ_y‖² − ‖h − μ_j‖² = 2 (μ_j − μ_y) · h + ‖μ_y‖² − ‖μ_j‖²,

linear in ``h``, with ``μ`` the clean training class means of the penultimate features. The ball
is *collapse-certified* when every maximum is ``< 0``: every reachable feature is nearer to its
class's mean than to any other. The radius is the largest such ε found by bisection on
``[0, eps_max]`` to a tolerance ``tol`` (the certified radius is the last certified ε, so it is
never above the true largest certified ε of the relaxation by more than nothing and never below
it by more than ``tol``; certification is monotone in ε up to the LP choices of ``rF < 1``).

*Certified logit radius*: the same bisection with the network's own verification (Tran et al.:
``min z_y − z_j > 0``). *PGD radius*: the smallest ε at which ncscope's PGD (Madry et al., ICLR
2018) flips the prediction, by bisection to ``tol`` (``inf`` when PGD does not succeed at
``eps_max``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ncscope.attacks import PGD
from ncscope.models import find_classifier
from ncscope.verify.network import chain
from ncscope.verify.reach import ReachOptions, reach
from ncscope.verify.sets import linf_ball
from ncscope.verify.star import ImageStar, ReachStats, lp_extreme
from ncscope.verify.verify import verify_classification

__all__ = ["bisect_radius", "class_means", "collapse_certified", "collapse_lp_max",
           "logit_certified",
           "pgd_radius", "penultimate_chain"]


def penultimate_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The chain of ``model`` up to (without) its final ``nn.Linear``
    (:func:`~ncscope.models.find_classifier`)."""
    return chain(model, upto=find_classifier(model))


def class_means(layers: list[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor,
                num_classes: int) -> torch.Tensor:
    """Float64 class means ``(K, d)`` of the chain's output features on ``(x, y)``."""
    h = x.detach().double()
    with torch.no_grad():
        for _, module in layers:
            h = module(h)
    h = h.reshape(h.shape[0], -1)
    means = torch.zeros((num_classes, h.shape[1]), dtype=torch.float64)
    counts = torch.bincount(y, minlength=num_classes).double()
    if bool((counts == 0).any()):
        raise ValueError("class_means: every class needs at least one training sample")
    means.index_add_(0, y, h)
    return means / counts[:, None]


def collapse_lp_max(star: ImageStar, y: int, means: torch.Tensor,
                    stats: ReachStats | None = None, stop_early: bool = False) -> np.ndarray:
    """Per class ``j``: the maximum over the feature star of ``‖h − μ_y‖² − ‖h − μ_j‖²``
    (interval bound first; an LP only where that bound is not already negative); ``-inf`` at
    ``j = y``. With ``stop_early`` the classes are taken in decreasing interval bound and the
    LPs stop at the first non-negative maximum (the others keep their interval bounds)."""
    mu = means.numpy()
    v, c = star.matrix(), star.c.reshape(-1).numpy()
    w = 2 * (mu - mu[y])  # (K, d)
    const = w @ c + mu[y] @ mu[y] - (mu * mu).sum(1)
    obj = v @ w.T  # (m, K)
    out = const + np.clip(obj, 0, None).T @ star.ub + np.clip(obj, None, 0).T @ star.lb
    out[y] = -np.inf
    for j in np.argsort(-out, kind="stable"):
        if j == y or out[j] < 0 or not star.num_vars:
            continue
        out[j] = min(out[j], lp_extreme(obj[:, j], float(const[j]), star, True, stats))
        if stop_early and out[j] >= 0:
            break
    return out


def collapse_certified(layers: list[tuple[str, nn.Module]], x: torch.Tensor, y: int,
                       eps: float, means: torch.Tensor, options: ReachOptions | None = None,
                       stats: ReachStats | None = None) -> bool:
    """Whether every feature reachable from the ℓ∞ ball of radius ``eps`` around ``x`` is
    nearer to ``μ_y`` than to every other class mean."""
    r = reach(layers, linf_ball(x, eps), options)
    if stats is not None:
        stats.lps += r.stats.lps
    return bool((collapse_lp_max(r.star, y, means, stats, stop_early=True) < 0).all())


def logit_certified(layers: list[tuple[str, nn.Module]], x: torch.Tensor, y: int, eps: float,
                    options: ReachOptions | None = None, stats: ReachStats | None = None
                    ) -> bool:
    """Whether the network's prediction ``y`` is verified on the ℓ∞ ball of radius ``eps``."""
    r = reach(layers, linf_ball(x, eps), options)
    if stats is not None:
        stats.lps += r.stats.lps
    return verify_classification(r.star, y, stats)


def bisect_radius(check: Callable[[float], bool], eps_max: float, tol: float) -> float:
    """Largest ε in ``[0, eps_max]`` with ``check(ε)`` by bisection to ``tol`` (``0.0`` when
    even ``ε = 0`` fails; ``eps_max`` when it holds there)."""
    if tol <= 0 or eps_max <= 0:
        raise ValueError(f"bisect_radius: tol={tol} and eps_max={eps_max} must be > 0")
    if not check(0.0):
        return 0.0
    if check(eps_max):
        return eps_max
    lo, hi = 0.0, eps_max
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if check(mid) else (lo, mid)
    return lo


def pgd_radius(model: nn.Module, x: torch.Tensor, y: int, eps_max: float, tol: float,
               steps: int = 20, restarts: int = 1, seed: int = 0) -> float:
    """Smallest ε at which PGD (ℓ∞, ``steps`` steps of ``ε / 4``, CE loss) flips the
    prediction from ``y``, by bisection to ``tol``; ``inf`` when it does not at ``eps_max``."""
    model = model.eval()
    xb, yb = x.unsqueeze(0).float(), torch.tensor([y])

    def flips(eps: float) -> bool:
        atk = PGD(model, eps=eps, steps=steps, restarts=restarts, seed=seed, checks="off")
        with torch.no_grad():
            return int(model(atk(xb, yb)).argmax(1)) != y

    if not flips(eps_max):
        return float("inf")
    lo, hi = 0.0, eps_max
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if flips(mid) else (mid, hi)
    return hi

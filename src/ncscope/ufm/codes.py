"""Codes on the unit sphere for many classes: simplex ETF, regular K-gon, Tammes, softmax codes.

A *code* is a (K, d) matrix ``W`` of unit rows. Two objectives (Jiang, Zhou, Wang, Qu, Mixon,
You & Zhu, "Generalized Neural Collapse for a Large Number of Classes", arXiv 2310.05351):

* the **softmax code** maximises the minimal one-vs-rest distance
  ``min_k ρ_k(W)``, ``ρ_k = dist(w_k, conv{w_j : j ≠ k})`` (their Def. 2.1; computed exactly by
  :func:`ncscope.collapse.gnc.one_vs_rest`); the classifier of generalized NC;
* the **Tammes code** maximises the minimal pairwise angle ``min_{j≠k} ∠(w_j, w_k)`` (the
  one-vs-one distance; the paper compares the two). Both agree for ``K <= d + 1`` (the simplex
  ETF, ``ρ = K/(K−1)``) and for ``d = 2`` (the regular K-gon, ``ρ = 1 − cos(2π/K)``), and
  differ in general.

Every function returns a :class:`Code` ``(W, value)`` (a named tuple): ``value`` is the exact
objective of the returned ``W`` — ``min_k ρ_k`` (:func:`~ncscope.collapse.gnc.min_margin`) for
:func:`etf_code`, :func:`polygon_code` and :func:`softmax_code`, the minimal angle in radians
(:func:`min_angle`) for :func:`tammes_code`.

The two optimisers are smoothed max-min ascents on the oblique manifold (the Riemannian gradient
and retraction of :mod:`ncscope.ufm.oblique`), with an annealed temperature ``τ`` (geometric
from ``temperature[0]`` to ``temperature[1]``) and an Armijo step, from several random starts;
the best start by the exact objective wins.

* Tammes: minimise ``(1/τ) log Σ_{j<k} exp(τ ⟨w_j, w_k⟩)`` (a smooth largest cosine).
* Softmax code: the "hardmax" form ``ρ_k = max_{‖u‖=1} min_{j≠k} ⟨w_k − w_j, u⟩`` (the dual of
  the QP, valid when ``ρ_k > 0``) turns ``max_W min_k ρ_k`` into one smooth problem in ``W`` and
  one unit vector ``u_k`` per class: maximise ``−(1/τ) log Σ_k Σ_{j≠k} exp(−τ ⟨w_k − w_j, u_k⟩)``.
  A final phase then ascends the exact objective (soft-min of the exact ``ρ_k``, whose gradient
  follows from the QP solutions by Danskin's theorem: ``∂ρ_k/∂w_k = −x_k/ρ_k``,
  ``∂ρ_k/∂w_j = λ_kj x_k/ρ_k`` with ``x_k`` the nearest hull point minus ``w_k``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ncscope.collapse.gnc import min_margin, one_vs_rest
from ncscope.ufm.linesearch import armijo_backtrack
from ncscope.ufm.oblique import retract, riemannian_grad
from ncscope.ufm.problem import DTYPE, simplex_etf
from ncscope.validation import check_int, check_real

__all__ = [
    "Code",
    "etf_code",
    "min_angle",
    "polygon_code",
    "softmax_code",
    "tammes_code",
]

_MAX_HALVINGS = 40


class Code(NamedTuple):
    """A code ``W`` (K, d) of unit rows (float64) and its objective ``value``."""

    W: torch.Tensor
    value: float


def min_angle(W: torch.Tensor) -> float:
    """The smallest pairwise angle (radians) between the rows of ``W`` (normalised first;
    ``K >= 2``): the Tammes objective."""
    w = _unit(W, "min_angle")
    cos = w @ w.T
    cos.fill_diagonal_(-math.inf)
    return float(torch.arccos(cos.max().clamp(-1.0, 1.0)))


def etf_code(num_classes: int, dim: int, *, seed: int | None = None) -> Code:
    """The unit simplex ETF (``d >= K − 1``; :func:`~ncscope.ufm.simplex_etf`), the softmax and
    Tammes code there; ``value = min_k ρ_k = K/(K−1)``."""
    W = simplex_etf(num_classes, dim, seed=seed)
    return Code(W, min_margin(W))


def polygon_code(num_classes: int, *, phase: float = 0.0) -> Code:
    """The regular K-gon in the plane (d = 2): ``w_k = (cos θ_k, sin θ_k)``, ``θ_k = phase +
    2πk/K``, the softmax and Tammes code for d = 2; ``value = 1 − cos(2π/K)``."""
    k = check_int("polygon_code", "num_classes", num_classes, 2)
    phase = check_real("polygon_code", "phase", phase)
    theta = phase + 2.0 * math.pi * torch.arange(k, dtype=DTYPE) / k
    W = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return Code(W, min_margin(W))


def tammes_code(
    num_classes: int,
    dim: int,
    *,
    restarts: int = 2,
    max_iter: int = 3000,
    temperature: tuple[float, float] = (10.0, 1e5),
    seed: int = 0,
) -> Code:
    """Maximise the smallest pairwise angle of K unit vectors in ℝ^d (the Tammes problem).

    Smoothed largest cosine with an annealed temperature and Riemannian Armijo descent from
    ``restarts`` random starts (module docstring). ``value``: the minimal angle in radians.
    """
    k, d, iters, temps = _check("tammes_code", num_classes, dim, max_iter, temperature)
    restarts = check_int("tammes_code", "restarts", restarts, 1)
    iu = torch.triu_indices(k, k, 1)

    def smooth_max_cos(xs: list[torch.Tensor], tau: float) -> torch.Tensor:
        w = xs[0]
        return torch.logsumexp(tau * (w @ w.T)[iu[0], iu[1]], dim=0) / tau

    best: Code | None = None
    for r in range(restarts):
        g = torch.Generator().manual_seed(seed * 1_000_003 + r)
        w0 = F.normalize(torch.randn(k, d, generator=g, dtype=DTYPE), dim=1)
        (w,) = _anneal(smooth_max_cos, [w0], temps, iters)
        value = min_angle(w)
        if best is None or value > best.value:
            best = Code(w, value)
    assert best is not None
    return best


def softmax_code(
    num_classes: int,
    dim: int,
    *,
    restarts: int = 2,
    max_iter: int = 3000,
    polish_iter: int = 200,
    temperature: tuple[float, float] = (5.0, 1e4),
    seed: int = 0,
    init: torch.Tensor | str | None = "tammes",
) -> Code:
    """Maximise ``min_k ρ_k(W)`` over K unit vectors in ℝ^d (a softmax code).

    Each random start (``restarts`` of them) runs phase 1, ``max_iter`` steps of the smooth
    hardmax problem in ``(W, U)`` with the temperature annealed over ``temperature``; then every
    candidate runs phase 2, at most ``polish_iter`` trust-region LP steps on the exact
    ``min_k ρ_k`` (module docstring), which never lower it. ``init``: a (K, d) code to polish as
    one more candidate, ``"tammes"`` (default) for :func:`tammes_code` ``(K, d, seed=seed)``, or
    ``None``. So ``value >= min_margin(init)``; ``value`` is the exact ``min_k ρ_k`` of the best.
    """
    k, d, iters, temps = _check("softmax_code", num_classes, dim, max_iter, temperature)
    restarts = check_int("softmax_code", "restarts", restarts, 0 if init is not None else 1)
    polish = check_int("softmax_code", "polish_iter", polish_iter, 0)
    off = ~torch.eye(k, dtype=torch.bool)

    def soft_neg_min_margin(xs: list[torch.Tensor], tau: float) -> torch.Tensor:
        w, u = xs
        margins = (w * u).sum(dim=1, keepdim=True) - u @ w.T  # ⟨w_k − w_j, u_k⟩ at [k, j]
        return torch.logsumexp(-tau * margins[off], dim=0) / tau

    candidates = []
    if isinstance(init, str):
        if init != "tammes":
            raise ValueError(f"softmax_code: init must be a (K, d) tensor, 'tammes' or None; "
                             f"got {init!r}")
        candidates.append(tammes_code(k, d, seed=seed).W)
    elif init is not None:
        w0 = _unit(init, "softmax_code")
        if w0.shape != (k, d):
            raise ValueError(f"softmax_code: init must have shape ({k}, {d}); got "
                             f"{tuple(w0.shape)}")
        candidates.append(w0)
    for r in range(restarts):
        g = torch.Generator().manual_seed(seed * 1_000_003 + r)
        w0 = F.normalize(torch.randn(k, d, generator=g, dtype=DTYPE), dim=1)
        candidates.append(_anneal(soft_neg_min_margin, [w0, w0.clone()], temps, iters)[0])
    best: Code | None = None
    for w in candidates:
        w = _polish(w, polish)
        value = min_margin(w, normalize=False)
        if best is None or value > best.value:
            best = Code(w, value)
    assert best is not None
    return best


# ---------------------------------------------------------------------------- helpers
def _unit(W: torch.Tensor, owner: str) -> torch.Tensor:
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.shape[0] < 2:
        raise ValueError(f"{owner}: W must be a (K, d) tensor with K >= 2 rows")
    w = W.detach().to("cpu", DTYPE)
    norms = torch.linalg.vector_norm(w, dim=1)
    if not bool(torch.isfinite(w).all()) or bool((norms == 0).any()):
        raise ValueError(f"{owner}: W must be finite with no zero row")
    return w / norms[:, None]


def _check(owner: str, num_classes: int, dim: int, max_iter: int,
           temperature: tuple[float, float]) -> tuple[int, int, int, list[float]]:
    k = check_int(owner, "num_classes", num_classes, 2)
    d = check_int(owner, "dim", dim, 1)
    iters = check_int(owner, "max_iter", max_iter, 1)
    if not (isinstance(temperature, tuple | list) and len(temperature) == 2):
        raise TypeError(f"{owner}: temperature must be a pair (start, end), got {temperature!r}")
    t0 = check_real(owner, "temperature[0]", temperature[0], 0.0, strict_low=True)
    t1 = check_real(owner, "temperature[1]", temperature[1], 0.0, strict_low=True)
    temps = [t0 * (t1 / t0) ** (i / max(iters - 1, 1)) for i in range(iters)]
    return k, d, iters, temps


def _trial_step(f: Callable[[list[torch.Tensor], float], torch.Tensor], tau: float,
                xs: list[torch.Tensor], grads: list[torch.Tensor], step: float,
                ) -> tuple[float, list[torch.Tensor]]:
    """``f`` after the retracted step ``−step·grads`` on every sphere, and the new points."""
    new = [retract(x, -step * g) for x, g in zip(xs, grads, strict=True)]
    return float(f(new, tau)), new


def _anneal(f: Callable[[list[torch.Tensor], float], torch.Tensor], xs: list[torch.Tensor],
            temps: list[float], iters: int) -> list[torch.Tensor]:
    """Riemannian Armijo descent of ``f(xs, τ)`` on products of spheres, τ following ``temps``
    (one step per temperature; the step grows ×2 after each accepted step)."""
    t = 0.1
    for it in range(iters):
        tau = temps[it]
        leaves = [x.detach().requires_grad_() for x in xs]
        val = f(leaves, tau)
        grads = torch.autograd.grad(val, leaves)
        rg = [riemannian_grad(x.detach(), gr) for x, gr in zip(leaves, grads, strict=True)]
        sq = float(sum(g.pow(2).sum() for g in rg))
        if sq == 0.0:
            continue
        trial = functools.partial(_trial_step, f, tau, [x.detach() for x in leaves], rg)
        with torch.no_grad():
            found = armijo_backtrack(trial, float(val), sq, 2.0 * t, _MAX_HALVINGS)
        if found is not None:
            t, _, xs = found
    return [x.detach() for x in xs]


def _tangent_bases(w: torch.Tensor) -> torch.Tensor:
    """(K, d−1, d): orthonormal bases of the tangent spaces ``w_i^⊥`` (rows)."""
    _, _, vh = torch.linalg.svd(w[:, None, :], full_matrices=True)
    return vh[:, 1:, :]


def _polish(w: torch.Tensor, iters: int, radius: float = 0.05) -> torch.Tensor:
    """Sequential linear programming on ``max min_k ρ_k`` with a trust region.

    At each step the exact ``ρ_k`` and their Danskin gradients (``∂ρ_k/∂w_k = −x_k/ρ_k``,
    ``∂ρ_k/∂w_j = λ_kj x_k/ρ_k``) give the LP ``max t s.t. ρ_k + ⟨∇ρ_k, Δ⟩ >= t`` over tangent
    steps ``Δ`` with ``|Δ|_∞ <= r`` in tangent coordinates (HiGHS via ``scipy.optimize.linprog``);
    the step is retracted and kept when the exact minimum grows, and ``r`` adapts to the ratio
    of actual to predicted gain.
    """
    if iters == 0:
        return w
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    k, d = w.shape
    if d < 2:
        return w
    sol = one_vs_rest(w, normalize=False)
    r = radius
    for _ in range(iters):
        m = float(sol.rho.min())
        if m <= 0.0 or r < 1e-12:
            break
        basis = _tangent_bases(w)  # (K, d−1, d)
        closest = sol.closest(w)
        rows, cols, vals = [], [], []
        for c in range(k):
            x = (closest[c] - w[c]) / sol.rho[c]  # unit; ∇_{w_c} ρ_c = −x
            idx = torch.cat([torch.tensor([c]), sol.support[c]])
            coef = torch.cat([-torch.ones(1, dtype=DTYPE), sol.weights[c]])
            g = coef[:, None, None] * (basis[idx] @ x)[:, :, None]  # (m, d−1, 1)
            for i, gi in zip(idx.tolist(), g[:, :, 0], strict=True):
                rows.extend([c] * (d - 1))
                cols.extend(range(i * (d - 1), (i + 1) * (d - 1)))
                vals.extend((-gi).tolist())  # −⟨∇ρ_c, Δ⟩ + t <= ρ_c
        nv = k * (d - 1)
        rows.extend(range(k))
        cols.extend([nv] * k)
        vals.extend([1.0] * k)
        a_ub = coo_matrix((vals, (rows, cols)), shape=(k, nv + 1)).tocsr()
        cost = [0.0] * nv + [-1.0]
        bounds = [(-r, r)] * nv + [(None, None)]
        lp = linprog(cost, A_ub=a_ub, b_ub=sol.rho.numpy(), bounds=bounds, method="highs")
        if lp.status != 0:
            break
        predicted = -lp.fun - m
        if predicted <= 1e-13:
            break
        a = torch.from_numpy(lp.x[:nv]).view(k, d - 1, 1)
        step = (basis.transpose(1, 2) @ a)[:, :, 0]
        w2 = retract(w, step)
        sol2 = one_vs_rest(w2, normalize=False, warm=sol)
        actual = float(sol2.rho.min()) - m
        if actual > 0.0:
            w, sol = w2, sol2
            if actual > 0.75 * predicted:
                r = min(2.0 * r, 1.0)
        else:
            r *= 0.25
    return w

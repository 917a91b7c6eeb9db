"""The ImageStar set representation (Tran, Bak, Xiang & Johnson, CAV 2020), as used by the
relaxed reachability of Tran et al., CAV 2021.

An ImageStar is ``Θ = {c + Σ_i α_i V_i : C α ≤ d, α_lb ≤ α ≤ α_ub}`` with a centre ``c`` of the
shape of one layer's output (``(C, H, W)`` or ``(n,)``), ``m`` generators ``V_i`` of the same
shape and a predicate on the ``m`` variables ``α``: linear constraints ``C α ≤ d`` and a box.
Everything is float64 (numerics of the bounds). Bounds of the set, per element:

* *estimated* bounds (the CAV 2021 paper's relaxed reachability, NNV's ``estimateRanges``): the
  interval of ``c + Σ α_i V_i`` over the predicate's box only — cheap, sound, looser;
* *LP-optimised* bounds: ``min`` / ``max`` of one element over the whole predicate, one linear
  programme each (``scipy.optimize.linprog(method="highs")``); every LP is counted in
  :class:`ReachStats`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linprog

__all__ = ["ImageStar", "ReachStats", "lp_extreme"]


@dataclass
class ReachStats:
    """Work done by a reachability computation: LPs solved, their seconds, and per ReLU layer
    the number of crossing neurons and of neurons given LP-optimised bounds."""

    lps: int = 0
    lp_seconds: float = 0.0
    crossing: list[int] = field(default_factory=list)
    optimised: list[int] = field(default_factory=list)


def lp_extreme(obj: np.ndarray, const: float, star: ImageStar, maximise: bool,
               stats: ReachStats | None = None) -> float:
    """``min`` (or ``max``) of ``const + obj · α`` over the predicate of ``star`` by one HiGHS
    LP. Raises ``RuntimeError`` when HiGHS reports anything but an optimum (an empty predicate
    cannot arise from the sets and layers here)."""
    t0 = time.perf_counter()
    sign = -1.0 if maximise else 1.0
    a_ub = star.C if star.C.shape[0] else None
    b_ub = star.d if star.C.shape[0] else None
    res = linprog(sign * obj, A_ub=a_ub, b_ub=b_ub,
                  bounds=np.stack([star.lb, star.ub], axis=1), method="highs")
    if stats is not None:
        stats.lps += 1
        stats.lp_seconds += time.perf_counter() - t0
    if res.status != 0:
        raise RuntimeError(f"ncscope.verify: HiGHS LP failed ({res.message}); the predicate of "
                           "the star is infeasible or unbounded")
    return float(const + sign * res.fun)


@dataclass
class ImageStar:
    """``{c + Σ_i α_i V_i : C α ≤ d, lb ≤ α ≤ ub}`` (Tran et al., CAV 2021).

    Attributes:
        c: centre, a float64 tensor of the element shape (e.g. ``(C, H, W)``).
        V: generators, float64 tensor ``(m, *shape)``.
        C, d: predicate constraints ``C α ≤ d`` (numpy, ``(p, m)`` and ``(p,)``; ``p`` may be 0).
        lb, ub: the predicate's box (numpy ``(m,)``).
    """

    c: torch.Tensor
    V: torch.Tensor
    C: np.ndarray
    d: np.ndarray
    lb: np.ndarray
    ub: np.ndarray

    def __post_init__(self) -> None:
        m = self.V.shape[0]
        if self.V.shape[1:] != self.c.shape:
            raise ValueError(f"ImageStar: generators of shape {tuple(self.V.shape[1:])} do not "
                             f"match the centre's {tuple(self.c.shape)}; give V as (m, *c.shape)")
        if self.C.shape != (self.C.shape[0], m) or self.d.shape != (self.C.shape[0],):
            raise ValueError(f"ImageStar: C must be (p, {m}) and d (p,); got {self.C.shape} and "
                             f"{self.d.shape}")
        if self.lb.shape != (m,) or self.ub.shape != (m,) or bool(np.any(self.lb > self.ub)):
            raise ValueError(f"ImageStar: lb and ub must be ({m},) with lb <= ub")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one element of the set."""
        return tuple(self.c.shape)

    @property
    def num_vars(self) -> int:
        """Number of predicate variables ``m``."""
        return int(self.V.shape[0])

    def matrix(self) -> np.ndarray:
        """Generators as a numpy ``(m, n)`` matrix (a view, flattened elements)."""
        return self.V.reshape(self.num_vars, self.c.numel()).numpy()

    def estimate_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Estimated bounds (flattened): the interval of ``c + Σ α_i V_i`` over the box
        ``lb ≤ α ≤ ub`` (the constraints ``C α ≤ d`` ignored; sound)."""
        v = self.matrix()
        c = self.c.reshape(-1).numpy()
        pos, neg = np.clip(v, 0, None), np.clip(v, None, 0)
        return c + pos.T @ self.lb + neg.T @ self.ub, c + pos.T @ self.ub + neg.T @ self.lb

    def lp_bounds(self, index: int, stats: ReachStats | None = None) -> tuple[float, float]:
        """LP-optimised ``(min, max)`` of flattened element ``index`` (two LPs)."""
        obj = self.matrix()[:, index]
        const = float(self.c.reshape(-1)[index])
        return (lp_extreme(obj, const, self, False, stats),
                lp_extreme(obj, const, self, True, stats))

    def bounds(self, method: str = "estimate", stats: ReachStats | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Flattened bounds of every element: ``"estimate"`` (box interval) or ``"lp"`` (two
        LPs per element whose estimated interval has positive width)."""
        lo, hi = self.estimate_bounds()
        if method == "estimate":
            return lo, hi
        if method != "lp":
            raise ValueError(f"bounds: method={method!r} is not known; use 'estimate' or 'lp'")
        for i in np.flatnonzero(hi > lo):
            a, b = self.lp_bounds(int(i), stats)
            lo[i], hi[i] = max(lo[i], a), min(hi[i], b)
        return lo, hi

    def sample(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """``n`` elements of the set (``(n, *shape)``): the box's corners where ``m`` is small
        enough (at most ``n // 2`` of them), the rest uniform in the box. Only for a predicate
        without constraints (the input sets), where every box point belongs to the set."""
        if self.C.shape[0]:
            raise ValueError("ImageStar.sample: the predicate has constraints; sample the input "
                             "set (a box predicate) and propagate points through the network")
        m = self.num_vars
        alpha = rng.uniform(self.lb, self.ub, size=(n, m))
        if m and 2 ** m <= n // 2:
            corners = (np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1
            alpha[: 2 ** m] = np.where(corners == 1, self.ub, self.lb)
        a = torch.from_numpy(alpha)
        return self.c.unsqueeze(0) + torch.tensordot(a, self.V, dims=([1], [0]))

    def points(self, alpha: np.ndarray) -> torch.Tensor:
        """Elements ``c + Σ α_i V_i`` for rows of ``alpha`` (``(n, m)``)."""
        a = torch.as_tensor(alpha, dtype=torch.float64)
        return self.c.unsqueeze(0) + torch.tensordot(a, self.V, dims=([1], [0]))

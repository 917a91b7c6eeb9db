"""The approx-star ReLU with a relaxation factor (Tran et al., CAV 2021: relaxed
reachability).

For ``y = ReLU(x)`` over a star with element bounds ``l ≤ x ≤ u``:

* ``u ≤ 0``: ``y = 0`` (the element's centre and generators are zeroed);
* ``l ≥ 0``: ``y = x`` (unchanged);
* crossing (``l < 0 < u``): a new predicate variable ``β`` with ``β ≥ 0``, ``β ≥ x`` and
  ``β ≤ u (x − l) / (u − l)`` (the triangle relaxation), and ``y = β``; its box is ``[0, u]``.

The bounds ``l, u`` start as the *estimated* bounds (the predicate's box). The relaxation
factor ``rF ∈ [0, 1]`` sets how many crossing neurons get LP-optimised bounds instead:
``n1 = round((1 − rF) · #crossing)``, chosen by a heuristic — ``"area"`` (largest triangle
area ½·|l|·u), ``"range"`` (largest u − l), ``"bound"`` (largest max(u, |l|)) or ``"random"``
(seeded). ``rF = 0`` is the (LP-optimised) approx-star; ``rF = 1`` solves no LP.
"""

from __future__ import annotations

import numpy as np
import torch

from ncscope.verify.star import ImageStar, ReachStats

__all__ = ["HEURISTICS", "choose_neurons", "relu_step"]

HEURISTICS = ("area", "range", "bound", "random")


def choose_neurons(lo: np.ndarray, hi: np.ndarray, n1: int, heuristic: str,
                   rng: np.random.Generator) -> np.ndarray:
    """Indices (into ``lo`` / ``hi``, the crossing neurons' estimated bounds) of the ``n1``
    neurons that get LP-optimised bounds under ``heuristic``."""
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic={heuristic!r} is not known; use one of "
                         f"{', '.join(HEURISTICS)}")
    k = lo.size
    n1 = min(max(n1, 0), k)
    if n1 == 0:
        return np.zeros(0, dtype=int)
    if heuristic == "random":
        return np.sort(rng.choice(k, size=n1, replace=False))
    score = {"area": 0.5 * np.abs(lo) * hi, "range": hi - lo,
             "bound": np.maximum(hi, np.abs(lo))}[heuristic]
    return np.sort(np.argsort(-score, kind="stable")[:n1])


def relu_step(star: ImageStar, rf: float, heuristic: str, rng: np.random.Generator,
              stats: ReachStats) -> ImageStar:
    """The approx-star image of ``star`` under ReLU with relaxation factor ``rf``."""
    if not 0 <= rf <= 1:
        raise ValueError(f"relaxation factor rF={rf} must lie in [0, 1]")
    lo, hi = star.estimate_bounds()
    cross = np.flatnonzero((lo < 0) & (hi > 0))
    n1 = int(round((1 - rf) * cross.size))
    chosen = cross[choose_neurons(lo[cross], hi[cross], n1, heuristic, rng)]
    for i in chosen:
        a, b = star.lp_bounds(int(i), stats)
        lo[i], hi[i] = max(lo[i], a), min(hi[i], b)
    stats.crossing.append(int(cross.size))
    stats.optimised.append(int(chosen.size))

    v = star.matrix()
    c = star.c.reshape(-1).numpy()
    n, m = c.size, star.num_vars
    inactive = hi <= 0
    cross = np.flatnonzero((lo < 0) & (hi > 0))
    k = cross.size
    keep = ~inactive
    keep[cross] = False
    new_c = np.where(keep, c, 0.0)
    new_v = np.zeros((m + k, n))
    new_v[:m] = v * keep[None, :]
    new_v[m + np.arange(k), cross] = 1.0
    # Constraints: old rows padded; β ≥ x and β ≤ a (x − l) with a = u / (u − l).
    l_c, u_c = lo[cross], hi[cross]
    a = u_c / (u_c - l_c)
    vs = v[:, cross].T  # (k, m): x_s = c_s + vs α
    rows_ge = np.hstack([vs, -np.eye(k)])
    rows_le = np.hstack([-a[:, None] * vs, np.eye(k)])
    C = np.vstack([np.hstack([star.C, np.zeros((star.C.shape[0], k))]), rows_ge, rows_le])
    d = np.concatenate([star.d, -c[cross], a * (c[cross] - l_c)])
    shape = star.shape
    return ImageStar(torch.from_numpy(new_c).reshape(shape),
                     torch.from_numpy(new_v).reshape(m + k, *shape), C, d,
                     np.concatenate([star.lb, np.zeros(k)]),
                     np.concatenate([star.ub, u_c]))

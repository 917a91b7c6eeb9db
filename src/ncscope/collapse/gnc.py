"""Generalized Neural Collapse (GNC) for many classes: one-vs-rest margins and the GNC metrics.

When ``K > d + 1`` a simplex ETF cannot exist. Jiang, Zhou, Wang, Qu, Mixon, You & Zhu,
"Generalized Neural Collapse for a Large Number of Classes" (arXiv 2310.05351) describe what
the last layer converges to instead:

* **GNC1**: within-class collapse of the L2-normalised features ``ĥ = h / ‖h‖``;
* **GNC2**: the classifier rows (normalised to unit norm, the paper's spherical setting) form
  a *softmax code*, maximising the minimal **one-vs-rest distance** (their Def. 2.1)::

      ρ_k(W) = dist(w_k, conv{w_j : j ≠ k}) = min_{λ ∈ Δ} ‖w_k − Σ_{j≠k} λ_j w_j‖;

* **GNC3**: the rows align with the (normalised, centred) class means.

:func:`one_vs_rest` computes every ``ρ_k`` exactly: it is the minimum-norm point of the
polytope ``conv{p_j = w_j − w_k : j ≠ k}``, found by **Wolfe's algorithm** (P. Wolfe, "Finding
the nearest point in a polytope", Math. Programming 11, 1976), a finite active-set method for
exactly this QP over the (K−1)-simplex. Each class ends with a **certificate**: for the point
``x = Σ λ_j p_j`` returned (``‖x‖ = ρ_k``), the Wolfe dual gap of the QP
``min_{λ∈Δ} ½‖Pλ‖²``, whose Lagrangian dual is ``max_u −½‖u‖² + min_j ⟨p_j, u⟩``, is::

    gap_k = ‖x‖² − min_j ⟨p_j, x⟩  ≥ 0,

zero exactly at the optimum; the solver stops when ``gap_k ≤ tol · max_j ‖w_j‖²`` (``tol``
itself for unit rows; default 1e-9). The gap also brackets ρ_k: every unit ``u`` gives the
lower bound ``min_j ⟨p_j, u⟩ ≤ ρ_k`` (a separating hyperplane, the max-min margin form that the
paper's code maximises by subgradient steps), and ``u = x/‖x‖`` gives
``ρ_k − gap_k/‖x‖ ≤ ρ_k ≤ ‖x‖`` (:attr:`OneVsRest.lower`). Each step costs one ``K×r``
matrix-vector product (``r = min(d, K)``; rows are first mapped isometrically to ``ℝ^r``) and
one least-squares solve on the active set (at most ``r + 1`` points: Carathéodory).

The GNC metrics registered in the NC engine (every layer / source / epoch where defined):

* ``gnc1`` / ``gnc1_over_k``: ``nc1`` / ``nc1_over_k`` of the normalised features, streamed
  exactly like NC1 (normalised class-mean sums in pass 1, a second K×K projected scatter in
  pass 2; see :mod:`ncscope.collapse.measure`);
* ``gnc2``: ``min_k ρ_k`` of the classifier rows normalised to unit norm; ``rho``: the per-class
  ``ρ_k`` (rows with a ``class`` column);
* ``gnc3``: ``mean_k (1 − cos(w_k, μ̂_k − μ̂_G))`` with ``μ̂`` the class / global means of the
  normalised reference features (as the paper's code).

Classes without reference samples are left out (their rows too), as for every NC metric.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ncscope.collapse.registry import NCView, register_metric

__all__ = [
    "OneVsRest",
    "gnc1",
    "gnc2",
    "gnc3",
    "min_margin",
    "one_vs_rest",
    "one_vs_rest_generic",
    "one_vs_rest_margins",
]

JIANG = "Jiang, Zhou, Wang, Qu, Mixon, You & Zhu, arXiv 2310.05351"
DEFAULT_TOL = 1e-9
_OWNER = "one_vs_rest"
_CACHE_SIZE = 16
_COND = 1e-10  # smallest pivot² / largest diagonal of the lifted Gram before least squares
_CACHE: OrderedDict[tuple, OneVsRest] = OrderedDict()


@dataclass(frozen=True)
class OneVsRest:
    """The one-vs-rest distances of the rows of a (K, d) matrix, with certificates.

    Attributes:
        rho: (K,) float64 ``ρ_k = dist(w_k, conv{w_j : j ≠ k})`` (of the normalised rows when
            ``normalize=True``).
        lower: (K,) certified lower bounds ``max(0, min_j ⟨p_j, x⟩ / ‖x‖)`` (``= rho`` up to
            ``gap/‖x‖``).
        gap: (K,) Wolfe dual gaps ``‖x‖² − min_j ⟨p_j, x⟩`` (squared-distance units).
        support / weights: per class, the row indices ``j`` and the convex weights ``λ_j``
            (summing to 1) of the nearest point of the hull of the other rows.
        iterations: (K,) int64 major iterations of Wolfe's algorithm.
        tol: the absolute gap tolerance used (``tol · max_j ‖w_j‖²``).
    """

    rho: torch.Tensor
    lower: torch.Tensor
    gap: torch.Tensor
    support: tuple[torch.Tensor, ...]
    weights: tuple[torch.Tensor, ...]
    iterations: torch.Tensor
    tol: float

    @property
    def certified(self) -> bool:
        """Whether every class met the gap tolerance."""
        return bool((self.gap <= self.tol).all())

    @property
    def min(self) -> float:
        """``min_k ρ_k`` (GNC2 of the rows)."""
        return float(self.rho.min())

    def closest(self, W: torch.Tensor) -> torch.Tensor:
        """(K, d) nearest points ``Σ_j λ_j w_j`` of the hulls, for the rows ``W`` that were
        solved (pass the normalised rows when ``normalize=True`` was used)."""
        out = torch.zeros(W.shape, dtype=torch.float64)
        w = W.detach().to("cpu", torch.float64)
        for k, (s, lam) in enumerate(zip(self.support, self.weights, strict=True)):
            out[k] = lam @ w[s]
        return out


# ---------------------------------------------------------------------------- the solver
def _affine_min(P: np.ndarray) -> np.ndarray:
    """Weights ``α`` (Σα = 1) of the minimum-norm point of the affine hull of the rows of P.

    KKT: ``PPᵀα = μ1, 1ᵀα = 1``, so ``(PPᵀ + 11ᵀ) α ∝ 1`` — the Gram of the lifted points
    ``(1, p_j)``, positive definite when the points are affinely independent (Wolfe 1976).
    Nearly dependent points fall back to a least-squares solve in ℝ^r.
    """
    m = P.shape[0]
    if m == 1:
        return np.ones(1)
    M = P @ P.T + 1.0
    try:
        L = np.linalg.cholesky(M)
        d = L.diagonal()
        if d.min() ** 2 > _COND * M.diagonal().max():
            v = np.linalg.solve(M, np.ones(m))
            return v / v.sum()
    except np.linalg.LinAlgError:
        pass
    D = (P[1:] - P[0]).T  # r × (m−1); α = (1 − Σβ, β) with β = argmin ‖p_0 + Dβ‖
    beta = np.linalg.lstsq(D, -P[0], rcond=None)[0]
    return np.concatenate(([1.0 - beta.sum()], beta))


def _minor(X: np.ndarray, xk: np.ndarray, S: np.ndarray, lam: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Wolfe's minor cycle: move from the feasible ``λ`` on ``S`` towards the affine minimiser
    of ``S``, dropping the points whose weight reaches zero, until it lies inside the hull."""
    while True:
        alpha = _affine_min(X[S] - xk)
        if alpha.min() > 0.0:
            return S, alpha
        neg = alpha <= 0.0
        den = lam[neg] - alpha[neg]
        ratio = np.where(den > 0.0, lam[neg] / np.where(den > 0.0, den, 1.0), 0.0)
        theta = min(1.0, float(ratio.min()))
        lam = lam + theta * (alpha - lam)
        block = np.flatnonzero(neg)[int(np.argmin(ratio))]
        lam[block] = 0.0
        keep = lam > 0.0
        S, lam = S[keep], lam[keep]
        lam = lam / lam.sum()


def _wolfe(X: np.ndarray, k: int, tol_abs: float, max_iter: int,
           start: tuple[np.ndarray, np.ndarray] | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Minimum-norm point of conv{X_j − X_k : j ≠ k}: ``(S, λ, x, gap, iterations)``."""
    xk = X[k]
    if start is None:
        d2 = np.einsum("ij,ij->i", X - xk, X - xk)
        d2[k] = np.inf
        S = np.array([int(np.argmin(d2))])
        lam = np.ones(1)
    else:
        S, lam = start
        S, lam = _minor(X, xk, S, lam / lam.sum())
    x = lam @ (X[S] - xk)
    it = 0
    while True:
        s = X @ x
        s -= s[k]  # ⟨p_j, x⟩ = ⟨w_j, x⟩ − ⟨w_k, x⟩
        s[k] = np.inf
        j = int(np.argmin(s))
        gap = float(x @ x - s[j])
        if gap <= tol_abs or it >= max_iter or j in S:  # j ∈ S: rounding level reached
            return S, lam, x, max(gap, 0.0), it
        S1, lam1 = _minor(X, xk, np.append(S, j), np.append(lam, 0.0))
        if j not in S1:  # the new point dropped at once: no descent left in float64
            return S, lam, x, max(gap, 0.0), it
        S, lam = S1, lam1
        x = lam @ (X[S] - xk)
        it += 1


def _as_rows(W: torch.Tensor | np.ndarray, normalize: bool) -> np.ndarray:
    if isinstance(W, torch.Tensor):
        w = W.detach().to("cpu", torch.float64).numpy()
    elif isinstance(W, np.ndarray):
        w = np.asarray(W, dtype=np.float64)
    else:
        raise TypeError(f"{_OWNER}: W must be a torch.Tensor or numpy array, got "
                        f"{type(W).__name__}")
    if w.ndim != 2 or w.shape[0] < 2 or w.shape[1] < 1:
        raise ValueError(f"{_OWNER}: W must be (K, d) with K >= 2 rows and d >= 1; got shape "
                         f"{tuple(w.shape)}")
    if not np.isfinite(w).all():
        raise ValueError(f"{_OWNER}: W contains NaN/Inf entries")
    if normalize:
        norms = np.linalg.norm(w, axis=1)
        zero = np.flatnonzero(norms == 0.0)
        if zero.size:
            raise ValueError(f"{_OWNER}: row {int(zero[0])} of W is zero and has no direction "
                             "to normalise (pass normalize=False for raw distances)")
        w = w / norms[:, None]
    return w


def one_vs_rest(
    W: torch.Tensor | np.ndarray,
    *,
    normalize: bool = True,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    warm: OneVsRest | None = None,
) -> OneVsRest:
    """Exact one-vs-rest distances ``ρ_k = dist(w_k, conv{w_j : j ≠ k})`` of the rows of W.

    Args:
        W: (K, d) rows (K >= 2, finite). ``normalize=True`` (default, the paper's spherical
            setting) first scales every row to unit norm (a zero row is then an error).
        tol: gap tolerance relative to ``max_j ‖w_j‖²`` (see the module docstring).
        max_iter: major iterations per class (default ``10 (K + r)``).
        warm: a previous result for rows near these (e.g. the previous step of an optimiser):
            each class starts from its previous active set (same answer, fewer iterations).

    Returns:
        :class:`OneVsRest` (float64 CPU tensors). Raises a one-line ``ValueError`` /
        ``TypeError`` for bad input.
    """
    if not (isinstance(tol, float | int) and not isinstance(tol, bool) and tol > 0):
        raise ValueError(f"{_OWNER}: tol must be a positive number, got {tol!r}")
    w = _as_rows(W, normalize)
    K, d = w.shape
    X = w
    if d > K:  # an isometric copy in ℝ^K: Wᵀ = QR keeps every inner product
        X = np.linalg.qr(w.T, mode="reduced")[1].T.copy()
    r = X.shape[1]
    scale = float(np.einsum("ij,ij->i", w, w).max())
    tol_abs = float(tol) * (scale if scale > 0 else 1.0)
    iters = 10 * (K + r) if max_iter is None else int(max_iter)
    if warm is not None and len(warm.support) != K:
        warm = None
    rho = np.empty(K)
    lower = np.empty(K)
    gap = np.empty(K)
    its = np.empty(K, dtype=np.int64)
    support: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for k in range(K):
        start = None
        if warm is not None:
            s0 = warm.support[k].numpy()
            l0 = warm.weights[k].numpy()
            ok = (s0 != k) & (l0 > 0)
            if ok.any():
                start = (s0[ok].copy(), l0[ok].copy())
        S, lam, x, g, it = _wolfe(X, k, tol_abs, iters, start)
        rho[k] = math.sqrt(float(x @ x))
        gap[k] = g
        lower[k] = max(0.0, rho[k] - g / rho[k]) if rho[k] > 0 else 0.0
        its[k] = it
        order = np.argsort(S)
        support.append(torch.from_numpy(S[order].astype(np.int64)))
        weights.append(torch.from_numpy(lam[order].copy()))
    return OneVsRest(torch.from_numpy(rho), torch.from_numpy(lower), torch.from_numpy(gap),
                     tuple(support), tuple(weights), torch.from_numpy(its), tol_abs)


def one_vs_rest_margins(W: torch.Tensor | np.ndarray, *, normalize: bool = True,
                        tol: float = DEFAULT_TOL) -> torch.Tensor:
    """(K,) float64 ``ρ_k(W)`` for every row (see :func:`one_vs_rest`)."""
    return one_vs_rest(W, normalize=normalize, tol=tol).rho


def min_margin(W: torch.Tensor | np.ndarray, *, normalize: bool = True,
               tol: float = DEFAULT_TOL) -> float:
    """``min_k ρ_k(W)``: the softmax-code objective (GNC2 of the unit-normalised rows)."""
    return one_vs_rest(W, normalize=normalize, tol=tol).min


def one_vs_rest_generic(W: np.ndarray, k: int, *, max_iter: int = 2000) -> float:
    """ρ_k by a generic solver — scipy's SLSQP on ``min λᵀGλ − 2cᵀλ + ‖w_k‖²`` over the
    simplex (``λ ≥ 0, Σλ = 1``; ``G``, ``c`` the Gram of the other rows and their products
    with ``w_k``), raw rows, tight tolerance. Slow and uncertified: the reference the exact
    solver is tested and benchmarked against."""
    from scipy.optimize import minimize  # scipy only for this reference

    A = np.delete(W, k, axis=0)
    G, c, b = A @ A.T, A @ W[k], W[k]
    n = len(A)
    res = minimize(lambda lam: float(lam @ G @ lam - 2 * c @ lam + b @ b),
                   np.full(n, 1.0 / n), jac=lambda lam: 2 * (G @ lam - c), method="SLSQP",
                   bounds=[(0.0, None)] * n,
                   constraints=[{"type": "eq", "fun": lambda lam: lam.sum() - 1.0,
                                 "jac": lambda lam: np.ones_like(lam)}],
                   options={"ftol": 1e-16, "maxiter": max_iter})
    return math.sqrt(max(float(res.fun), 0.0))


def _cached(w: torch.Tensor) -> OneVsRest:
    """:func:`one_vs_rest` of unit rows, memoised on their bytes (every view of one sweep
    shares the classifier of its layer)."""
    a = w.detach().to("cpu", torch.float64).contiguous().numpy()
    key = (a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest())
    hit = _CACHE.get(key)
    if hit is None:
        hit = one_vs_rest(a, normalize=False)
        _CACHE[key] = hit
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return hit


# ---------------------------------------------------------------------------- the metrics
def _unit_rows(v: NCView) -> torch.Tensor | None:
    """The present classifier rows scaled to unit norm (``None``: no classifier, or a zero
    row, which has no direction)."""
    w = v.reference.weight
    if w is None:
        return None
    w = w[v.reference.present]
    norms = torch.linalg.vector_norm(w, dim=1)
    if bool((norms == 0).any()):
        return None
    return w / norms[:, None]


def gnc1(v: NCView) -> float | None:
    """NC1 (``Tr(Σ_W Σ_B⁺)``, the convention of ``nc1``) of the L2-normalised features."""
    ref = v.reference
    if ref.unit_rank is None:  # normalised means all equal (or no normalised sums)
        return None
    lam = ref.unit_evals[-ref.unit_rank:]
    vec = ref.unit_evecs[:, -ref.unit_rank:]
    a = (vec.T @ (v.measurement.unit_scatter / v.n) @ vec).diagonal()
    return float(ref.num_present * (a / lam.pow(2)).sum())


def gnc1_over_k(v: NCView) -> float | None:
    """``gnc1 / K`` (the 1/K of the paper's code, as ``nc1_over_k``)."""
    value = gnc1(v)
    return None if value is None else value / v.reference.num_present


def gnc2(v: NCView) -> float | None:
    """``min_k ρ_k`` of the unit-normalised classifier rows."""
    w = _unit_rows(v)
    return None if w is None else _cached(w).min


def rho(v: NCView) -> dict[int, float]:
    """Per present class ``ρ_k`` of the unit-normalised classifier rows."""
    w = _unit_rows(v)
    if w is None:
        return {}
    values = _cached(w).rho.tolist()
    return {int(c): values[i] for i, c in enumerate(v.reference.present.tolist())}


def gnc3(v: NCView) -> float | None:
    """``mean_k (1 − cos(w_k, μ̂_k − μ̂_G))`` over present classes."""
    w = v.reference.weight
    m = v.reference.unit_centred
    if w is None or m is None:
        return None
    w = w[v.reference.present]
    nw = torch.linalg.vector_norm(w, dim=1)
    nm = torch.linalg.vector_norm(m, dim=1)
    if bool((nw == 0).any() | (nm == 0).any()):
        return None
    cos = (w * m).sum(dim=1) / (nw * nm)
    return float((1.0 - cos).mean())


def register() -> None:
    """Register the GNC metrics (called once by :mod:`ncscope.collapse.metric_defs`)."""
    register_metric("gnc1", description="NC1 Tr(Σ_W Σ_B⁺) of the L2-normalised features h/‖h‖ "
                    "(normalised reference means; no 1/K, as nc1)",
                    citation=f"{JIANG} (GNC1)")(gnc1)
    register_metric("gnc1_over_k", description="gnc1 divided by K (the paper's code)",
                    citation=f"{JIANG} (GNC1)")(gnc1_over_k)
    register_metric("gnc2", description="min_k ρ_k: smallest one-vs-rest distance "
                    "dist(w_k, conv{w_j : j ≠ k}) of the unit-normalised classifier rows "
                    "(exact QP, Wolfe's algorithm)",
                    citation=f"{JIANG}, Def. 2.1 (one-vs-rest distance, softmax code)")(gnc2)
    register_metric("gnc3", description="mean_k (1 − cos(w_k, μ̂_k − μ̂_G)) with μ̂ the means "
                    "of the normalised reference features", citation=f"{JIANG} (GNC3)")(gnc3)
    register_metric("rho", description="per-class one-vs-rest distance ρ_k of the "
                    "unit-normalised classifier rows", citation=f"{JIANG}, Def. 2.1",
                    per_class=True)(rho)

"""Robustness verification on reachable sets (Tran et al., CAV 2021: classification, and
semantic segmentation with pixel classes and the metrics RV, RS and RIoU), and a sampling
check of soundness.

* Classification: the set is robust iff ``min (z_y − z_j) > 0`` over the output star for
  every ``j ≠ y`` — one LP per ``j`` whose interval (estimated) bound is not already positive.
* Pixel classification vs the clean prediction ``ŷ_p``: ``P_p = {c : ub_c(p) ≥ max_c' lb_c'(p)}``
  — *robust* if ``P_p = {ŷ_p}``, *unknown* if ``|P_p| > 1`` and ``ŷ_p ∈ P_p``, *misclassified*
  otherwise. The verified map holds ``ŷ_p`` at robust pixels, ``K`` (unknown) and ``K + 1``
  (misclassified) elsewhere.
* RV = #robust / #pixels; RS = (#misclassified + #unknown) / #attacked pixels; RIoU = mean over
  classes of IoU(ŷ, verified map), the two extra classes included, classes absent from both
  maps skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ncscope.verify.star import ImageStar, ReachStats, lp_extreme

__all__ = ["PixelVerdict", "margin_lower_bounds", "pixel_verdict", "riou", "soundness_violations",
           "verify_classification"]

ROBUST, UNKNOWN, MISCLASSIFIED = 0, 1, 2


def margin_lower_bounds(star: ImageStar, y: int, stats: ReachStats | None = None,
                        lp: bool = True, stop_early: bool = False) -> np.ndarray:
    """Lower bounds of ``z_y − z_j`` over the output star (``(K,)``, ``inf`` at ``j = y``):
    the interval bound, and the exact minimum over the star by LP where the interval bound is
    not already positive (``lp=True``). With ``stop_early`` the classes are taken in increasing
    interval bound and the LPs stop at the first non-positive minimum."""
    v = star.matrix()
    c = star.c.reshape(-1).numpy()
    obj = v[:, [y]] - v  # (m, K)
    const = c[y] - c
    out = const + np.clip(obj, 0, None).T @ star.lb + np.clip(obj, None, 0).T @ star.ub
    out[y] = np.inf
    if not lp or not star.num_vars:
        return out
    for j in np.argsort(out, kind="stable"):
        if j == y or out[j] > 0:
            continue
        out[j] = max(out[j], lp_extreme(obj[:, j], float(const[j]), star, False, stats))
        if stop_early and out[j] <= 0:
            break
    return out


def verify_classification(star: ImageStar, y: int, stats: ReachStats | None = None,
                          lp: bool = True) -> bool:
    """Robust iff ``min (z_y − z_j) > 0`` over the output star for every ``j ≠ y`` (the LPs
    stop at the first class that is not verified)."""
    return bool((margin_lower_bounds(star, y, stats, lp, stop_early=True) > 0).all())


@dataclass
class PixelVerdict:
    """Per-pixel verdicts (``0`` robust, ``1`` unknown, ``2`` misclassified), the verified
    map and the metrics RV, RS, RIoU of one image (Tran et al., CAV 2021)."""

    status: np.ndarray
    verified: np.ndarray
    rv: float
    rs: float
    riou: float

    @property
    def counts(self) -> dict[str, int]:
        """Numbers of robust, unknown and misclassified pixels."""
        return {name: int((self.status == code).sum()) for name, code in
                (("robust", ROBUST), ("unknown", UNKNOWN), ("misclassified", MISCLASSIFIED))}


def riou(pred: np.ndarray, verified: np.ndarray, num_classes: int) -> float:
    """Mean IoU of the verified map against the clean prediction over classes
    ``0 .. num_classes + 1`` (unknown and misclassified included) present in either map."""
    ious = []
    for c in range(num_classes + 2):
        a, b = pred == c, verified == c
        union = int((a | b).sum())
        if union:
            ious.append((a & b).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def pixel_verdict(lo: np.ndarray, hi: np.ndarray, pred: np.ndarray, n_attacked: int
                  ) -> PixelVerdict:
    """Pixel classification from output bounds ``lo, hi`` of shape ``(K, H, W)`` against the
    clean prediction ``pred`` ``(H, W)``; ``n_attacked`` is the number of attacked pixels
    (the denominator of RS)."""
    if lo.shape != hi.shape or lo.ndim != 3 or pred.shape != lo.shape[1:]:
        raise ValueError(f"pixel_verdict: bounds must be (K, H, W) and pred (H, W); got "
                         f"{lo.shape}, {hi.shape} and {pred.shape}")
    if n_attacked < 1:
        raise ValueError(f"pixel_verdict: n_attacked={n_attacked} must be >= 1")
    k = lo.shape[0]
    possible = hi >= lo.max(axis=0, keepdims=True)
    n_possible = possible.sum(axis=0)
    has_pred = np.take_along_axis(possible, pred[None].astype(int), axis=0)[0]
    status = np.where(has_pred & (n_possible == 1), ROBUST,
                      np.where(has_pred, UNKNOWN, MISCLASSIFIED))
    verified = np.where(status == ROBUST, pred, np.where(status == UNKNOWN, k, k + 1))
    rv = float((status == ROBUST).sum() / status.size)
    rs = float((status != ROBUST).sum() / n_attacked)
    return PixelVerdict(status, verified, rv, rs, riou(pred, verified, k))


def soundness_violations(layers: list[tuple[str, nn.Module]], inputs: ImageStar,
                         lo: np.ndarray, hi: np.ndarray, n: int, seed: int = 0,
                         tol: float = 1e-8) -> tuple[int, int]:
    """Sample ``n`` points of the input set (corners and uniform points of its box), run the
    real network (the float64 chain) on them and count outputs outside ``[lo − tol', hi +
    tol']`` (``tol' = tol · (1 + |bound|)``). Returns ``(violating samples, samples)``."""
    x = inputs.sample(n, np.random.default_rng(seed))
    with torch.no_grad():
        for _, module in layers:
            x = module(x)
    z = x.reshape(n, -1).numpy()
    bad = (z < lo - tol * (1 + np.abs(lo))) | (z > hi + tol * (1 + np.abs(hi)))
    return int(bad.any(axis=1).sum()), n

"""One-call NC metrics for features already in memory (a thin wrapper over NCStats)."""

from __future__ import annotations

import numpy as np
import torch

from ncscope.collapse._checks import as_tensor, check_features, check_labels
from ncscope.collapse.geometry import simplex_similarity
from ncscope.collapse.stats import NCStats

__all__ = ["nc_metrics", "simplex_similarity"]

_CHUNK = 8192


def _infer_num_classes(*label_sets: torch.Tensor | None, weight: torch.Tensor | None) -> int:
    if weight is not None:
        return int(as_tensor(weight, "weight").shape[0])
    top = -1
    for y in label_sets:
        if y is not None and y.numel():
            top = max(top, int(y.max()))
    return max(top + 1, 2)


def nc_metrics(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    weight: torch.Tensor | np.ndarray | None = None,
    bias: torch.Tensor | np.ndarray | None = None,
    ref_features: torch.Tensor | np.ndarray | None = None,
    ref_labels: torch.Tensor | np.ndarray | None = None,
    num_classes: int | None = None,
    *,
    predictions: torch.Tensor | np.ndarray | None = None,
    targets: torch.Tensor | np.ndarray | None = None,
    global_mean: str = "weighted",
    rank_rtol: float = 1e-10,
) -> dict[str, float | int | None]:
    """Neural-Collapse metrics of ``features`` (N, d) grouped by ``labels`` (N,).

    The class means come from ``ref_features``/``ref_labels`` when given (e.g. clean
    features) and otherwise from ``features`` itself (classical NC, Papyan et al. 2020).
    ``weight``/``bias`` are the linear classifier (K, d)/(K,) reading these features.
    ``num_classes`` defaults to ``weight.shape[0]`` or ``max(label) + 1``.

    Returns the dict of :meth:`NCStats.compute`: ``nc1``, ``nc1_over_k``, ``trace_ratio``,
    ``cdnv``, ``equinorm_means``, ``equinorm_weights``, ``equiangular_means``,
    ``equiangular_weights``, ``etf_error_means``, ``nc3``, ``nc4``, ``ncc_accuracy`` and
    more; keys that need the classifier are ``None`` without it.
    """
    h = as_tensor(features, "features")
    y = as_tensor(labels, "labels")
    if (ref_features is None) != (ref_labels is None):
        raise ValueError("pass ref_features and ref_labels together (or neither)")
    rh = h if ref_features is None else as_tensor(ref_features, "ref_features")
    ry = y if ref_labels is None else as_tensor(ref_labels, "ref_labels")
    k = num_classes if num_classes is not None else _infer_num_classes(y, ry, weight=weight)
    stats = NCStats(k, weight, bias, global_mean=global_mean, rank_rtol=rank_rtol)
    # Whole-input checks first, so a bad shape is reported as such and not per chunk.
    check_labels(y, len(check_features(h)), k)
    if ref_features is not None:
        check_labels(ry, len(check_features(rh)), k, "ref_labels")
    for i in range(0, max(len(rh), 1), _CHUNK):
        stats.update(rh[i : i + _CHUNK], ry[i : i + _CHUNK])
    pred = None if predictions is None else as_tensor(predictions, "predictions")
    tgt = None if targets is None else as_tensor(targets, "targets")
    for i in range(0, max(len(h), 1), _CHUNK):
        sl = slice(i, i + _CHUNK)
        stats.update_measured(
            h[sl],
            y[sl],
            predictions=None if pred is None else pred[sl],
            targets=None if tgt is None else tgt[sl],
        )
    return stats.compute()

"""Input validation shared by the NC engine: one-line errors that say what to fix."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """Return ``x`` as a detached tensor (numpy arrays are converted without copy)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    return x.detach()


def check_features(features: torch.Tensor | np.ndarray, dim: int | None = None) -> torch.Tensor:
    """Validate an (N, d) floating feature matrix with finite entries."""
    h = as_tensor(features, "features")
    if h.ndim != 2:
        raise ValueError(
            f"features must be 2-D (N, d) after layer reduction; got shape {tuple(h.shape)} "
            "(flatten or pool conv maps first, e.g. FeatureTaps(..., reduce='flatten'))"
        )
    if not h.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor; got dtype {h.dtype}")
    if dim is not None and h.shape[1] != dim:
        raise ValueError(
            f"feature dimension {h.shape[1]} does not match the {dim} seen before; "
            "feed the same layer to one accumulator"
        )
    # aminmax propagates NaN and shows ±Inf: one fused reduction, no (N, d) bool temporary.
    if h.numel() > 0 and not bool(torch.isfinite(torch.stack(torch.aminmax(h))).all()):
        bad = int((~torch.isfinite(h)).sum())
        raise ValueError(
            f"features contain {bad} NaN/Inf entries; check the model and its inputs"
        )
    return h


def check_labels(
    labels: torch.Tensor | np.ndarray, n: int, num_classes: int, what: str = "labels"
) -> torch.Tensor:
    """Validate integer labels of length ``n`` in ``[0, num_classes)``."""
    y = as_tensor(labels, what)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D of length {n}; got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(
            f"features and {what} differ in length: {n} vs {y.shape[0]}; pass one {what[:-1]} "
            "per feature row"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer tensor; got dtype {y.dtype}")
    y = y.long()
    if n > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{what} must lie in [0, {num_classes}); got values from {lo} to {hi} "
                "(set num_classes or fix the labels)"
            )
    return y


def check_classifier(
    weight: torch.Tensor | np.ndarray | None,
    bias: torch.Tensor | np.ndarray | None,
    num_classes: int,
    dim: int | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate a classifier ``W`` of shape (K, d) and bias ``b`` of shape (K,)."""
    if weight is None:
        if bias is not None:
            raise ValueError("a classifier bias was given without its weight; pass weight= too")
        return None, None
    w = as_tensor(weight, "weight")
    if w.ndim != 2 or w.shape[0] != num_classes or (dim is not None and w.shape[1] != dim):
        want = f"({num_classes}, {dim if dim is not None else 'd'})"
        raise ValueError(
            f"classifier weight must have shape (num_classes, d) = {want}; got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError("classifier weight contains NaN/Inf entries")
    b = None
    if bias is not None:
        b = as_tensor(bias, "bias")
        if b.shape != (num_classes,):
            raise ValueError(
                f"classifier bias must have shape ({num_classes},); got {tuple(b.shape)}"
            )
    return w, b

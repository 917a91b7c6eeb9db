"""Validation of what an attack is called with: images in [0, 1], labels, targets.

Inputs are images (or any feature tensors) **in pixel space [0, 1]**, batch first: ``(B, ...)``
— 4-D images and 2-D flat inputs work alike. The model owns its normalisation (a normalisation
module inside the model, as RobustBench does); attacks never see a mean or a std. Images may
exceed [0, 1] by at most :data:`RANGE_TOL` (they are clamped to [0, 1] first); anything
further out is an error. Every error is one line that says what to fix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["RANGE_TOL", "check_class_range", "validate_images", "validate_labels"]

#: How far outside [0, 1] images may lie (rounding of an upstream transform) before an error.
RANGE_TOL = 1e-6


def validate_images(owner: str, images: Any) -> Tensor:
    """A detached, [0, 1]-clamped view or copy of ``images`` (a floating ``(B, ...)`` tensor),
    usable outside ``torch.inference_mode``; else a one-line TypeError/ValueError."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{owner}: images must be a torch.Tensor of shape (B, ...) in [0, 1], "
                        f"got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{owner}: images must be a floating-point tensor in [0, 1], got "
                        f"{images.dtype} (convert with images.float() / 255)")
    if images.ndim < 2:
        raise ValueError(f"{owner}: images must have a batch dimension, shape (B, ...), got "
                         f"shape {tuple(images.shape)} (use images.unsqueeze(0) for one example)")
    x = images.detach()
    if x.is_inference():
        x = x.clone()
    if x.numel() == 0:
        return x
    lo, hi = torch.aminmax(x)
    lo_f, hi_f = float(lo), float(hi)
    if not (lo_f >= -RANGE_TOL and hi_f <= 1.0 + RANGE_TOL):
        raise ValueError(
            f"{owner}: images must lie in [0, 1] (got min={lo_f:.4g}, max={hi_f:.4g}); attacks "
            "work in pixel space: pass un-normalised pixels and put the normalisation inside "
            "the model"
        )
    if lo_f < 0.0 or hi_f > 1.0:
        x = x.clamp(0.0, 1.0)
    return x


def validate_labels(owner: str, labels: Any, batch: int, device: torch.device,
                    name: str = "labels") -> Tensor:
    """``labels`` (or targets) as a detached int64 ``(batch,)`` tensor on ``device``; else a
    one-line TypeError/ValueError. Class ranges are checked later, once K is known
    (:func:`check_class_range`)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{owner}: {name} must be a 1-D torch.Tensor of class indices (int64), "
                        f"got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{owner}: {name} must be an integer tensor of class indices, got "
                        f"{labels.dtype} (use {name}.long())")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"{owner}: {name} must have shape (B,) = ({batch},) to match the images,"
                         f" got shape {tuple(labels.shape)}")
    out = labels.detach().to(device=device, dtype=torch.long)
    return out.clone() if out.is_inference() else out


def check_class_range(owner: str, cls: Tensor, n_classes: int | None, name: str) -> None:
    """Class indices must lie in [0, K) (K = width of the logits; ``None``: only >= 0)."""
    if cls.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(cls))
    if n_classes is None:
        if lo < 0:
            raise ValueError(f"{owner}: {name} must be class indices >= 0, got min={lo}")
    elif lo < 0 or hi >= n_classes:
        raise ValueError(f"{owner}: {name} must lie in [0, K) = [0, {n_classes}) where K is the "
                         f"width of the model's logits, got min={lo}, max={hi}")

"""Input sets as ImageStars (the attacks of the evaluation of Tran et al., CAV 2021).

* :func:`linf_ball` — the ℓ∞ ball of radius ε around an image, clipped to the pixel range
  [0, 1], on every element or on ``pixels`` chosen elements only (one predicate variable per
  attacked element that can move);
* :func:`darkening` — NNV's darkening attack on segmentation nets: the first ``n_pixels``
  elements in raster order (row-major over ``(C, H, W)``) whose intensity exceeds
  ``threshold`` are darkened, ``x = x0 + α (x_att − x0)`` with ``x_att`` equal to ``x0`` except
  those elements set to 0 and ``α ∈ [1 − de, 1]`` — one predicate variable for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ncscope.verify.star import ImageStar

__all__ = ["darkening", "darkened_pixels", "linf_ball"]


def _image(x0: torch.Tensor) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor) or x0.ndim < 1:
        raise ValueError("x0 must be one image tensor without a batch dimension, e.g. (C, H, W)")
    x = x0.detach().to(torch.float64).cpu()
    if bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError("x0 must lie in the pixel range [0, 1]; models own their normalisation")
    return x


def linf_ball(x0: torch.Tensor, eps: float, pixels: Sequence[int] | None = None) -> ImageStar:
    """The set ``{x : ‖x − x0‖∞ ≤ eps, 0 ≤ x ≤ 1}``, perturbing only the flattened elements
    ``pixels`` when given (raster order over the whole tensor). Elements whose clipped interval
    is a point get no variable; each other element ``i`` gets ``α_i ∈ [−1, 1]`` with
    ``x_i = mid_i + α_i · half_i``."""
    if not 0 <= eps <= 1:
        raise ValueError(f"linf_ball: eps={eps} must lie in [0, 1] (pixel units)")
    x = _image(x0)
    flat = x.reshape(-1)
    idx = np.arange(flat.numel()) if pixels is None else np.unique(np.asarray(pixels, int))
    if idx.size and (idx.min() < 0 or idx.max() >= flat.numel()):
        raise ValueError(f"linf_ball: pixels must be flat indices in [0, {flat.numel()})")
    lo, hi = flat.clone(), flat.clone()
    lo[idx] = (flat[idx] - eps).clamp(min=0)
    hi[idx] = (flat[idx] + eps).clamp(max=1)
    moving = torch.nonzero(hi > lo).reshape(-1)
    c = ((lo + hi) / 2).reshape(x.shape)
    V = torch.zeros((moving.numel(), flat.numel()), dtype=torch.float64)
    V[torch.arange(moving.numel()), moving] = (hi[moving] - lo[moving]) / 2
    m = moving.numel()
    return ImageStar(c, V.reshape(m, *x.shape), np.zeros((0, m)), np.zeros(0),
                     -np.ones(m), np.ones(m))


def darkened_pixels(x0: torch.Tensor, n_pixels: int, threshold: float) -> np.ndarray:
    """Flat indices of the first ``n_pixels`` elements (raster order) brighter than
    ``threshold`` — the pixels NNV's darkening attack changes."""
    flat = _image(x0).reshape(-1).numpy()
    return np.flatnonzero(flat > threshold)[:n_pixels]


def darkening(x0: torch.Tensor, n_pixels: int, de: float, threshold: float = 150 / 255
              ) -> ImageStar:
    """NNV's darkening set (Tran et al., CAV 2021): ``x0 + α (x_att − x0)``,
    ``α ∈ [1 − de, 1]``, where ``x_att`` darkens to 0 the first ``n_pixels`` elements brighter
    than ``threshold``. One predicate variable."""
    if n_pixels < 1:
        raise ValueError(f"darkening: n_pixels={n_pixels} must be >= 1")
    if not 0 < de <= 1:
        raise ValueError(f"darkening: de={de} must lie in (0, 1]")
    x = _image(x0)
    idx = darkened_pixels(x, n_pixels, threshold)
    if idx.size == 0:
        raise ValueError(f"darkening: no pixel is brighter than threshold={threshold}; lower it")
    att = x.reshape(-1).clone()
    att[idx] = 0.0
    V = (att.reshape(x.shape) - x).unsqueeze(0)
    return ImageStar(x.clone(), V, np.zeros((0, 1)), np.zeros(0), np.array([1.0 - de]),
                     np.array([1.0]))

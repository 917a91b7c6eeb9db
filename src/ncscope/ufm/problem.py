"""The data of an unconstrained-feature-model problem: labels, initial point, simplex ETF.

Conventions shared by :mod:`ncscope.ufm`: everything is float64 on the CPU; the classifier
``W`` is (K, d) with one row ``w_k`` per class (``nn.Linear.weight``), the features ``H`` are
(N, d) with one row ``h_i`` per sample (the papers' d×N matrix ``H`` transposed, and the
``(N, d)`` layout of every ncscope feature batch), the bias ``b`` is (K,), and the logits are
``Z = H Wᵀ + b`` (N, K). Samples are sorted by class: ``labels = [0]*n_0 + [1]*n_1 + ...``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ncscope.validation import check_int, check_real, describe

__all__ = ["class_counts", "init_point", "loss_label", "make_labels", "simplex_etf",
           "unit_point"]

DTYPE = torch.float64


def class_counts(owner: str, num_classes: int, n_per_class: int | Sequence[int]) -> list[int]:
    """``n_per_class`` (one int for balanced classes, or one count per class) as a list of K
    counts >= 1, else a one-line error naming the bad entry."""
    k = check_int(owner, "num_classes", num_classes, 2, hint=" (a classification problem "
                  "needs at least two classes)")
    if isinstance(n_per_class, numbers.Integral) and not isinstance(n_per_class, bool):
        return [check_int(owner, "n_per_class", n_per_class, 1)] * k
    if isinstance(n_per_class, (str, bytes)) or not isinstance(n_per_class, Sequence):
        raise TypeError(f"{owner}: n_per_class must be an int or a list of {k} ints, got "
                        f"{describe(n_per_class)}")
    if len(n_per_class) != k:
        raise ValueError(f"{owner}: n_per_class has {len(n_per_class)} counts for num_classes="
                         f"{k}; give one count per class (or one int for balanced classes)")
    return [check_int(owner, f"n_per_class[{c}]", n, 1) for c, n in enumerate(n_per_class)]


def make_labels(counts: Sequence[int]) -> torch.Tensor:
    """Sorted int64 labels with ``counts[c]`` samples of class ``c``."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(list(counts)))


def init_point(num_classes: int, num_samples: int, dim: int, *, seed: int = 0,
               std: float = 0.1, bias: bool = True) -> tuple[torch.Tensor, ...]:
    """Random start ``(W, H, b)``: i.i.d. ``N(0, std²)`` entries, ``b = 0`` (omitted when
    ``bias=False``); drawn from a ``torch.Generator`` seeded with ``seed`` (W first)."""
    g = torch.Generator().manual_seed(seed)
    w = std * torch.randn(num_classes, dim, generator=g, dtype=DTYPE)
    h = std * torch.randn(num_samples, dim, generator=g, dtype=DTYPE)
    return (w, h, torch.zeros(num_classes, dtype=DTYPE)) if bias else (w, h)


def unit_point(num_classes: int, num_samples: int, dim: int, *, seed: int = 0,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random start ``(W, H)`` on the sphere: Gaussian rows normalised to unit norm, drawn from a
    ``torch.Generator`` seeded with ``seed`` (W first) — the start of the oblique and spherical
    solvers, so the same ``seed`` gives every solver the same rows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g, dtype=DTYPE),
                                      dim=1)
    h = torch.nn.functional.normalize(torch.randn(num_samples, dim, generator=g, dtype=DTYPE),
                                      dim=1)
    return w, h


def simplex_etf(num_classes: int, dim: int, *, seed: int | None = None) -> torch.Tensor:
    """(K, d) rows of unit norm forming a simplex ETF: ``⟨w_j, w_k⟩ = −1/(K−1)`` for ``j ≠ k``,
    ``Σ_k w_k = 0``. Needs ``d >= K − 1``. The rows span the first ``K − 1`` coordinates, or a
    random ``(K − 1)``-dimensional subspace when ``seed`` is given.
    """
    k = check_int("simplex_etf", "num_classes", num_classes, 2)
    d = check_int("simplex_etf", "dim", dim, k - 1,
                  hint=f" (a simplex ETF of {k} vectors needs {k - 1} dimensions)")
    centred = torch.eye(k, dtype=DTYPE) - 1.0 / k  # projector onto 1^⊥, rank K − 1
    vals, vecs = torch.linalg.eigh(centred)
    basis = vecs[:, vals > 0.5]  # (K, K−1) orthonormal basis of 1^⊥
    rows = math.sqrt(k / (k - 1)) * basis  # Gram = K/(K−1) (I − 11ᵀ/K): unit diagonal
    out = torch.zeros(k, d, dtype=DTYPE)
    out[:, : k - 1] = rows
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DTYPE))
        out = out @ q.T
    return out


def check_lambda(owner: str, name: str, value: float) -> float:
    """A regularisation weight: finite and >= 0."""
    return check_real(owner, name, value, 0.0, hint=" (weight decay; e.g. 5e-4, 0 = none)")


def loss_label(loss: object) -> str:
    """How a loss is named in a result's settings: its registry name or the callable's name."""
    return loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss))

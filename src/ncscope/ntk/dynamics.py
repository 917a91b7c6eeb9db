"""Kernel dynamics: how the empirical NTK of a network moves during training (Tsilivis & Kempe,
NeurIPS 2022, §5; Fort et al., NeurIPS 2020, §3) and how it lines up with the classes (the
Neural Collapse link: the last-layer block of the empirical NTK is the feature Gram matrix,
which under collapse is a class-block matrix whose top-K eigenvectors span the class
indicators; Papyan, Han & Donoho, PNAS 2020, §2).

* :func:`kernel_distance` — 1 − ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F) (0 for proportional kernels);
* :func:`top_mass` — Σ_{i≤k} λ_i² / Σ_i λ_i², the share of the kernel's Frobenius energy in its
  top-k eigenspace;
* :func:`class_alignment` — ‖V_kᵀ Q‖_F² / K with V_k the top-k eigenvectors (k = K) of the
  (trace) kernel on a probe batch and Q an orthonormal basis of the K class-indicator
  vectors: 1 when the top eigenspace is exactly the span of the indicators, K/n for a random
  subspace of that size.

:class:`KernelProbe` computes them on a fixed probe batch after each call, keeping the first
and previous kernels; :class:`ncscope.train.Tracker` uses it for ``track_ntk``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ncscope.ntk.empirical import empirical_ntk

__all__ = ["KERNEL_METRICS", "KernelProbe", "class_alignment", "kernel_distance", "top_mass"]

#: Metric names of the kernel-dynamics rows (``metric`` column of the training history).
KERNEL_METRICS = ("ntk_dist_init", "ntk_dist_prev", "ntk_top_mass", "ntk_class_alignment",
                  "ntk_trace")


def kernel_distance(k1: Tensor, k2: Tensor) -> float:
    """1 − ⟨K₁, K₂⟩_F / (‖K₁‖_F ‖K₂‖_F), in float64 (Fort et al. 2020, eq. 3)."""
    if k1.shape != k2.shape:
        raise ValueError(f"kernel_distance: shapes {tuple(k1.shape)} and {tuple(k2.shape)} "
                         "differ; compare kernels of the same probe batch")
    a, b = k1.to(torch.float64), k2.to(torch.float64)
    den = torch.linalg.norm(a) * torch.linalg.norm(b)
    if float(den) == 0.0:
        raise ValueError("kernel_distance: a kernel is zero; the distance is undefined")
    return float(1.0 - (a * b).sum() / den)


def _eig_desc(k: Tensor) -> tuple[Tensor, Tensor]:
    k = k.to(torch.float64)
    lam, vec = torch.linalg.eigh((k + k.T) / 2)
    order = torch.argsort(lam, descending=True)
    return lam[order], vec[:, order]


def top_mass(k: Tensor, top: int) -> float:
    """Σ_{i≤top} λ_i² / Σ_i λ_i² of a symmetric kernel (eigenvalues by magnitude order)."""
    lam, _ = _eig_desc(k)
    sq = torch.sort(lam * lam, descending=True).values
    total = float(sq.sum())
    if total == 0.0:
        raise ValueError("top_mass: the kernel is zero")
    return float(sq[:top].sum()) / total


def class_alignment(k: Tensor, labels: Tensor, num_classes: int | None = None) -> float:
    """‖V_Kᵀ Q‖_F² / K: overlap of the top-K eigenspace of the ``(n, n)`` kernel with the span
    of the class indicators (K = number of classes present; see the module docstring)."""
    labels = labels.long().reshape(-1)
    if k.shape != (labels.numel(), labels.numel()):
        raise ValueError(f"class_alignment: kernel {tuple(k.shape)} for {labels.numel()} labels;"
                         " pass the (n, n) trace kernel of the labelled probe batch")
    present = torch.unique(labels)
    q = torch.stack([(labels == c).to(torch.float64) for c in present], 1)
    q = q / q.norm(dim=0, keepdim=True)  # disjoint supports: already orthogonal
    _, vec = _eig_desc(k)
    v = vec[:, : len(present)]
    return float((v.T @ q).pow(2).sum()) / len(present)


class KernelProbe:
    """The kernel-dynamics metrics of a model on a fixed probe batch, call after call.

    Args:
        x, labels: the probe batch (pixel space) and its labels.
        mode: ``"trace"`` (n × n; default) or ``"full"`` (nK × nK) empirical NTK; the class
            alignment always uses the trace kernel (the full one summed over its blocks).
        top: k of :func:`top_mass` (default: the number of classes).
        max_bytes: Jacobian memory bound of :func:`ncscope.ntk.empirical_ntk` (products in
            the model's dtype, summed in float64: ``float64_products=False``).
        output: reads the logits from the model's output.

    :meth:`measure` returns ``{metric: value}`` with :data:`KERNEL_METRICS`; the distances are
    ``None`` at the first call (no earlier kernel).
    """

    def __init__(self, x: Tensor, labels: Tensor, *, mode: str = "trace", top: int | None = None,
                 max_bytes: int = 2**30,
                 output: Callable[[object], Tensor] | None = None) -> None:
        self.x, self.labels = x, labels.long()
        self.mode, self.max_bytes, self.output = mode, max_bytes, output
        self.top = int(top) if top is not None else int(torch.unique(self.labels).numel())
        self.first: Tensor | None = None
        self.previous: Tensor | None = None

    def measure(self, model: nn.Module, x: Tensor | None = None) -> dict[str, float | None]:
        """Metrics of ``model``'s kernel on the probe batch, or on ``x`` (e.g. the probe's
        perturbed version of this epoch; keep one probe per view so the distances compare like
        with like). The kernel becomes the previous one (and the first one, the first time)."""
        probe = self.x if x is None else x
        kern = empirical_ntk(model, probe, mode=self.mode, max_bytes=self.max_bytes,
                             float64_products=False, output=self.output)
        n = probe.shape[0]
        trace = kern if self.mode == "trace" else kern.reshape(n, -1, n, kern.shape[1] // n
                                                               ).diagonal(dim1=1, dim2=3).sum(-1)
        out = {
            "ntk_dist_init": None if self.first is None else kernel_distance(kern, self.first),
            "ntk_dist_prev": (None if self.previous is None
                              else kernel_distance(kern, self.previous)),
            "ntk_top_mass": top_mass(kern, self.top),
            "ntk_class_alignment": class_alignment(trace, self.labels),
            "ntk_trace": float(torch.diagonal(kern).sum()),
        }
        if self.first is None:
            self.first = kern
        self.previous = kern
        return out

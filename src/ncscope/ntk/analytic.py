"""Analytic NNGP and NTK kernels of fully connected ReLU networks (infinite width).

The network (NTK parameterisation; Jacot, Gabriel & Hongler, NeurIPS 2018, §2 and §4;
Arora et al., NeurIPS 2019, §3):

.. math::

    h^{1} = \\tfrac{\\sigma_w}{\\sqrt{d}} W^{1} x + \\sigma_b b^{1}, \\qquad
    h^{l+1} = \\tfrac{\\sigma_w}{\\sqrt{n_l}} W^{l+1} \\mathrm{relu}(h^{l}) + \\sigma_b b^{l+1},

with all weights and biases i.i.d. N(0, 1), ``depth`` hidden ReLU layers and a linear output
layer (:class:`ncscope.ntk.NTKMLP` is exactly this network). At infinite width each output
is a Gaussian process with covariance Σ (the NNGP kernel) and gradient descent follows the
constant kernel Θ (the NTK), both given by the arc-cosine recursions (Cho & Saul, NeurIPS 2009):

* dense layer: Σ ← σ_w² Σ + σ_b²,  Θ ← σ_w² Θ + Σ (the new Σ);
* ReLU: with cos θ = Σ(x,x') / sqrt(Σ(x,x) Σ(x',x')),
  Σ ← sqrt(Σ(x,x) Σ(x',x')) (sin θ + (π − θ) cos θ) / (2π),  Θ ← Θ · (π − θ) / (2π);

starting from Σ = x·x' / d, Θ = 0. The kernels are the same for every output unit (the
multi-output kernel is Θ ⊗ I_K). Everything is float64 and differentiable in both inputs
(the input attacks of :mod:`ncscope.ntk.attacks` differentiate through it); cos θ is clamped
to [−1 + 1e-12, 1 − 1e-12] so the gradient stays finite at coinciding inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ncscope.validation import check_int, check_real

__all__ = ["relu_kernels", "relu_nngp", "relu_ntk"]

_CLAMP = 1e-12


def _flat(x: Tensor) -> Tensor:
    """Images ``(n, ...)`` as float64 rows ``(n, d)``."""
    if x.dim() < 2:
        raise ValueError(f"inputs must be a batch (n, ...), got shape {tuple(x.shape)}; add a "
                         "batch dimension with x[None]")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def relu_kernels(
    a: Tensor, b: Tensor | None = None, *, depth: int = 1, sigma_w2: float = 2.0,
    sigma_b2: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The NNGP kernel Σ(a, b) and the NTK Θ(a, b) of the ReLU network described in the module
    docstring, as ``(n_a, n_b)`` float64 matrices (``b=None``: ``b = a``).

    Args:
        a, b: inputs ``(n, ...)`` (flattened; pixel space for images).
        depth: number of hidden ReLU layers (≥ 1).
        sigma_w2, sigma_b2: weight and bias variances σ_w², σ_b² (default 2 and 0: the
            He-initialised network, whose activations keep their scale).
    """
    depth = check_int("relu_kernels", "depth", depth, 1)
    sw2 = check_real("relu_kernels", "sigma_w2", sigma_w2, 0.0, strict_low=True)
    sb2 = check_real("relu_kernels", "sigma_b2", sigma_b2, 0.0)
    xa = _flat(a)
    xb = xa if b is None else _flat(b)
    if xb.shape[1] != xa.shape[1]:
        raise ValueError(f"relu_kernels: inputs of {xa.shape[1]} and {xb.shape[1]} features; "
                         "pass inputs of the same shape")
    d = xa.shape[1]
    cross = xa @ xb.T / d
    diag_a = (xa * xa).sum(1) / d
    diag_b = (xb * xb).sum(1) / d
    ntk = torch.zeros_like(cross)
    for layer in range(depth + 1):
        cross = sw2 * cross + sb2  # dense layer (the input layer first, the output layer last)
        diag_a, diag_b = sw2 * diag_a + sb2, sw2 * diag_b + sb2
        ntk = sw2 * ntk + cross
        if layer == depth:
            break
        norms = torch.sqrt(diag_a[:, None] * diag_b[None, :]).clamp_min(1e-300)
        cos = (cross / norms).clamp(-1 + _CLAMP, 1 - _CLAMP)
        theta = torch.arccos(cos)
        cross = norms * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
        ntk = ntk * (math.pi - theta) / (2 * math.pi)
        diag_a, diag_b = diag_a / 2, diag_b / 2  # θ = 0 on the diagonal: E[relu(u)²] = Σ/2
    return cross, ntk


def relu_ntk(a: Tensor, b: Tensor | None = None, *, depth: int = 1, sigma_w2: float = 2.0,
             sigma_b2: float = 0.0) -> Tensor:
    """The analytic NTK Θ(a, b) (see :func:`relu_kernels`)."""
    return relu_kernels(a, b, depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2)[1]


def relu_nngp(a: Tensor, b: Tensor | None = None, *, depth: int = 1, sigma_w2: float = 2.0,
              sigma_b2: float = 0.0) -> Tensor:
    """The analytic NNGP kernel Σ(a, b) (see :func:`relu_kernels`)."""
    return relu_kernels(a, b, depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2)[0]

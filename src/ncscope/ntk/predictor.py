"""The kernel predictor: the mean output of an infinitely wide network trained by gradient
flow on the squared loss (Jacot et al., NeurIPS 2018, §5; Lee et al., NeurIPS 2019, §2.2;
Tsilivis & Kempe, NeurIPS 2022, §3, eq. 2):

.. math::

    \\bar f_t(x) = Θ(x, X)\\, Θ(X, X)^{-1} (I - e^{-Θ(X, X)\\,τ}) Y
               = \\sum_i \\frac{1 - e^{-λ_i τ}}{λ_i}\\, Θ(x, X) v_i v_i^⊤ Y,

with Θ(X, X) = Σ_i λ_i v_i v_iᵀ (one eigendecomposition), τ the training time and τ = ∞ the
kernel regression interpolant Θ(x, X) Θ⁻¹ Y. Time convention: for the loss
``½·mean_i ‖f(x_i) − y_i‖²`` and gradient descent with learning rate η, τ = η·steps / n
(:func:`gd_time`). Eigenvalues ≤ ``rtol``·λ_max are treated as zero (their weight is τ at
finite τ, 0 at τ = ∞: the pseudo-inverse), so a singular kernel is handled explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ncscope.validation import check_real

__all__ = ["KernelPredictor", "gd_time"]

KernelFn = Callable[[Tensor, Tensor], Tensor]


def gd_time(lr: float, steps: int, n: int) -> float:
    """Kernel time τ = η·steps / n of ``steps`` full-batch gradient-descent steps of size ``lr``
    on ``½·mean ‖f − y‖²`` over ``n`` samples (the convention of :class:`KernelPredictor`)."""
    return float(lr) * int(steps) / int(n)


class KernelPredictor(nn.Module):
    """The kernel predictor f̄_τ of the module docstring, as a module from images to outputs.

    Args:
        kernel: ``kernel(a, b) -> (n_a, n_b)`` float64 matrix, differentiable in ``a`` (e.g.
            ``functools.partial(ncscope.ntk.relu_ntk, depth=2)``).
        train_x: training inputs ``(n, ...)``.
        train_y: targets ``(n, K)`` (e.g. one-hot) or class labels ``(n,)`` (made one-hot with
            ``num_classes`` columns).
        time: τ (``None`` or ``inf``: the interpolant at τ = ∞).
        rtol: relative eigenvalue floor (explicit rank handling).
        eigen: restrict the predictor to these eigen-directions (indices into the eigenvalues
            sorted in decreasing order): the sum of their eigen-features
            (:mod:`ncscope.ntk.features`); ``None``: all.

    ``forward(x)`` returns float64 outputs ``(m, K)``, differentiable in ``x``; attacks
    (:mod:`ncscope.ntk.attacks`) use them as logits. The eigendecomposition is computed once.
    """

    def __init__(self, kernel: KernelFn, train_x: Tensor, train_y: Tensor, *,
                 time: float | None = None, num_classes: int | None = None,
                 rtol: float = 1e-12, eigen: Sequence[int] | None = None) -> None:
        super().__init__()
        self.kernel = kernel
        x = train_x.detach().to(torch.float64)
        y = train_y.detach()
        if y.dim() == 1:
            k = int(num_classes) if num_classes is not None else int(y.max()) + 1
            y = nn.functional.one_hot(y.long(), k)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"KernelPredictor: {x.shape[0]} inputs but {y.shape[0]} targets; "
                             "pass one target row per training input")
        self.rtol = check_real("KernelPredictor", "rtol", rtol, 0.0, 1.0)
        self.time = math.inf if time is None else check_real(
            "KernelPredictor", "time", time, 0.0, strict_low=True)
        self.register_buffer("train_x", x)
        self.register_buffer("train_y", y.to(torch.float64))
        with torch.no_grad():
            gram = kernel(x, x)
        lam, vec = torch.linalg.eigh((gram + gram.T) / 2)
        order = torch.argsort(lam, descending=True)
        self.register_buffer("eigenvalues", lam[order])
        self.register_buffer("eigenvectors", vec[:, order])
        self.rank = int((self.eigenvalues > self.rtol * self.eigenvalues[0]).sum())
        self.register_buffer("dual", self._dual(eigen))

    def spectral_weights(self) -> Tensor:
        """Per eigen-direction weight (1 − e^{−λτ})/λ (τ for null directions at finite τ, 0 at
        τ = ∞)."""
        lam = self.eigenvalues
        kept = lam > self.rtol * lam[0]
        safe = torch.where(kept, lam, torch.ones_like(lam))
        w = 1.0 / safe if math.isinf(self.time) else -torch.expm1(-safe * self.time) / safe
        null = torch.zeros_like(lam) if math.isinf(self.time) else torch.full_like(lam, self.time)
        return torch.where(kept, w, null)

    def _dual(self, eigen: Sequence[int] | None) -> Tensor:
        """Dual coefficients A with f̄(x) = Θ(x, X) A."""
        w = self.spectral_weights()
        v = self.eigenvectors
        if eigen is not None:
            idx = torch.as_tensor(list(eigen), dtype=torch.long)
            if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(w)):
                raise ValueError(f"KernelPredictor: eigen indices must lie in [0, {len(w) - 1}]")
            v, w = v[:, idx], w[idx]
        return v @ (w[:, None] * (v.T @ self.train_y))

    def forward(self, x: Tensor) -> Tensor:
        """Outputs f̄_τ(x), float64 ``(m, K)``."""
        return self.kernel(x, self.train_x) @ self.dual

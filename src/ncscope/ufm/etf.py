"""The Neural-Collapse point of the regularised UFM: a simplex ETF at its optimal scale.

For balanced classes, the NC configurations of the regularised problem
(:mod:`ncscope.ufm.regularized`) form a family with two numbers free: ``W = a·E`` with ``E``
a unit simplex ETF (:func:`~ncscope.ufm.problem.simplex_etf`), ``h_i = c·w_{y_i}`` and
``b = b₀·1``. Such a point is **not** stationary for every ``a``: the scale must be the
optimal one. Two scalar conditions fix it:

* balance: ``(W, H) → (tW, H/t)`` leaves the logits unchanged, so at any critical point
  ``λ_W‖W‖² = λ_H‖H‖²``, i.e. ``c = sqrt(λ_W / (λ_H n))`` (as in the analysis of Zhu et al. 2021);
* ``a`` (and ``b₀``) minimise the objective along the family (a 1-D, or with a bias 2-D,
  minimisation: L-BFGS, then Newton steps on its 2-vector gradient down to rounding).

By symmetry the full gradient at an ETF point is ``(μ_W W, μ_H H, μ_b 1)``; the balance makes
``μ_W‖W‖² = μ_H‖H‖²``, stationarity in ``a`` makes their sum 0 and stationarity in ``b₀``
makes ``μ_b = 0``, so the whole gradient vanishes. (For the shift-invariant CE, LS and FL,
``b₀ = 0``; for MSE it is not.)
"""

from __future__ import annotations

import math

import torch

from ncscope.losses import LossFn, resolve_loss
from ncscope.ufm.problem import DTYPE, check_lambda, make_labels, simplex_etf
from ncscope.ufm.regularized import regularized_objective
from ncscope.validation import check_int

__all__ = ["etf_solution"]

_OWNER = "etf_solution"


def etf_solution(
    loss: str | LossFn = "ce",
    num_classes: int = 10,
    n_per_class: int = 20,
    dim: int = 32,
    *,
    lambda_w: float = 5e-4,
    lambda_h: float = 5e-4,
    lambda_b: float = 5e-4,
    bias: bool = True,
    loss_kwargs: dict[str, object] | None = None,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(W, H, b, labels)``: the simplex-ETF critical point of the balanced regularised UFM.

    ``W`` is a simplex ETF scaled by the optimal ``a``, ``h_i = c·w_{y_i}`` with the balance
    ``c = sqrt(λ_W / (λ_H n))`` and ``b = b₀·1`` (``None`` without bias), ``a`` and ``b₀``
    minimising the objective along this family. Needs ``d >= K − 1`` and ``λ_W, λ_H > 0``.
    ``seed`` rotates the ETF (see :func:`~ncscope.ufm.problem.simplex_etf`).
    """
    k = check_int(_OWNER, "num_classes", num_classes, 2)
    n = check_int(_OWNER, "n_per_class", n_per_class, 1,
                  hint=" (the ETF point is for balanced classes)")
    lw = check_lambda(_OWNER, "lambda_w", lambda_w)
    lh = check_lambda(_OWNER, "lambda_h", lambda_h)
    lb = check_lambda(_OWNER, "lambda_b", lambda_b)
    if lw == 0.0 or lh == 0.0:
        raise ValueError(f"{_OWNER}: lambda_w and lambda_h must be > 0 (got {lw:g}, {lh:g}); "
                         "without weight decay the objective has no minimiser")
    loss_fn = resolve_loss(loss, loss_kwargs)
    unit = simplex_etf(k, dim, seed=seed)
    labels = make_labels([n] * k)
    c = math.sqrt(lw / (lh * n))

    def point(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        W = torch.exp(theta[0]) * unit
        b = theta[1] * torch.ones(k, dtype=DTYPE) if bias else None
        return W, c * W[labels], b

    def _flat_grad(th: torch.Tensor) -> torch.Tensor:
        th = th if th.requires_grad else th.detach().requires_grad_()
        f, _ = regularized_objective(*point(th), labels, loss_fn, lw, lh, lb)
        (g,) = torch.autograd.grad(f, th, create_graph=True)
        return g

    theta = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, history_size=10,
                            tolerance_grad=1e-15, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f, _ = regularized_objective(*point(theta), labels, loss_fn, lw, lh, lb)
        f.backward()
        return f

    opt.step(closure)
    # L-BFGS compares function values, which float64 resolves only to a gradient of ~1e-9;
    # Newton's method on the 2-vector gradient then makes it vanish to rounding.
    theta = theta.detach()
    for _ in range(8):
        grad = torch.autograd.functional.jacobian(lambda th: _flat_grad(th), theta)
        step = torch.linalg.lstsq(grad, _flat_grad(theta)).solution
        if not torch.isfinite(step).all():
            break
        theta = theta - step
    W, H, b = (None if t is None else t.detach().clone() for t in point(theta))
    return W, H, b, labels

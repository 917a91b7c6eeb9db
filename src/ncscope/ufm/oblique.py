"""The normalised (oblique-manifold) unconstrained feature model, by Riemannian descent.

Problem (Yaras, Wang, Zhu, Balzano, Qu, "Neural Collapse with Normalized Features: A Geometric
Analysis over the Riemannian Manifold", NeurIPS 2022)::

    min_{W ∈ OB(d, K), H ∈ OB(d, N)}  (1/N) Σ_i ℓ(scale · W h_i, y_i)

every row ``w_k`` of ``W`` (K, d) and ``h_i`` of ``H`` (N, d) on the unit sphere, no bias,
``ℓ`` cross-entropy by default (any loss of :mod:`ncscope.losses` works). For ``d >= K − 1``
and balanced classes the global minimisers are ``W`` a simplex ETF with ``h_i = w_{y_i}``.

Scale conventions: the paper writes ``CE(Wᵀh / τ)``, so ``scale = 1/τ``; the official code
computes ``tau * F.normalize(features)`` and renormalises the classifier rows after every step,
so its logits are ``tau · ⟨w_k, h_i/‖h_i‖⟩`` and ``scale`` = the code's ``tau`` (its classifier
also has a bias by default; this problem has none, as the paper's).

Solver: Riemannian gradient descent on the product of spheres. The Riemannian gradient of a
row ``x`` is the tangent projection ``(I − x xᵀ) ∇_x f``; the retraction is
``x ← (x − t·g) / ‖x − t·g‖`` (geoopt's ``Sphere`` + ``RiemannianSGD`` take the same step;
the tests check it when geoopt is installed). ``W`` moves with step ``t = lr`` and ``H`` with
``lr_features`` (default ``lr · N / K``): one sample's row gradient carries a factor ``1/N``
while a class row collects ``N/K`` samples, so this keeps both blocks moving alike.

Step rules: ``"armijo"`` (default) tries ``2t`` after each accepted step and halves until
``f_new < f`` and ``f_new <= f − 1e-4 · t · ‖g‖²`` (``‖g‖²`` in the same block scaling); after
60 halvings without a decrease it stops as ``stalled`` (float64 resolution of the loss
reached). ``"fixed"`` is plain RGD with the given step sizes.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ncscope.losses import LossFn, resolve_loss
from ncscope.ufm.linesearch import armijo_backtrack
from ncscope.ufm.problem import class_counts, loss_label, make_labels, unit_point
from ncscope.ufm.result import Recorder, UFMResult
from ncscope.validation import check_choice, check_int, check_real

__all__ = ["oblique_objective", "retract", "riemannian_grad", "solve_oblique", "value_and_rgrad"]

_OWNER = "solve_oblique"
STEP_RULES = ("armijo", "fixed")
_MAX_HALVINGS = 60


def riemannian_grad(x: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
    """Row-wise tangent projection ``g_i − ⟨g_i, x_i⟩ x_i`` of the Euclidean gradient: the
    Riemannian gradient on the oblique manifold (rows of ``x`` of unit norm)."""
    return egrad - (egrad * x).sum(dim=1, keepdim=True) * x


def retract(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Retraction by normalisation: every row of ``x + step`` scaled to unit norm."""
    return F.normalize(x + step, dim=1)


def oblique_objective(W: torch.Tensor, H: torch.Tensor, labels: torch.Tensor,
                      loss_fn: LossFn, scale: float) -> torch.Tensor:
    """``loss_fn(scale · H Wᵀ, y)`` (the batch mean ``(1/N) Σ_i ℓ(scale · W h_i, y_i)``)."""
    return loss_fn(scale * (H @ W.T), labels)


def value_and_rgrad(W: torch.Tensor, H: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn,
                    scale: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The objective of :func:`oblique_objective` and its Riemannian gradients in ``W`` and
    ``H`` (float, tensor, tensor)."""
    W = W.detach().requires_grad_()
    H = H.detach().requires_grad_()
    f = oblique_objective(W, H, labels, loss_fn, scale)
    gw, gh = torch.autograd.grad(f, (W, H))
    return float(f.detach()), riemannian_grad(W.detach(), gw), riemannian_grad(H.detach(), gh)


def _trial_step(W: torch.Tensor, H: torch.Tensor, rw: torch.Tensor, rh: torch.Tensor,
                labels: torch.Tensor, loss_fn: LossFn, scale: float, step: float,
                ) -> tuple[float, tuple[torch.Tensor, ...]]:
    """Objective and Riemannian gradients after the retracted step ``−step·(rw, rh)``."""
    W2, H2 = retract(W, -step * rw), retract(H, -step * rh)
    f2, rw2, rh2 = value_and_rgrad(W2, H2, labels, loss_fn, scale)
    return f2, (W2, H2, rw2, rh2)


def solve_oblique(
    num_classes: int = 10,
    n_per_class: int | Sequence[int] = 20,
    dim: int = 16,
    *,
    scale: float = 10.0,
    lr: float = 1.0,
    lr_features: float | None = None,
    step_rule: str = "armijo",
    max_iter: int = 2000,
    tol: float = 0.0,
    loss: str | LossFn = "ce",
    loss_kwargs: dict[str, object] | None = None,
    seed: int = 0,
    record_every: int = 10,
) -> UFMResult:
    """Solve the oblique (normalised) UFM by Riemannian gradient descent; record NC.

    Args:
        num_classes, n_per_class, dim: K (>= 2), samples per class (int or one per class),
            d (>= 1).
        scale: the logit scale ``1/τ`` (> 0); see the module docstring for the paper's and the
            official code's conventions.
        lr, lr_features: step sizes of ``W`` and ``H`` (> 0); ``lr_features=None`` is
            ``lr · N / K``. With ``step_rule="armijo"`` they are the first trial steps.
        step_rule: ``"armijo"`` (backtracking with step doubling) or ``"fixed"``.
        max_iter, tol: at most ``max_iter`` iterations; stop when the Riemannian gradient
            norm ``sqrt(‖grad_W‖² + ‖grad_H‖²)`` is ``<= tol`` (default 0: run until the
            line search finds no decrease in float64, or ``max_iter``).
        loss, loss_kwargs: as in :func:`~ncscope.ufm.solve_regularized` (default CE).
        seed: the start is Gaussian rows normalised to unit norm (W first).
        record_every: NC metrics every this many iterations (and at 0 and the last).

    Returns:
        A :class:`~ncscope.ufm.UFMResult` (``problem="oblique"``, ``b=None``); the trajectory
        also has ``step`` (the accepted ``W`` step size).
    """
    counts = class_counts(_OWNER, num_classes, n_per_class)
    k = len(counts)
    d = check_int(_OWNER, "dim", dim, 1)
    s = check_real(_OWNER, "scale", scale, 0.0, strict_low=True,
                   hint=" (the logit scale 1/tau; e.g. 10)")
    lr = check_real(_OWNER, "lr", lr, 0.0, strict_low=True)
    rule = check_choice(_OWNER, "step_rule", step_rule, STEP_RULES)
    iters = check_int(_OWNER, "max_iter", max_iter, 0)
    tol = check_real(_OWNER, "tol", tol, 0.0)
    every = check_int(_OWNER, "record_every", record_every, 1)
    seed = check_int(_OWNER, "seed", seed, 0)
    loss_fn = resolve_loss(loss, loss_kwargs)
    labels = make_labels(counts)
    n = len(labels)
    ratio = (n / k) if lr_features is None else (
        check_real(_OWNER, "lr_features", lr_features, 0.0, strict_low=True) / lr)

    W, H = unit_point(k, n, d, seed=seed)
    recorder = Recorder(labels, k, every)
    tick = time.perf_counter()
    f, rw, rh = value_and_rgrad(W, H, labels, loss_fn, s)
    t, done, status = lr, 0, "max_iter"

    def gnorm() -> float:
        return math.sqrt(float(rw.pow(2).sum() + rh.pow(2).sum()))

    def record() -> None:
        recorder.record(done, W, H, None,
                        {"objective": f, "loss": f, "grad_norm": gnorm(), "step": t})

    record()
    while True:
        if gnorm() <= tol:
            status = "converged"
            break
        if done >= iters:
            break
        if rule == "fixed":
            W, H = retract(W, -t * rw), retract(H, -t * ratio * rh)
            f, rw, rh = value_and_rgrad(W, H, labels, loss_fn, s)
        else:
            sq = float(rw.pow(2).sum() + ratio * rh.pow(2).sum())
            trial = functools.partial(_trial_step, W, H, rw, ratio * rh, labels, loss_fn, s)
            found = armijo_backtrack(trial, f, sq, 2.0 * t if done else t, _MAX_HALVINGS)
            if found is None:
                status = "stalled"
                break
            t, f, (W, H, rw, rh) = found
        done += 1
        if recorder.due(done):
            record()
        if not math.isfinite(f):
            status = "diverged"
            break
    record()
    settings = {"loss": loss_label(loss), "loss_kwargs": dict(loss_kwargs or {}),
                "num_classes": k, "n_per_class": counts, "dim": d, "scale": s, "lr": lr,
                "lr_features": lr * ratio, "step_rule": rule, "max_iter": iters, "tol": tol,
                "seed": seed, "record_every": every}
    return UFMResult("oblique", W.clone(), H.clone(), None, labels, recorder.frame(), done,
                     status == "converged", status, gnorm(), f, time.perf_counter() - tick,
                     settings)

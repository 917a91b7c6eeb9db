"""The UFM half of study ``yaras2022``: the oblique UFM over a scale sweep, and the oblique vs
the regularised UFM at matched settings.

Matched settings (part (b) of the study): the same K, n per class, d, seed, CE loss and no
bias; the same start point (the oblique solver's unit-norm Gaussian rows, W first); the same
Armijo rule (first trial step ``lr``, step doubling after each accepted step, sufficient
decrease ``1e-4 · t · ‖g‖²``) with the same block step sizes (``W``: ``t``; ``H``: ``t · N/K``).
What differs is the problem: unit-norm rows and logits ``scale · ⟨w_k, h_i⟩`` (Riemannian
descent, :func:`ncscope.ufm.solve_oblique`) against free rows with weight decay
``λ/2 (‖W‖² + ‖H‖²)`` and logits ``⟨w_k, h_i⟩`` (Euclidean descent, :func:`solve_regularized_gd`
below). The pairing of ``scale`` and ``λ`` (:func:`paired_lambda`): ``λ`` is chosen so that the
regularised problem's global minimiser has the same logits as the oblique one, i.e. its logit
scale ``‖w_k‖ · ‖h_i‖`` equals ``scale``. The shipped L-BFGS solver of the regularised problem
(:func:`ncscope.ufm.solve_regularized`, its own start ``N(0, 0.1²)``) is run beside them as a
reference (a quasi-Newton method: not the matched comparison), with ``tol=0`` (until float64
stalls it): at the paired λ of scale 20 (5e-11) its default gradient tolerance 1e-8 is met
after 21 iterations at NC1 0.11, far from the minimiser, because the CE gradient of a
classified sample is already that small.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

from ncscope.losses import resolve_loss
from ncscope.ufm import (
    UFMResult,
    iterations_to,
    make_labels,
    regularized_objective,
    solve_oblique,
    solve_regularized,
)
from ncscope.ufm.linesearch import armijo_backtrack
from ncscope.ufm.problem import unit_point
from ncscope.ufm.result import Recorder
from ncscope.validation import check_int, check_real

__all__ = ["compare_problems", "paired_lambda", "scale_sweep", "solve_regularized_gd"]

_MAX_HALVINGS = 60
#: Trajectory metrics kept in the study's tables (the UFM records every NCStats key).
KEEP = ("nc1", "etf_error_weights", "etf_error_means", "nc3", "objective", "grad_norm")


def paired_lambda(scale: float, num_classes: int, n_per_class: int) -> float:
    """The weight decay ``λ = λ_W = λ_H`` of the bias-free regularised CE UFM whose global
    minimiser has logit scale ``‖w_k‖ · ‖h_i‖ = scale`` (the oblique minimiser's logits).

    At the ETF point ``W = a·E``, ``h_i = w_{y_i}/√n`` (the balance of :func:`ncscope.ufm.
    etf_solution` with ``λ_W = λ_H``), so the logit scale is ``s = a²/√n`` and the objective is
    ``log(1 + (K−1) e^{−sK/(K−1)}) + λ K √n s``; setting its derivative in ``s`` to 0 gives
    ``λ = e / (√n (1 + (K−1) e))`` with ``e = exp(−s K/(K−1))``.
    """
    s = check_real("paired_lambda", "scale", scale, 0.0, strict_low=True)
    k = check_int("paired_lambda", "num_classes", num_classes, 2)
    n = check_int("paired_lambda", "n_per_class", n_per_class, 1)
    e = math.exp(-s * k / (k - 1))
    return e / (math.sqrt(n) * (1 + (k - 1) * e))


def _euclidean_step(value_grad: Callable[[torch.Tensor, torch.Tensor], tuple[float, torch.Tensor,
                                                                            torch.Tensor]],
                    W: torch.Tensor, H: torch.Tensor, gw: torch.Tensor, gh: torch.Tensor,
                    step: float) -> tuple[float, tuple[torch.Tensor, ...]]:
    """Objective and gradients after the step ``−step·(gw, gh)``."""
    W2, H2 = W - step * gw, H - step * gh
    f2, gw2, gh2 = value_grad(W2, H2)
    return f2, (W2, H2, gw2, gh2)


def solve_regularized_gd(num_classes: int, n_per_class: int, dim: int, *, lam: float,
                         lr: float = 1.0, max_iter: int = 2000, seed: int = 0,
                         record_every: int = 1) -> UFMResult:
    """Gradient descent with the oblique solver's Armijo rule on the bias-free regularised CE
    UFM ``(1/N) Σ CE(W h_i, y_i) + λ/2 (‖W‖² + ‖H‖²)``, from the oblique solver's start point
    (same ``seed``: the same unit-norm rows). ``H`` steps are ``N/K`` times ``W``'s, as there.
    Stops after ``max_iter`` iterations or when 60 halvings find no decrease (``stalled``)."""
    k = check_int("solve_regularized_gd", "num_classes", num_classes, 2)
    n = check_int("solve_regularized_gd", "n_per_class", n_per_class, 1)
    d = check_int("solve_regularized_gd", "dim", dim, 1)
    lam = check_real("solve_regularized_gd", "lam", lam, 0.0)
    labels = make_labels([n] * k)
    ratio = len(labels) / k
    loss_fn = resolve_loss("ce")
    W, H = unit_point(k, len(labels), d, seed=seed)  # the oblique solver's start

    def value_grad(W: torch.Tensor, H: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        W = W.detach().requires_grad_()
        H = H.detach().requires_grad_()
        f, _ = regularized_objective(W, H, None, labels, loss_fn, lam, lam, 0.0)
        gw, gh = torch.autograd.grad(f, (W, H))
        return float(f.detach()), gw, gh

    recorder = Recorder(labels, k, record_every)
    tick = time.perf_counter()
    f, gw, gh = value_grad(W, H)
    t, done, status = lr, 0, "max_iter"

    def gnorm() -> float:
        return math.sqrt(float(gw.pow(2).sum() + gh.pow(2).sum()))

    def record() -> None:
        recorder.record(done, W, H, None, {"objective": f, "grad_norm": gnorm(), "step": t})

    record()
    while done < max_iter:
        sq = float(gw.pow(2).sum() + ratio * gh.pow(2).sum())
        trial = functools.partial(_euclidean_step, value_grad, W, H, gw, ratio * gh)
        found = armijo_backtrack(trial, f, sq, 2.0 * t if done else t, _MAX_HALVINGS)
        if found is None:
            status = "stalled"
            break
        t, f, (W, H, gw, gh) = found
        done += 1
        if recorder.due(done):
            record()
    record()
    settings = {"loss": "ce", "num_classes": k, "n_per_class": [n] * k, "dim": d,
                "lambda_w": lam, "lambda_h": lam, "bias": False, "lr": lr,
                "lr_features": lr * ratio, "step_rule": "armijo", "max_iter": max_iter,
                "seed": seed, "record_every": record_every}
    return UFMResult("regularized", W.clone(), H.clone(), None, labels, recorder.frame(), done,
                     False, status, gnorm(), f, time.perf_counter() - tick, settings)


def _logit_scale(r: UFMResult) -> float:
    """Mean ``‖w_{y_i}‖ · ‖h_i‖`` of the final point (1 × the scale for the oblique problem)."""
    w = r.W.norm(dim=1)[r.labels]
    s = float((w * r.H.norm(dim=1)).mean())
    return s * float(r.settings.get("scale", 1.0))


def _trajectory(r: UFMResult, **labels: Any) -> pd.DataFrame:
    t = r.trajectory[r.trajectory.metric.isin(KEEP)].reset_index(drop=True)
    for key, value in reversed(list(labels.items())):
        t.insert(0, key, value)
    return t


def scale_sweep(scales: Sequence[float], *, num_classes: int, n_per_class: int, dim: int,
                lr: float, max_iter: int, seed: int, record_every: int,
                etf_threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oblique UFM (Armijo) at every scale: ``(trajectories, summary)``; the summary has
    one row per scale with its end status, iterations, final ETF error of W and NC1, and the
    first recorded iteration with ETF error ≤ ``etf_threshold``."""
    frames, rows = [], []
    for s in scales:
        r = solve_oblique(num_classes, n_per_class, dim, scale=s, lr=lr, max_iter=max_iter,
                          seed=seed, record_every=record_every)
        final = r.final()
        frames.append(_trajectory(r, scale=float(s)))
        rows.append({"scale": float(s), "status": r.status, "iterations": r.iterations,
                     "final etf_error_weights": final["etf_error_weights"],
                     "final nc1": final["nc1"],
                     "iterations to etf": iterations_to(r, "etf_error_weights", etf_threshold),
                     "etf threshold": etf_threshold, "seconds": r.seconds})
    summary = pd.DataFrame(rows).astype({"iterations to etf": "Int64"})
    return pd.concat(frames, ignore_index=True), summary


def compare_problems(scales: Sequence[float], *, num_classes: int, n_per_class: int, dim: int,
                     lr: float, max_iter: int, seed: int, record_every: int,
                     nc1_threshold: float, etf_threshold: float,
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """At every scale: the oblique UFM (Riemannian GD, Armijo), the regularised UFM at the
    paired λ with the matched GD (Armijo) and with the shipped L-BFGS solver. Returns
    ``(trajectories, summary)``; the summary has one row per (scale, solver) with the first
    recorded iterations with NC1 ≤ ``nc1_threshold`` and ETF error of W ≤ ``etf_threshold``."""
    frames, rows = [], []
    for s in scales:
        lam = paired_lambda(s, num_classes, n_per_class)
        runs = {
            ("oblique", "rgd_armijo"): solve_oblique(
                num_classes, n_per_class, dim, scale=s, lr=lr, max_iter=max_iter, seed=seed,
                record_every=record_every),
            ("regularized", "gd_armijo"): solve_regularized_gd(
                num_classes, n_per_class, dim, lam=lam, lr=lr, max_iter=max_iter, seed=seed,
                record_every=record_every),
            ("regularized", "lbfgs"): solve_regularized(
                "ce", num_classes, n_per_class, dim, lambda_w=lam, lambda_h=lam,
                lambda_b=0.0, bias=False, max_iter=max_iter, tol=0.0, seed=seed,
                record_every=record_every),
        }
        for (problem, solver), r in runs.items():
            final = r.final()
            frames.append(_trajectory(r, scale=float(s), problem=problem, solver=solver))
            rows.append({"scale": float(s), "problem": problem, "solver": solver,
                         "lambda": None if problem == "oblique" else lam,
                         "iterations to nc1": iterations_to(r, "nc1", nc1_threshold),
                         "iterations to etf": iterations_to(r, "etf_error_weights",
                                                            etf_threshold),
                         "nc1 threshold": nc1_threshold, "etf threshold": etf_threshold,
                         "status": r.status, "iterations": r.iterations,
                         "final nc1": final["nc1"],
                         "final etf_error_weights": final["etf_error_weights"],
                         "logit scale": _logit_scale(r), "seconds": r.seconds})
    summary = pd.DataFrame(rows).astype({"iterations to nc1": "Int64",
                                         "iterations to etf": "Int64"})
    return pd.concat(frames, ignore_index=True), summary

"""The spherical unconstrained feature model for many classes (``K >> d``), scale annealed.

Problem (Jiang, Zhou, Wang, Qu, Mixon, You & Zhu, "Generalized Neural Collapse for a Large
Number of Classes", arXiv 2310.05351: the spherically constrained UFM)::

    min_{W ∈ OB(d, K), H ∈ OB(d, N)}  (1/N) Σ_i CE(s · W h_i, y_i)

every classifier row ``w_k`` and feature ``h_i`` on the unit sphere of ℝ^d, no bias. When
``K > d + 1`` no simplex ETF exists; as the logit scale ``s`` (the paper's ``τ`` multiplying
the cosine logits) grows, the minimisers show generalized NC: features collapse to their
class row and ``W`` tends to a softmax code (max-min one-vs-rest distance; see
:mod:`ncscope.collapse.gnc` and :mod:`ncscope.ufm.codes`).

Solver: the Riemannian gradient descent of :func:`ncscope.ufm.solve_oblique` (the same
:func:`~ncscope.ufm.oblique.riemannian_grad`, :func:`~ncscope.ufm.oblique.retract` and
:func:`~ncscope.ufm.oblique.oblique_objective`), one Armijo step per iteration, with the scale
annealed geometrically from ``scale[0]`` to ``scale[1]`` over the run (a float: fixed). With
one feature per class and the scale annealed 2 → 60 the classifier reaches the softmax code in
small cases (the regular hexagon at K = 6, d = 2); a fixed large scale from a random start, or
several features per class, can stop in a worse configuration.

The trajectory holds every NC metric of the engine (``gnc1``, ``gnc2``, ``gnc3`` included),
plus ``objective`` / ``loss`` (the CE at the current scale), ``grad_norm``, ``step`` and
``scale``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import torch

from ncscope.losses import LossFn, resolve_loss
from ncscope.ufm.linesearch import armijo_backtrack
from ncscope.ufm.oblique import oblique_objective, retract, value_and_rgrad
from ncscope.ufm.problem import class_counts, loss_label, make_labels, unit_point
from ncscope.ufm.result import Recorder, UFMResult
from ncscope.validation import check_int, check_real

__all__ = ["scale_schedule", "spherical_ufm"]

_OWNER = "spherical_ufm"
_MAX_HALVINGS = 30
_FLAT = 1e-24  # squared Riemannian gradient norm treated as zero


def scale_schedule(scale: float | tuple[float, float], iterations: int) -> list[float]:
    """The logit scale at iterations ``0 .. iterations``: geometric from ``scale[0]`` to
    ``scale[1]`` (a float: constant)."""
    if isinstance(scale, tuple | list):
        if len(scale) != 2:
            raise ValueError(f"{_OWNER}: scale must be a number or a pair (start, end), got "
                             f"{scale!r}")
        s0 = check_real(_OWNER, "scale[0]", scale[0], 0.0, strict_low=True)
        s1 = check_real(_OWNER, "scale[1]", scale[1], 0.0, strict_low=True)
    else:
        s0 = s1 = check_real(_OWNER, "scale", scale, 0.0, strict_low=True,
                             hint=" (the logit scale; e.g. (2, 60) to anneal)")
    n = max(iterations, 1)
    return [s0 * (s1 / s0) ** (t / n) for t in range(iterations + 1)]



def _trial_step(W: torch.Tensor, H: torch.Tensor, rw: torch.Tensor, rh: torch.Tensor,
                labels: torch.Tensor, loss_fn: LossFn, scale: float, step: float,
                ) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """Objective after the retracted step ``−step·(rw, rh)``, and the new point."""
    W2, H2 = retract(W, -step * rw), retract(H, -step * rh)
    return float(oblique_objective(W2, H2, labels, loss_fn, scale)), (W2, H2)


def spherical_ufm(
    num_classes: int,
    dim: int,
    n_per_class: int | Sequence[int] = 1,
    *,
    scale: float | tuple[float, float] = (2.0, 60.0),
    max_iter: int = 3000,
    lr: float = 1.0,
    lr_features: float | None = None,
    loss: str | LossFn = "ce",
    loss_kwargs: dict[str, object] | None = None,
    seed: int = 0,
    record_every: int = 100,
) -> UFMResult:
    """Solve the spherical UFM with an annealed logit scale; record NC and GNC metrics.

    Args:
        num_classes, dim, n_per_class: K (>= 2), d (>= 1), features per class (default 1).
        scale: the logit scale ``s`` of ``CE(s · W h)``: a pair ``(start, end)`` annealed
            geometrically over ``max_iter`` iterations (default 2 → 60), or a fixed number.
        max_iter: iterations (one Armijo step each).
        lr, lr_features: first trial steps of ``W`` and ``H`` (``lr_features=None``:
            ``lr · N / K``, as :func:`~ncscope.ufm.solve_oblique`).
        loss, loss_kwargs: any loss of :mod:`ncscope.losses` (default CE).
        seed: start: Gaussian rows normalised to unit norm (W first).
        record_every: metrics every this many iterations (and at 0 and the last).

    Returns:
        :class:`~ncscope.ufm.UFMResult` (``problem="spherical"``, ``b=None``); ``status`` is
        ``"max_iter"`` (schedule completed) or ``"diverged"``; ``final()["gnc2"]`` is the
        minimal one-vs-rest distance of the final ``W``.
    """
    counts = class_counts(_OWNER, num_classes, n_per_class)
    k = len(counts)
    d = check_int(_OWNER, "dim", dim, 1)
    iters = check_int(_OWNER, "max_iter", max_iter, 0)
    lr = check_real(_OWNER, "lr", lr, 0.0, strict_low=True)
    every = check_int(_OWNER, "record_every", record_every, 1)
    seed = check_int(_OWNER, "seed", seed, 0)
    scales = scale_schedule(scale, iters)
    loss_fn = resolve_loss(loss, loss_kwargs)
    labels = make_labels(counts)
    n = len(labels)
    ratio = (n / k) if lr_features is None else (
        check_real(_OWNER, "lr_features", lr_features, 0.0, strict_low=True) / lr)

    W, H = unit_point(k, n, d, seed=seed)
    recorder = Recorder(labels, k, every)
    tick = time.perf_counter()
    done, t, status = 0, lr, "max_iter"
    f, rw, rh = value_and_rgrad(W, H, labels, loss_fn, scales[0])

    def gnorm() -> float:
        return math.sqrt(float(rw.pow(2).sum() + rh.pow(2).sum()))

    def record() -> None:
        recorder.record(done, W, H, None, {"objective": f, "loss": f, "grad_norm": gnorm(),
                                           "step": t, "scale": scales[done]})

    record()
    while done < iters:
        s = scales[done]  # f, rw, rh are at this scale
        sq = float(rw.pow(2).sum() + ratio * rh.pow(2).sum())
        # At a critical point to rounding (e.g. the symmetric hexagon) no step can decrease f.
        if sq > _FLAT:
            trial = functools.partial(_trial_step, W, H, rw, ratio * rh, labels, loss_fn, s)
            found = armijo_backtrack(trial, f, sq, 2.0 * t, _MAX_HALVINGS, stop_at_rounding=True)
            if found is not None:
                t, _, (W, H) = found
        done += 1  # the next scale: re-evaluate there
        f, rw, rh = value_and_rgrad(W, H, labels, loss_fn, scales[done])
        if not math.isfinite(f):
            status = "diverged"
            break
        if recorder.due(done):
            record()
    record()
    settings = {"loss": loss_label(loss), "loss_kwargs": dict(loss_kwargs or {}),
                "num_classes": k, "n_per_class": counts, "dim": d,
                "scale": tuple(scale) if isinstance(scale, tuple | list) else float(scale),
                "lr": lr, "lr_features": lr * ratio, "max_iter": iters, "seed": seed,
                "record_every": every}
    return UFMResult("spherical", W.clone(), H.clone(), None, labels, recorder.frame(), done,
                     False, status, gnorm(), f, time.perf_counter() - tick, settings)

"""The backtracking (Armijo) line search every UFM and code solver of :mod:`ncscope.ufm` takes
its steps with (Nocedal & Wright, *Numerical Optimization*, 2nd ed., §3.1, Algorithm 3.1;
on manifolds Absil, Mahony & Sepulchre, *Optimization Algorithms on Matrix Manifolds*, §4.2:
the step is retracted and the same sufficient-decrease test applies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["ARMIJO_C", "ROUNDING", "armijo_backtrack"]

#: Sufficient-decrease constant c of f(x_t) ≤ f(x) − c·t·‖g‖².
ARMIJO_C = 1e-4
#: Relative float64 resolution of an objective value (a few ulps).
ROUNDING = 4.0 * 2.0 ** -52

T = TypeVar("T")


def armijo_backtrack(evaluate: Callable[[float], tuple[float, T]], value: float, slope_sq: float,
                     first: float, max_halvings: int, *, c: float = ARMIJO_C,
                     stop_at_rounding: bool = False) -> tuple[float, float, T] | None:
    """Halve the trial step from ``first`` until ``evaluate(step) = (f_new, payload)`` decreases
    the objective sufficiently: ``f_new < value`` and ``f_new ≤ value − c·step·slope_sq``
    (``slope_sq``: the squared, possibly preconditioned, gradient norm along the step).

    Returns ``(step, f_new, payload)`` of the accepted step, or ``None`` after
    ``max_halvings`` rejected trials — or, with ``stop_at_rounding``, as soon as the predicted
    decrease ``step·slope_sq`` is below the float64 resolution of ``value`` (no trial could
    show it).
    """
    step = first
    for _ in range(max_halvings):
        if stop_at_rounding and step * slope_sq <= ROUNDING * abs(value):
            return None
        f_new, payload = evaluate(step)
        if f_new < value and f_new <= value - c * step * slope_sq:
            return step, f_new, payload
        step *= 0.5
    return None

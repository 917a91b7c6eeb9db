"""The shared Armijo backtracking of the UFM and code solvers."""

from __future__ import annotations

from ncscope.ufm.linesearch import ARMIJO_C, armijo_backtrack


def test_accepts_the_first_sufficient_decrease() -> None:
    calls = []

    def quadratic(step: float) -> tuple[float, float]:  # f(x) = x², x = 1, gradient 2
        calls.append(step)
        x = 1.0 - 2.0 * step
        return x * x, x

    step, value, x = armijo_backtrack(quadratic, 1.0, 4.0, 1.0, 10)
    assert calls == [1.0, 0.5] and step == 0.5 and value == 0.0 and x == 0.0
    assert value <= 1.0 - ARMIJO_C * step * 4.0


def test_gives_up_after_max_halvings_and_at_rounding() -> None:
    calls = []

    def flat(step: float) -> tuple[float, None]:
        calls.append(step)
        return 1.0, None

    assert armijo_backtrack(flat, 1.0, 1.0, 1.0, 7) is None
    assert calls == [0.5 ** i for i in range(7)]
    # a decrease below float64 resolution (1 − 1e-34 == 1): equal values are never accepted
    assert armijo_backtrack(flat, 1.0, 1e-30, 1.0, 3) is None
    calls.clear()
    assert armijo_backtrack(flat, 1.0, 1e-20, 1.0, 7, stop_at_rounding=True) is None
    assert calls == []  # the predicted decrease is below float64 resolution: no trial

"""ncscope.validation: one-line errors that name the owner, the key, the bad value and the fix."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ncscope.validation import (
    check_bool,
    check_choice,
    check_int,
    check_norm,
    check_real,
    warn_user,
)

# (call, exception, substrings the message must contain)
BAD = [
    (lambda: check_real("PGD", "eps", -0.1, 0.0), ValueError, ["PGD: eps", ">= 0", "got -0.1"]),
    (lambda: check_real("PGD", "alpha", 0.0, 0.0, strict_low=True), ValueError,
     ["alpha", "> 0", "got 0"]),
    (lambda: check_real("Cfg", "momentum", 1.0, 0.0, 1.0, strict_high=True), ValueError,
     ["Cfg: momentum", "in [0, 1)", "got 1"]),
    (lambda: check_real("Cfg", "lr", 0.0, 0.0, 10.0, strict_low=True), ValueError,
     ["lr", "in (0, 10]", "got 0"]),
    (lambda: check_real("PGD", "eps", float("nan")), ValueError, ["eps", "finite", "nan"]),
    (lambda: check_real("PGD", "eps", float("inf"), 0.0), ValueError, ["eps", "finite", "inf"]),
    (lambda: check_real("PGD", "eps", "8/255"), TypeError, ["eps", "real number", "'8/255'"]),
    (lambda: check_real("PGD", "eps", True), TypeError, ["eps", "True", "bool"]),
    (lambda: check_real("PGD", "eps", torch.ones(3)), TypeError, ["eps", "shape (3,)"]),
    (lambda: check_real("PGD", "eps", 2.0, 0.0, hint=" (pixel units)"), None, []),
    (lambda: check_int("PGD", "steps", 0, 1), ValueError, ["PGD: steps", ">= 1", "got 0"]),
    (lambda: check_int("PGD", "steps", 2.5, 1), TypeError, ["steps", "int", "2.5", "float"]),
    (lambda: check_int("PGD", "steps", 10.0, 1), TypeError, ["steps", "int", "10"]),
    (lambda: check_int("PGD", "steps", True, 1), TypeError, ["steps", "True"]),
    (lambda: check_int("Cfg", "workers", 9, 0, 8), ValueError, ["workers", "in [0, 8]", "9"]),
    (lambda: check_bool("PGD", "fast", "yes"), TypeError, ["PGD: fast", "True or False",
                                                           "'yes'"]),
    (lambda: check_bool("PGD", "fast", 1), TypeError, ["fast", "got 1", "int"]),
    (lambda: check_choice("PGD", "loss", "mse", ("ce", "cw")), ValueError,
     ["PGD: unknown loss 'mse'", "'ce', 'cw'"]),
    (lambda: check_choice("PGD", "target_rule", "far", ("next", "random", None)), ValueError,
     ["target_rule", "'far'", "'next', 'random', None"]),
    (lambda: check_choice("PGD", "target_rule", "randon", ("next", "random")), ValueError,
     ["did you mean 'random'?"]),
    (lambda: check_choice("PGD", "checks", None, ("off", "full")), ValueError,
     ["checks", "None", "'off', 'full'"]),
    (lambda: check_choice("PGD", "checks", 3, ("off", "full")), ValueError, ["checks", "3"]),
    (lambda: check_norm("PGD", "l1"), ValueError, ["PGD: unknown norm 'l1'", "'linf', 'l2'"]),
    (lambda: check_norm("PGD", 1), ValueError, ["norm", "1", "'linf', 'l2'"]),
    (lambda: check_norm("TRADES", "L3"), ValueError, ["TRADES", "'L3'"]),
]


@pytest.mark.parametrize(("call", "exc", "parts"), BAD)
def test_bad_values_give_one_line_errors(call, exc, parts):
    if exc is None:
        call()
        return
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg


@pytest.mark.parametrize(("value", "expected"), [
    ("linf", "linf"), ("Linf", "linf"), ("L_INF", "linf"), ("l-inf", "linf"), ("inf", "linf"),
    (math.inf, "linf"), (float("inf"), "linf"), ("l2", "l2"), ("L2", "l2"), ("l_2", "l2"),
    ("2", "l2"), (2, "l2"), (2.0, "l2"),
])
def test_norm_aliases(value, expected):
    assert check_norm("X", value) == expected


def test_good_values_are_canonicalised():
    assert check_real("X", "a", 3) == 3.0 and type(check_real("X", "a", 3)) is float
    assert check_real("X", "a", torch.tensor(0.5)) == 0.5
    assert check_int("X", "n", 7, 1) == 7
    assert check_bool("X", "b", False) is False
    assert check_choice("X", "rule", " Least-Likely ", ("least_likely",)) == "least_likely"
    assert check_choice("X", "rule", None, ("next", None)) is None
    assert check_choice("X", "mode", "AT", ("at", "st"), {"adversarial": "at"}) == "at"
    assert check_choice("X", "mode", "adversarial", ("at", "st"), {"adversarial": "at"}) == "at"


def test_warn_user_points_outside_the_package():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_user("careful")
    assert caught[0].filename == __file__ and str(caught[0].message) == "careful"


def test_validation_imports_nothing_from_ncscope():
    import ncscope.validation as v

    with open(v.__file__, encoding="utf-8") as f:
        source = f.read()
    assert "from ncscope" not in source and "import ncscope" not in source

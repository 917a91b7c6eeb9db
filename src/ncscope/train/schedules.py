"""Learning-rate schedules, evaluated at a fractional epoch every iteration.

Following the paper's code (Su et al. 2024, inherited from Rice et al. 2020)
the learning rate of iteration ``i`` (0-based) of epoch ``e`` (0-based) is
``schedule(t)`` with ``t = e + (i + 1) / len(loader)``:

* ``piecewise`` (the paper's): ``lr_max`` for ``t < 0.25 E``, ``lr_max / 10`` for
  ``t < 0.375 E``, ``lr_max / 100`` afterwards (E = 400: 0.1 / 0.01 / 0.001 with drops at
  epochs 100 and 150);
* ``cosine``: ``lr_max * (1 + cos(pi t / E)) / 2``;
* ``constant``: ``lr_max``.

More schedules plug in with :func:`register_schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ncscope.data import UnknownNameError

__all__ = [
    "SCHEDULES",
    "Schedule",
    "canonical_schedule",
    "constant",
    "cosine",
    "lr_at",
    "piecewise",
    "register_schedule",
]

#: ``schedule(t, epochs, lr_max) -> lr`` with ``t`` the fractional epoch.
Schedule = Callable[[float, int, float], float]


def piecewise(t: float, epochs: int, lr_max: float) -> float:
    """The paper's schedule: lr_max, then /10 from 25 % and /100 from 37.5 % of the epochs."""
    if t / epochs < 0.25:
        return lr_max
    if t / epochs < 0.375:
        return lr_max / 10.0
    return lr_max / 100.0


def cosine(t: float, epochs: int, lr_max: float) -> float:
    """Cosine annealing to 0 at ``t = epochs`` (the paper's code's ``cosine`` option)."""
    return lr_max * 0.5 * (1.0 + math.cos(t / epochs * math.pi))


def constant(t: float, epochs: int, lr_max: float) -> float:
    """Constant ``lr_max``."""
    return lr_max


#: Registry of schedules, by name.
SCHEDULES: dict[str, Schedule] = {"piecewise": piecewise, "cosine": cosine, "constant": constant}


def register_schedule(name: str, fn: Schedule, *, overwrite: bool = False) -> None:
    """Add ``fn(t, epochs, lr_max) -> lr`` under ``name``."""
    key = name.strip().lower()
    if key in SCHEDULES and not overwrite:
        raise ValueError(f"schedule {key!r} is already registered (pass overwrite=True)")
    SCHEDULES[key] = fn


def canonical_schedule(name: str) -> str:
    """Registry key of ``name``; unknown names list the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"schedule must be a string; valid: {', '.join(sorted(SCHEDULES))}")
    key = name.strip().lower()
    if key not in SCHEDULES:
        raise UnknownNameError(
            f"unknown schedule {name!r}; valid names: {', '.join(sorted(SCHEDULES))}"
        )
    return key


def lr_at(name: str, epoch: int, batch: int, batches: int, epochs: int, lr_max: float) -> float:
    """Learning rate of batch ``batch`` (0-based) of epoch ``epoch`` (0-based) out of
    ``batches`` per epoch: ``SCHEDULES[name](epoch + (batch + 1) / batches, epochs, lr_max)``."""
    t = epoch + (batch + 1) / batches
    return float(SCHEDULES[canonical_schedule(name)](t, epochs, lr_max))

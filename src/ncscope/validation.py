"""Argument checks with one-line messages that say what to fix.

The bottom layer of ncscope: it imports nothing from the package, so that every subpackage can
use it. Each check returns the canonical value (a ``float``, an ``int``, a ``bool``, a canonical
name) or raises a **one-line** :class:`TypeError` (wrong kind of value) or :class:`ValueError`
(right kind, bad value) of the form ``"<owner>: <key> must be <rule>, got <value><fix>"``, e.g.
``"PGD: steps must be >= 1, got 0"`` or ``"PGD: unknown norm 'l1'; valid values are 'linf',
'l2'"``. ``owner`` names the class or function that received the argument, ``name`` the
argument itself.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "NORMS",
    "NORM_ALIASES",
    "check_bool",
    "check_choice",
    "check_int",
    "check_norm",
    "check_real",
    "describe",
    "warn_user",
]

#: Canonical names of the perturbation norms.
NORMS: tuple[str, ...] = ("linf", "l2")
#: Accepted spellings (after lower-casing and ``-`` -> ``_``) -> canonical norm.
NORM_ALIASES: dict[str, str] = {
    "l_inf": "linf", "inf": "linf", "linfty": "linf", "l_infty": "linf",
    "l_2": "l2", "2": "l2",
}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def describe(value: Any) -> str:
    """Short one-line rendering of a bad value for messages: ``8``, ``0.0313725``, ``'l1'``,
    ``<Tensor shape (3,)>``."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):g}"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "...'"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"<{type(value).__name__} shape {tuple(shape)}>"
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


def _bound_text(low: float | None, high: float | None, strict_low: bool,
                strict_high: bool) -> str:
    if low is not None and high is not None:
        return (f"in {'(' if strict_low else '['}{low:g}, {high:g}"
                f"{')' if strict_high else ']'}")
    if low is not None:
        return f"{'>' if strict_low else '>='} {low:g}"
    if high is not None:
        return f"{'<' if strict_high else '<='} {high:g}"
    return "a real number"


def check_real(owner: str, name: str, value: Any, low: float | None = None,
               high: float | None = None, strict_low: bool = False, strict_high: bool = False,
               *, hint: str = "") -> float:
    """``value`` as a finite ``float`` within the bounds, else a one-line error.

    Accepts Python/NumPy reals and one-element tensors (not ``bool``). ``strict_low`` /
    ``strict_high`` exclude the bound itself. ``hint`` is appended to messages (e.g.
    ``" (pixel units, e.g. 8/255)"``).

    Raises:
        TypeError: not a real number. ValueError: NaN/inf, or out of bounds.
    """
    if hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {describe(value)} "
                        f"({type(value).__name__}){hint}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{owner}: {name} must be finite, got {out}{hint}")
    too_low = low is not None and (out <= low if strict_low else out < low)
    too_high = high is not None and (out >= high if strict_high else out > high)
    if too_low or too_high:
        rule = _bound_text(low, high, strict_low, strict_high)
        raise ValueError(f"{owner}: {name} must be {rule}, got {out:g}{hint}")
    return out


def check_int(owner: str, name: str, value: Any, low: int | None = None,
              high: int | None = None, *, hint: str = "") -> int:
    """``value`` as an ``int`` within ``[low, high]`` (``None``: unbounded), else a one-line
    error. Floats are refused even when integral (``steps=10.0`` is a TypeError).

    Raises:
        TypeError: not an integer (``bool`` included). ValueError: out of bounds.
    """
    rule = _bound_text(low, high, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = "an int" if rule == "a real number" else f"an int {rule}"
        raise TypeError(f"{owner}: {name} must be {what}, got {describe(value)} "
                        f"({type(value).__name__}){hint}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        raise ValueError(f"{owner}: {name} must be {rule}, got {out}{hint}")
    return out


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (no truthy strings or ints), else TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {describe(value)} "
                        f"({type(value).__name__})")
    return value


def _canonical(value: str) -> str:
    return value.strip().lower().replace("-", "_").replace(" ", "_")


def check_choice(owner: str, name: str, value: Any, choices: Iterable[str | None],
                 aliases: Mapping[str, str] | None = None) -> Any:
    """Canonical form of the name ``value`` among ``choices``, else a one-line ValueError
    listing the valid values (and the closest one).

    Strings are compared after stripping, lower-casing and mapping ``-`` and spaces to ``_``
    (``"Least-Likely"`` -> ``"least_likely"``), then through ``aliases`` (canonical spelling
    -> choice). ``None`` is valid only when it is one of ``choices``.
    """
    options = tuple(choices)
    key = value
    if isinstance(value, str):
        key = _canonical(value)
        if aliases:
            key = aliases.get(key, key)
    if key in options and (key is not None or value is None):
        return key
    valid = ", ".join(repr(c) for c in options)
    names = [c for c in options if isinstance(c, str)]
    close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
    fix = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{owner}: unknown {name} {describe(value)}; valid values are {valid}{fix}")


def check_norm(owner: str, value: Any, name: str = "norm") -> str:
    """Canonical norm name, ``"linf"`` or ``"l2"``.

    Accepts the names in any case, ``"l_inf"``, ``"inf"``, ``"l_2"``, ``"2"`` and the numbers
    ``math.inf`` and ``2`` (the ``ord`` of :func:`torch.linalg.vector_norm`).
    """
    key = value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        key = {math.inf: "inf", 2: "2"}.get(value, value)
    return check_choice(owner, name, key, NORMS, NORM_ALIASES)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside the ncscope package (so that
    the warning points at the user's line whatever the depth of the call inside ncscope)."""
    level = 1  # stacklevel 1 is this function; walk out of the package
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            frame = frame.f_back
            level += 1
    finally:
        del frame
    warnings.warn(message, category, stacklevel=level)

"""The metric registry: every NC number is one small function registered once.

A metric is a function of an :class:`NCView` (a frozen :class:`~ncscope.collapse.reference.
Reference` and a :class:`~ncscope.collapse.measure.Measurement` around it, with cached shared
intermediates) returning a float, or ``None`` when the view lacks what it needs (e.g. no
classifier, no targets). Per-class metrics return ``{class: value}``. Registering a metric
makes it appear in :meth:`NCStats.compute`, :func:`ncscope.collapse.sweep` tables, training
histories, :func:`ncscope.analyze` and reports — one edit::

    from ncscope.collapse import register_metric

    @register_metric("within_over_n", description="Tr Σ_W per sample", citation="mine")
    def within_over_n(view):
        return view.trace_within / view.n

The built-in metrics are defined in :mod:`ncscope.collapse.metric_defs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from ncscope.collapse import geometry
from ncscope.collapse.measure import Measurement
from ncscope.collapse.reference import Reference

MetricValue = float | int | None
MetricFn = Callable[["NCView"], Any]


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        name: column / metric name in every table.
        fn: ``fn(view) -> float | None`` (``{class: float}`` when ``per_class``).
        description: one line: what it measures and its convention.
        citation: the paper (and section) whose definition it follows.
        cross_reference: only meaningful when the reference is *another* data source (e.g.
            the simplex similarity of measured vs reference means, identically zero around
            a source's own means); tables skip it in own-means views.
        per_class: the function returns one value per class (rows with a ``class`` column).
        bookkeeping: counts and sizes rather than a statistic (metadata for tables and the
            manual; computed like any metric).
    """

    name: str
    fn: MetricFn
    description: str
    citation: str
    cross_reference: bool = False
    per_class: bool = False
    bookkeeping: bool = False


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    description: str,
    citation: str,
    cross_reference: bool = False,
    per_class: bool = False,
    bookkeeping: bool = False,
    replace: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering ``fn(view)`` as metric ``name`` (see the module docstring)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"metric name must be an identifier; got {name!r}")

    def deco(fn: MetricFn) -> MetricFn:
        if name in METRICS and not replace:
            raise ValueError(f"metric {name!r} is already registered; pass replace=True")
        METRICS[name] = Metric(name, fn, description, citation, cross_reference, per_class,
                               bookkeeping)
        return fn

    return deco


def unregister_metric(name: str) -> None:
    """Remove a registered metric (e.g. one a test added)."""
    METRICS.pop(name, None)


class NCView:
    """A reference and a measurement around it, with the intermediates metrics share.

    Properties are computed once per view (``cached_property``): ``n`` (measured samples),
    ``rank`` / ``lam`` / ``vec`` (kept eigenpairs of the reference Gram; ``rank`` raises if
    every reference mean coincides), ``within`` / ``meas_n`` (per present class),
    ``trace_within`` / ``trace_between``, ``seen`` (present classes also measured),
    ``similarity`` (:func:`~ncscope.collapse.geometry.simplex_similarity` of reference vs
    measured means over ``seen``), and ``count(name)`` for the NCC counters.
    """

    def __init__(self, reference: Reference, measurement: Measurement) -> None:
        if measurement.reference is not reference and not reference.same_as(
            measurement.reference
        ):
            raise ValueError("the measurement was made around another reference")
        self.reference = reference
        self.measurement = measurement

    def count(self, name: str) -> int:
        """An NCC counter of the measurement (see ``measure.COUNT_NAMES``)."""
        return self.measurement.count(name)

    @cached_property
    def n(self) -> int:
        """Number of measured samples."""
        return self.count("n")

    @cached_property
    def rank(self) -> int:
        """Kept rank of Σ_B (raises ValueError when every reference class mean coincides)."""
        if self.reference.rank is None:
            raise ValueError("all reference class means coincide; Σ_B is zero and NC1 undefined")
        return self.reference.rank

    @cached_property
    def lam(self) -> torch.Tensor:
        """Kept eigenvalues of the reference Gram ``G = M̃M̃ᵀ``."""
        return self.reference.evals[-self.rank:]

    @cached_property
    def vec(self) -> torch.Tensor:
        """Kept eigenvectors of the reference Gram (columns)."""
        return self.reference.evecs[:, -self.rank:]

    @cached_property
    def within(self) -> torch.Tensor:
        """Per present class: Σ‖h − μ_y‖² of the measured features."""
        return self.measurement.within_sq[self.reference.present]

    @cached_property
    def meas_n(self) -> torch.Tensor:
        """Per present class: measured sample count (float64)."""
        return self.measurement.meas_count[self.reference.present].to(torch.float64)

    @cached_property
    def seen(self) -> torch.Tensor:
        """Mask over present classes that were also measured."""
        return self.meas_n > 0

    @cached_property
    def trace_within(self) -> float:
        """Tr Σ_W = Σ‖h − μ_y‖² / N around the reference means."""
        return float(self.within.sum() / self.n)

    @cached_property
    def trace_between(self) -> float:
        """Tr Σ_B = ‖M̃‖_F² / K of the reference means."""
        return float(self.reference.gram.diagonal().sum() / self.reference.num_present)

    @cached_property
    def similarity(self) -> dict[str, Any] | None:
        """Simplex similarity of reference vs measured means (``None`` below two classes)."""
        if int(self.seen.sum()) < 2:
            return None
        ids = self.reference.present[self.seen]
        return geometry.simplex_similarity(
            self.reference.class_means[ids], self.measurement.measured_means[ids]
        ) | {"classes": ids.tolist()}


def compute_metrics(
    reference: Reference,
    measurement: Measurement,
    *,
    names: list[str] | None = None,
    own: bool = False,
    per_class: bool = False,
) -> dict[str, Any]:
    """Evaluate registered metrics on one view, in registration order.

    ``own=True`` skips ``cross_reference`` metrics (the view measures a source around its own
    means); ``per_class`` chooses per-class metrics (``{name: {class: value}}``) instead of
    the scalar ones. ``names`` restricts to those metrics. Raises ValueError when nothing was
    measured or the reference is degenerate (every class mean equal).
    """
    if measurement.count("n") == 0:
        raise ValueError("no measured features were given; call update_measured()")
    view = NCView(reference, measurement)
    _ = view.rank  # a degenerate reference is an error for the whole view
    out: dict[str, Any] = {}
    for name, metric in METRICS.items():
        if names is not None and name not in names:
            continue
        if metric.per_class != per_class or (own and metric.cross_reference):
            continue
        out[name] = metric.fn(view)
    return out

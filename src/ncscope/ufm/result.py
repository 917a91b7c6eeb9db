"""What a UFM run returns: :class:`UFMResult` with the final point and an NC trajectory.

The NC metrics are those of the engine that measures networks: :class:`ncscope.collapse.NCStats`
with the classifier ``(W, b)``, fed the features ``H`` as both the reference and the measured
pass (the classical NC of Papyan et al. 2020). The trajectory is a **long** table with columns
``iteration, metric, value`` (one row per recorded iteration and scalar metric): every
:meth:`NCStats.compute` key that has a value (``nc1``, ``etf_error_weights``,
``etf_error_means``, ``nc3``, ``equinorm_*``, ``net_accuracy``, ...) plus the solver's
``objective`` (regularised objective or oblique loss), ``loss`` (its data term alone),
``grad_norm`` (Euclidean or Riemannian gradient norm) and, for the oblique solver, ``step``.
:meth:`UFMResult.wide` pivots it to one row per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ncscope.collapse import NCStats
from ncscope.validation import check_real

__all__ = ["UFMResult", "iterations_to", "nc_record"]

COLUMNS = ("iteration", "metric", "value")


def nc_record(weight: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
              bias: torch.Tensor | None = None, num_classes: int | None = None) -> dict[str, float]:
    """The scalar NC metrics of ``features`` (N, d) with the classifier ``weight`` (K, d),
    ``bias`` (K,), computed by :class:`~ncscope.collapse.NCStats` exactly as for a network
    layer; keys whose value is ``None`` (no logits, no targets) are dropped."""
    k = int(weight.shape[0]) if num_classes is None else num_classes
    stats = NCStats(k, weight=weight.detach(), bias=None if bias is None else bias.detach())
    h = features.detach()
    stats.update(h, labels)
    stats.update_measured(h, labels)
    out: dict[str, float] = {}
    for key, value in stats.compute().items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


@dataclass
class UFMResult:
    """The outcome of :func:`~ncscope.ufm.solve_regularized` or
    :func:`~ncscope.ufm.solve_oblique`.

    Attributes:
        problem: ``"regularized"`` or ``"oblique"``.
        W: (K, d) classifier; H: (N, d) features (row ``i`` is ``h_i``); b: (K,) bias or
            ``None`` (oblique); labels: (N,) int64, sorted by class. All float64, detached.
        trajectory: long DataFrame ``iteration, metric, value`` (see the module docstring),
            recorded at iteration 0, every ``record_every`` iterations and at the last one.
        iterations: iterations run; converged: whether the gradient tolerance was met;
        status: ``"converged"``, ``"stalled"`` (no further decrease in float64),
            ``"max_iter"`` or ``"diverged"`` (oblique, fixed step: a non-finite loss);
        grad_norm / objective: at the final point; seconds: wall time of the solve,
            recording included.
        settings: every argument of the call (the loss as its name or ``repr``).
    """

    problem: str
    W: torch.Tensor
    H: torch.Tensor
    b: torch.Tensor | None
    labels: torch.Tensor
    trajectory: pd.DataFrame
    iterations: int
    converged: bool
    status: str
    grad_norm: float
    objective: float
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.W.shape[0])

    def wide(self) -> pd.DataFrame:
        """The trajectory with one row per recorded iteration and one column per metric."""
        out = self.trajectory.pivot(index="iteration", columns="metric", values="value")
        out.columns.name = None
        return out.reset_index()

    def final(self) -> dict[str, float]:
        """``{metric: value}`` of the last recorded iteration."""
        t = self.trajectory
        last = t[t["iteration"] == t["iteration"].max()]
        return dict(zip(last["metric"], last["value"].astype(float), strict=True))

    def metrics(self) -> dict[str, float]:
        """NC metrics recomputed from the final ``(W, H, b)`` (equal to :meth:`final`'s)."""
        return nc_record(self.W, self.H, self.labels, self.b, self.num_classes)

    def __repr__(self) -> str:
        f = self.final()
        keys = ("nc1", "etf_error_weights", "nc3")
        nc = ", ".join(f"{k}={f[k]:.3g}" for k in keys if k in f)
        return (f"UFMResult({self.problem}, loss={self.settings.get('loss')!r}, "
                f"K={self.num_classes}, N={len(self.labels)}, d={self.W.shape[1]}, "
                f"{self.status} after {self.iterations} iterations in {self.seconds:.2f} s, "
                f"{nc})")


class Recorder:
    """Collects trajectory rows (``iteration, metric, value``) for a solver."""

    def __init__(self, labels: torch.Tensor, num_classes: int, record_every: int) -> None:
        self.labels = labels
        self.num_classes = num_classes
        self.record_every = record_every
        self.rows: list[tuple[int, str, float]] = []
        self.last: int | None = None

    def due(self, iteration: int) -> bool:
        return iteration % self.record_every == 0

    def record(self, iteration: int, W: torch.Tensor, H: torch.Tensor, b: torch.Tensor | None,
               extra: dict[str, float]) -> None:
        if self.last == iteration:
            return
        self.last = iteration
        values = {**extra, **nc_record(W, H, self.labels, b, self.num_classes)}
        self.rows.extend((iteration, key, float(v)) for key, v in values.items())

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COLUMNS)).astype(
            {"iteration": "int64", "metric": "string", "value": "float64"})


def iterations_to(result: UFMResult, metric: str, threshold: float) -> int | None:
    """The first recorded iteration at which ``metric`` is at or below ``threshold``
    (``None`` if it never is). Resolution: the run's ``record_every``."""
    t = result.trajectory
    names = sorted(set(t["metric"]))
    if metric not in names:
        raise ValueError(f"iterations_to: unknown metric {metric!r}; recorded metrics: "
                         f"{', '.join(names)}")
    limit = check_real("iterations_to", "threshold", threshold)
    rows = t[(t["metric"] == metric) & (t["value"] <= limit)]
    return None if rows.empty else int(rows["iteration"].min())


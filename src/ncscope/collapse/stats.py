"""Exact, streaming, mergeable Neural-Collapse statistics of one layer in O(K·d + K²) memory.

:class:`NCStats` runs the two-pass protocol over one layer:

1. **reference** pass (:meth:`NCStats.update`): a :class:`~ncscope.collapse.reference.
   ClassMeanSums` accumulates per-class float64 sums; :meth:`NCStats.freeze` turns them into a
   frozen :class:`~ncscope.collapse.reference.Reference` (class means, global mean, centred
   means ``M̃`` and their K×K Gram).
2. **measured** pass (:meth:`NCStats.update_measured`): a :class:`~ncscope.collapse.measure.
   Measurement` accumulates the features around the reference means (no d×d matrix).

NC1 follows exactly from the K×K Gram ``G = M̃ M̃ᵀ = V Λ Vᵀ``:
``Tr(Σ_W Σ_B⁺) = K · Σ_i (v_iᵀ A v_i / N) / λ_i²`` over the kept eigenpairs, which equals the
dense ``Tr(Σ_W pinv_r(Σ_B))`` with ``Σ_B = M̃ᵀM̃/K`` truncated to rank r. Every metric is a
registered function (:mod:`ncscope.collapse.registry`); :meth:`NCStats.compute` evaluates them
all.

The reference and the measured source may differ: "perturbed features measured around clean
class means" is pass 1 on clean features and pass 2 on perturbed ones. When both passes see the
same data this is the classical NC of Papyan, Han & Donoho (PNAS 2020).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

import ncscope.collapse.metric_defs  # noqa: F401 - registers the built-in metrics
from ncscope.collapse.measure import FIELDS as _MEAS_FIELDS
from ncscope.collapse.measure import Measurement, all_reduce_tensors
from ncscope.collapse.reference import GLOBAL_MEANS, ClassMeanSums, Reference
from ncscope.collapse.registry import compute_metrics


class NCStats:
    """Streaming accumulator of Neural-Collapse statistics for one layer.

    Parameters
    ----------
    num_classes:
        K, the number of classes. Labels must lie in ``[0, K)``; classes without reference
        samples are left out of every metric (at least two must be present).
    weight, bias:
        Optional classifier ``W`` (K×d) and ``b`` (K,) of the layer's linear head. Needed
        for NC2/NC3 of the classifier and, unless predictions are passed, for NC4.
    global_mean:
        ``"weighted"`` (default): ``μ_G`` is the count-weighted mean of the reference
        features, as the code of Su et al. 2024 (the data mean).
        ``"class_mean"``: the unweighted mean of the class means, as Papyan et al.'s
        published notebook (equal to the data mean for balanced data).
    rank_rtol:
        Relative cut-off on the eigenvalues of ``G = M̃M̃ᵀ`` for the pseudo-inverse of Σ_B
        (drops directions of degenerate means). The rank is also capped explicitly at
        ``min(K−1, d)``: the centred means always satisfy ``Σ_c n_c μ̃_c = 0`` (weighted
        global mean) or ``Σ_c μ̃_c = 0`` (class mean), balanced data or not.
    device:
        Where the accumulators live (default: the device of the first batch).

    Usage::

        stats = NCStats(10, weight=W, bias=b)
        for h, y in reference_batches:
            stats.update(h, y)                  # pass 1
        for h, y in measured_batches:
            stats.update_measured(h, y)         # pass 2 (may be other data)
        result = stats.compute()                # dict of floats

    Accumulators add exactly: ``a.merge(b)`` (or ``a + b``) equals the accumulator of the
    union of the data, and :meth:`all_reduce` sums them over ``torch.distributed`` ranks.
    """

    def __init__(
        self,
        num_classes: int,
        weight: torch.Tensor | np.ndarray | None = None,
        bias: torch.Tensor | np.ndarray | None = None,
        *,
        global_mean: str = "weighted",
        rank_rtol: float = 1e-10,
        device: torch.device | str | None = None,
    ) -> None:
        if global_mean not in GLOBAL_MEANS:
            raise ValueError(
                f"global_mean must be one of {', '.join(GLOBAL_MEANS)}; got {global_mean!r}"
            )
        if not (0.0 <= rank_rtol < 1.0):
            raise ValueError(f"rank_rtol must lie in [0, 1); got {rank_rtol}")
        self.global_mean = global_mean
        self.rank_rtol = float(rank_rtol)
        self._sums = ClassMeanSums(num_classes, weight, bias, device=device)
        self.num_classes = self._sums.num_classes
        self.reset()

    # ------------------------------------------------------------------ state handling
    def reset(self) -> None:
        """Forget all data (both passes); keep the configuration and the classifier."""
        self._sums.sums = self._sums.counts = None
        self.reference: Reference | None = None
        self.measurement: Measurement | None = None

    @property
    def phase(self) -> str:
        """``"reference"`` until the reference is frozen, then ``"measured"``."""
        return "reference" if self.reference is None else "measured"

    @property
    def dim(self) -> int | None:
        """Feature dimension (known after the first batch or from the classifier)."""
        return self._sums.dim

    @property
    def device(self) -> torch.device | None:
        """Where the accumulators live."""
        return self._sums.device

    @property
    def ref_sum(self) -> torch.Tensor | None:
        """(K, d) float64 sums of the reference features."""
        return self._sums.sums

    @property
    def ref_count(self) -> torch.Tensor | None:
        """(K,) reference sample counts."""
        return self._sums.counts

    @property
    def meas_count(self) -> torch.Tensor | None:
        """(K,) measured sample counts (``None`` before the measured pass)."""
        return None if self.measurement is None else self.measurement.meas_count

    # ------------------------------------------------------------------ pass 1
    def update(
        self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> NCStats:
        """Pass 1: add a batch of *reference* features (N, d) and labels (N,)."""
        if self.reference is not None:
            raise RuntimeError(
                "reference pass is closed (update_measured was called); call reset() to "
                "start over or use a new NCStats"
            )
        self._sums.update(features, labels)
        return self

    def freeze(self) -> NCStats:
        """Close the reference pass: fix class means, global mean and the K×K Gram.

        Called automatically by the first :meth:`update_measured`. Raises if fewer than
        two classes have reference samples.
        """
        if self.reference is None:
            self.reference = self._sums.freeze(global_mean=self.global_mean,
                                               rank_rtol=self.rank_rtol)
            self.measurement = Measurement(self.reference)
        return self

    # ------------------------------------------------------------------ pass 2
    def update_measured(
        self,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        *,
        predictions: torch.Tensor | np.ndarray | None = None,
        targets: torch.Tensor | np.ndarray | None = None,
        logits: torch.Tensor | None = None,
    ) -> NCStats:
        """Pass 2: add a batch of *measured* features around the reference means.

        ``labels`` group the measured features (true labels, or target labels for the
        "grouped by target" view of a targeted attack). ``predictions`` are the network's
        decisions on these samples (default: ``argmax(logits)`` or ``argmax(W h + b)`` when a
        classifier was given); ``targets`` are optional attack targets for the leap
        statistics; ``logits`` add the network's cross-entropy (metric ``loss``).
        """
        self.freeze()
        self.measurement.update(features, labels, predictions=predictions,  # type: ignore[union-attr]
                                targets=targets, logits=logits)
        return self

    # ------------------------------------------------------------------ merging
    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self._sums.tensors() if self.measurement is None else self.measurement.tensors()

    def merge(self, other: NCStats) -> NCStats:
        """Add ``other``'s accumulators into this one (in place) and return ``self``.

        Both must be in the same pass. In the measured pass both must share the same
        reference statistics (e.g. after :meth:`all_reduce` of pass 1).
        """
        if not isinstance(other, NCStats):
            raise TypeError(f"can only merge NCStats; got {type(other).__name__}")
        if (self.num_classes, self.global_mean) != (other.num_classes, other.global_mean):
            raise ValueError("cannot merge NCStats with different num_classes or global_mean")
        if other.ref_sum is None:
            return self
        if self.ref_sum is not None and self.dim != other.dim:
            raise ValueError(f"cannot merge NCStats of dimension {self.dim} and {other.dim}")
        if self.ref_sum is not None and self.phase != other.phase:
            raise ValueError(
                f"cannot merge a {self.phase}-pass NCStats with a {other.phase}-pass one; "
                "merge (or all_reduce) after the same pass"
            )
        if other.measurement is None:
            self._sums.merge(other._sums)
        else:
            if self.reference is None:  # empty: adopt the other's reference pass
                self._sums.merge(other._sums)
                self.freeze()
            self.measurement.merge(other.measurement)  # type: ignore[union-attr]
        return self

    def __add__(self, other: NCStats) -> NCStats:
        """Return a new accumulator holding the union of both (see :meth:`merge`)."""
        return copy.deepcopy(self).merge(other)

    def all_reduce(self, group: Any = None) -> NCStats:
        """Sum the accumulators of the current pass over all ``torch.distributed`` ranks.

        Call after pass 1 on every rank (then all ranks share the reference means), and
        again after pass 2 before :meth:`compute`.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self.ref_sum is None:
            raise RuntimeError("all_reduce needs at least one batch on every rank")
        all_reduce_tensors(self._tensors(), group)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and settings, for checkpoints (``torch.save``/``weights_only``)."""
        state: dict[str, Any] = {
            "num_classes": self.num_classes,
            "global_mean": self.global_mean,
            "rank_rtol": self.rank_rtol,
            "phase": self.phase,
            **self._sums.state(),
        }
        if self.measurement is not None:
            for name in _MEAS_FIELDS:
                state[name] = getattr(self.measurement, name).detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> NCStats:
        """Restore what :meth:`state_dict` saved (the classifier is not part of it)."""
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"state is for {state['num_classes']} classes, this NCStats has "
                f"{self.num_classes}"
            )
        self.global_mean = state["global_mean"]
        self.rank_rtol = float(state["rank_rtol"])
        self.reset()
        if "ref_sum" not in state:
            return self
        self._sums.allocate(int(state["ref_sum"].shape[1]), self.device or torch.device("cpu"))
        self._sums.sums.copy_(state["ref_sum"])  # type: ignore[union-attr]
        self._sums.counts.copy_(state["ref_count"])  # type: ignore[union-attr]
        measured = state["phase"] == "measured"
        if "ref_unit_sum" in state and not (measured and "unit_scatter" not in state):
            self._sums.unit_sums.copy_(state["ref_unit_sum"])  # type: ignore[union-attr]
        else:  # saved before the normalised-feature statistics: GNC1 and GNC3 are None
            self._sums.unit_sums = None
        if measured:
            self.freeze()
            for name in _MEAS_FIELDS:
                if name in state:
                    getattr(self.measurement, name).copy_(state[name])
        return self

    # ------------------------------------------------------------------ results
    @property
    def class_means(self) -> torch.Tensor:
        """Reference class means (K, d), float64; NaN rows for absent classes."""
        if self.ref_sum is None:
            raise ValueError("no reference features were given")
        return self.ref_sum / self.ref_count[:, None].to(torch.float64)  # type: ignore[index]

    @property
    def measured_means(self) -> torch.Tensor:
        """Measured class means (K, d), float64; NaN rows for classes not measured."""
        if self.measurement is None:
            raise ValueError("no measured features were given")
        return self.measurement.measured_means

    def compute(self) -> dict[str, Any]:
        """Every registered scalar metric as a flat dict of Python numbers.

        Built-in keys (:mod:`ncscope.collapse.metric_defs`): ``nc1`` = Tr(Σ_W Σ_B⁺) (no 1/K,
        Su et al.'s code), ``nc1_over_k`` (Papyan et al. 2020 text), ``trace_ratio``,
        ``cdnv``, ``equinorm_means``/``_weights``, ``equiangular_means``/``_weights``,
        ``etf_error_means``/``_weights``, ``nc3``, ``nc4``, ``ncc_accuracy``,
        ``net_accuracy``, ``loss``, leap fractions, ``target_success``, the simplex similarity
        of measured vs reference means (``simplex_angle`` etc., degrees), the generalized NC
        ``gnc1``, ``gnc1_over_k``, ``gnc2``, ``gnc3`` (:mod:`ncscope.collapse.gnc`) and bookkeeping
        ``num_classes``, ``rank``, ``dim``, ``n_reference``, ``n_measured``. Keys that need a
        classifier, predictions, logits or targets are ``None`` without them.
        """
        if self.ref_count is None:
            raise ValueError("no reference features were given; call update() first")
        if self.measurement is None:
            raise ValueError(
                "no measured features were given; call update_measured() (with the same "
                "data as update() for classical NC)"
            )
        return compute_metrics(self.reference, self.measurement)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        n_ref = 0 if self.ref_count is None else int(self.ref_count.sum())
        n_meas = 0 if self.measurement is None else self.measurement.count("n")
        return (
            f"NCStats(num_classes={self.num_classes}, dim={self.dim}, phase={self.phase!r}, "
            f"n_reference={n_ref}, n_measured={n_meas})"
        )

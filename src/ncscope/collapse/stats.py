"""Exact, streaming, mergeable Neural-Collapse statistics in O(K·d + K²) memory.

Two passes over the data:

1. **reference** pass (:meth:`NCStats.update`): per-class sums and counts in float64 give
   the class means ``μ_c``, the global mean ``μ_G`` and the centred means ``M̃`` (K×d).
2. **measured** pass (:meth:`NCStats.update_measured`): every measured feature ``h`` with
   label ``y`` gives ``z = h − μ_y`` (around the *reference* means). The engine accumulates
   ``A = Σ (M̃ z)(M̃ z)ᵀ`` (K×K), per-class ``Σ‖z‖²``, measured class sums, and the counts of
   nearest-class-mean (NCC) decisions. No d×d matrix is ever formed.

NC1 then follows exactly from the K×K Gram ``G = M̃ M̃ᵀ = V Λ Vᵀ``:
``Tr(Σ_W Σ_B⁺) = K · Σ_i (v_iᵀ A v_i / N) / λ_i²`` over the kept eigenpairs, which equals
the dense ``Tr(Σ_W pinv_r(Σ_B))`` with ``Σ_B = M̃ᵀM̃/K`` truncated to rank r.

The reference and the measured source may differ: "perturbed features measured around
clean class means" is pass 1 on clean features and pass 2 on perturbed ones. When both
passes see the same data this is the classical NC of Papyan, Han & Donoho (PNAS 2020).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ncscope.collapse import geometry
from ncscope.collapse._checks import check_classifier, check_features, check_labels

_GLOBAL_MEANS = ("weighted", "class_mean")

# Pass-1 (reference) accumulators and pass-2 (measured) accumulators, by attribute name.
_REF_FIELDS = ("ref_sum", "ref_count")
_MEAS_FIELDS = (
    "proj_scatter",
    "within_sq",
    "meas_zsum",
    "meas_count",
    "ncc_counts",
)
# Indices into the ``ncc_counts`` vector (int64), all summed over measured samples.
_C_N = 0  # measured samples
_C_NCC_TRUE = 1  # nearest reference mean == label
_C_N_PRED = 2  # samples with a network prediction
_C_NCC_PRED = 3  # nearest reference mean == prediction
_C_NET_TRUE = 4  # prediction == label
_C_N_WRONG = 5  # prediction != label
_C_NCC_PRED_WRONG = 6  # nearest == prediction, among prediction != label
_C_NCC_TRUE_WRONG = 7  # nearest == label, among prediction != label
_C_N_TARGET = 8  # samples with a target label
_C_NCC_TARGET = 9  # nearest == target
_C_NET_TARGET = 10  # prediction == target
_N_COUNTS = 11
_CHUNK_ELEMENTS = 1 << 20


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
        features, as the code of Su et al. 2024 and Papyan's Colab (data mean).
        ``"class_mean"``: the unweighted mean of the class means (equal for balanced data).
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
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
        if global_mean not in _GLOBAL_MEANS:
            raise ValueError(
                f"global_mean must be one of {', '.join(_GLOBAL_MEANS)}; got {global_mean!r}"
            )
        if not (0.0 <= rank_rtol < 1.0):
            raise ValueError(f"rank_rtol must lie in [0, 1); got {rank_rtol}")
        self.num_classes = int(num_classes)
        self.global_mean = global_mean
        self.rank_rtol = float(rank_rtol)
        self.device = torch.device(device) if device is not None else None
        w, b = check_classifier(weight, bias, self.num_classes, None)
        self.dim: int | None = w.shape[1] if w is not None else None
        self._weight = w
        self._bias = b
        self.reset()

    # ------------------------------------------------------------------ state handling
    def reset(self) -> None:
        """Forget all data (both passes); keep the configuration and the classifier."""
        self.phase = "reference"
        self.ref_sum: torch.Tensor | None = None
        self.ref_count: torch.Tensor | None = None
        for name in _MEAS_FIELDS:
            setattr(self, name, None)
        self._frozen: dict[str, Any] | None = None

    def _alloc_reference(self, dim: int, device: torch.device) -> None:
        self.dim = dim
        self.device = device
        k = self.num_classes
        self.ref_sum = torch.zeros(k, dim, dtype=torch.float64, device=device)
        self.ref_count = torch.zeros(k, dtype=torch.int64, device=device)
        if self._weight is not None:
            self._weight = self._weight.to(device=device, dtype=torch.float64)
        if self._bias is not None:
            self._bias = self._bias.to(device=device, dtype=torch.float64)

    def _alloc_measured(self) -> None:
        k, d, dev = self.num_classes, self.dim, self.device
        kp = int(self._frozen["present"].numel())  # type: ignore[index]
        self.proj_scatter = torch.zeros(kp, kp, dtype=torch.float64, device=dev)
        self.within_sq = torch.zeros(k, dtype=torch.float64, device=dev)
        self.meas_zsum = torch.zeros(k, d, dtype=torch.float64, device=dev)  # type: ignore[arg-type]
        self.meas_count = torch.zeros(k, dtype=torch.int64, device=dev)
        self.ncc_counts = torch.zeros(_N_COUNTS, dtype=torch.int64, device=dev)

    # ------------------------------------------------------------------ pass 1
    def update(
        self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> NCStats:
        """Pass 1: add a batch of *reference* features (N, d) and labels (N,)."""
        if self.phase != "reference":
            raise RuntimeError(
                "reference pass is closed (update_measured was called); call reset() to "
                "start over or use a new NCStats"
            )
        h = check_features(features, None if self._weight is not None else self.dim)
        if self._weight is not None and h.shape[1] != self._weight.shape[1]:
            raise ValueError(
                f"classifier weight must have shape (num_classes, d) = ({self.num_classes}, "
                f"{h.shape[1]}) to read these features; got {tuple(self._weight.shape)}"
            )
        y = check_labels(labels, h.shape[0], self.num_classes)
        if self.ref_sum is None:
            dev = self.device or h.device
            self._alloc_reference(h.shape[1], torch.device(dev))
        y = y.to(self.device)
        for rows in self._chunks(h.shape[0]):
            hc = h[rows].to(self.device, torch.float64)
            self.ref_sum.index_add_(0, y[rows], hc)  # type: ignore[union-attr]
        self.ref_count += torch.bincount(y, minlength=self.num_classes)  # type: ignore[operator]
        return self

    def _chunks(self, n: int) -> list[slice]:
        # Bound float64 temporaries to ~8 MB whatever the batch: O(K·d) extra memory.
        step = max(1, _CHUNK_ELEMENTS // max(int(self.dim or 1), 1))
        return [slice(i, i + step) for i in range(0, n, step)]

    def freeze(self) -> NCStats:
        """Close the reference pass: fix class means, global mean and the K×K Gram.

        Called automatically by the first :meth:`update_measured`. Raises if fewer than
        two classes have reference samples.
        """
        if self.phase == "measured":
            return self
        if self.ref_count is None:
            raise ValueError("no reference features were given; call update() first")
        present = torch.nonzero(self.ref_count > 0).flatten()
        if present.numel() < 2:
            raise ValueError(
                f"fewer than two classes present in the reference data "
                f"({present.numel()} of {self.num_classes}); NC needs at least two"
            )
        counts = self.ref_count[present].to(torch.float64)
        means = self.ref_sum[present] / counts[:, None]  # type: ignore[index]
        if self.global_mean == "weighted":
            mu_g = self.ref_sum[present].sum(dim=0) / counts.sum()  # type: ignore[index]
        else:
            mu_g = means.mean(dim=0)
        centred = means - mu_g
        kp = int(present.numel())
        # Both global means make the centred means linearly dependent (Σ n_c μ̃_c = 0 for
        # the weighted one, Σ μ̃_c = 0 for the class mean), so rank(Σ_B) <= K-1 exactly.
        max_rank = min(kp - 1, int(self.dim))  # type: ignore[arg-type]
        # One GEMM per chunk gives both P = z M~^T and z W^T (for predictions from W).
        heads = centred if self._weight is None else torch.cat([centred, self._weight])
        index = torch.full((self.num_classes,), -1, dtype=torch.int64, device=self.device)
        index[present] = torch.arange(kp, device=self.device)
        self._frozen = {
            "present": present,
            "index": index,
            "means": means,
            "mu_g": mu_g,
            "centred": centred,
            "gram": centred @ centred.T,
            "heads": heads,
            "mean_logits": None if self._weight is None else means @ self._weight.T,
            "max_rank": max_rank,
        }
        self.phase = "measured"
        self._alloc_measured()
        return self

    # ------------------------------------------------------------------ pass 2
    def update_measured(
        self,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        *,
        predictions: torch.Tensor | np.ndarray | None = None,
        targets: torch.Tensor | np.ndarray | None = None,
    ) -> NCStats:
        """Pass 2: add a batch of *measured* features around the reference means.

        ``labels`` group the measured features (true labels, or target labels for the
        "grouped by target" view of a targeted attack). ``predictions`` are the network's
        decisions on these samples (default: ``argmax(W h + b)`` when a classifier was
        given); ``targets`` are optional attack targets for the leap statistics.
        """
        if self.phase == "reference":
            self.freeze()
        fz = self._frozen
        assert fz is not None
        h = check_features(features, self.dim)
        n = h.shape[0]
        y = check_labels(labels, n, self.num_classes).to(self.device)
        yi = fz["index"][y]
        if n and bool((yi < 0).any()):
            missing = sorted({int(c) for c in y[yi < 0].tolist()})
            raise ValueError(
                f"measured labels {missing[:5]} have no reference samples; give reference "
                "features for every measured class"
            )
        pred = tgt = None
        if predictions is not None:
            pred = check_labels(predictions, n, self.num_classes, "predictions").to(self.device)
        if targets is not None:
            tgt = check_labels(targets, n, self.num_classes, "targets").to(self.device)
        for rows in self._chunks(n):
            self._add_measured(
                h[rows].to(self.device),
                y[rows],
                yi[rows],
                None if pred is None else pred[rows],
                None if tgt is None else tgt[rows],
            )
        return self

    def _add_measured(
        self,
        h: torch.Tensor,
        y: torch.Tensor,
        yi: torch.Tensor,
        pred: torch.Tensor | None,
        tgt: torch.Tensor | None,
    ) -> None:
        fz = self._frozen
        assert fz is not None
        # z = h - mu_y in float64 (h is promoted exactly), written over the gathered means:
        # one pass, no separate float64 copy of the features.
        z = fz["means"].index_select(0, yi)
        torch.sub(h, z, out=z)
        kp = int(fz["present"].numel())
        out = (fz["heads"] @ z.T).T
        proj = out[:, :kp]
        if pred is None and self._weight is not None:
            # W h + b = W z + W mu_y + b
            logits = out[:, kp:] + fz["mean_logits"].index_select(0, yi)
            if self._bias is not None:
                logits = logits + self._bias
            pred = logits.argmax(dim=1)
        # NCC distances need only P = z M~^T and the Gram G:
        # ||h - mu_c||^2 = ||z||^2 + 2 P_y - 2 P_c + G_yy - 2 G_yc + G_cc.
        self.proj_scatter += proj.T @ proj  # type: ignore[operator]
        sq = torch.linalg.vector_norm(z, dim=1).square()  # fused; (z * z).sum is 2 passes
        self.within_sq.index_add_(0, y, sq)  # type: ignore[union-attr]
        self.meas_zsum.index_add_(0, y, z)  # type: ignore[union-attr]
        self.meas_count += torch.bincount(y, minlength=self.num_classes)  # type: ignore[operator]

        gram = fz["gram"]
        score = gram.diagonal()[None, :] - 2.0 * gram[yi] - 2.0 * proj
        nearest = fz["present"][score.argmin(dim=1)]
        n = h.shape[0]
        c = self.ncc_counts
        c[_C_N] += n  # type: ignore[index]
        c[_C_NCC_TRUE] += (nearest == y).sum()  # type: ignore[index]
        if pred is not None:
            wrong = pred != y
            c[_C_N_PRED] += n  # type: ignore[index]
            c[_C_NCC_PRED] += (nearest == pred).sum()  # type: ignore[index]
            c[_C_NET_TRUE] += (~wrong).sum()  # type: ignore[index]
            c[_C_N_WRONG] += wrong.sum()  # type: ignore[index]
            c[_C_NCC_PRED_WRONG] += ((nearest == pred) & wrong).sum()  # type: ignore[index]
            c[_C_NCC_TRUE_WRONG] += ((nearest == y) & wrong).sum()  # type: ignore[index]
        if tgt is not None:
            c[_C_N_TARGET] += n  # type: ignore[index]
            c[_C_NCC_TARGET] += (nearest == tgt).sum()  # type: ignore[index]
            if pred is not None:
                c[_C_NET_TARGET] += (pred == tgt).sum()  # type: ignore[index]

    # ------------------------------------------------------------------ merging
    def _fields(self) -> tuple[str, ...]:
        return _REF_FIELDS if self.phase == "reference" else _MEAS_FIELDS

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
        if self.ref_sum is None:
            self._alloc_reference(int(other.dim), other.device)  # type: ignore[arg-type]
        if self.dim != other.dim:
            raise ValueError(f"cannot merge NCStats of dimension {self.dim} and {other.dim}")
        if self.phase != other.phase:
            raise ValueError(
                f"cannot merge a {self.phase}-pass NCStats with a {other.phase}-pass one; "
                "merge (or all_reduce) after the same pass"
            )
        if self.phase == "measured" and not (
            torch.equal(self.ref_sum, other.ref_sum.to(self.device))  # type: ignore[arg-type]
            and torch.equal(self.ref_count, other.ref_count.to(self.device))  # type: ignore[arg-type]
        ):
            raise ValueError(
                "cannot merge measured passes made around different reference means; "
                "merge the reference passes first, then measure"
            )
        for name in self._fields():
            getattr(self, name).add_(getattr(other, name).to(self.device))
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
        for name in self._fields():
            dist.all_reduce(getattr(self, name), op=dist.ReduceOp.SUM, group=group)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and settings, for checkpoints (``torch.save``/``weights_only``)."""
        state: dict[str, Any] = {
            "num_classes": self.num_classes,
            "global_mean": self.global_mean,
            "rank_rtol": self.rank_rtol,
            "phase": self.phase,
        }
        for name in _REF_FIELDS + _MEAS_FIELDS:
            value = getattr(self, name)
            if value is not None:
                state[name] = value.detach().cpu().clone()
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
        dev = self.device or torch.device("cpu")
        self._alloc_reference(int(state["ref_sum"].shape[1]), dev)
        self.ref_sum.copy_(state["ref_sum"])  # type: ignore[union-attr]
        self.ref_count.copy_(state["ref_count"])  # type: ignore[union-attr]
        if state["phase"] == "measured":
            self.freeze()
            for name in _MEAS_FIELDS:
                getattr(self, name).copy_(state[name])
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
        if self.meas_zsum is None:
            raise ValueError("no measured features were given")
        count = self.meas_count[:, None].to(torch.float64)  # type: ignore[index]
        return self.class_means + self.meas_zsum / count

    def compute(self) -> dict[str, float | int | None]:
        """All metrics as a flat dict of Python numbers (see the module docstring).

        Keys: ``nc1`` = Tr(Σ_W Σ_B⁺) (no 1/K, Su et al.'s code), ``nc1_over_k`` (Papyan
        et al. 2020 text), ``trace_ratio`` = Tr Σ_W / Tr Σ_B (Tirer et al. 2023), ``cdnv``
        (Galanti et al. 2022, mean over class pairs), ``equinorm_means``/``_weights``,
        ``equiangular_means``/``_weights``, ``etf_error_means``/``_weights``, ``nc3``,
        ``nc4`` (NCC vs network disagreement), ``ncc_accuracy`` (NCC vs labels),
        ``net_accuracy``, leap fractions ``leap_true``/``leap_pred``/``leap_target``/
        ``leap_pred_when_wrong``/``leap_true_when_wrong``, ``target_success``, simplex
        similarity of measured vs reference means (``simplex_angle`` etc., degrees), and
        bookkeeping ``num_classes``, ``rank``, ``dim``, ``n_reference``, ``n_measured``.
        Keys that need a classifier, predictions or targets are ``None`` without them.
        """
        if self.ref_count is None:
            raise ValueError("no reference features were given; call update() first")
        if self.phase == "reference":
            raise ValueError(
                "no measured features were given; call update_measured() (with the same "
                "data as update() for classical NC)"
            )
        fz = self._frozen
        assert fz is not None
        counts = self.ncc_counts.tolist()  # type: ignore[union-attr]
        n_meas = counts[_C_N]
        if n_meas == 0:
            raise ValueError("no measured features were given; call update_measured()")
        present = fz["present"]
        kp = int(present.numel())
        centred, gram = fz["centred"], fz["gram"]

        # NC1 from the K×K Gram: Tr(Σ_W Σ_B^+) = K Σ_i v_i^T (A/N) v_i / λ_i^2.
        evals, evecs = torch.linalg.eigh(gram)
        lam_max = float(evals[-1])
        keep = evals > self.rank_rtol * lam_max if lam_max > 0 else evals > 0
        rank = min(int(keep.sum()), fz["max_rank"])
        if rank == 0:
            raise ValueError("all reference class means coincide; Σ_B is zero and NC1 undefined")
        lam = evals[-rank:]
        vec = evecs[:, -rank:]
        a_proj = (vec.T @ (self.proj_scatter / n_meas) @ vec).diagonal()  # type: ignore[operator]
        nc1 = float(kp * (a_proj / lam.pow(2)).sum())

        within = self.within_sq[present]  # type: ignore[index]
        meas_n = self.meas_count[present].to(torch.float64)  # type: ignore[index]
        tr_w = float(within.sum() / n_meas)
        tr_b = float(gram.diagonal().sum() / kp)

        # CDNV (Galanti et al. 2022): (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2), mean over pairs.
        cdnv = None
        seen = meas_n > 0
        if int(seen.sum()) >= 2:
            var = within[seen] / meas_n[seen]
            g = gram[seen][:, seen]
            dist2 = g.diagonal()[:, None] + g.diagonal()[None, :] - 2.0 * g
            iu = torch.triu_indices(var.numel(), var.numel(), 1, device=var.device)
            num = var[iu[0]] + var[iu[1]]
            cdnv = float((num / (2.0 * dist2[iu[0], iu[1]])).mean())

        result: dict[str, float | int | None] = {
            "nc1": nc1,
            "nc1_over_k": nc1 / kp,
            "trace_ratio": tr_w / tr_b,
            "trace_within": tr_w,
            "trace_between": tr_b,
            "cdnv": cdnv,
            "equinorm_means": geometry.equinorm(centred),
            "equiangular_means": geometry.equiangularity(centred),
            "etf_error_means": geometry.etf_error(centred),
            "equinorm_weights": None,
            "equiangular_weights": None,
            "etf_error_weights": None,
            "nc3": None,
        }
        if self._weight is not None:
            w = self._weight[present]
            result.update(
                equinorm_weights=geometry.equinorm(w),
                equiangular_weights=geometry.equiangularity(w),
                etf_error_weights=geometry.etf_error(w),
                nc3=geometry.self_duality(w, centred),
            )

        def frac(num: int, den: int) -> float | None:
            return num / den if den else None

        n_pred, n_wrong, n_tgt = counts[_C_N_PRED], counts[_C_N_WRONG], counts[_C_N_TARGET]
        leap_pred = frac(counts[_C_NCC_PRED], n_pred)
        result.update(
            nc4=None if leap_pred is None else 1.0 - leap_pred,
            ncc_accuracy=counts[_C_NCC_TRUE] / n_meas,
            net_accuracy=frac(counts[_C_NET_TRUE], n_pred),
            leap_true=counts[_C_NCC_TRUE] / n_meas,
            leap_pred=leap_pred,
            leap_pred_when_wrong=frac(counts[_C_NCC_PRED_WRONG], n_wrong),
            leap_true_when_wrong=frac(counts[_C_NCC_TRUE_WRONG], n_wrong),
            leap_target=frac(counts[_C_NCC_TARGET], n_tgt),
            target_success=frac(counts[_C_NET_TARGET], n_tgt) if n_pred else None,
        )

        # Simplex similarity of measured vs reference class means (classes seen in both).
        sim_keys = (
            "simplex_angle",
            "simplex_distance",
            "simplex_angle_uncentred",
            "simplex_distance_uncentred",
            "global_mean_distance",
            "global_mean_angle",
        )
        if int(seen.sum()) >= 2:
            ids = present[seen]
            sim = geometry.simplex_similarity(self.class_means[ids], self.measured_means[ids])
            result.update(
                simplex_angle=sim["angle_mean"],
                simplex_distance=sim["distance_mean"],
                simplex_angle_uncentred=sim["angle_uncentred_mean"],
                simplex_distance_uncentred=sim["distance_uncentred_mean"],
                global_mean_distance=sim["global_mean_distance"],
                global_mean_angle=sim["global_mean_angle"],
            )
        else:
            result.update(dict.fromkeys(sim_keys))
        result.update(
            num_classes=kp,
            rank=rank,
            dim=int(self.dim),  # type: ignore[arg-type]
            n_reference=int(self.ref_count.sum()),  # type: ignore[union-attr]
            n_measured=int(n_meas),
        )
        return result

    def __repr__(self) -> str:
        n_ref = 0 if self.ref_count is None else int(self.ref_count.sum())
        n_meas = 0 if self.ncc_counts is None else int(self.ncc_counts[_C_N])
        return (
            f"NCStats(num_classes={self.num_classes}, dim={self.dim}, phase={self.phase!r}, "
            f"n_reference={n_ref}, n_measured={n_meas})"
        )

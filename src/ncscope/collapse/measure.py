"""Pass 2 of the NC protocol: features measured around a frozen :class:`Reference`.

Every measured feature ``h`` with grouping label ``y`` gives ``z = h − μ_y`` (around the
*reference* means). A :class:`Measurement` accumulates, in float64 and without any d×d matrix:
``A = Σ (M̃ z)(M̃ z)ᵀ`` (K×K), per-class ``Σ‖z‖²``, per-class sums of ``z`` (the measured means),
counts of nearest-class-mean (NCC) decisions against labels, predictions and targets, and,
when logits are given, the network's cross-entropy. For the generalized-NC metrics it also
accumulates ``Â = Σ (M̂̃ ẑ)(M̂̃ ẑ)ᵀ`` of the L2-normalised features, ``ẑ = h/‖h‖ − μ̂_y`` around
the reference's normalised means: ``M̂̃`` rides in the same GEMM as ``M̃`` and ``W``, and
``M̂̃ ẑ = (M̂̃ z + M̂̃ μ_y)/‖h‖ − M̂̃ μ̂_y`` costs one norm per sample and two K×K lookups.
Measurements add exactly (``merge``, ``all_reduce``). The metrics are functions of
``(reference, measurement)``: see :mod:`ncscope.collapse.registry`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ncscope.collapse._checks import check_features, check_labels
from ncscope.collapse.reference import Reference, row_chunks, unit_scale

#: Names of the entries of :attr:`Measurement.counts` (int64, summed over measured samples).
COUNT_NAMES = (
    "n",  # measured samples
    "ncc_true",  # nearest reference mean == label
    "n_pred",  # samples with a network prediction
    "ncc_pred",  # nearest reference mean == prediction
    "net_true",  # prediction == label
    "n_wrong",  # prediction != label
    "ncc_pred_wrong",  # nearest == prediction, among prediction != label
    "ncc_true_wrong",  # nearest == label, among prediction != label
    "n_target",  # samples with a target label
    "ncc_target",  # nearest == target
    "net_target",  # prediction == target
    "n_logits",  # samples with logits (for the loss)
)
_C = {name: i for i, name in enumerate(COUNT_NAMES)}
#: Accumulator tensors of a measurement, by attribute name (checkpoint / all_reduce order).
FIELDS = ("proj_scatter", "within_sq", "meas_zsum", "meas_count", "ncc_counts", "loss_sum",
          "unit_scatter")


class Measurement:
    """Pass-2 accumulator of one layer's features around ``reference``."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        k, d, dev = reference.num_classes, reference.dim, reference.device
        kp = reference.num_present
        self.proj_scatter = torch.zeros(kp, kp, dtype=torch.float64, device=dev)
        self.within_sq = torch.zeros(k, dtype=torch.float64, device=dev)
        self.meas_zsum = torch.zeros(k, d, dtype=torch.float64, device=dev)
        self.meas_count = torch.zeros(k, dtype=torch.int64, device=dev)
        self.ncc_counts = torch.zeros(len(COUNT_NAMES), dtype=torch.int64, device=dev)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.unit_scatter = torch.zeros(kp, kp, dtype=torch.float64, device=dev)
        self._count_index: dict[tuple[int, ...], torch.Tensor] = {}

    def count(self, name: str) -> int:
        """One of the :data:`COUNT_NAMES` counters as a Python int."""
        return int(self.ncc_counts[_C[name]])

    def update(
        self,
        features: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        *,
        predictions: torch.Tensor | np.ndarray | None = None,
        targets: torch.Tensor | np.ndarray | None = None,
        logits: torch.Tensor | None = None,
    ) -> Measurement:
        """Add a batch: features (N, d) grouped by ``labels`` (N,).

        ``predictions``: the network's decisions (default: ``argmax(logits)`` when ``logits``
        are given, else ``argmax(W h + b)`` with the reference's classifier); ``targets``:
        attack targets for the leap statistics; ``logits``: the network's outputs, for the
        cross-entropy against ``labels``.
        """
        ref = self.reference
        h = check_features(features, ref.dim)
        n = h.shape[0]
        y = check_labels(labels, n, ref.num_classes).to(ref.device)
        yi = ref.index[y]
        if n and bool((yi < 0).any()):
            missing = sorted({int(c) for c in y[yi < 0].tolist()})
            raise ValueError(
                f"measured labels {missing[:5]} have no reference samples; give reference "
                "features for every measured class"
            )
        pred = tgt = None
        if logits is not None:
            logits = logits.detach().to(ref.device)
            ce = F.cross_entropy(logits.float(), y, reduction="sum")
            self.loss_sum += ce.double()
            self.ncc_counts[_C["n_logits"]] += n
            if predictions is None:
                predictions = logits.argmax(dim=1)
        if predictions is not None:
            pred = check_labels(predictions, n, ref.num_classes, "predictions").to(ref.device)
        if targets is not None:
            tgt = check_labels(targets, n, ref.num_classes, "targets").to(ref.device)
        chunks = row_chunks(n, ref.dim)
        if len(chunks) == 1:  # the usual batch: no slicing
            self._add(h, y, yi, pred, tgt)
            return self
        for rows in chunks:
            self._add(h[rows], y[rows], yi[rows],
                      None if pred is None else pred[rows], None if tgt is None else tgt[rows])
        return self

    def _add(self, h: torch.Tensor, y: torch.Tensor, yi: torch.Tensor,
             pred: torch.Tensor | None, tgt: torch.Tensor | None) -> None:
        ref = self.reference
        kp = ref.num_present
        nw = 0 if ref.weight is None else ref.num_classes
        h64 = h.to(ref.device, torch.float64)  # the one float64 copy of the batch (exact)
        # z = h - mu_y in float64, written over the gathered means.
        z = ref.means.index_select(0, yi)
        torch.sub(h64, z, out=z)
        out = (ref.heads @ z.T).T
        proj = out[:, :kp]
        # one gather of every per-class row the batch needs: [G | mu M^~^T | mu^ M^~^T | mu W^T]
        rows = ref.class_rows.index_select(0, yi)
        if ref.unit_cross is not None:  # M^~ (h/|h| - mu^_y) = (M^~ z + M^~ mu_y)/|h| - M^~ mu^_y
            uproj = out[:, kp + nw:] + rows[:, kp:2 * kp]
            uproj.mul_(unit_scale(h64)[:, None]).sub_(rows[:, 2 * kp:3 * kp])
            self.unit_scatter.addmm_(uproj.T, uproj)
        if pred is None and ref.weight is not None:
            lo = rows.shape[1] - nw
            logits = out[:, kp:kp + nw] + rows[:, lo:]  # W z + W mu_y + b
            if ref.bias is not None:
                logits = logits + ref.bias
            pred = logits.argmax(dim=1)
        self.proj_scatter.addmm_(proj.T, proj)
        sq = torch.linalg.vector_norm(z, dim=1).square()  # fused; (z * z).sum is 2 passes
        self.within_sq.index_add_(0, y, sq)
        self.meas_zsum.index_add_(0, y, z)
        self.meas_count += torch.bincount(y, minlength=ref.num_classes)
        # NCC distances need only P = z M~^T and the Gram G:
        # ||h - mu_c||^2 = ||z||^2 + 2 P_y - 2 P_c + G_yy - 2 G_yc + G_cc.
        score = torch.add(rows[:, :kp], proj).mul_(-2.0).add_(ref.gram.diagonal())
        nearest = ref.present[score.argmin(dim=1)]
        self._count(nearest, y, pred, tgt)

    def _count(self, nearest: torch.Tensor, y: torch.Tensor, pred: torch.Tensor | None,
               tgt: torch.Tensor | None) -> None:
        """Add the NCC / network agreement counts of a batch with one reduction."""
        hit = nearest == y
        cols, names = [torch.ones_like(hit), hit], ["n", "ncc_true"]
        if pred is not None:
            wrong = pred != y
            hit_pred = nearest == pred
            cols += [hit_pred, ~wrong, wrong, hit_pred & wrong, hit & wrong]
            names += ["ncc_pred", "net_true", "n_wrong", "ncc_pred_wrong", "ncc_true_wrong"]
        if tgt is not None:
            cols.append(nearest == tgt)
            names.append("ncc_target")
            if pred is not None:
                cols.append(pred == tgt)
                names.append("net_target")
        # the sample counts ride as the all-ones column
        pos = [_C[name] for name in names]
        ones = [_C[name] for name in ("n_pred",) if pred is not None]
        ones += [_C["n_target"]] if tgt is not None else []
        pos += ones
        cols += [cols[0]] * len(ones)
        key = tuple(pos)
        index = self._count_index.get(key)
        if index is None:
            index = self._count_index[key] = torch.tensor(pos, device=self.ncc_counts.device)
        self.ncc_counts.index_add_(0, index, torch.stack(cols, dim=1).sum(dim=0))

    # ------------------------------------------------------------------ combining
    def merge(self, other: Measurement) -> Measurement:
        """Add ``other`` (measured around an identical reference) into this one."""
        if not self.reference.same_as(other.reference):
            raise ValueError(
                "cannot merge measured passes made around different reference means; "
                "merge the reference passes first, then measure"
            )
        for name in FIELDS:
            getattr(self, name).add_(getattr(other, name).to(self.reference.device))
        return self

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The accumulator tensors (for ``all_reduce`` and checkpoints)."""
        return tuple(getattr(self, name) for name in FIELDS)

    def all_reduce(self, group: Any = None) -> Measurement:
        """Sum the accumulators over ``torch.distributed`` ranks (no-op without a group)."""
        all_reduce_tensors(self.tensors(), group)
        return self

    @property
    def measured_means(self) -> torch.Tensor:
        """(K, d) measured class means (NaN rows for classes not measured)."""
        count = self.meas_count[:, None].to(torch.float64)
        return self.reference.class_means + self.meas_zsum / count


def all_reduce_tensors(tensors: tuple[torch.Tensor, ...], group: Any = None) -> None:
    """Sum ``tensors`` in place over ``torch.distributed`` ranks when a group is initialised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)

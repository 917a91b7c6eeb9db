"""Pass 1 of the NC protocol: class-mean sums, and the frozen reference they define.

:class:`ClassMeanSums` adds reference features class by class (float64 sums and counts; exact,
mergeable, ``all_reduce``-able). :meth:`ClassMeanSums.freeze` turns them into a
:class:`Reference`: the class means ``μ_c``, the global mean ``μ_G``, the centred means
``M̃`` (K×d), their K×K Gram ``G = M̃M̃ᵀ`` with its eigendecomposition and rank, and the linear
classifier ``(W, b)`` that reads the layer. A reference never changes after it is frozen; any
number of :class:`~ncscope.collapse.measure.Measurement` objects accumulate against it (the
clean training means are the reference of every "around the clean means" view).

Conventions (Papyan, Han & Donoho, PNAS 2020, §2; the code of Su et al., TMLR 2024):
``global_mean="weighted"`` is the count-weighted mean of the reference features,
``"class_mean"`` the unweighted mean of the class means. Either way the centred means satisfy
``Σ_c n_c μ̃_c = 0`` resp. ``Σ_c μ̃_c = 0``, so ``rank(Σ_B) ≤ K − 1`` exactly; the rank is
capped explicitly at ``min(K_present − 1, d)`` and eigenvalues below ``rank_rtol · λ_max`` are
dropped (degenerate means).

Alongside, pass 1 sums the L2-normalised features ``ĥ = h/‖h‖`` (``ĥ = 0`` for ``h = 0``) per
class, and the reference holds the same quantities for them (``unit_*``: means, centred means,
Gram eigenpairs, rank, global mean by the same ``global_mean`` rule) for the generalized-NC
metrics (:mod:`ncscope.collapse.gnc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ncscope.collapse._checks import check_classifier, check_features, check_labels

GLOBAL_MEANS = ("weighted", "class_mean")
_CHUNK_ELEMENTS = 1 << 20


def row_chunks(n: int, dim: int | None) -> list[slice]:
    """Row slices bounding float64 temporaries to ~8 MB whatever the batch size."""
    step = max(1, _CHUNK_ELEMENTS // max(int(dim or 1), 1))
    return [slice(i, i + step) for i in range(0, n, step)]


@dataclass(frozen=True, eq=False)
class Reference:
    """The frozen pass-1 statistics one layer is measured around (all float64).

    Attributes:
        num_classes: K (labels lie in ``[0, K)``).
        present: indices of the classes with reference samples (``K_p`` of them, ≥ 2).
        index: (K,) map class → row of ``means`` (``-1`` for absent classes).
        counts: (K,) reference sample counts; ``sums``: (K, d) reference feature sums.
        means: (K_p, d) class means ``μ_c``; ``mu_g``: global mean ``μ_G``;
        centred: ``M̃ = means − μ_G``; ``gram``: ``M̃M̃ᵀ``.
        evals / evecs: eigendecomposition of ``gram`` (ascending); ``rank``: kept rank
            (``None`` when every mean coincides, i.e. Σ_B = 0).
        weight / bias: classifier (K, d) / (K,) or ``None``; ``heads``: ``M̃`` stacked over
            ``W`` and ``M̂̃`` (one GEMM per batch gives every projection); ``mean_logits``:
            ``μ_c Wᵀ``; ``class_rows``: (K_p, ·) every per-class row pass 2 looks up for a
            sample, side by side (one gather per batch): ``[G | unit_cross | unit_self |
            mean_logits]``, the unit and classifier blocks when present.
        unit_sums: (K, d) sums of the normalised features; unit_means / unit_mu_g /
            unit_centred (``M̂̃``) / unit_evals / unit_evecs / unit_rank: their class means,
            global mean, centred means and Gram eigenpairs and kept rank (``None`` when the
            sums are unknown, e.g. a state saved without them); unit_cross = ``μ_c M̂̃ᵀ`` and
            unit_self = ``μ̂_c M̂̃ᵀ`` (K_p×K_p) turn ``M̂̃ z`` into ``M̂̃ (ĥ − μ̂_y)`` in pass 2.
    """

    num_classes: int
    dim: int
    global_mean: str
    rank_rtol: float
    sums: torch.Tensor
    counts: torch.Tensor
    present: torch.Tensor
    index: torch.Tensor
    means: torch.Tensor
    mu_g: torch.Tensor
    centred: torch.Tensor
    gram: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor
    rank: int | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    heads: torch.Tensor
    mean_logits: torch.Tensor | None
    class_rows: torch.Tensor
    unit_sums: torch.Tensor | None = None
    unit_means: torch.Tensor | None = None
    unit_mu_g: torch.Tensor | None = None
    unit_centred: torch.Tensor | None = None
    unit_evals: torch.Tensor | None = None
    unit_evecs: torch.Tensor | None = None
    unit_rank: int | None = None
    unit_cross: torch.Tensor | None = None
    unit_self: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        """Where the reference tensors live."""
        return self.means.device

    @property
    def num_present(self) -> int:
        """Number of classes with reference samples."""
        return int(self.present.numel())

    @property
    def class_means(self) -> torch.Tensor:
        """(K, d) reference class means with NaN rows for absent classes."""
        return self.sums / self.counts[:, None].to(torch.float64)

    def same_as(self, other: Reference) -> bool:
        """True when both were frozen from identical sums and counts (mergeable measurements)."""
        return self is other or (
            torch.equal(self.sums, other.sums.to(self.device))
            and torch.equal(self.counts, other.counts.to(self.device))
            and self.global_mean == other.global_mean
            and _same_or_both_none(self.unit_sums, other.unit_sums)
        )


def _same_or_both_none(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(torch.equal(a, b.to(a.device)))


def unit_scale(h: torch.Tensor) -> torch.Tensor:
    """(N,) float64 ``1/‖h_i‖`` (0 for a zero row): ``ĥ = h · unit_scale(h)[:, None]``."""
    norm = torch.linalg.vector_norm(h, dim=1, dtype=torch.float64)
    return torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))


def _eig_rank(gram: torch.Tensor, rank_rtol: float, cap: int
              ) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    evals, evecs = torch.linalg.eigh(gram)
    lam_max = float(evals[-1])
    keep = evals > rank_rtol * lam_max if lam_max > 0 else evals > 0
    rank = min(int(keep.sum()), cap)
    return evals, evecs, rank or None


class ClassMeanSums:
    """Pass-1 accumulator: per-class float64 sums and counts of one layer's features.

    ``update`` adds a batch; ``merge`` / ``all_reduce`` add other accumulators exactly;
    ``freeze`` returns the :class:`Reference`. ``weight``/``bias`` are the classifier reading
    the layer (optional; needed for NC2/NC3 of W and, without given predictions, for NC4).
    """

    def __init__(
        self,
        num_classes: int,
        weight: torch.Tensor | np.ndarray | None = None,
        bias: torch.Tensor | np.ndarray | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.device = torch.device(device) if device is not None else None
        w, b = check_classifier(weight, bias, self.num_classes, None)
        self.weight, self.bias = w, b
        self.dim: int | None = w.shape[1] if w is not None else None
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.unit_sums: torch.Tensor | None = None  # Σ h/‖h‖ per class (generalized NC)

    def allocate(self, dim: int, device: torch.device) -> None:
        """Create zero sums of dimension ``dim`` on ``device`` (done by the first batch)."""
        self.dim, self.device = dim, device
        self.sums = torch.zeros(self.num_classes, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        self.unit_sums = torch.zeros_like(self.sums)
        if self.weight is not None:
            self.weight = self.weight.to(device=device, dtype=torch.float64)
        if self.bias is not None:
            self.bias = self.bias.to(device=device, dtype=torch.float64)

    def update(self, features: torch.Tensor | np.ndarray,
               labels: torch.Tensor | np.ndarray) -> ClassMeanSums:
        """Add a batch of reference features (N, d) with labels (N,)."""
        h = check_features(features, None if self.weight is not None else self.dim)
        if self.weight is not None and h.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"classifier weight must have shape (num_classes, d) = ({self.num_classes}, "
                f"{h.shape[1]}) to read these features; got {tuple(self.weight.shape)}"
            )
        y = check_labels(labels, h.shape[0], self.num_classes)
        if self.sums is None:
            self.allocate(h.shape[1], torch.device(self.device or h.device))
        y = y.to(self.device)
        for rows in row_chunks(h.shape[0], self.dim):
            chunk = h[rows]
            h64 = chunk.to(self.device, torch.float64)
            self.sums.index_add_(0, y[rows], h64)  # type: ignore[union-attr]
            if self.unit_sums is not None:
                scale = unit_scale(h64)[:, None]
                # in place on the float64 copy (a new allocation per chunk costs page faults)
                h64 = h64.mul_(scale) if h64.data_ptr() != chunk.data_ptr() else h64 * scale
                self.unit_sums.index_add_(0, y[rows], h64)
        self.counts += torch.bincount(y, minlength=self.num_classes)  # type: ignore[operator]
        return self

    def merge(self, other: ClassMeanSums) -> ClassMeanSums:
        """Add ``other``'s sums and counts (in place)."""
        if other.sums is None:
            return self
        if self.sums is None:
            self.allocate(int(other.dim), other.device)  # type: ignore[arg-type]
        if self.dim != other.dim:
            raise ValueError(f"cannot merge NCStats of dimension {self.dim} and {other.dim}")
        self.sums.add_(other.sums.to(self.device))
        self.counts.add_(other.counts.to(self.device))  # type: ignore[union-attr]
        if self.unit_sums is None or other.unit_sums is None:
            self.unit_sums = None  # one side has no normalised sums: neither has a valid total
        else:
            self.unit_sums.add_(other.unit_sums.to(self.device))
        return self

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The accumulator tensors (for ``all_reduce`` and checkpoints)."""
        if self.sums is None:
            return ()
        unit = () if self.unit_sums is None else (self.unit_sums,)
        return (self.sums, self.counts, *unit)  # type: ignore[return-value]

    def freeze(self, *, global_mean: str = "weighted", rank_rtol: float = 1e-10) -> Reference:
        """The :class:`Reference` of the sums so far (raises with fewer than two classes)."""
        if global_mean not in GLOBAL_MEANS:
            raise ValueError(
                f"global_mean must be one of {', '.join(GLOBAL_MEANS)}; got {global_mean!r}"
            )
        if self.counts is None or self.sums is None:
            raise ValueError("no reference features were given; call update() first")
        present = torch.nonzero(self.counts > 0).flatten()
        kp = int(present.numel())
        if kp < 2:
            raise ValueError(
                f"fewer than two classes present in the reference data "
                f"({kp} of {self.num_classes}); NC needs at least two"
            )
        counts = self.counts[present].to(torch.float64)
        means = self.sums[present] / counts[:, None]
        if global_mean == "weighted":
            mu_g = self.sums[present].sum(dim=0) / counts.sum()
        else:
            mu_g = means.mean(dim=0)
        centred = means - mu_g
        gram = centred @ centred.T
        cap = min(kp - 1, int(self.dim))  # type: ignore[arg-type]
        evals, evecs, rank = _eig_rank(gram, rank_rtol, cap)
        index = torch.full((self.num_classes,), -1, dtype=torch.int64, device=self.device)
        index[present] = torch.arange(kp, device=self.device)
        w = self.weight
        heads = [centred] if w is None else [centred, w]
        unit: dict[str, Any] = {}
        if self.unit_sums is not None:
            u_means = self.unit_sums[present] / counts[:, None]
            if global_mean == "weighted":
                u_mu_g = self.unit_sums[present].sum(dim=0) / counts.sum()
            else:
                u_mu_g = u_means.mean(dim=0)
            u_centred = u_means - u_mu_g
            u_evals, u_evecs, u_rank = _eig_rank(u_centred @ u_centred.T, rank_rtol, cap)
            heads.append(u_centred)
            unit = dict(unit_sums=self.unit_sums.clone(), unit_means=u_means, unit_mu_g=u_mu_g,
                        unit_centred=u_centred, unit_evals=u_evals, unit_evecs=u_evecs,
                        unit_rank=u_rank, unit_cross=means @ u_centred.T,
                        unit_self=u_means @ u_centred.T)
        mean_logits = None if w is None else means @ w.T
        rows = [gram]
        if unit:
            rows += [unit["unit_cross"], unit["unit_self"]]
        if mean_logits is not None:
            rows.append(mean_logits)
        return Reference(
            num_classes=self.num_classes, dim=int(self.dim), global_mean=global_mean,  # type: ignore[arg-type]
            rank_rtol=float(rank_rtol), sums=self.sums.clone(), counts=self.counts.clone(),
            present=present, index=index, means=means, mu_g=mu_g, centred=centred, gram=gram,
            evals=evals, evecs=evecs, rank=rank, weight=w, bias=self.bias,
            heads=heads[0] if len(heads) == 1 else torch.cat(heads),
            mean_logits=mean_logits, class_rows=torch.cat(rows, dim=1), **unit,
        )

    def state(self) -> dict[str, Any]:
        """CPU copies of the sums, counts and normalised sums (empty before the first batch)."""
        if self.sums is None:
            return {}
        out = {"ref_sum": self.sums.detach().cpu().clone(),
               "ref_count": self.counts.detach().cpu().clone()}  # type: ignore[union-attr]
        if self.unit_sums is not None:
            out["ref_unit_sum"] = self.unit_sums.detach().cpu().clone()
        return out

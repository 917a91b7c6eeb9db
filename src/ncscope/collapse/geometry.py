"""Geometry of class-mean and classifier matrices: NC2, NC3 and simplex similarity.

All functions take small (K, d) or (K, K) float64 tensors and return Python floats or
small tensors. Conventions follow Papyan, Han & Donoho (PNAS 2020) as implemented in the
code of Su et al. (TMLR 2024); each function states its own.
"""

from __future__ import annotations

import math

import torch


def equinorm(vectors: torch.Tensor) -> float:
    """NC2 equinorm: ``std(‖v_c‖) / mean(‖v_c‖)`` over the rows ``v_c``.

    Papyan et al. 2020, Fig. 2; ``std`` is the unbiased (K-1) estimator as ``torch.std``
    in the paper's code. Rows are used as given (centre class means before calling).
    """
    norms = vectors.double().norm(dim=1)
    if norms.numel() < 2:
        raise ValueError("equinorm needs at least two classes")
    return float(norms.std(unbiased=True) / norms.mean())


def equiangularity(vectors: torch.Tensor) -> float:
    """NC2 equiangularity: ``mean_{c≠c'} |cos(v_c, v_c') + 1/(K-1)|``.

    Papyan et al. 2020 ("coherence"): the sum of absolute off-diagonal entries of the
    shifted cosine Gram matrix divided by K(K-1) (the entry-wise L1 norm, not the matrix
    1-norm). A simplex ETF gives 0; an orthonormal frame gives exactly 1/(K-1).
    """
    v = vectors.double()
    k = v.shape[0]
    if k < 2:
        raise ValueError("equiangularity needs at least two classes")
    unit = v / v.norm(dim=1, keepdim=True)
    cos = unit @ unit.T + 1.0 / (k - 1)
    cos.fill_diagonal_(0.0)
    return float(cos.abs().sum() / (k * (k - 1)))


def etf_error(vectors: torch.Tensor) -> float:
    """Distance of the Gram matrix to a simplex ETF (rhubarbwu ``simplex_etf_error``).

    ``‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F`` with ``G = V Vᵀ`` of the rows ``v_c``.
    Zero exactly when the rows form a (scaled) simplex equiangular tight frame.
    """
    v = vectors.double()
    k = v.shape[0]
    if k < 2:
        raise ValueError("etf_error needs at least two classes")
    gram = v @ v.T
    etf = (torch.eye(k, dtype=gram.dtype, device=gram.device) - 1.0 / k) / math.sqrt(k - 1)
    return float((gram / gram.norm() - etf).norm())


def self_duality(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """NC3: ``‖Wᵀ/‖W‖_F − M̃ᵀ/‖M̃‖_F‖_F²`` (squared Frobenius distance).

    Papyan et al. 2020 as coded by Su et al. 2024 (``W_M_dist``). ``weight`` is (K, d),
    ``centred_means`` is (K, d) with rows ``μ_c − μ_G``.
    """
    w = weight.double()
    m = centred_means.double()
    return float((w / w.norm() - m / m.norm()).pow(2).sum())


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise angle in degrees between ``a`` and ``b``; NaN where a vector is zero.

    Uses ``2·atan2(‖â − b̂‖, ‖â + b̂‖)``, exact near 0° and 180° (``arccos`` of a cosine
    loses half the digits there).
    """
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na, b / nb
    ang = 2.0 * torch.atan2((ua - ub).norm(dim=-1), (ua + ub).norm(dim=-1))
    zero = (na.squeeze(-1) == 0) | (nb.squeeze(-1) == 0)
    return torch.rad2deg(ang).masked_fill(zero, float("nan"))


def simplex_similarity(
    means_a: torch.Tensor, means_b: torch.Tensor
) -> dict[str, torch.Tensor | float]:
    """Compare two simplices of class means, class by class (Su et al. 2024, §"simplex similarity").

    Each simplex is centred by its *own* global mean, the unweighted mean of its K class
    means (as the paper's code). Returns per-class tensors ``angle`` and ``distance``
    (centred), ``angle_uncentred`` and ``distance_uncentred``, their class averages
    (``*_mean``), and ``global_mean_distance`` / ``global_mean_angle`` between the two
    global means. Angles are in degrees.
    """
    a = torch.as_tensor(means_a).double()
    b = torch.as_tensor(means_b).double()
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"simplex_similarity needs two (K, d) mean matrices of equal shape; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("class means contain NaN/Inf; every class needs at least one sample")
    ga, gb = a.mean(dim=0), b.mean(dim=0)
    ca, cb = a - ga, b - gb
    out: dict[str, torch.Tensor | float] = {
        "angle": _angle_deg(ca, cb),
        "distance": (ca - cb).norm(dim=1),
        "angle_uncentred": _angle_deg(a, b),
        "distance_uncentred": (a - b).norm(dim=1),
    }
    for key in ("angle", "distance", "angle_uncentred", "distance_uncentred"):
        out[f"{key}_mean"] = float(out[key].mean())  # type: ignore[union-attr]
    out["global_mean_distance"] = float((ga - gb).norm())
    out["global_mean_angle"] = float(_angle_deg(ga[None], gb[None])[0])
    return out

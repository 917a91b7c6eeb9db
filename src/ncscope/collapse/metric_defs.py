"""The built-in NC metrics, each registered once (see :mod:`ncscope.collapse.registry`).

Conventions: NC1–NC4 of Papyan, Han & Donoho (PNAS 2020, §2 and Fig. 6–7) as coded by Su et
al. (TMLR 2024, §3 "Neural Collapse"); CDNV of Galanti et al. (ICLR 2022, Def. 1); the trace
ratio of Tirer, Huang & Niles-Weed (ICML 2023); the leap statistics and the simplex similarity
of Su et al. 2024 (§4 "perturbed points leap", §5 "simplex similarity"). ``nc1`` is
``Tr(Σ_W Σ_B⁺)`` without the 1/K of the PNAS text (the code of Su et al.); ``nc1_over_k`` is
the text's. The generalized NC of Jiang et al. (arXiv 2310.05351: ``gnc1``-``gnc3``, per-class
``rho``) is defined in :mod:`ncscope.collapse.gnc` and registered here, before the bookkeeping
metrics. Every statistic is float64.
"""

from __future__ import annotations

import torch

from ncscope.collapse import geometry, gnc
from ncscope.collapse.registry import NCView, register_metric

PAPYAN = "Papyan, Han & Donoho, PNAS 2020, §2"
SU = "Su, Zhang, Tsilivis & Kempe, TMLR 2024"


def _frac(num: int, den: int) -> float | None:
    return num / den if den else None


@register_metric("nc1", description="Tr(Σ_W Σ_B⁺): within-class scatter around the reference "
                 "means against their between-class scatter (rank-truncated pseudo-inverse)",
                 citation=f"{PAPYAN} (NC1, Fig. 6); no 1/K as in the code of {SU}")
def nc1(v: NCView) -> float:
    # Tr(Σ_W Σ_B^+) = K Σ_i v_i^T (A/N) v_i / λ_i^2 from the K×K Gram.
    a = (v.vec.T @ (v.measurement.proj_scatter / v.n) @ v.vec).diagonal()
    return float(v.reference.num_present * (a / v.lam.pow(2)).sum())


@register_metric("nc1_over_k", description="NC1 divided by K (the PNAS text's 1/K·Tr)",
                 citation=f"{PAPYAN} (NC1)")
def nc1_over_k(v: NCView) -> float:
    return nc1(v) / v.reference.num_present


@register_metric("trace_ratio", description="Tr Σ_W / Tr Σ_B",
                 citation="Tirer, Huang & Niles-Weed, ICML 2023, §2")
def trace_ratio(v: NCView) -> float:
    return v.trace_within / v.trace_between


@register_metric("trace_within", description="Tr Σ_W: mean squared distance to the reference "
                 "mean of the sample's group", citation=PAPYAN)
def trace_within(v: NCView) -> float:
    return v.trace_within


@register_metric("trace_between", description="Tr Σ_B of the reference means", citation=PAPYAN)
def trace_between(v: NCView) -> float:
    return v.trace_between


@register_metric("cdnv", description="class-distance normalised variance "
                 "(Var_c + Var_c')/(2‖μ_c − μ_c'‖²), mean over class pairs",
                 citation="Galanti, György & Hutter, ICLR 2022, Def. 1")
def cdnv(v: NCView) -> float | None:
    if int(v.seen.sum()) < 2:
        return None
    var = v.within[v.seen] / v.meas_n[v.seen]
    g = v.reference.gram[v.seen][:, v.seen]
    dist2 = g.diagonal()[:, None] + g.diagonal()[None, :] - 2.0 * g
    iu = torch.triu_indices(var.numel(), var.numel(), 1, device=var.device)
    return float(((var[iu[0]] + var[iu[1]]) / (2.0 * dist2[iu[0], iu[1]])).mean())


@register_metric("equinorm_means", description="std/mean of the centred reference mean norms",
                 citation=f"{PAPYAN} (NC2, Fig. 2)")
def equinorm_means(v: NCView) -> float:
    return geometry.equinorm(v.reference.centred)


@register_metric("equiangular_means", description="mean |cos + 1/(K−1)| of centred mean pairs",
                 citation=f"{PAPYAN} (NC2, Fig. 3)")
def equiangular_means(v: NCView) -> float:
    return geometry.equiangularity(v.reference.centred)


@register_metric("etf_error_means", description="‖G/‖G‖ − simplex ETF‖_F of the centred means",
                 citation="simplex ETF distance (Papyan et al. 2020, NC2)")
def etf_error_means(v: NCView) -> float:
    return geometry.etf_error(v.reference.centred)


def _weights(v: NCView) -> torch.Tensor | None:
    w = v.reference.weight
    return None if w is None else w[v.reference.present]


@register_metric("equinorm_weights", description="std/mean of the classifier row norms",
                 citation=f"{PAPYAN} (NC2)")
def equinorm_weights(v: NCView) -> float | None:
    w = _weights(v)
    return None if w is None else geometry.equinorm(w)


@register_metric("equiangular_weights", description="mean |cos + 1/(K−1)| of classifier rows",
                 citation=f"{PAPYAN} (NC2)")
def equiangular_weights(v: NCView) -> float | None:
    w = _weights(v)
    return None if w is None else geometry.equiangularity(w)


@register_metric("etf_error_weights", description="simplex-ETF distance of the classifier rows",
                 citation=f"{PAPYAN} (NC2)")
def etf_error_weights(v: NCView) -> float | None:
    w = _weights(v)
    return None if w is None else geometry.etf_error(w)


@register_metric("nc3", description="‖Wᵀ/‖W‖ − M̃ᵀ/‖M̃‖‖_F² (self-duality)",
                 citation=f"{PAPYAN} (NC3, Fig. 5) as coded by {SU}")
def nc3(v: NCView) -> float | None:
    w = _weights(v)
    return None if w is None else geometry.self_duality(w, v.reference.centred)


@register_metric("nc4", description="fraction where the nearest reference mean ≠ the network's "
                 "prediction", citation=f"{PAPYAN} (NC4, Fig. 7)")
def nc4(v: NCView) -> float | None:
    leap = _frac(v.count("ncc_pred"), v.count("n_pred"))
    return None if leap is None else 1.0 - leap


@register_metric("ncc_accuracy", description="nearest-reference-mean classifier accuracy "
                 "against the grouping labels", citation=f"{SU}, §4 (NCC with clean means)")
def ncc_accuracy(v: NCView) -> float:
    return v.count("ncc_true") / v.n


@register_metric("net_accuracy", description="network accuracy against the grouping labels",
                 citation="—")
def net_accuracy(v: NCView) -> float | None:
    return _frac(v.count("net_true"), v.count("n_pred"))


@register_metric("loss", description="network cross-entropy against the grouping labels "
                 "(when logits were measured)", citation="—")
def loss(v: NCView) -> float | None:
    n = v.count("n_logits")
    return float(v.measurement.loss_sum) / n if n else None


@register_metric("leap_true", description="fraction nearest to the reference mean of the label",
                 citation=f"{SU}, §4 (leap)")
def leap_true(v: NCView) -> float:
    return v.count("ncc_true") / v.n


@register_metric("leap_pred", description="fraction nearest to the reference mean of the "
                 "network's prediction", citation=f"{SU}, §4 (leap)")
def leap_pred(v: NCView) -> float | None:
    return _frac(v.count("ncc_pred"), v.count("n_pred"))


@register_metric("leap_pred_when_wrong", description="among misclassified samples: fraction "
                 "nearest to the mean of the (wrong) prediction", citation=f"{SU}, §4 (leap)")
def leap_pred_when_wrong(v: NCView) -> float | None:
    return _frac(v.count("ncc_pred_wrong"), v.count("n_wrong"))


@register_metric("leap_true_when_wrong", description="among misclassified samples: fraction "
                 "still nearest to the mean of the label", citation=f"{SU}, §4 (leap)")
def leap_true_when_wrong(v: NCView) -> float | None:
    return _frac(v.count("ncc_true_wrong"), v.count("n_wrong"))


@register_metric("leap_target", description="fraction nearest to the mean of the attack target",
                 citation=f"{SU}, §4 (targeted leap)")
def leap_target(v: NCView) -> float | None:
    return _frac(v.count("ncc_target"), v.count("n_target"))


@register_metric("target_success", description="fraction the network assigns to the target",
                 citation=f"{SU}, §4")
def target_success(v: NCView) -> float | None:
    if not v.count("n_pred"):
        return None
    return _frac(v.count("net_target"), v.count("n_target"))


def _similarity(key: str):  # noqa: ANN202 - small factory of registered functions
    def fn(v: NCView) -> float | None:
        sim = v.similarity
        return None if sim is None else sim[key]

    return fn


_SIMILARITY = {
    "simplex_angle": ("angle_mean", "mean angle (degrees) between centred reference and "
                      "measured class means, each simplex centred by its own mean of means"),
    "simplex_distance": ("distance_mean", "mean distance between centred reference and "
                         "measured class means"),
    "simplex_angle_uncentred": ("angle_uncentred_mean", "mean angle (degrees) between the "
                                "uncentred class means"),
    "simplex_distance_uncentred": ("distance_uncentred_mean", "mean distance between the "
                                   "uncentred class means"),
    "global_mean_distance": ("global_mean_distance", "distance between the two global means"),
    "global_mean_angle": ("global_mean_angle", "angle (degrees) between the two global means"),
}
for _name, (_key, _text) in _SIMILARITY.items():
    register_metric(_name, description=_text, citation=f"{SU}, §5 (simplex similarity)",
                    cross_reference=True)(_similarity(_key))


def _per_class(key: str):  # noqa: ANN202
    def fn(v: NCView) -> dict[int, float]:
        sim = v.similarity
        if sim is None:
            return {}
        return {c: float(sim[key][j]) for j, c in enumerate(sim["classes"])}

    return fn


for _key in ("angle", "distance", "angle_uncentred", "distance_uncentred"):
    register_metric(f"class_{_key}", description=f"per-class simplex {_key.replace('_', ' ')} "
                    "between reference and measured means", citation=f"{SU}, §5",
                    cross_reference=True, per_class=True)(_per_class(_key))


gnc.register()  # gnc1, gnc1_over_k, gnc2, gnc3 and per-class rho (Jiang et al. 2023)


@register_metric("num_classes", description="classes with reference samples", citation="—",
                 bookkeeping=True)
def num_classes(v: NCView) -> int:
    return v.reference.num_present


@register_metric("rank", description="kept rank of Σ_B (≤ min(K−1, d))", citation="—",
                 bookkeeping=True)
def rank(v: NCView) -> int:
    return v.rank


@register_metric("dim", description="feature dimension d of the layer", citation="—",
                 bookkeeping=True)
def dim(v: NCView) -> int:
    return v.reference.dim


@register_metric("n_reference", description="reference samples", citation="—", bookkeeping=True)
def n_reference(v: NCView) -> int:
    return int(v.reference.counts.sum())


@register_metric("n_measured", description="measured samples", citation="—", bookkeeping=True)
def n_measured(v: NCView) -> int:
    return v.n

"""Generalized NC (Jiang et al. 2023): the one-vs-rest QP solver against closed forms and two
dense oracles, and the GNC metrics of the NC engine against in-memory recomputations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _attack_helpers import one_line_error
from _nc_oracle import clustered
from ncscope.collapse import (
    METRICS,
    NCStats,
    min_margin,
    nc_metrics,
    one_vs_rest,
    one_vs_rest_margins,
    sweep,
)
from ncscope.collapse.gnc import one_vs_rest_generic
from ncscope.ufm import simplex_etf

GNC = ("gnc1", "gnc1_over_k", "gnc2", "gnc3")


# ---------------------------------------------------------------------------- oracles
def enumeration_oracle(W: np.ndarray) -> np.ndarray:
    """Exact ρ_k for small K: the nearest point of a polytope is the affine-hull minimiser of
    an (affinely independent) subset of its vertices with nonnegative weights, so ρ_k is the
    least norm over every subset whose affine minimiser has weights >= 0."""
    K = len(W)
    out = np.empty(K)
    for k in range(K):
        others = [j for j in range(K) if j != k]
        best = math.inf
        for m in range(1, len(others) + 1):
            for S in itertools.combinations(others, m):
                P = W[list(S)] - W[k]
                # min ‖Pᵀα‖² s.t. 1ᵀα = 1 by its KKT system, least squares for singular ones
                kkt = np.zeros((m + 1, m + 1))
                kkt[:m, :m] = P @ P.T
                kkt[:m, m] = kkt[m, :m] = 1.0
                rhs = np.zeros(m + 1)
                rhs[m] = 1.0
                alpha = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m]
                if abs(alpha.sum() - 1.0) > 1e-9 or alpha.min() < -1e-12:
                    continue
                best = min(best, float(np.linalg.norm(alpha @ P)))
        out[k] = best
    return out


def unit(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True)


def polygon(K: int) -> torch.Tensor:
    t = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    return torch.stack([t.cos(), t.sin()], dim=1)


# ---------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("K", [2, 3, 4, 5, 8, 12])
def test_simplex_etf_rho_is_k_over_k_minus_1(K: int) -> None:
    # The vertex w_k of the centred unit simplex faces the opposite facet, whose nearest point
    # is the centroid −w_k/(K−1) (all other rows have ⟨w_j, w_k⟩ = −1/(K−1)): distance K/(K−1).
    for d in (K - 1, K + 3):
        res = one_vs_rest(simplex_etf(K, max(d, 1), seed=K))
        assert res.rho.tolist() == pytest.approx([K / (K - 1)] * K, abs=1e-12)
        assert res.certified and float(res.gap.max()) <= 1e-9


@pytest.mark.parametrize("K", [3, 4, 5, 6, 7, 12, 50])
def test_regular_polygon_rho_is_one_minus_cos(K: int) -> None:
    # The nearest point of the other vertices' hull is the midpoint cos(2π/K)·w_k of the two
    # neighbours (for K = 3 and 4 as well: 1 − cos(2π/3) = 3/2 = K/(K−1), 1 − cos(π/2) = 1).
    res = one_vs_rest(polygon(K))
    assert res.rho.tolist() == pytest.approx([1 - math.cos(2 * math.pi / K)] * K, abs=1e-12)
    assert min_margin(polygon(K)) == pytest.approx(1 - math.cos(2 * math.pi / K), abs=1e-12)


def test_degenerate_inputs() -> None:
    W = unit(torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    dup = torch.cat([W, W[:1]])
    rho = one_vs_rest_margins(dup)
    assert rho[0] == 0.0 and rho[5] == 0.0 and bool((rho[1:5] > 0).all())
    # K = 2: the distance between the two rows (2 sin(θ/2) for unit rows at angle θ).
    two = torch.tensor([[1.0, 0.0], [math.cos(1.0), math.sin(1.0)]], dtype=torch.float64)
    assert one_vs_rest_margins(two).tolist() == pytest.approx([2 * math.sin(0.5)] * 2)
    # Collinear rows: raw points on a line, and ±u on the sphere.
    line = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    assert one_vs_rest_margins(line, normalize=False).tolist() == [1.0, 0.0, 1.0]
    u = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    assert one_vs_rest_margins(torch.cat([u, -u])).tolist() == pytest.approx([2.0, 2.0])
    assert one_vs_rest_margins(torch.cat([u, u, -u])).tolist() == pytest.approx([0, 0, 2.0])
    # A zero row: a distance like any other when not normalised, an error when normalised.
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert one_vs_rest_margins(z, normalize=False).tolist() == pytest.approx(
        [math.sqrt(0.5), 1.0, 1.0])
    one_line_error(ValueError, lambda: one_vs_rest(z), "row 0 of W is zero")
    one_line_error(ValueError, lambda: one_vs_rest(torch.ones(1, 3)), "K >= 2")
    one_line_error(ValueError, lambda: one_vs_rest(torch.ones(2, 3, 1)), "(K, d)")
    one_line_error(ValueError, lambda: one_vs_rest(torch.tensor([[1.0], [math.nan]])), "NaN")
    one_line_error(ValueError, lambda: one_vs_rest(W, tol=0), "tol")
    one_line_error(TypeError, lambda: one_vs_rest([[1.0], [2.0]]), "torch.Tensor")


# ---------------------------------------------------------------------------- properties
rows = st.builds(dict, K=st.integers(2, 7), d=st.integers(1, 5), seed=st.integers(0, 10**6),
                 dup=st.booleans())


def draw(p: dict) -> np.ndarray:
    rng = np.random.default_rng(p["seed"])
    W = rng.standard_normal((p["K"], p["d"]))
    if p["dup"] and p["K"] > 2:
        W[-1] = W[0]
    return W / np.linalg.norm(W, axis=1, keepdims=True)


@settings(max_examples=120, deadline=None)
@given(rows)
def test_solver_matches_the_enumeration_oracle_with_a_certificate(p: dict) -> None:
    W = draw(p)
    res = one_vs_rest(W)
    assert bool((res.rho >= 0).all()) and bool((res.lower <= res.rho).all())
    assert float(res.gap.max()) <= 1e-9 and res.certified
    np.testing.assert_allclose(res.rho.numpy(), enumeration_oracle(W), rtol=0, atol=1e-9)
    # the convex weights are feasible and reproduce ρ; the certificate is the Wolfe dual gap of
    # that point, ‖x‖² − min_j ⟨w_j − w_k, x⟩, and the lower bound min_j ⟨w_j − w_k, x⟩/‖x‖
    closest = res.closest(torch.from_numpy(W)).numpy()
    for k, (s, lam) in enumerate(zip(res.support, res.weights, strict=True)):
        assert k not in s.tolist() and bool((lam >= 0).all())
        assert float(lam.sum()) == pytest.approx(1.0, abs=1e-12)
        x = closest[k] - W[k]
        assert np.linalg.norm(x) == pytest.approx(float(res.rho[k]), abs=1e-12)
        worst = min(float((W[j] - W[k]) @ x) for j in range(len(W)) if j != k)
        assert float(res.gap[k]) == pytest.approx(max(x @ x - worst, 0.0), abs=1e-12)
        if x @ x > 0:
            assert float(res.lower[k]) == pytest.approx(max(worst / np.linalg.norm(x), 0.0),
                                                        abs=1e-12)


def test_certificate_of_an_unfinished_solve() -> None:
    # Stopped before convergence (max_iter=0: the nearest other row), the gap and the lower
    # bound still describe the returned point, and they bracket the true ρ.
    W = draw(dict(K=7, d=3, seed=5, dup=False))
    early, exact = one_vs_rest(W, max_iter=0), enumeration_oracle(W)
    assert not early.certified
    closest = early.closest(torch.from_numpy(W)).numpy()
    for k in range(7):
        x = closest[k] - W[k]
        worst = min(float((W[j] - W[k]) @ x) for j in range(7) if j != k)
        assert float(early.gap[k]) == pytest.approx(x @ x - worst, abs=1e-12)
        assert float(early.lower[k]) <= exact[k] + 1e-12 <= float(early.rho[k]) + 2e-12
    assert float(early.gap.max()) > 1e-3 and bool((early.lower < early.rho - 1e-3).any())


@settings(max_examples=40, deadline=None)
@given(rows)
def test_solver_matches_slsqp(p: dict) -> None:
    W = draw(p)
    rho = one_vs_rest_margins(W).numpy()
    want = [one_vs_rest_generic(W, k) for k in range(len(W))]
    np.testing.assert_allclose(rho, want, rtol=0, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(0, 10**6), st.floats(0.1, 10.0))
def test_invariant_to_orthogonal_maps_and_warm_starts(p: dict, qseed: int, c: float) -> None:
    W = draw(p)
    d = W.shape[1]
    q, _ = np.linalg.qr(np.random.default_rng(qseed).standard_normal((d, d)))
    base = one_vs_rest(W)
    np.testing.assert_allclose(one_vs_rest_margins(W @ q.T).numpy(), base.rho.numpy(),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(one_vs_rest(W, warm=base).rho.numpy(), base.rho.numpy(),
                               rtol=0, atol=1e-12)
    # raw distances scale with the rows
    np.testing.assert_allclose(one_vs_rest_margins(c * W, normalize=False).numpy(),
                               c * base.rho.numpy(), rtol=1e-9, atol=1e-12)


def test_larger_problem_against_slsqp_and_rotation() -> None:
    rng = np.random.default_rng(3)
    W = rng.standard_normal((60, 6))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    res = one_vs_rest(W)
    assert res.certified and float(res.gap.max()) <= 1e-9
    for k in (0, 59):
        assert float(res.rho[k]) == pytest.approx(one_vs_rest_generic(W, k), abs=1e-7)
    # d > K: the isometric reduction to ℝ^K keeps every distance
    tall = np.zeros((5, 40))
    tall[:, :3] = draw(dict(K=5, d=3, seed=1, dup=False))
    q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    np.testing.assert_allclose(one_vs_rest_margins(tall @ q.T).numpy(),
                               one_vs_rest_margins(tall[:, :3]).numpy(), atol=1e-12)


# ---------------------------------------------------------------------------- the engine
def normalised(h: torch.Tensor) -> torch.Tensor:
    n = h.norm(dim=1, keepdim=True)
    return torch.where(n > 0, h / torch.where(n > 0, n, 1.0), torch.zeros_like(h))


def problem(k: int = 6, d: int = 5, n: int = 9, sigma: float = 0.4, seed: int = 0):
    h, y = clustered(k, d, n, sigma, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 7)
    return h, y, torch.randn(k, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("global_mean", ["weighted", "class_mean"])
def test_gnc1_is_nc1_of_the_normalised_features(global_mean: str) -> None:
    h, y, w = problem()
    h2 = h + 0.3 * torch.randn(h.shape, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[::4] = False  # imbalanced classes
    h, y = h[keep], y[keep]
    h2 = h2[keep]
    own = nc_metrics(h, y, w, global_mean=global_mean)
    want = nc_metrics(normalised(h), y, w, global_mean=global_mean)
    assert own["gnc1"] == pytest.approx(want["nc1"], rel=1e-10)
    assert own["gnc1_over_k"] == pytest.approx(want["nc1"] / 6, rel=1e-10)
    assert own["gnc1"] != pytest.approx(own["nc1"], rel=1e-3)  # the normalisation matters
    around = nc_metrics(h2, y, w, ref_features=h, ref_labels=y, global_mean=global_mean)
    want = nc_metrics(normalised(h2), y, w, ref_features=normalised(h), ref_labels=y,
                      global_mean=global_mean)
    assert around["gnc1"] == pytest.approx(want["nc1"], rel=1e-10)
    # float32 features (the usual case) are normalised in float64
    f32 = nc_metrics(h.float(), y, w)
    assert f32["gnc1"] == pytest.approx(nc_metrics(normalised(h.float().double()), y)["nc1"],
                                        rel=1e-10)


def test_zero_features_normalise_to_zero() -> None:
    h, y, w = problem(k=3, d=4, n=5)
    h[0] = 0.0
    h[7] = 0.0
    h[3] *= 1e-3  # small but nonzero: still normalised to unit norm
    got = nc_metrics(h, y, w)["gnc1"]
    assert got == pytest.approx(nc_metrics(normalised(h), y)["nc1"], rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(2, 8), st.integers(2, 6), st.integers(0, 10**5),
       st.integers(2, 7))
def test_gnc1_streams_and_merges_exactly(k: int, d: int, n: int, seed: int, splits: int) -> None:
    h, y, w = problem(k, d, n, 0.5, seed)
    one = NCStats(k, w).update(h, y).update_measured(h, y).compute()
    parts = torch.tensor_split(torch.arange(len(y)), min(splits, len(y)))
    a, b = NCStats(k, w), NCStats(k, w)
    for i, part in enumerate(parts):
        (a if i % 2 else b).update(h[part], y[part])
    ref = a + b
    m1, m2 = NCStats(k, w), NCStats(k, w)
    m1.load_state_dict(ref.state_dict())
    m2.load_state_dict(ref.state_dict())
    for i, part in enumerate(parts):
        (m1 if i % 2 else m2).update_measured(h[part], y[part])
    merged = m1.merge(m2).compute()
    for key in GNC:
        if one[key] is None:
            assert merged[key] is None
        else:
            assert merged[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), key


def test_gnc2_rho_and_gnc3_against_dense_formulas() -> None:
    h, y, w = problem(k=6, d=3)
    keep = y != 2  # class 2 absent: left out, its row too
    h, y = h[keep], y[keep]
    res = NCStats(6, w).update(h, y).update_measured(h, y)
    got = res.compute()
    from ncscope.collapse.registry import compute_metrics

    per = compute_metrics(res.reference, res.measurement, per_class=True)["rho"]
    present = [0, 1, 3, 4, 5]
    rho = enumeration_oracle(unit(w[present]).numpy())
    assert list(per) == present
    assert list(per.values()) == pytest.approx(rho.tolist(), abs=1e-10)
    assert got["gnc2"] == pytest.approx(rho.min(), abs=1e-10)
    # GNC3 as the paper's code: class means of normalised features minus their global mean
    hn = normalised(h)
    mu = torch.stack([hn[y == c].mean(0) for c in present])
    centred = mu - hn.mean(0)
    cos = F.cosine_similarity(w[present], centred, dim=1)
    assert got["gnc3"] == pytest.approx(float((1 - cos).mean()), rel=1e-12)
    # aligned rows give 0
    aligned = NCStats(6, torch.zeros(6, 3, dtype=torch.float64).index_copy(
        0, torch.tensor(present), 2.5 * centred)).update(h, y).update_measured(h, y)
    assert aligned.compute()["gnc3"] == pytest.approx(0.0, abs=1e-12)


def test_metrics_without_what_they_need() -> None:
    h, y, w = problem(k=4, d=3)
    none = nc_metrics(h, y)
    assert none["gnc2"] is None and none["gnc3"] is None and none["gnc1"] is not None
    w[1] = 0.0
    zero = NCStats(4, w).update(h, y).update_measured(h, y)
    assert zero.compute()["gnc2"] is None and zero.compute()["gnc3"] is None
    from ncscope.collapse.registry import compute_metrics

    assert compute_metrics(zero.reference, zero.measurement, per_class=True)["rho"] == {}
    # a state saved before the normalised sums existed: GNC1/GNC3 None, NC1 unchanged
    s = NCStats(4, w).update(h, y).update_measured(h, y)
    state = {k: v for k, v in s.state_dict().items() if k not in ("ref_unit_sum", "unit_scatter")}
    old = NCStats(4, w).load_state_dict(state).compute()
    assert old["gnc1"] is None and old["gnc3"] is None
    assert old["nc1"] == pytest.approx(s.compute()["nc1"], rel=1e-12)
    for name in ("gnc1", "gnc2", "gnc3", "rho"):
        assert METRICS[name].citation.startswith("Jiang")
    assert METRICS["rho"].per_class and not METRICS["rho"].cross_reference


def test_sweep_has_gnc_rows_for_every_view() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, 4, 4, generator=g)
    y = torch.arange(60) % 12  # K = 12 > d + 1 = 4 at the penultimate layer
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Tanh(), nn.Linear(3, 12)).eval()
    W = model[3].weight.detach()

    def shift(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return (xb + 0.1).clamp(0, 1)

    df = sweep(model, (x, y), {"clean": None, "shift": shift}, layers=["1", "3:in"],
               num_classes=12, classifiers={"3:in": (W, None)}, batch_size=25)
    views = df.groupby(["layer", "source", "split", "reference", "group"])
    for (layer, *_), rows in views:
        names = set(rows.dropna(subset=["value"])["metric"])
        assert "gnc1" in names
        assert ("gnc2" in names) == ("gnc3" in names) == (layer == "3:in")
    rho = df[(df.metric == "rho")]
    assert set(rho["layer"]) == {"3:in"} and set(rho["reference"]) == {"clean"}
    want = one_vs_rest_margins(W).tolist()
    clean = rho[rho.source == "clean"].sort_values("class")
    assert clean["value"].tolist() == pytest.approx(want, abs=1e-12)
    gnc2 = df[(df.metric == "gnc2") & (df.layer == "3:in")]["value"]
    assert gnc2.tolist() == pytest.approx([min(want)] * len(gnc2), abs=1e-12)
    with torch.no_grad():
        feats = model[:3](x)
    own = df[(df.layer == "3:in") & (df.source == "clean") & (df.reference == "own")]
    got = dict(zip(own["metric"], own["value"], strict=True))
    assert got["gnc1"] == pytest.approx(nc_metrics(normalised(feats.double()), y)["nc1"],
                                        rel=1e-9)

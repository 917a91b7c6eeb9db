"""Hypothesis property tests of the streaming NC engine."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _nc_oracle import clustered
from ncscope import NCStats, nc_metrics
from ncscope.collapse.geometry import equiangularity

COMPARED = (
    "nc1",
    "trace_ratio",
    "cdnv",
    "equinorm_means",
    "equiangular_means",
    "etf_error_means",
    "nc3",
    "nc4",
    "ncc_accuracy",
    "net_accuracy",
    "simplex_angle",
)

problems = st.builds(
    dict,
    k=st.integers(2, 8),
    d=st.integers(2, 24),
    n=st.integers(2, 12),
    sigma=st.sampled_from([1.0, 0.1, 1e-3]),
    seed=st.integers(0, 10_000),
)


def make(p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    h, y = clustered(p["k"], p["d"], p["n"], p["sigma"], seed=p["seed"], dtype=torch.float64)
    g = torch.Generator().manual_seed(p["seed"] + 1)
    w = torch.randn(p["k"], p["d"], generator=g, dtype=torch.float64)
    b = torch.randn(p["k"], generator=g, dtype=torch.float64)
    return h, y, w, b


def same(a: dict, b: dict, rel: float = 1e-8) -> None:
    for key in COMPARED:
        if a[key] is None or b[key] is None:
            assert a[key] is b[key], key
        else:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-9), key


def stream(h, y, w, b, splits) -> NCStats:
    s = NCStats(int(w.shape[0]), w, b)
    for part in torch.tensor_split(torch.arange(len(y)), splits):
        s.update(h[part], y[part])
    for part in torch.tensor_split(torch.arange(len(y)), splits):
        s.update_measured(h[part], y[part])
    return s


@settings(max_examples=60, deadline=None)
@given(problems, st.integers(0, 2**31 - 1))
def test_invariant_to_sample_order(p: dict, perm_seed: int) -> None:
    h, y, w, b = make(p)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(perm_seed))
    same(nc_metrics(h, y, w, b), nc_metrics(h[perm], y[perm], w, b))


@settings(max_examples=40, deadline=None)
@given(problems)
def test_invariant_to_batching_one_vs_hundred(p: dict) -> None:
    h, y, w, b = make(p)
    one = stream(h, y, w, b, 1).compute()
    many = stream(h, y, w, b, min(100, len(y))).compute()
    same(one, many)


@settings(max_examples=40, deadline=None)
@given(problems, st.integers(0, 2**31 - 1))
def test_invariant_to_class_relabelling(p: dict, perm_seed: int) -> None:
    h, y, w, b = make(p)
    perm = torch.randperm(p["k"], generator=torch.Generator().manual_seed(perm_seed))
    # New class perm[c] is old class c: relabel the samples and permute W's rows alike.
    w2 = torch.empty_like(w)
    b2 = torch.empty_like(b)
    w2[perm], b2[perm] = w, b
    same(nc_metrics(h, y, w, b), nc_metrics(h, perm[y], w2, b2))


@settings(max_examples=40, deadline=None)
@given(problems, st.floats(1e-3, 1e3))
def test_nc1_invariant_to_global_scale(p: dict, scale: float) -> None:
    h, y, _, _ = make(p)
    a, s = nc_metrics(h, y), nc_metrics(h * scale, y)
    for key in ("nc1", "trace_ratio", "cdnv", "equinorm_means", "equiangular_means"):
        assert s[key] == pytest.approx(a[key], rel=1e-8), key


@settings(max_examples=40, deadline=None)
@given(problems, st.integers(1, 10_000))
def test_merge_equals_union(p: dict, cut_seed: int) -> None:
    h, y, w, b = make(p)
    cut = cut_seed % (len(y) - 1) + 1
    first, second = slice(0, cut), slice(cut, None)
    # Pass 1 on two shards, merged; then pass 2 on two shards with the merged means.
    a = NCStats(p["k"], w, b).update(h[first], y[first])
    bb = NCStats(p["k"], w, b).update(h[second], y[second])
    ref = a + bb
    m1 = NCStats(p["k"], w, b)
    m1.load_state_dict(ref.state_dict())
    m2 = NCStats(p["k"], w, b)
    m2.load_state_dict(ref.state_dict())
    m1.update_measured(h[first], y[first])
    m2.update_measured(h[second], y[second])
    merged = m1.merge(m2).compute()
    same(merged, stream(h, y, w, b, 1).compute(), rel=1e-10)


def test_merge_rejects_different_reference_means() -> None:
    h, y, w, b = make(dict(k=3, d=4, n=5, sigma=0.1, seed=0))
    a = NCStats(3).update(h, y)
    a.update_measured(h, y)
    c = NCStats(3).update(h * 2, y)
    c.update_measured(h, y)
    with pytest.raises(ValueError, match="different reference means"):
        a.merge(c)


def test_exact_simplex_etf_is_fully_collapsed() -> None:
    k, d, n = 10, 32, 7
    etf = torch.zeros(k, d, dtype=torch.float64)
    etf[:, :k] = (torch.eye(k) - 1.0 / k) * math.sqrt(k / (k - 1))
    y = torch.arange(k).repeat_interleave(n)
    r = nc_metrics(etf[y], y, weight=etf, bias=torch.zeros(k))
    for key in (
        "nc1",
        "trace_ratio",
        "cdnv",
        "equinorm_means",
        "equiangular_means",
        "etf_error_means",
        "equinorm_weights",
        "equiangular_weights",
        "nc3",
        "nc4",
    ):
        assert abs(r[key]) < 1e-12, key
    assert r["ncc_accuracy"] == 1.0 and r["net_accuracy"] == 1.0


@pytest.mark.parametrize("k", [2, 3, 10, 50])
def test_orthonormal_frame_equiangularity_is_one_over_k_minus_1(k: int) -> None:
    frame = torch.linalg.qr(torch.randn(64, k, dtype=torch.float64))[0].T
    assert equiangularity(frame) == pytest.approx(1.0 / (k - 1), rel=1e-12)
    # Through the engine: orthonormal classifier rows.
    h, y = clustered(k, 64, 3, 0.1, seed=k, dtype=torch.float64)
    r = nc_metrics(h, y, weight=frame)
    assert r["equiangular_weights"] == pytest.approx(1.0 / (k - 1), rel=1e-12)


def test_k_larger_than_d_is_defined() -> None:
    h, y = clustered(20, 5, 4, 0.1, seed=0)
    r = nc_metrics(h, y)
    assert r["rank"] == 5 and math.isfinite(r["nc1"]) and r["nc1"] > 0


def test_single_sample_class_is_defined() -> None:
    h, y = clustered(4, 8, 5, 0.1, seed=0)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[(y == 1).nonzero()[1:]] = False
    r = nc_metrics(h[keep], y[keep])
    assert all(math.isfinite(r[k]) for k in ("nc1", "cdnv", "trace_ratio"))


def test_absent_class_is_left_out() -> None:
    h, y = clustered(5, 8, 6, 0.1, seed=0)
    keep = y != 3
    r = nc_metrics(h[keep], y[keep], num_classes=5)
    assert r["num_classes"] == 4 and r["rank"] == 3


def test_leap_statistics_by_construction() -> None:
    k, d = 4, 6
    means = torch.randn(k, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(k).repeat_interleave(5)
    clean = means[y]
    # Perturbed points sit exactly on the vertex of the target (y + 1) mod K.
    target = (y + 1) % k
    pert = means[target]
    s = NCStats(k).update(clean, y)
    s.update_measured(pert, y, predictions=target, targets=target)
    r = s.compute()
    assert r["leap_true"] == 0.0 and r["ncc_accuracy"] == 0.0
    assert r["leap_pred"] == 1.0 and r["leap_target"] == 1.0 and r["nc4"] == 0.0
    assert r["leap_pred_when_wrong"] == 1.0 and r["target_success"] == 1.0
    assert r["net_accuracy"] == 0.0

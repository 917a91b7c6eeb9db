"""The streaming engine against the slow dense float64 oracle."""

from __future__ import annotations

import pytest
import torch

from _nc_oracle import clustered, dense_nc
from ncscope import NCStats, nc_metrics

KEYS = (
    "nc1",
    "nc1_over_k",
    "trace_ratio",
    "cdnv",
    "equinorm_means",
    "equiangular_means",
    "etf_error_means",
    "ncc_accuracy",
    "nc3",
    "nc4",
    "equinorm_weights",
    "equiangular_weights",
)


def assert_close(got: dict, want: dict, rtol: float = 1e-6) -> None:
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=rtol, abs=1e-12), key


@pytest.mark.parametrize("d", [8, 64, 512])
@pytest.mark.parametrize("k", [2, 10, 100])
@pytest.mark.parametrize("sigma", [1.0, 1e-2, 1e-4])
def test_engine_matches_dense_oracle(d: int, k: int, sigma: float) -> None:
    n_per_class = 6 if k == 100 else 40
    h, y = clustered(k, d, n_per_class, sigma, seed=d + k)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(k, d, generator=g)
    b = torch.randn(k, generator=g)
    got = nc_metrics(h, y, weight=w, bias=b)
    want = dense_nc(h, y, k, weight=w, bias=b)
    assert set(KEYS) <= set(got)
    assert_close(got, want)
    assert got["rank"] == min(k - 1, d)


def test_imbalanced_classes_rank_is_k_minus_1() -> None:
    h, y = clustered(6, 32, 30, 0.3, seed=3)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[(y == 2).nonzero()[:20]] = False  # class 2 has 10 samples, others 30
    h, y = h[keep], y[keep]
    got = nc_metrics(h, y)
    # Σ_c n_c (μ_c − μ_G) = 0 for the count-weighted μ_G: the rank stays K − 1.
    assert got["rank"] == 5
    assert_close(got, dense_nc(h, y, 6, rank=5))


def test_perturbed_measured_around_clean_means() -> None:
    clean, y = clustered(10, 64, 30, 0.05, seed=4)
    g = torch.Generator().manual_seed(5)
    pert = clean + 0.5 * torch.randn(clean.shape, generator=g)
    w = torch.randn(10, 64, generator=g)
    got = nc_metrics(pert, y, weight=w, ref_features=clean, ref_labels=y)
    want = dense_nc(pert, y, 10, weight=w, ref_h=clean, ref_y=y)
    assert_close(got, want)
    assert got["simplex_angle"] > 0


def test_streaming_large_dim_small_memory() -> None:
    # d = 65 536 in batches: the accumulator holds K×d, never d×d.
    k, d = 4, 65_536
    g = torch.Generator().manual_seed(0)
    means = torch.randn(k, d, generator=g)
    stats = NCStats(k)
    batches = []
    for _ in range(4):
        y = torch.arange(k).repeat(8)
        h = means[y] + 0.1 * torch.randn(len(y), d, generator=g)
        batches.append((h, y))
        stats.update(h, y)
    for h, y in batches:
        stats.update_measured(h, y)
    res = stats.compute()
    assert res["dim"] == d and res["rank"] == k - 1
    h = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    # Oracle without d×d: the trace ratio uses only traces.
    mu = torch.stack([h[y == c].double().mean(0) for c in range(k)])
    z = h.double() - mu[y]
    tr_w = float(z.pow(2).sum() / len(h))
    tr_b = float((mu - h.double().mean(0)).pow(2).sum() / k)
    assert res["trace_ratio"] == pytest.approx(tr_w / tr_b, rel=1e-9)


def test_thousand_classes_match_oracle() -> None:
    # K = 1000 > d: rank min(K-1, d) = d; the K×K Gram path against the dense d×d oracle.
    h, y = clustered(1000, 48, 3, 0.05, seed=11)
    w = torch.randn(1000, 48, generator=torch.Generator().manual_seed(2))
    got = nc_metrics(h, y, weight=w)
    assert got["rank"] == 48 and got["num_classes"] == 1000
    assert_close(got, dense_nc(h, y, 1000, weight=w), rtol=1e-6)

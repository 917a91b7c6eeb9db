"""ncscope.verify: soundness of the approx-star ReLU and of reachability (sampled points, a
dense grid oracle), the relaxation factor's LPs, the pixel metrics RV / RS / RIoU on a
hand-built case, and the certified radii against PGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ncscope.verify import (
    ImageStar,
    ReachOptions,
    ReachStats,
    bisect_radius,
    chain,
    class_means,
    collapse_certified,
    collapse_lp_max,
    darkening,
    linf_ball,
    logit_certified,
    margin_lower_bounds,
    penultimate_chain,
    pgd_radius,
    pixel_verdict,
    reach,
    relu_step,
    soundness_violations,
)


def _mlp(seed: int, widths: tuple[int, ...] = (2, 8, 6, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double().eval()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rf=st.sampled_from([0.0, 0.5, 1.0]),
       heuristic=st.sampled_from(["area", "range", "bound", "random"]))
def test_relu_relaxation_contains_sampled_points(seed: int, rf: float, heuristic: str) -> None:
    g = torch.Generator().manual_seed(seed)
    m, n = 3, 6
    star = ImageStar(torch.randn(n, generator=g, dtype=torch.float64),
                     torch.randn((m, n), generator=g, dtype=torch.float64),
                     np.zeros((0, m)), np.zeros(0), -np.ones(m), np.ones(m))
    out = relu_step(star, rf, heuristic, np.random.default_rng(seed), ReachStats())
    lo, hi = out.estimate_bounds()
    x = star.sample(200, np.random.default_rng(seed)).clamp(min=0).numpy()
    assert (x >= lo - 1e-12).all() and (x <= hi + 1e-12).all()
    # Every sampled point has a predicate point mapping onto it: (α, β = ReLU(x)) is feasible.
    alpha = np.random.default_rng(seed + 1).uniform(-1, 1, size=(50, m))
    pre = star.points(alpha).numpy()
    lo0, hi0 = star.estimate_bounds()
    cross = np.flatnonzero((lo0 < 0) & (hi0 > 0))
    kept = out.num_vars - m
    assert kept <= cross.size
    if kept == cross.size:  # no LP made a crossing neuron stable: β = ReLU(x) at those
        full = np.hstack([alpha, np.clip(pre[:, cross], 0, None)])
        assert (full @ out.C.T <= out.d + 1e-9).all()
        assert np.allclose(out.points(full).numpy(), np.clip(pre, 0, None), atol=1e-12)


def test_rf_one_solves_no_lp_and_lp_bounds_are_tighter() -> None:
    net = _mlp(0, (4, 16, 16, 3))
    x = torch.rand(4, dtype=torch.float64)
    star = linf_ball(x, 0.2)
    r1 = reach(net, star, ReachOptions(rf=1.0))
    r0 = reach(net, star, ReachOptions(rf=0.0))
    assert r1.stats.lps == 0 and r0.stats.lps == 2 * sum(r0.stats.crossing)
    lo1, hi1 = r1.star.estimate_bounds()
    lo0, hi0 = r0.star.estimate_bounds()
    assert ((hi0 - lo0) <= (hi1 - lo1) + 1e-9).all()
    # LP-optimised bounds of the output are inside its estimated bounds.
    lo_lp, hi_lp = r1.star.bounds("lp", ReachStats())
    assert (lo_lp >= lo1 - 1e-9).all() and (hi_lp <= hi1 + 1e-9).all()
    half = reach(net, star, ReachOptions(rf=0.5))
    assert half.stats.optimised == [round(0.5 * k) for k in half.stats.crossing]


@pytest.mark.parametrize("rf", [0.0, 1.0])
def test_margin_bound_below_dense_grid_minimum(rf: float) -> None:
    """Oracle: the exact minimum of z_y − z_j over a 2-D box, approximated from above on a
    dense grid (401 × 401 points), is never below the certified lower bound."""
    net = _mlp(3)
    x0 = torch.tensor([0.4, 0.6], dtype=torch.float64)
    eps = 0.4
    with torch.no_grad():
        y = int(net(x0[None]).argmax())
        g = torch.linspace(-eps, eps, 401, dtype=torch.float64)
        grid = x0 + torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        z = net(grid)
    exact = (z[:, [y]] - z).min(0).values.numpy()
    r = reach(net, linf_ball(x0, eps), ReachOptions(rf=rf))
    stats = ReachStats()
    bound = margin_lower_bounds(r.star, y, stats)
    assert stats.lps >= 1  # the LP path is exercised, not only the interval bound
    for j in range(3):
        if j != y:
            assert bound[j] <= exact[j] + 1e-9
    r1 = reach(net, linf_ball(x0, eps), ReachOptions(rf=1.0))
    assert (bound >= margin_lower_bounds(r1.star, y) - 1e-9).all()  # rF = 0 is no looser


def test_soundness_check_counts_violations() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                        nn.ConvTranspose2d(2, 3, 2, stride=2)).double().eval()
    x = torch.rand(1, 4, 4)
    layers = chain(net, x[None])
    star = darkening(x, 5, 0.5, threshold=0.2)
    r = reach(layers, star, ReachOptions(rf=0.5, heuristic="random"))
    lo, hi = r.star.estimate_bounds()
    assert soundness_violations(layers, star, lo, hi, 500) == (0, 500)
    shrunk = lo + 0.9 * (hi - lo)  # a bound cut short must be caught
    assert soundness_violations(layers, star, shrunk, hi, 500)[0] > 0


def test_pixel_metrics_hand_built() -> None:
    # K = 2 classes, a 1 × 4 image; clean prediction [0, 0, 1, 1].
    pred = np.array([[0, 0, 1, 1]])
    lo = np.array([[[2.0, 0.0, -1.0, 0.0]], [[-1.0, 0.5, 1.0, 3.0]]])
    hi = np.array([[[3.0, 1.0, 0.5, 1.0]], [[0.0, 2.0, 2.0, 4.0]]])
    # pixel 0: class 0 only -> robust; pixel 1: both possible -> unknown;
    # pixel 2: class 1 only (ub_0 = 0.5 < 1) -> robust; pixel 3: class 1 only -> robust.
    v = pixel_verdict(lo, hi, pred, n_attacked=2)
    assert v.status.tolist() == [[0, 1, 0, 0]]
    assert v.verified.tolist() == [[0, 2, 1, 1]]
    assert v.rv == 0.75 and v.rs == 0.5
    # IoU: class 0 = 1/2, class 1 = 2/2, unknown (2) = 0/1 -> mean 0.5.
    assert v.riou == pytest.approx(0.5)
    # Misclassified: the prediction is excluded from P_p.
    v2 = pixel_verdict(lo, hi, np.array([[1, 0, 0, 1]]), n_attacked=4)
    assert v2.status.tolist() == [[2, 1, 2, 0]] and v2.rs == 0.75
    assert v2.counts == {"robust": 1, "unknown": 1, "misclassified": 2}
    with pytest.raises(ValueError, match="n_attacked"):
        pixel_verdict(lo, hi, pred, 0)


def test_certified_radii_below_pgd_radius() -> None:
    from ncscope.models import BNMLP

    torch.manual_seed(0)
    model = BNMLP(input_shape=(1, 3, 3), num_classes=3, widths=(12, 8))
    protos = torch.rand(3, 1, 3, 3)
    y = torch.arange(60) % 3
    x = (protos[y] + 0.15 * torch.randn(60, 1, 3, 3)).clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    pen = penultimate_chain(model)
    full = chain(model, x[:2])
    means = class_means(pen, x, y, 3)
    checked = certified = 0
    for i in range(4):
        xi, yi = x[i], int(y[i])
        r_log = bisect_radius(lambda e, xi=xi, yi=yi: logit_certified(full, xi, yi, e),
                              0.5, 0.02)
        r_col = bisect_radius(
            lambda e, xi=xi, yi=yi: collapse_certified(pen, xi, yi, e, means), 0.5, 0.02)
        r_pgd = pgd_radius(model, xi, yi, 0.5, 0.02, steps=30, seed=0)
        assert r_log <= r_pgd  # a PGD success is a counterexample: sound certification
        if np.isfinite(r_pgd):
            checked += 1
        certified += r_col > 0
        if r_col > 0:  # the certified ball's features are nearest to μ_y (sampled)
            r = reach(pen, linf_ball(xi, r_col))
            assert (collapse_lp_max(r.star, yi, means, ReachStats()) < 0).all()
            pts = linf_ball(xi, r_col).sample(300, np.random.default_rng(i))
            with torch.no_grad():
                h = pts
                for _, mod in pen:
                    h = mod(h)
            d = torch.cdist(h.reshape(300, -1), means)
            assert (d.argmin(1) == yi).all()
    assert checked >= 1 and certified >= 1


def test_bisect_radius_edges() -> None:
    assert bisect_radius(lambda e: False, 0.3, 0.01) == 0.0
    assert bisect_radius(lambda e: True, 0.3, 0.01) == 0.3
    r = bisect_radius(lambda e: e <= 0.1234, 0.3, 0.001)
    assert 0.1234 - 0.001 <= r <= 0.1234
    with pytest.raises(ValueError, match="tol"):
        bisect_radius(lambda e: True, 0.3, 0.0)

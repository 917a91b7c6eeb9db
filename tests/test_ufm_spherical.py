"""The spherical UFM for K >> d (scale annealed) and the codes on the sphere (ETF, K-gon, Tammes,
softmax code), measured by the NC engine's generalized-NC metrics."""

from __future__ import annotations

import math

import pytest
import torch

from _attack_helpers import one_line_error
from ncscope.collapse import min_margin, nc_metrics, one_vs_rest_margins
from ncscope.ufm import (
    Code,
    etf_code,
    min_angle,
    polygon_code,
    retract,
    riemannian_grad,
    scale_schedule,
    softmax_code,
    spherical_ufm,
    tammes_code,
)

HEXAGON = 1 - math.cos(2 * math.pi / 6)  # 0.5


def test_spherical_ufm_reaches_the_hexagon() -> None:
    r = spherical_ufm(6, 2, max_iter=1000)
    f = r.final()
    assert f["gnc2"] == pytest.approx(HEXAGON, rel=1e-2)
    assert f["gnc1"] == pytest.approx(0.0, abs=1e-12)  # one feature per class
    assert f["gnc3"] == pytest.approx(0.0, abs=1e-6)  # features aligned with their rows
    assert f["scale"] == pytest.approx(60.0)
    assert r.problem == "spherical" and r.b is None and r.status == "max_iter"
    # every iterate stays on the sphere: unit rows of W and H
    assert torch.allclose(r.W.norm(dim=1), torch.ones(6, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(r.H.norm(dim=1), torch.ones(6, dtype=torch.float64), atol=1e-14)
    # the trajectory is the engine's: recomputing from the final point gives the same numbers
    assert r.metrics()["gnc2"] == pytest.approx(f["gnc2"], abs=1e-12)
    assert f["gnc2"] == pytest.approx(min_margin(r.W), abs=1e-12)
    traj = r.wide()
    assert {"gnc1", "gnc2", "gnc3", "scale", "nc1"} <= set(traj.columns)
    assert traj["scale"].iloc[0] == pytest.approx(2.0)


def test_several_features_per_class_and_a_fixed_scale() -> None:
    r = spherical_ufm(6, 2, 3, max_iter=1000)
    assert r.final()["gnc2"] == pytest.approx(HEXAGON, rel=1e-2)
    assert r.final()["gnc1"] == pytest.approx(0.0, abs=1e-9)
    fixed = spherical_ufm(4, 3, 2, scale=10.0, max_iter=300, record_every=50)
    assert set(fixed.wide()["scale"]) == {10.0}
    assert fixed.final()["gnc2"] > 0


def test_riemannian_steps_keep_unit_norms() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(7, 3, generator=g, dtype=torch.float64), dim=1)
    e = torch.randn(7, 3, generator=g, dtype=torch.float64)
    rg = riemannian_grad(x, e)
    assert (rg * x).sum(dim=1).abs().max() < 1e-15  # tangent
    for t in (1e-3, 1.0, 50.0):
        assert torch.allclose(retract(x, -t * rg).norm(dim=1), torch.ones(7, dtype=torch.float64),
                              atol=1e-15)


def test_scale_schedule_is_geometric() -> None:
    s = scale_schedule((2.0, 60.0), 4)
    assert s == pytest.approx([2.0 * 30 ** (t / 4) for t in range(5)])
    assert scale_schedule(5.0, 2) == [5.0, 5.0, 5.0]
    one_line_error(ValueError, lambda: scale_schedule((1.0, 2.0, 3.0), 4), "pair")
    one_line_error(ValueError, lambda: spherical_ufm(6, 2, scale=(0.0, 60.0)), "scale[0]")
    one_line_error(ValueError, lambda: spherical_ufm(1, 2), "num_classes")
    one_line_error(ValueError, lambda: spherical_ufm(6, 0), "dim")


@pytest.mark.parametrize("K", [2, 4, 7])
def test_etf_code(K: int) -> None:
    code = etf_code(K, K + 1, seed=0)
    assert isinstance(code, Code)
    W, value = code
    assert value == pytest.approx(K / (K - 1), abs=1e-12)
    assert value == pytest.approx(float(one_vs_rest_margins(W).min()), abs=1e-15)
    assert min_angle(W) == pytest.approx(math.acos(-1 / (K - 1)), abs=1e-7)


@pytest.mark.parametrize("K", [3, 6, 9])
def test_polygon_code(K: int) -> None:
    W, value = polygon_code(K, phase=0.3)
    assert value == pytest.approx(1 - math.cos(2 * math.pi / K), abs=1e-12)
    assert min_angle(W) == pytest.approx(2 * math.pi / K, abs=1e-7)
    assert torch.allclose(W.norm(dim=1), torch.ones(K, dtype=torch.float64))


@pytest.mark.parametrize(("K", "d", "angle"), [
    (6, 2, 60.0),  # the hexagon
    (4, 3, math.degrees(math.acos(-1 / 3))),  # the tetrahedron (simplex ETF)
    (6, 3, 90.0),  # the octahedron
])
def test_tammes_code_known_optima(K: int, d: int, angle: float) -> None:
    W, value = tammes_code(K, d, restarts=1, max_iter=400)
    assert math.degrees(value) == pytest.approx(angle, abs=1e-3)
    assert value == pytest.approx(min_angle(W), abs=1e-15)
    assert torch.allclose(W.norm(dim=1), torch.ones(K, dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize(("K", "d", "rho"), [
    (6, 2, HEXAGON),  # d = 2: the regular K-gon
    (4, 3, 4 / 3),  # K <= d + 1: the simplex ETF
    (6, 3, 1.0),  # the octahedron (cross-polytope)
])
def test_softmax_code_known_optima(K: int, d: int, rho: float) -> None:
    W, value = softmax_code(K, d, restarts=1, max_iter=400, polish_iter=50, init=None)
    assert value == pytest.approx(rho, abs=1e-6)
    # the objective value is the engine's gnc2 of the code used as a classifier
    assert value == pytest.approx(float(one_vs_rest_margins(W).min()), abs=1e-12)
    h = W.repeat_interleave(2, dim=0)
    y = torch.arange(K).repeat_interleave(2)
    assert nc_metrics(h, y, W)["gnc2"] == pytest.approx(value, abs=1e-12)


def test_softmax_code_is_at_least_its_start() -> None:
    start = tammes_code(8, 3, restarts=1, max_iter=300)
    W, value = softmax_code(8, 3, restarts=0, polish_iter=30, init=start.W)
    assert value >= min_margin(start.W) - 1e-12
    assert value == pytest.approx(0.738796, abs=1e-5)  # the square antiprism
    one_line_error(ValueError, lambda: softmax_code(8, 3, init=torch.ones(7, 3)), "shape")
    one_line_error(ValueError, lambda: softmax_code(8, 3, init="hexagon"), "tammes")
    one_line_error(TypeError, lambda: tammes_code(8, 3, temperature=1.0), "pair")
    one_line_error(ValueError, lambda: min_angle(torch.zeros(3, 2)), "zero row")

"""ncscope.ufm: the regularised and the oblique unconstrained feature models reach Neural
Collapse, the simplex ETF is a critical point (only at the right scale), the Riemannian steps
stay on the manifold, and the trajectories are those of the NC engine that measures networks.

Sizes are small (K = 5, n = 6, d = 4: d = K − 1, where the ETF is optimal for every loss, MSE
with a regularised bias included); the whole file runs in well under a minute on one thread.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from _attack_helpers import one_line_error
from ncscope.collapse import NCStats
from ncscope.losses import LOSSES, make_loss, register_loss
from ncscope.ufm import (
    UFMResult,
    etf_solution,
    iterations_to,
    make_labels,
    nc_record,
    oblique_objective,
    regularized_objective,
    retract,
    riemannian_grad,
    simplex_etf,
    solve_oblique,
    solve_regularized,
)

SMALL = {"num_classes": 5, "n_per_class": 6, "dim": 4}
LAMBDA = 5e-4
BUILTIN = ["ce", "ls", "fl", "mse"]


def _grads(loss: str, W, H, b, y, lambdas=(LAMBDA, LAMBDA, LAMBDA)):
    """Gradient of the regularised objective at (W, H, b)."""
    params = [t.clone().requires_grad_() for t in (W, H, b)]
    f, _ = regularized_objective(*params, y, make_loss(loss), *lambdas)
    return f.detach(), torch.autograd.grad(f, params)


def _direct_nc(W, H, b, y) -> dict[str, float]:
    """NC of the final point straight from NCStats, as for a network layer."""
    stats = NCStats(W.shape[0], weight=W, bias=b)
    stats.update(H, y)
    stats.update_measured(H, y)
    return {k: v for k, v in stats.compute().items() if v is not None}


# ---------------------------------------------------------------- the regularised UFM
@pytest.mark.parametrize("loss", BUILTIN)
def test_each_loss_reaches_neural_collapse_at_the_global_minimum(loss: str) -> None:
    r = solve_regularized(loss, **SMALL, max_iter=300)
    f = r.final()
    assert f["nc1"] <= 1e-6 and f["etf_error_weights"] <= 1e-3 and f["nc3"] <= 1e-3, f
    assert f["net_accuracy"] == 1.0 and r.seconds < 10
    assert r.status in ("converged", "max_iter") and r.grad_norm < 1e-6
    # the objective is that of the simplex-ETF critical point: the global minimum
    W, H, b, y = etf_solution(loss, **SMALL)
    etf_value, _ = _grads(loss, W, H, b, y)
    assert r.objective == pytest.approx(float(etf_value), rel=1e-8)
    assert iterations_to(r, "nc1", 1e-6) is not None


def test_default_problem_converges_for_ce() -> None:
    r = solve_regularized("ce")
    f = r.final()
    assert r.converged and r.status == "converged" and r.grad_norm <= 1e-8
    assert f["nc1"] <= 1e-10 and f["etf_error_weights"] <= 1e-5 and f["nc3"] <= 1e-10
    assert r.W.shape == (10, 32) and r.H.shape == (200, 32) and r.b.shape == (10,)
    assert r.W.dtype == torch.float64 and r.settings["lambda_w"] == 5e-4
    # it stopped at the first record where the gradient tolerance was met
    grad = r.wide()["grad_norm"]
    assert (grad.iloc[:-1] > 1e-8).all() and grad.iloc[-1] <= 1e-8


@pytest.mark.parametrize("loss", BUILTIN)
def test_simplex_etf_is_a_critical_point_only_at_the_optimal_scale(loss: str) -> None:
    W, H, b, y = etf_solution(loss, num_classes=5, n_per_class=6, dim=7, seed=3)
    _, (gw, gh, gb) = _grads(loss, W, H, b, y)
    assert math.sqrt(gw.norm() ** 2 + gh.norm() ** 2 + gb.norm() ** 2) <= 1e-13
    # its NC is exact
    nc = _direct_nc(W, H, b, y)
    assert nc["nc1"] <= 1e-20 and nc["etf_error_weights"] <= 1e-12 and nc["nc3"] <= 1e-12
    # the same ETF at another scale is not critical: the scale must be the optimal one
    _, (gw, gh, gb) = _grads(loss, 1.05 * W, 1.05 * H, b, y)
    assert math.sqrt(gw.norm() ** 2 + gh.norm() ** 2) >= 1e-5
    # CE, LS and FL are shift-invariant (b = 0); the MSE target is not (b = b0·1, b0 > 0)
    if loss == "mse":
        assert float(b.min()) > 0.1 and float(b.max() - b.min()) == 0.0
    else:
        assert float(b.abs().max()) <= 1e-10


def test_simplex_etf_geometry() -> None:
    for k, d, seed in ((2, 1, None), (5, 4, None), (5, 9, 0), (10, 32, 1)):
        E = simplex_etf(k, d, seed=seed)
        gram = E @ E.T
        target = (torch.eye(k, dtype=torch.float64) * k - 1) / (k - 1)
        torch.testing.assert_close(gram, target, rtol=0, atol=1e-14)
        assert float(E.sum(0).abs().max()) <= 1e-14


def test_imbalanced_classes_run_and_majority_classifiers_are_longer() -> None:
    counts = [10, 5, 3, 2]
    r = solve_regularized("ce", num_classes=4, n_per_class=counts, dim=8, max_iter=300)
    assert torch.equal(torch.bincount(r.labels), torch.tensor(counts))
    f = r.final()
    assert f["nc1"] <= 1e-6 and f["net_accuracy"] == 1.0
    norms = r.W.norm(dim=1)
    assert torch.all(norms[:-1] > norms[1:])  # the classifier norm follows the class size
    assert f["etf_error_weights"] > 1e-2  # and W is no longer a simplex ETF
    o = solve_oblique(num_classes=4, n_per_class=counts, dim=8, scale=5.0, max_iter=300)
    assert torch.equal(torch.bincount(o.labels), torch.tensor(counts))
    assert o.final()["net_accuracy"] == 1.0


def test_user_registered_loss_runs_in_the_ufm() -> None:
    @register_loss("test_ufm_tempered_ce")
    def tempered_ce(temperature: float = 1.0):
        return lambda logits, targets: F.cross_entropy(logits / temperature, targets)

    try:
        r = solve_regularized("test_ufm_tempered_ce", **SMALL, max_iter=300,
                              loss_kwargs={"temperature": 2.0})
        f = r.final()
        assert f["nc1"] <= 1e-6 and f["etf_error_weights"] <= 1e-3 and f["nc3"] <= 1e-3
        assert r.settings["loss"] == "test_ufm_tempered_ce"
        assert r.settings["loss_kwargs"] == {"temperature": 2.0}
        # temperature 2 is CE with W/sqrt(2), H/sqrt(2): a different minimiser than CE's
        assert r.objective != pytest.approx(solve_regularized("ce", **SMALL).objective)
        o = solve_oblique(**SMALL, loss="test_ufm_tempered_ce", scale=2.0, max_iter=200)
        assert o.final()["etf_error_weights"] <= 1e-6
    finally:
        LOSSES.pop("test_ufm_tempered_ce", None)
    # a plain callable works too
    r = solve_regularized(F.cross_entropy, **SMALL, max_iter=300)
    assert r.settings["loss"] == "cross_entropy" and r.final()["nc1"] <= 1e-6


# ---------------------------------------------------------------- the oblique UFM
def test_riemannian_steps_keep_every_row_on_the_sphere() -> None:
    g = torch.Generator().manual_seed(0)
    y = make_labels([6] * 5)
    W = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    H = F.normalize(torch.randn(30, 4, generator=g, dtype=torch.float64), dim=1)
    ce = make_loss("ce")
    torch.testing.assert_close(oblique_objective(W, H, y, ce, 10.0),
                               F.cross_entropy(10.0 * H @ W.T, y), rtol=1e-15, atol=0)
    for _ in range(50):
        Wr, Hr = W.clone().requires_grad_(), H.clone().requires_grad_()
        gw, gh = torch.autograd.grad(oblique_objective(Wr, Hr, y, ce, 10.0), (Wr, Hr))
        rw, rh = riemannian_grad(W, gw), riemannian_grad(H, gh)
        # tangent: orthogonal to each row
        assert float((rw * W).sum(1).abs().max()) <= 1e-15
        assert float((rh * H).sum(1).abs().max()) <= 1e-15
        W, H = retract(W, -3.0 * rw), retract(H, -30.0 * rh)  # large steps on purpose
        assert float((W.norm(dim=1) - 1).abs().max()) <= 1e-12
        assert float((H.norm(dim=1) - 1).abs().max()) <= 1e-12
    for rule in ("fixed", "armijo"):
        r = solve_oblique(**SMALL, step_rule=rule, max_iter=100)
        assert float((r.W.norm(dim=1) - 1).abs().max()) <= 1e-12, rule
        assert float((r.H.norm(dim=1) - 1).abs().max()) <= 1e-12, rule


@pytest.mark.parametrize("rule", ["armijo", "fixed"])
def test_oblique_ufm_reaches_the_simplex_etf(rule: str) -> None:
    r = solve_oblique(**SMALL, scale=5.0, step_rule=rule, max_iter=1500)
    f = r.final()
    assert f["etf_error_weights"] <= 1e-6 and f["nc1"] <= 1e-10 and f["nc3"] <= 1e-6, f
    assert float((r.H - r.W[r.labels]).abs().max()) <= 1e-5  # h_i = w_{y_i}
    assert r.b is None and r.problem == "oblique"


@pytest.mark.parametrize("loss", BUILTIN)
def test_unit_simplex_etf_is_exactly_critical_on_the_oblique_manifold(loss: str) -> None:
    y = make_labels([6] * 5)
    W = simplex_etf(5, 7, seed=2)
    fn = make_loss(loss)
    for scale in (1.0, 5.0, 30.0):
        H = W[y].clone()
        Wr, Hr = W.clone().requires_grad_(), H.requires_grad_()
        gw, gh = torch.autograd.grad(oblique_objective(Wr, Hr, y, fn, scale), (Wr, Hr))
        assert float(riemannian_grad(W, gw).norm()) <= 1e-12, (loss, scale)
        assert float(riemannian_grad(H.detach(), gh).norm()) <= 1e-12, (loss, scale)
        if scale == 1.0:  # the Euclidean gradient is not 0 (it is normal to the sphere)
            assert float(gw.norm()) > 1e-3 and float(gh.norm()) > 1e-5
    # imbalanced classes: the ETF is no longer critical for W
    y = make_labels([10, 6, 6, 4, 2])
    Wr, Hr = W.clone().requires_grad_(), W[y].clone().requires_grad_()
    gw, _ = torch.autograd.grad(oblique_objective(Wr, Hr, y, fn, 1.0), (Wr, Hr))
    assert float(riemannian_grad(W, gw).norm()) > 1e-4


@pytest.mark.skipif(importlib.util.find_spec("geoopt") is None, reason="geoopt not installed")
def test_fixed_step_rgd_equals_geoopt_riemannian_sgd() -> None:
    import geoopt

    r = solve_oblique(**SMALL, step_rule="fixed", lr=0.5, lr_features=0.5, max_iter=40)
    g = torch.Generator().manual_seed(0)
    sphere = geoopt.Sphere()
    W = geoopt.ManifoldParameter(F.normalize(torch.randn(5, 4, generator=g,
                                                         dtype=torch.float64), dim=1), sphere)
    H = geoopt.ManifoldParameter(F.normalize(torch.randn(30, 4, generator=g,
                                                         dtype=torch.float64), dim=1), sphere)
    opt = geoopt.optim.RiemannianSGD([W, H], lr=0.5)
    for _ in range(40):
        opt.zero_grad()
        oblique_objective(W, H, r.labels, make_loss("ce"), 10.0).backward()
        opt.step()
    torch.testing.assert_close(W.detach(), r.W, rtol=0, atol=1e-12)
    torch.testing.assert_close(H.detach(), r.H, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- results and trajectories
@pytest.mark.parametrize("problem", ["regularized", "oblique"])
def test_trajectory_is_the_nc_engine_on_the_final_point(problem: str) -> None:
    if problem == "regularized":
        r = solve_regularized("ls", **SMALL, max_iter=23, record_every=7)
    else:
        r = solve_oblique(**SMALL, max_iter=23, record_every=7, step_rule="fixed")
    assert isinstance(r, UFMResult) and list(r.trajectory.columns) == ["iteration", "metric",
                                                                         "value"]
    assert sorted(set(r.trajectory["iteration"])) == [0, 7, 14, 21, 23]
    direct = _direct_nc(r.W, r.H, r.b, r.labels)
    final = r.final()
    for key, value in direct.items():
        assert final[key] == value, key  # the same engine on the same numbers: equal
    assert {"nc1", "etf_error_weights", "etf_error_means", "nc3", "equinorm_weights",
            "net_accuracy", "objective", "loss", "grad_norm"} <= set(final)
    assert r.metrics() == {k: float(v) for k, v in direct.items()}
    wide = r.wide()
    assert list(wide["iteration"]) == [0, 7, 14, 21, 23] and "nc1" in wide.columns
    assert final["objective"] == pytest.approx(r.objective, rel=0, abs=0)


def test_nc_record_is_ncstats_with_the_bias() -> None:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 3, generator=g, dtype=torch.float64)
    H = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = make_labels([10] * 4)
    b = torch.tensor([5.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # class 0 wins most samples
    got = nc_record(W, H, y, b)
    assert got == {k: float(v) for k, v in _direct_nc(W, H, b, y).items()}
    assert got["net_accuracy"] != nc_record(W, H, y)["net_accuracy"]


def test_iterations_to_reads_the_first_recorded_iteration_at_or_below() -> None:
    r = solve_regularized("ce", **SMALL, max_iter=100, record_every=5)
    w = r.wide().set_index("iteration")["nc1"]
    first = iterations_to(r, "nc1", 1e-6)
    assert first is not None and w[first] <= 1e-6
    assert all(v > 1e-6 for i, v in w.items() if i < first)
    exact = float(w.iloc[3])  # a threshold equal to a recorded value counts ("at or below")
    assert iterations_to(r, "nc1", exact) <= int(w.index[3])
    assert iterations_to(r, "nc1", -1.0) is None
    one_line_error(ValueError, lambda: iterations_to(r, "nc9", 1.0), "unknown metric 'nc9'",
                   "nc1")


BAD = [
    (lambda: solve_regularized(num_classes=1), ValueError, ["num_classes must be >= 2", "got 1"]),
    (lambda: solve_regularized(dim=0), ValueError, ["dim must be >= 1", "got 0"]),
    (lambda: solve_regularized(lambda_w=-1e-3), ValueError, ["lambda_w must be >= 0", "-0.001"]),
    (lambda: solve_regularized(lambda_h=float("inf")), ValueError, ["lambda_h must be finite"]),
    (lambda: solve_regularized(loss="hinge"), ValueError, ["unknown loss 'hinge'", "ce, fl"]),
    (lambda: solve_regularized(loss="fl", loss_kwargs={"gamma": -1}), ValueError,
     ["gamma must be >= 0"]),
    (lambda: solve_regularized(loss=F.cross_entropy, loss_kwargs={"a": 1}), ValueError,
     ["need a registered loss name"]),
    (lambda: solve_regularized(n_per_class=[3, 4]), ValueError,
     ["n_per_class has 2 counts for num_classes=10"]),
    (lambda: solve_regularized(num_classes=2, n_per_class=[3, 0]), ValueError,
     ["n_per_class[1] must be >= 1", "got 0"]),
    (lambda: solve_regularized(record_every=0), ValueError, ["record_every must be >= 1"]),
    (lambda: solve_regularized(max_iter=2.5), TypeError, ["max_iter must be an int"]),
    (lambda: solve_oblique(scale=0), ValueError, ["scale must be > 0", "1/tau"]),
    (lambda: solve_oblique(scale=-2.0), ValueError, ["scale must be > 0", "got -2"]),
    (lambda: solve_oblique(lr=0.0), ValueError, ["lr must be > 0"]),
    (lambda: solve_oblique(step_rule="sgd"), ValueError, ["unknown step_rule 'sgd'", "'armijo'"]),
    (lambda: solve_oblique(num_classes=1), ValueError, ["num_classes must be >= 2"]),
    (lambda: simplex_etf(5, 3), ValueError, ["dim must be >= 4", "needs 4 dimensions"]),
    (lambda: etf_solution(lambda_h=0.0), ValueError, ["lambda_w and lambda_h must be > 0"]),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_one_line_error(call, exc, match) -> None:
    one_line_error(exc, call, *match)

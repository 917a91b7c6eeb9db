"""ncscope.ntk: analytic kernels vs Monte Carlo, empirical NTK vs an explicit Jacobian product,
the kernel predictor, kernel attacks, eigen-features, kernel dynamics and linearisation."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from ncscope.ntk import (
    NTKMLP,
    Centered,
    KernelFGSM,
    KernelPGD,
    KernelPredictor,
    KernelProbe,
    class_alignment,
    eigen_features,
    empirical_ntk,
    jacobian_rows,
    kernel_distance,
    linearize,
    relu_kernels,
    relu_ntk,
    top_mass,
)


def _points(n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)


def _explicit_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The slow oracle: per-sample, per-logit autograd.grad rows, then J Jᵀ (full mode)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i:i + 1])[0]
        for k in range(out.shape[0]):
            grads = torch.autograd.grad(out[k], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params, strict=True)]))
    j = torch.stack(rows).double()
    return j @ j.T


@pytest.mark.parametrize("depth", [1, 2])
def test_analytic_ntk_matches_wide_networks(depth: int) -> None:
    """The mean empirical NTK of wide NTK-parameterised nets converges to the analytic one (and
    its error falls with width); the NNGP matches the Monte-Carlo output covariance."""
    x = _points()
    nngp, ntk = relu_kernels(x, depth=depth)
    errs = []
    for width in (64, 1024):
        mean = sum(empirical_ntk(NTKMLP(16, width, 1, depth=depth, seed=s).double(), x,
                                 mode="trace") for s in range(6)) / 6
        errs.append(float(torch.linalg.norm(mean - ntk) / torch.linalg.norm(ntk)))
    assert errs[1] < 0.06
    assert errs[1] < errs[0]
    # NNGP: the output covariance over 32 initialisations × 400 output units.
    cov = torch.zeros_like(nngp)
    for s in range(32):
        with torch.no_grad():
            f = NTKMLP(16, 512, 400, depth=depth, seed=100 + s).double()(x)
        cov += f @ f.T / f.shape[1] / 32
    assert float(torch.linalg.norm(cov - nngp) / torch.linalg.norm(nngp)) < 0.05


def test_analytic_kernel_closed_form_depth1() -> None:
    """Depth 1, σ_w² = 2, σ_b² = 0: Σ = 2·k₁ and Θ = 2·x·x'/d · (π − θ)/π + Σ, by hand."""
    x = _points(5)
    nngp, ntk = relu_kernels(x, depth=1)
    flat = x.reshape(5, -1)
    gram = flat @ flat.T / flat.shape[1]
    n = torch.sqrt(torch.diag(gram))
    cos = (gram / (n[:, None] * n[None, :])).clamp(-1, 1)
    th = torch.arccos(cos)
    s1 = 2 * gram
    k1 = torch.sqrt(torch.diag(s1)[:, None] * torch.diag(s1)[None, :]) * (
        torch.sin(th) + (torch.pi - th) * cos) / (2 * torch.pi)
    torch.testing.assert_close(nngp, 2 * k1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ntk, 2 * s1 * (torch.pi - th) / (2 * torch.pi) + 2 * k1,
                               atol=1e-6, rtol=1e-6)


def test_analytic_kernel_is_differentiable_in_inputs() -> None:
    a = _points(3).requires_grad_(True)
    b = _points(4, seed=1)
    assert torch.autograd.gradcheck(lambda z: relu_ntk(z, b, depth=2), (a,))


@pytest.mark.parametrize("mode", ["full", "trace"])
def test_empirical_ntk_equals_explicit_jacobian_product(mode: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 7), nn.BatchNorm1d(7), nn.ReLU(),
                          nn.Linear(7, 3)).double()
    model.train()  # the kernel is taken in eval mode and the mode restored
    model[2].running_mean.uniform_(-0.5, 0.5)
    x = _points(6)
    got = empirical_ntk(model, x, mode=mode, max_bytes=1)  # one sample per chunk
    assert model.training
    model.eval()
    full = _explicit_ntk(model, x)
    want = full if mode == "full" else full.reshape(6, 3, 6, 3).diagonal(dim1=1, dim2=3).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got, got.T)
    assert float(torch.linalg.eigvalsh(got).min()) > -1e-10
    # one shot (no chunking) and a rectangular block agree with the same oracle
    torch.testing.assert_close(empirical_ntk(model, x, mode=mode), got, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(jacobian_rows(model, x, per_sample=False),
                               jacobian_rows(model, x, per_sample=True), atol=1e-13, rtol=0)
    rect = empirical_ntk(model, x[:2], x[2:], mode=mode, max_bytes=1)
    k = 3 if mode == "full" else 1
    torch.testing.assert_close(rect, got[: 2 * k, 2 * k:], atol=1e-12, rtol=1e-10)


def test_float32_products_are_close() -> None:
    model = NTKMLP(16, 64, 5, depth=2, seed=0)
    x = _points(8).float()
    exact = empirical_ntk(model, x, mode="trace")
    fast = empirical_ntk(model, x, mode="trace", float64_products=False)
    assert float((exact - fast).abs().max() / exact.abs().max()) < 1e-5


def test_kernel_predictor_interpolates_at_infinity_and_follows_gd_time() -> None:
    x = _points(10)
    y = torch.arange(10) % 3
    kern = functools.partial(relu_ntk, depth=2)
    pred = KernelPredictor(kern, x, y)
    torch.testing.assert_close(pred(x), nn.functional.one_hot(y, 3).double(), atol=1e-8,
                               rtol=0)
    # finite time: f_τ(X) = (I − e^{−Θτ}) Y, checked against the matrix exponential
    tau = 0.7
    gram = kern(x, x)
    want = (torch.eye(10, dtype=torch.float64) - torch.linalg.matrix_exp(-gram * tau)) @ \
        nn.functional.one_hot(y, 3).double()
    torch.testing.assert_close(KernelPredictor(kern, x, y, time=tau)(x), want, atol=1e-10,
                               rtol=1e-8)
    # the eigen-feature decomposition sums to the predictor
    parts = sum(KernelPredictor(kern, x, y, eigen=[i])(x) for i in range(10))
    torch.testing.assert_close(parts, pred(x), atol=1e-8, rtol=0)


@pytest.mark.parametrize("cls,kw", [(KernelFGSM, {}), (KernelPGD, {"steps": 5}),
                                     (KernelPGD, {"steps": 5, "norm": "l2", "eps": 0.5})])
def test_kernel_attacks_stay_in_the_ball_and_lower_accuracy(cls, kw) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 4, 4, generator=g)
    y = (x.reshape(40, -1)[:, :8].sum(1) > x.reshape(40, -1)[:, 8:].sum(1)).long()
    pred = KernelPredictor(functools.partial(relu_ntk, depth=1), x[:30], y[:30])
    eps = kw.pop("eps", 0.1)
    atk = cls(pred, eps=eps, checks="off", **kw)
    adv = atk(x[30:], y[30:])
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x[30:]).reshape(10, -1)
    norm = delta.abs().max(1).values if kw.get("norm", "linf") == "linf" else delta.norm(dim=1)
    assert float(norm.max()) <= eps + 1e-6
    with torch.no_grad():
        margin_clean = pred(x[30:]).gather(1, y[30:, None]).sum()
        margin_adv = pred(adv).gather(1, y[30:, None]).sum()
    assert margin_adv < margin_clean
    assert atk.settings()["name"] == cls.name


def test_eigen_features_top_is_useful_and_bad_labels_fail() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, 4, 4, generator=g)
    y = torch.where(x.reshape(60, -1)[:, :8].mean(1) > x.reshape(60, -1)[:, 8:].mean(1), 7, 2)
    kern = functools.partial(relu_ntk, depth=1)
    table = eigen_features(kern, x[:40], y[:40], x[40:], y[40:], eps=0.05, features=6, steps=3)
    assert list(table["index"]) == list(range(6))
    assert (table.eigenvalue.diff().dropna() <= 0).all()
    assert (table.robustness <= table.usefulness + 1e-12).all()
    strong = eigen_features(kern, x[:40], y[:40], x[40:], y[40:], eps=0.3, features=6, steps=5)
    assert strong.robustness.mean() < strong.usefulness.mean() - 0.2  # the attack bites
    with pytest.raises(ValueError, match="two label values"):
        eigen_features(kern, x[:40], torch.arange(40) % 3, x[40:], y[40:], eps=0.1)


def test_dynamics_metrics() -> None:
    a = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
    assert kernel_distance(a, 3 * a) == pytest.approx(0.0, abs=1e-15)
    assert kernel_distance(a, torch.eye(3, dtype=torch.float64)) == pytest.approx(
        1 - 7 / (21 ** 0.5 * 3 ** 0.5))
    assert top_mass(a, 1) == pytest.approx(16 / 21)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    block = (labels[:, None] == labels[None, :]).double()  # collapsed: a class-block kernel
    assert class_alignment(block + 1e-3 * torch.eye(6), labels) == pytest.approx(1.0)
    mixed = torch.ones(6, 6, dtype=torch.float64) + torch.diag(torch.arange(6.0))
    assert class_alignment(mixed, labels) < 0.9
    # top-2 eigenvectors: class 0's indicator and a contrast inside class 0 -> (1 + 0) / 2
    q0 = torch.tensor([1.0, 1, 0, 0], dtype=torch.float64) / 2 ** 0.5
    u = torch.tensor([1.0, -1, 0, 0], dtype=torch.float64) / 2 ** 0.5
    q1 = torch.tensor([0.0, 0, 1, 1], dtype=torch.float64) / 2 ** 0.5
    kern = 3 * torch.outer(q0, q0) + 2 * torch.outer(u, u) + 1 * torch.outer(q1, q1)
    assert class_alignment(kern, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes"):
        kernel_distance(a, torch.eye(2))


def test_kernel_probe_tracks_distances() -> None:
    model = NTKMLP(16, 32, 3, depth=1, seed=0)
    x = _points(6).float()
    probe = KernelProbe(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    first = probe.measure(model)
    assert first["ntk_dist_init"] is None and 0 < first["ntk_top_mass"] <= 1
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    second = probe.measure(model)
    assert second["ntk_dist_init"] == pytest.approx(second["ntk_dist_prev"])
    assert second["ntk_dist_init"] > 0


def test_linearize_matches_to_first_order_and_trains() -> None:
    torch.manual_seed(0)
    model = NTKMLP(16, 24, 3, depth=2, seed=0).double()
    lin = linearize(model)
    x = _points(5)
    torch.testing.assert_close(lin(x), model(x))
    direction = [torch.randn_like(p) for p in model.parameters()]
    errs = []
    for h in (1e-3, 1e-4):
        moved = NTKMLP(16, 24, 3, depth=2, seed=0).double()
        with torch.no_grad():
            for p, d, q in zip(moved.parameters(), direction, lin.params, strict=True):
                p.add_(h * d)
                q.copy_(p)
        errs.append(float((moved(x) - lin(x)).abs().max()))
    assert errs[1] < errs[0] / 50  # second-order remainder: ~h²
    lin2 = linearize(model)
    opt = torch.optim.SGD(lin2.parameters(), lr=0.05)
    y = torch.zeros(5, 3, dtype=torch.float64)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (lin2(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_centered_is_zero_at_init_and_keeps_the_kernel() -> None:
    net = NTKMLP(16, 32, 3, depth=1, seed=0).double()
    c = Centered(net)
    x = _points(4)
    assert float(c(x).abs().max()) == 0.0
    torch.testing.assert_close(empirical_ntk(c, x), empirical_ntk(net, x))


@pytest.mark.parametrize("call,match", [
    (lambda: relu_ntk(torch.rand(3, 4), torch.rand(3, 5)), "same shape"),
    (lambda: relu_ntk(torch.rand(3, 4), depth=0), "depth"),
    (lambda: empirical_ntk(NTKMLP(4, 3, 2), torch.rand(2, 4), mode="diag"), "mode"),
    (lambda: KernelPredictor(relu_ntk, torch.rand(3, 4), torch.tensor([0, 1])), "targets"),
    (lambda: NTKMLP(4, 0, 2), "width"),
])
def test_bad_input_is_one_line(call, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as err:
        call()
    assert "\n" not in str(err.value)

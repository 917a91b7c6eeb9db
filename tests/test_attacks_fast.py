"""``fast=True``: attacks on the folded attack twin (ncscope.attacks.fast).

Pins: the twin computes the model's function (logits and input gradients, float rounding
only) on every shipped architecture; the user's model is never modified; folded weights follow
optimiser steps and train-mode BatchNorm updates between calls (even those that bump no version
counter); hooks, untraceable models and wrong folds fall back to the model itself, with a
warning and the exact path's output; fast attacks agree with torchattacks and the exact path on
trained models (pixels and robust accuracy).
"""

from __future__ import annotations

import functools
import gc
import warnings
import weakref

import pytest
import torch
from torch import nn

from _attack_helpers import Normalize, accuracy, digits_data, trained_digits_model
from ncscope.attacks import FGSM, PGD, TRADES, AttackSanityWarning, make_attack
from ncscope.attacks.fast import AttackTwin, twin_for
from ncscope.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore::ncscope.attacks.AttackSanityWarning")


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _conv_digits(seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU-pool x2 + BN-MLP head on 1x8x8 digits (three foldable pairs)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.3, 0.4),
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10),
    )


@functools.cache
def trained_conv_digits() -> nn.Module:
    """``_conv_digits`` trained on 1500 digits (Adam, ~2 s), eval mode, cached like
    ``trained_digits_model``."""
    x, y = digits_data()
    model = _conv_digits()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        idx = torch.randperm(1500, generator=gen)[:128]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def _snapshot(model: nn.Module) -> tuple:
    return ([id(m) for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()],
            [bool(m._forward_hooks or m._forward_pre_hooks) for m in model.modules()])


def _same(a: tuple, b: tuple) -> bool:
    return (a[0] == b[0] and a[2:] == b[2:] and a[1].keys() == b[1].keys()
            and all(torch.equal(a[1][k], b[1][k]) for k in a[1]))


# ---- the twin is the model's function ---------------------------------------------------


@pytest.mark.parametrize(("name", "dataset", "shape", "min_folded"), [
    ("bn_mlp", "digits", (1, 8, 8), 2),
    ("small_cnn", "cifar10", (3, 32, 32), 3),
    ("vgg11_bn", "cifar10", (3, 32, 32), 8),
    ("preactresnet18", "cifar10", (3, 32, 32), 1),
])
def test_twin_computes_the_models_function(name, dataset, shape, min_folded):
    torch.manual_seed(0)
    model = _randomise_bn(create_model(name, 10, dataset=dataset))
    before = _snapshot(model)
    x = torch.rand((6, *shape), generator=torch.Generator().manual_seed(1))
    twin = AttackTwin(model)
    assert twin.folded >= min_folded and "folded" in twin.note
    assert twin.channels_last == (len(shape) == 3 and shape[0] == 3)
    xr = x.clone().requires_grad_(True)
    xt = x.clone().requires_grad_(True)
    ref, got = model(xr), twin(xt)
    scale = 1.0 + float(ref.detach().abs().max())
    assert float((ref - got).detach().abs().max()) <= 1e-5 * scale
    (g_ref,) = torch.autograd.grad(ref.logsumexp(1).sum(), xr)
    (g_got,) = torch.autograd.grad(got.logsumexp(1).sum(), xt)
    # (relative l2: a pre-activation within rounding of 0 may switch its ReLU in one of them)
    assert float((g_ref - g_got).norm()) <= 1e-3 * float(g_ref.norm())
    assert _same(before, _snapshot(model))  # nothing of the model was touched
    assert all(p.grad is None for p in model.parameters())


def test_fast_attack_leaves_model_untouched():
    model = _randomise_bn(_conv_digits())
    before = _snapshot(model)
    x, y = digits_data()
    PGD(model, eps=0.1, alpha=0.02, fast=True, seed=0)(x[:64], y[:64])
    TRADES(model, eps=0.1, fast=True, seed=0)(x[:64])
    assert _same(before, _snapshot(model))
    assert all(p.grad is None for p in model.parameters())


# ---- agreement with torchattacks and the exact path on trained models ---------------------


def _compare(fast_out: torch.Tensor, ref_out: torch.Tensor) -> tuple[float, float]:
    d = (fast_out - ref_out).abs()
    return float(d.max()), float((d > 1e-5).float().mean())


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_fast_agrees_with_torchattacks(which, capsys):
    ta = pytest.importorskip("torchattacks")
    model = trained_digits_model() if which == "mlp" else trained_conv_digits()
    x, y = digits_data()
    x, y = x[1500:], y[1500:]
    assert accuracy(model, x, y) > 0.85
    cases = [
        ("PGD linf 8/255", PGD(model, 8 / 255, 2 / 255, 10, random_start=False, fast=True),
         ta.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)),
        ("PGD linf 0.1", PGD(model, 0.1, 0.02, 10, random_start=False, fast=True),
         ta.PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False)),
        ("PGD l2 1.0", PGD(model, 1.0, 0.2, 10, "l2", random_start=False, fast=True),
         ta.PGDL2(model, eps=1.0, alpha=0.2, steps=10, random_start=False)),
        ("FGSM 0.1", FGSM(model, 0.1, fast=True), ta.FGSM(model, eps=0.1)),
    ]
    for label, ours, theirs in cases:
        a, b = ours(x, y), theirs(x, y)
        assert "folded" in ours.last_report.fast
        worst, frac = _compare(a, b)
        gap = abs(accuracy(model, a, y) - accuracy(model, b, y))
        with capsys.disabled():
            print(f"\n[fast vs torchattacks, {which}] {label}: max|diff| = {worst:.3g}, "
                  f"pixels differing = {frac:.2e}, robust-accuracy gap = {gap:.4f}")
        assert frac <= 1e-3 and gap <= 0.01


def test_fast_agrees_with_exact_path_random_start_and_trades():
    model = trained_conv_digits()
    x, y = digits_data()
    x, y = x[1500:], y[1500:]
    for kw in [dict(eps=0.1, alpha=0.02), dict(eps=1.0, alpha=0.2, norm="l2"),
               dict(eps=0.1, alpha=0.02, targeted=True, restarts=2)]:
        exact = PGD(model, seed=5, **kw)(x, y)
        fast = PGD(model, seed=5, fast=True, **kw)(x, y)
        assert _compare(fast, exact)[1] <= 1e-3
    exact = TRADES(model, eps=0.1, seed=2)(x)
    fast = TRADES(model, eps=0.1, seed=2, fast=True)(x)
    assert _compare(fast, exact)[1] <= 1e-3


# ---- the twin follows the model ---------------------------------------------------------


def test_refolds_after_optimiser_step_and_train_mode_batchnorm():
    model = _randomise_bn(_conv_digits())
    x, y = digits_data()
    xb, yb = x[:128], y[:128]
    atk = PGD(model, eps=0.1, alpha=0.02, random_start=False, fast=True, checks="off")
    atk(xb, yb)
    twin = twin_for(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(3):  # weights move; running statistics move inside the BatchNorm kernel
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    model.eval()
    with torch.no_grad():  # an EMA-style update through .data bumps no version counter either
        model[10].weight.data.mul_(0.9)
    out = atk(xb, yb)
    assert twin_for(model) is twin  # same structure: re-folded, not rebuilt
    with torch.no_grad():
        assert float((twin(xb) - model(xb)).abs().max()) <= 1e-4
    exact = PGD(model, eps=0.1, alpha=0.02, random_start=False, checks="off")(xb, yb)
    assert _compare(out, exact)[1] <= 1e-3


def test_rebuilds_after_dtype_change():
    model = _randomise_bn(_conv_digits())
    x, y = digits_data()
    atk = PGD(model, eps=0.1, alpha=0.02, fast=True, seed=0)
    atk(x[:32], y[:32])
    model.double()
    before = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", AttackSanityWarning)
        out = atk(x[:32].double(), y[:32])
    assert _same(before, _snapshot(model))  # float64 folding must not write into the model
    assert out.dtype == torch.float64 and "folded" in atk.last_report.fast
    with torch.no_grad():
        twin = twin_for(model)
        xd = x[:32].double()
        assert float((twin(xd) - model(xd)).abs().max()) <= 1e-10


def test_twin_is_released_with_its_model():
    model = _conv_digits().eval()
    twin_for(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


# ---- fallbacks: hooks, untraceable models, wrong folds --------------------------------------


def test_hooked_batchnorm_is_not_folded():
    model = _randomise_bn(_conv_digits())
    handle = model[6].register_forward_hook(lambda m, i, o: o * 0.5)  # changes the output
    x, y = digits_data()
    twin = AttackTwin(model)
    assert twin.folded == 2  # the hooked conv->BN pair stays as it is
    with torch.no_grad():
        assert float((twin(x[:16]) - model(x[:16])).abs().max()) <= 1e-4
    handle.remove()


def test_hook_on_root_falls_back_to_the_model():
    model = _randomise_bn(_conv_digits())
    model.register_forward_hook(lambda m, i, o: o + 1.0)
    x, y = digits_data()
    atk = PGD(model, eps=0.1, alpha=0.02, fast=True, seed=3)
    out = atk(x[:64], y[:64])  # (no warning: channels-last input still applies)
    assert "<root>" in atk.last_report.fast and "channels-last" in atk.last_report.fast
    exact = PGD(model, eps=0.1, alpha=0.02, seed=3)(x[:64], y[:64])
    assert _compare(out, exact)[1] <= 1e-3  # channels-last input only


class _Branchy(nn.Module):
    """Python control flow on tensor values: not traceable by torch.fx."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32),
                                  nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return self.body(x)


def test_untraceable_model_falls_back_to_the_model():
    model = _randomise_bn(_Branchy())
    x, y = digits_data()
    atk = PGD(model, eps=0.1, alpha=0.02, fast=True, seed=3)
    with pytest.warns(UserWarning, match="not traceable"):
        out = atk(x[:64], y[:64])
    assert torch.equal(out, PGD(model, eps=0.1, alpha=0.02, seed=3)(x[:64], y[:64]))


class _LinearOnLastDim(nn.Module):
    """Linear on the last dim of (B, C, L) inputs, then BatchNorm1d over dim 1: folding the pair
    would be wrong (BatchNorm1d's channels are not the linear layer's outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.lin(x)))


@pytest.mark.parametrize("checks", ["off", "first"])
def test_wrong_fold_is_caught_and_falls_back(checks):
    model = _randomise_bn(_LinearOnLastDim())
    x = torch.rand(32, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))
    atk = PGD(model, eps=0.1, alpha=0.02, fast=True, seed=0, checks=checks)
    with pytest.warns(UserWarning, match="differ"):
        out = atk(x, y)
    assert "model used as is" in atk.last_report.fast
    assert torch.equal(out, PGD(model, eps=0.1, alpha=0.02, seed=0, checks=checks)(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", AttackSanityWarning)
        atk(x, y)  # once caught, no new warning


# ---- settings and errors ----------------------------------------------------------------


def test_settings_round_trip_and_report():
    model = trained_digits_model()
    atk = PGD(model, fast=True)
    s = atk.settings()
    assert s["fast"] is True and make_attack(s, model).fast is True
    x, y = digits_data()
    atk(x[:8], y[:8])
    assert atk.last_report.to_dict()["fast"].startswith("folded 1 BatchNorm")
    plain = PGD(model)
    plain(x[:8], y[:8])
    assert plain.last_report.fast is None


def test_bad_fast_arguments():
    model = trained_digits_model()
    with pytest.raises(ValueError, match="model_mode='eval'"):
        PGD(model, fast=True, model_mode="train")
    with pytest.raises(ValueError, match="model_mode='eval'"):
        TRADES(model, fast=True, model_mode="train")
    with pytest.raises(TypeError, match="fast"):
        FGSM(model, fast="yes")  # type: ignore[arg-type]

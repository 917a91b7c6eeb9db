"""Property tests (hypothesis) for ncscope.attacks: >= 1000 generated cases in this file.

Tiny models (Normalize -> Linear -> BatchNorm -> ReLU -> Linear, or linear) on tiny inputs of
several shapes (flat vectors and image-like tensors) keep every case in the millisecond range.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from _attack_helpers import Normalize, linear_model, tiny_mlp
from ncscope.attacks import (
    FGSM,
    PGD,
    TRADES,
    GaussianL2,
    GaussianNoise,
    RandomSign,
    UniformLinf,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::ncscope.attacks.AttackSanityWarning"),
    pytest.mark.filterwarnings("ignore:.*exceeds 0.5"),  # l_inf eps up to 0.6
]

SHAPES = [(5,), (6,), (2, 3), (1, 2, 3)]
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-6


@st.composite
def batches(draw, min_b: int = 1, max_b: int = 4, n_classes: int | None = None):
    """(images in [0, 1] with some pixels exactly at 0 / 1, labels, K)."""
    shape = draw(st.sampled_from(SHAPES))
    b = draw(st.integers(min_b, max_b))
    k = n_classes or draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**20))
    edge = draw(st.sampled_from(["none", "none", "zeros", "ones", "both"]))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((b, *shape), generator=g)
    if edge in ("zeros", "both"):
        x[x < 0.25] = 0.0
    if edge in ("ones", "both"):
        x[x > 0.75] = 1.0
    y = torch.randint(0, k, (b,), generator=g)
    return x, y, k


def _dim(x: torch.Tensor) -> int:
    return math.prod(x.shape[1:])


def _model(x: torch.Tensor, k: int, seed: int = 0) -> nn.Module:
    return tiny_mlp(_dim(x), k, seed)


def _within(x: torch.Tensor, out: torch.Tensor, eps: float, norm: str) -> None:
    assert out.shape == x.shape and out.dtype == x.dtype and not out.requires_grad
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    d = (out - x).flatten(1)
    if norm == "linf":
        assert float(d.abs().max()) <= eps + TOL
    else:
        assert float(d.norm(dim=1).max()) <= eps * (1 + 1e-5) + TOL


eps_values = st.one_of(st.just(0.0), st.floats(1e-4, 0.6), st.sampled_from([8 / 255, 128 / 255]))
alphas = st.floats(1e-3, 0.5)
norms = st.sampled_from(["linf", "l2"])


# ---- eps = 0 leaves the images unchanged ---------------------------------------------------


@settings(max_examples=200, **FAST)
@given(data=batches(), kind=st.sampled_from(["pgd", "fgsm", "trades", "noise"]), norm=norms,
       random_start=st.booleans(), restarts=st.integers(1, 2), targeted=st.booleans(),
       steps=st.integers(1, 3), alpha=alphas, seed=st.integers(0, 100))
def test_eps_zero_is_identity(data, kind, norm, random_start, restarts, targeted, steps, alpha,
                              seed):
    x, y, k = data
    model = _model(x, k)
    if kind == "pgd":
        atk = PGD(model, 0.0, alpha, steps, norm, random_start, restarts, targeted, seed=seed)
    elif kind == "fgsm":
        atk = FGSM(model, 0.0, targeted=targeted)
    elif kind == "trades":
        atk = TRADES(model, 0.0, alpha, steps, norm, seed=seed)
    else:
        cls = [GaussianNoise, GaussianL2, RandomSign, UniformLinf][seed % 4]
        atk = cls(0.0, seed=seed)
    assert torch.equal(atk(x, y), x)


# ---- outputs inside the eps-ball and [0, 1] ------------------------------------------------


@settings(max_examples=300, **FAST)
@given(data=batches(min_b=2), eps=eps_values, alpha=alphas, steps=st.integers(1, 3),
       norm=norms, random_start=st.booleans(), restarts=st.integers(1, 2),
       targeted=st.booleans(), rule=st.sampled_from(["next", "random", "least_likely"]),
       loss=st.sampled_from(["ce", "cw"]), mode=st.sampled_from(["eval", "train"]),
       early_stop=st.booleans(), checks=st.sampled_from(["off", "cheap", "full"]),
       seed=st.integers(0, 1000), fast=st.booleans())
def test_pgd_output_in_ball_and_box(data, eps, alpha, steps, norm, random_start, restarts,
                                    targeted, rule, loss, mode, early_stop, checks, seed, fast):
    x, y, k = data
    atk = PGD(_model(x, k), eps, alpha, steps, norm, random_start, restarts, targeted, rule,
              early_stop, loss, mode, seed=seed, checks=checks, fast=fast and mode == "eval")
    _within(x, atk(x, y), eps, norm)


@settings(max_examples=150, **FAST)
@given(data=batches(min_b=2), eps=eps_values, alpha=st.one_of(st.none(), alphas),
       steps=st.integers(1, 3), norm=norms, mode=st.sampled_from(["eval", "train"]),
       with_labels=st.booleans(), seed=st.integers(0, 1000))
def test_trades_output_in_ball_and_box(data, eps, alpha, steps, norm, mode, with_labels, seed):
    x, y, k = data
    atk = TRADES(_model(x, k), eps, alpha, steps, norm, mode, seed=seed)
    _within(x, atk(x, y if with_labels else None), eps, norm)


@settings(max_examples=100, **FAST)
@given(data=batches(), eps=eps_values, targeted=st.booleans())
def test_fgsm_output_in_ball_and_box(data, eps, targeted):
    x, y, k = data
    _within(x, FGSM(_model(x, k), eps, targeted=targeted)(x, y), eps, "linf")


@settings(max_examples=150, **FAST)
@given(data=batches(), size=st.floats(0.0, 0.6), seed=st.integers(0, 1000),
       cls=st.sampled_from([GaussianL2, RandomSign, UniformLinf, GaussianNoise]))
def test_noise_output_in_ball_and_box(data, size, seed, cls):
    x, y, _ = data
    out = cls(size, seed=seed)(x, y)
    if cls is GaussianNoise:  # unbounded: only the box
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    else:
        _within(x, out, size, "l2" if cls is GaussianL2 else "linf")


@settings(max_examples=100, **FAST)
@given(b=st.integers(1, 4), d=st.integers(2, 12), size=st.floats(1e-3, 0.4),
       seed=st.integers(0, 1000))
def test_noise_exact_size_without_clipping(b, d, size, seed):
    """Away from the box, GaussianL2 has l2 norm exactly `radius` and RandomSign moves every
    pixel by exactly `eps`."""
    x = torch.full((b, d), 0.5)
    dl2 = (GaussianL2(size, seed=seed)(x) - x).norm(dim=1)
    assert torch.allclose(dl2, torch.full_like(dl2, size), rtol=1e-5, atol=1e-7)
    dsign = (RandomSign(size, seed=seed)(x) - x).abs()
    assert torch.allclose(dsign, torch.full_like(dsign, size), atol=1e-7)


# ---- a targeted attack lowers the target loss ----------------------------------------------


@settings(max_examples=120, **FAST)
@given(data=batches(n_classes=3), eps=st.floats(1e-3, 0.05), steps=st.integers(1, 4),
       norm=norms, explicit=st.booleans(), model_seed=st.integers(0, 3))
def test_targeted_attack_lowers_target_loss(data, eps, steps, norm, explicit, model_seed):
    x, y, k = data
    model = linear_model(_dim(x), k, model_seed)
    target = (y + 2) % k if explicit else None
    atk = PGD(model, eps, eps / steps, steps, norm, random_start=False, targeted=True,
              checks="off")
    out = atk(x, y, target=target)
    t = target if explicit else (y + 1) % k
    assert torch.equal(atk.last_report.targets, t)
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        before = ce(model(x), t, reduction="none")
        after = ce(model(out), t, reduction="none")
    assert bool((after <= before + 1e-6).all())
    moved = (out != x).flatten(1).any(dim=1)
    if bool(moved.any()):
        assert float(after[moved].sum()) < float(before[moved].sum())


# ---- more restarts are never worse, per example --------------------------------------------


def _objective(z: torch.Tensor, cls: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """What PGD maximises: CE of the label / minus CE of the target; CW margins."""
    if loss == "ce":
        ce = nn.functional.cross_entropy(z, cls, reduction="none")
        return -ce if targeted else ce
    own = nn.functional.one_hot(cls, z.shape[1]).bool()
    margin = z.gather(1, cls[:, None])[:, 0] - z.masked_fill(own, float("-inf")).amax(1)
    return margin if targeted else -margin


@settings(max_examples=120, **FAST)
@given(data=batches(), eps=st.floats(1e-3, 0.5), alpha=alphas, steps=st.integers(1, 3),
       norm=norms, restarts=st.integers(2, 4), targeted=st.booleans(),
       rule=st.sampled_from(["next", "random"]), loss=st.sampled_from(["ce", "cw"]),
       seed=st.integers(0, 1000))
def test_more_restarts_never_worse(data, eps, alpha, steps, norm, restarts, targeted, rule,
                                   loss, seed):
    """Same seed: the first restart is the one-restart attack, and the per-example selection
    keeps the highest final objective, so R restarts are never worse than one."""
    x, y, k = data
    model = _model(x, k)
    outs, targets = [], []
    for r in (1, restarts):
        atk = PGD(model, eps, alpha, steps, norm, True, r, targeted, rule, loss=loss,
                  seed=seed, checks="off")
        outs.append(atk(x, y))
        targets.append(atk.last_report.targets)
        if r > 1:
            assert atk.last_report.objective is not None
    cls = y
    if targeted:
        assert torch.equal(targets[0], targets[1])
        cls = targets[0]
    with torch.no_grad():
        o1, orr = (_objective(model(o), cls, loss, targeted) for o in outs)
    assert bool((orr >= o1 - 1e-6).all())


# ---- hygiene: mode and requires_grad flags restored, no parameter gradients ----------------


def _fresh_model(d: int, k: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(d, 6), nn.BatchNorm1d(6),
                         nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, k))


@pytest.mark.filterwarnings("ignore:.*fast=True has no effect")  # its BatchNorm is hooked
@settings(max_examples=150, **FAST)
@given(data=batches(min_b=2), seed=st.integers(0, 1000),
       kind=st.sampled_from(["pgd", "fgsm", "trades", "noise"]),
       mode=st.sampled_from(["eval", "train"]), flags=st.lists(st.booleans(), min_size=16,
                                                                max_size=16),
       fast=st.booleans())
def test_mode_and_requires_grad_restored(data, seed, kind, mode, flags, fast):
    x, y, k = data
    model = _fresh_model(_dim(x), k, seed)
    modules = list(model.modules())
    for m, f in zip(modules, flags, strict=False):
        m.training = f
    params = list(model.parameters())
    for p, f in zip(params, reversed(flags), strict=False):
        p.requires_grad_(f)
    before_modes = [m.training for m in modules]
    before_flags = [p.requires_grad for p in params]
    before_bufs = [b.clone() for b in model.buffers()]
    seen = []

    def hook(module, inputs):
        seen.append((module.training, any(p.requires_grad for p in model.parameters())))

    handle = model[3].register_forward_pre_hook(hook)
    fast = fast and mode == "eval"  # (the BatchNorm is hooked: fast=True must not fold it)
    if kind == "pgd":
        atk = PGD(model, 0.1, 0.05, 2, model_mode=mode, seed=seed, fast=fast)
    elif kind == "fgsm":
        atk = FGSM(model, 0.1, model_mode=mode, fast=fast)
    elif kind == "trades":
        atk = TRADES(model, 0.1, 0.05, 2, model_mode=mode, seed=seed, fast=fast)
    else:
        atk = GaussianNoise(model, 0.1, model_mode=mode, seed=seed)
    atk(x, y)
    handle.remove()
    assert [m.training for m in modules] == before_modes
    assert [p.requires_grad for p in params] == before_flags
    assert all(p.grad is None for p in params)
    assert seen and all(tr == (mode == "train") and not rg for tr, rg in seen)
    if mode == "eval":
        assert all(torch.equal(a, b) for a, b in zip(before_bufs, model.buffers(), strict=True))


# ---- reproducibility -----------------------------------------------------------------------


@settings(max_examples=100, **FAST)
@given(data=batches(), seed=st.integers(0, 2**31 - 1), norm=norms,
       kind=st.sampled_from(["pgd", "pgd_random_target", "trades", "noise"]),
       use_gen=st.booleans())
def test_reproducible_given_seed_or_generator(data, seed, norm, kind, use_gen):
    x, y, k = data
    model = _model(x, k)

    def make(checks: str):
        rng = {"generator": torch.Generator().manual_seed(seed)} if use_gen else {"seed": seed}
        if kind == "pgd":
            return PGD(model, 0.2, 0.05, 2, norm, restarts=2, checks=checks, **rng)
        if kind == "pgd_random_target":
            return PGD(model, 0.2, 0.05, 2, norm, targeted=True, target_rule="random",
                       checks=checks, **rng)
        if kind == "trades":
            return TRADES(model, 0.2, 0.05, 2, norm, checks=checks, **rng)
        return [GaussianNoise, GaussianL2, RandomSign, UniformLinf][seed % 4](0.2, **rng)

    a, b = make("off"), make("full")
    out_a, out_b = a(x, y), b(x, y)
    assert torch.equal(out_a, out_b)  # sanity checks never shift the random stream
    assert torch.equal(a(x, y), b(x, y))  # second calls agree too

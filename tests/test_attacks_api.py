"""API contract of ncscope.attacks: errors, settings, reports, sanity flags, hygiene."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from _attack_helpers import (
    DetachInput,
    NoisyLogits,
    Normalize,
    ReverseGrad,
    digits_data,
    one_line_error,
    tiny_mlp,
    trained_digits_model,
)
from ncscope.attacks import (
    ATTACKS,
    FGSM,
    PGD,
    TRADES,
    AttackSanityWarning,
    GaussianL2,
    GaussianNoise,
    RandomSign,
    UniformLinf,
    audit,
    make_attack,
)

ALL_CLASSES = [FGSM, PGD, TRADES, GaussianNoise, GaussianL2, RandomSign, UniformLinf]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_digits_model()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_data()
    return x[1500:1564], y[1500:1564]




# ---- bad input: one-line ValueError / TypeError saying what to fix ---------------------------


def test_constructor_errors(model):
    one_line_error(ValueError, lambda: PGD(model, eps=-0.1), "eps", ">= 0")
    one_line_error(ValueError, lambda: PGD(model, steps=0), "steps", ">= 1")
    one_line_error(TypeError, lambda: PGD(model, steps=2.5), "steps", "int")
    one_line_error(ValueError, lambda: PGD(model, alpha=0.0), "alpha", "> 0")
    one_line_error(ValueError, lambda: PGD(model, alpha=-1.0), "alpha")
    one_line_error(ValueError, lambda: PGD(model, norm="l1"), "'linf'", "'l2'")
    one_line_error(ValueError, lambda: TRADES(model, norm="L3"), "'linf'", "'l2'")
    one_line_error(ValueError, lambda: PGD(model, restarts=0), "restarts")
    one_line_error(ValueError, lambda: PGD(model, model_mode="test"), "'eval'", "'train'")
    one_line_error(ValueError, lambda: PGD(model, targeted=True, target_rule="far"),
                    "'next'", "'random'", "'least_likely'")
    one_line_error(ValueError, lambda: PGD(model, loss="mse"), "'ce'", "'cw'")
    one_line_error(ValueError, lambda: PGD(model, checks="some"), "'off'")
    one_line_error(ValueError, lambda: PGD(model, seed=1, generator=torch.Generator()),
                    "seed or generator")
    one_line_error(ValueError, lambda: PGD(model, eps=float("nan")), "finite")
    one_line_error(TypeError, lambda: PGD(model, eps="8/255"), "eps")
    one_line_error(TypeError, lambda: PGD("model"), "nn.Module")
    one_line_error(TypeError, lambda: PGD(None), "model")
    one_line_error(ValueError, lambda: FGSM(model, eps=-1), "eps")
    one_line_error(ValueError, lambda: GaussianNoise(sigma=-0.1), "sigma")
    one_line_error(ValueError, lambda: GaussianL2(-1.0), "radius")
    one_line_error(ValueError, lambda: RandomSign(eps=-1.0), "eps")
    one_line_error(TypeError, lambda: UniformLinf(0.1, eps=0.2), "twice")


def test_norm_aliases(model):
    assert PGD(model, norm="l_inf").norm == "linf"
    assert PGD(model, norm="L2").norm == "l2"
    assert PGD(model, norm=float("inf")).norm == "linf"
    assert PGD(model, norm=2).norm == "l2"


def test_image_errors(model, batch):
    x, y = batch
    atk = PGD(model, steps=1)
    one_line_error(ValueError, lambda: atk(x * 255, y), "[0, 1]", "normalisation")
    one_line_error(ValueError, lambda: atk(x - 0.5, y), "[0, 1]")
    one_line_error(ValueError, lambda: atk(x + 2e-6, y), "[0, 1]")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    one_line_error(ValueError, lambda: atk(bad, y), "[0, 1]")
    one_line_error(TypeError, lambda: atk((x * 255).to(torch.uint8), y), "floating")
    one_line_error(TypeError, lambda: atk(x.numpy(), y), "torch.Tensor")
    one_line_error(ValueError, lambda: atk(x[0, 0, 0], y[:1]), "batch dimension")


def test_images_within_tolerance_are_accepted_and_clamped(model, batch):
    x, y = batch
    x = x.clone()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = -1e-7, 1 + 1e-7
    out = PGD(model, steps=2)(x, y)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_label_errors(model, batch):
    x, y = batch
    atk = PGD(model, steps=1)
    one_line_error(ValueError, lambda: atk(x, y[:, None]), "shape (B,)")
    one_line_error(ValueError, lambda: atk(x, y[:-1]), "shape (B,)")
    one_line_error(TypeError, lambda: atk(x, y.float()), "integer", ".long()")
    one_line_error(TypeError, lambda: atk(x, y.tolist()), "torch.Tensor")
    one_line_error(ValueError, lambda: atk(x, y + 10), "[0, 10)")
    one_line_error(ValueError, lambda: atk(x, y - 20), "[0, 10)")
    one_line_error(TypeError, lambda: atk(x), "labels are required")
    one_line_error(ValueError, lambda: RandomSign(0.1)(x, y - 20), ">= 0")
    one_line_error(ValueError, lambda: GaussianNoise(model, 0.1)(x, y + 10), "[0, 10)")


def test_target_errors(model, batch):
    x, y = batch
    one_line_error(ValueError, lambda: PGD(model, targeted=True, target_rule=None)(x, y),
                    "target=", "target_rule")
    one_line_error(ValueError, lambda: PGD(model)(x, y, target=y), "targeted=True")
    one_line_error(ValueError, lambda: PGD(model, targeted=True)(x, y, target=y + 10),
                    "target")
    one_line_error(ValueError, lambda: PGD(model, targeted=True)(x, y, target=y[:3]),
                    "target", "shape")


def test_model_must_return_logits(batch):
    x, y = batch
    one_line_error(TypeError, lambda: PGD(nn.Flatten(0))(x, y), "logits of shape (B, K)")


def test_errors_restore_model_state(model, batch):
    x, y = batch
    model.train()
    try:
        with pytest.raises(ValueError):
            PGD(model)(x, y + 10)
        assert model.training and all(m.training for m in model.modules())
        assert all(p.requires_grad for p in model.parameters())
    finally:
        model.eval()


# ---- settings, registry, reports -----------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_settings_json_and_round_trip(cls, model):
    atk = cls(model, seed=3) if cls.requires_model else cls(seed=3)
    s = atk.settings()
    json.dumps(s)
    assert s["name"] == cls.name and ATTACKS[s["name"]] is cls
    assert s["seed"] == 3 and s["checks"] == "first"
    again = make_attack(s, model if cls.requires_model else None)
    assert again.settings() == s
    assert cls.__doc__ and "20" in cls.__doc__  # names its paper (year)


def test_settings_content(model):
    s = PGD(model, 128 / 255, 15 / 255, 10, "l2", restarts=2, targeted=True).settings()
    assert s == {
        "name": "PGD", "eps": 128 / 255, "alpha": 15 / 255, "steps": 10, "norm": "l2",
        "random_start": True, "restarts": 2, "targeted": True, "target_rule": "next",
        "early_stop": False, "loss": "ce", "paper_exact": False, "model_mode": "eval",
        "seed": None,
        "generator": False, "checks": "first", "fast": False,
    }
    assert GaussianNoise(0.1).settings()["sigma"] == 0.1
    assert GaussianL2().settings()["radius"] == 128 / 255
    assert make_attack("PGD", model, eps=0.1).eps == 0.1
    one_line_error(ValueError, lambda: make_attack("CW", model), "valid names")
    assert "PGD(" in repr(PGD(model))


def test_noise_signatures(model, batch):
    x, y = batch
    for src in (GaussianNoise(0.1), GaussianNoise(sigma=0.1), GaussianNoise(model, 0.1),
                GaussianNoise(model, sigma=0.1)):
        assert src.sigma == 0.1
        assert src(x).shape == x.shape
    assert GaussianNoise().sigma == 8 / 255 and GaussianL2().radius == 128 / 255
    assert RandomSign().eps == 8 / 255 and UniformLinf().eps == 8 / 255
    src = RandomSign(model, 0.1)
    src(x, y)
    assert src.last_report.success is not None and src.last_report.forwards == 1


def test_report_counts_no_redundant_passes(model, batch):
    x, y = batch
    atk = PGD(model, steps=10, checks="cheap")
    atk(x, y)
    r = atk.last_report
    assert (r.forwards, r.backwards) == (10, 10)
    assert r.objective is None and r.warnings == [] and r.zero_grad_fraction == 0.0
    atk = PGD(model, steps=10, restarts=3, checks="off")
    atk(x, y)
    assert (atk.last_report.forwards, atk.last_report.backwards) == (33, 30)
    atk = TRADES(model, steps=10, checks="off")
    atk(x, y)
    assert (atk.last_report.forwards, atk.last_report.backwards) == (11, 10)
    atk = PGD(model, steps=10)  # checks="first": full on the first call only
    atk(x, y)
    assert atk.last_report.checks == "full" and atk.last_report.forwards == 13
    assert atk.last_report.success is not None
    atk(x, y)
    assert atk.last_report.checks == "cheap" and atk.last_report.forwards == 10
    json.dumps(atk.last_report.to_dict())


def test_targets_and_rules(model, batch):
    x, y = batch
    atk = PGD(model, steps=1, targeted=True)
    atk(x, y)
    assert torch.equal(atk.last_report.targets, (y + 1) % 10)
    atk = PGD(model, steps=1, targeted=True, target_rule="random", seed=0)
    atk(x, y)
    t = atk.last_report.targets
    assert bool((t != y).all()) and int(t.min()) >= 0 and int(t.max()) < 10
    assert len(set(((t - y) % 10).tolist())) > 3  # not a fixed shift
    atk = PGD(model, steps=1, targeted=True, target_rule="least_likely")
    atk(x, y)
    with torch.no_grad():
        z = model(x).masked_fill(nn.functional.one_hot(y, 10).bool(), float("inf"))
    assert torch.equal(atk.last_report.targets, z.argmin(1))
    given = torch.zeros_like(y)
    atk(x, y, target=given)
    assert torch.equal(atk.last_report.targets, given)


def test_targeted_reaches_target(model, batch):
    x, y = batch
    atk = PGD(model, eps=0.3, alpha=0.05, steps=20, targeted=True, seed=0)
    out = atk(x, y)
    with torch.no_grad():
        hit = (model(out).argmax(1) == (y + 1) % 10).float().mean()
    assert float(hit) > 0.9


def test_early_stop_leaves_misclassified_points(model, batch):
    x, y = batch
    with torch.no_grad():
        pred = model(x).argmax(1)
    y_fake = torch.where(torch.arange(len(y)) % 2 == 0, y, (pred + 1) % 10)
    out = PGD(model, 0.1, 0.02, 5, random_start=False, early_stop=True)(x, y_fake)
    already = pred != y_fake
    assert bool(already.any())
    assert torch.equal(out[already], x[already])
    assert not torch.equal(out[~already], x[~already])


def test_cw_loss_attacks(model, batch):
    x, y = batch
    out = PGD(model, 0.1, 0.02, 10, loss="cw", seed=0)(x, y)
    with torch.no_grad():
        assert float((model(out).argmax(1) == y).float().mean()) < 0.5


def test_fgsm_is_one_pgd_step(model, batch):
    x, y = batch
    a = FGSM(model, 0.1)(x, y)
    b = PGD(model, 0.1, 0.1, 1, random_start=False)(x, y)
    assert torch.equal(a, b)


# ---- hygiene -------------------------------------------------------------------------------


def test_no_parameter_gradients_and_existing_grads_untouched(batch):
    x, y = batch
    model = tiny_mlp(64, 10, 5)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    PGD(model, steps=3)(x, y)
    TRADES(model, steps=3)(x, y)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    for p in model.parameters():
        p.grad = None


def test_train_mode_uses_and_updates_batch_stats():
    """model_mode='train' is the paper's AT protocol: BN batch statistics, running stats
    updated by the attack's forward passes; eval leaves them alone; modes restored."""
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(0.5, 0.25), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3)).eval()
    x, y = torch.rand(16, 6), torch.randint(0, 3, (16,))
    bn = model[2]
    before = bn.running_mean.clone()
    PGD(model, steps=3, model_mode="eval")(x, y)
    assert torch.equal(bn.running_mean, before) and not model.training
    atk = PGD(model, steps=3, model_mode="train", checks="full")
    atk(x, y)
    assert not torch.equal(bn.running_mean, before) and not model.training
    assert int(bn.num_batches_tracked) == 3  # the 3 step forwards; checks have no side effect


def test_works_under_no_grad_and_inference_mode(model, batch):
    x, y = batch
    ref = PGD(model, random_start=False)(x, y)
    with torch.no_grad():
        assert torch.equal(PGD(model, random_start=False)(x, y), ref)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        out = PGD(model, random_start=False)(xi, yi)
    assert torch.equal(out, ref)


def test_input_not_modified_and_output_detached(model, batch):
    x, y = batch
    x = x.clone().requires_grad_(True)
    copy = x.detach().clone()
    out = PGD(model, steps=2)(x, y)
    assert torch.equal(x.detach(), copy) and not out.requires_grad and out.grad_fn is None


def test_float64_and_flat_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(0.5, 0.25), nn.Linear(5, 3)).double()
    x, y = torch.rand(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    for atk in (PGD(model, 0.1, norm="l2"), FGSM(model, 0.1), TRADES(model, 0.1),
                GaussianL2(model, 0.1)):
        out = atk(x, y)
        assert out.dtype == torch.float64 and out.shape == x.shape


def test_empty_batch(model):
    x, y = torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    assert PGD(model)(x, y).shape == x.shape


def test_manual_seed_and_generator(model, batch):
    x, y = batch
    atk = PGD(model, seed=1)
    a = atk(x, y)
    b = atk(x, y)
    assert not torch.equal(a, b)  # the private stream advances
    atk.manual_seed(1)
    assert torch.equal(atk(x, y), a)
    gen = torch.Generator().manual_seed(1)
    g_atk = PGD(model, generator=gen)
    assert torch.equal(g_atk(x, y), a)
    one_line_error(ValueError, lambda: g_atk.manual_seed(2), "generator")


# ---- sanity flags (Croce & Hein 2020 style) ------------------------------------------------


def _flags(atk, x, y) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atk(x, y)
    emitted = [str(w.message) for w in caught if issubclass(w.category, AttackSanityWarning)]
    assert len(emitted) == len(atk.last_report.warnings)  # reported and emitted, never silent
    return atk.last_report.warnings


def test_clean_model_has_no_flags(model, batch):
    x, y = batch
    for atk in (PGD(model), PGD(model, 128 / 255, 15 / 255, norm="l2"), TRADES(model)):
        assert _flags(atk, x, y) == []


def test_flag_zero_gradient(model, batch):
    x, y = batch
    masked = nn.Sequential(DetachInput(), model)
    flags = _flags(PGD(masked, checks="cheap"), x, y)
    assert any("zero input gradient" in f for f in flags)


def test_flag_non_determinism(model, batch):
    x, y = batch
    flags = _flags(PGD(nn.Sequential(model, NoisyLogits())), x, y)
    assert any("non-deterministic" in f for f in flags)
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10))
    assert any("non-deterministic" in f for f in _flags(PGD(dropout, model_mode="train"), x, y))
    assert not any("non-deterministic" in f for f in _flags(PGD(dropout), x, y))


def test_flag_worse_than_noise(model, batch):
    x, y = batch
    flipped = nn.Sequential(ReverseGrad(), model)  # gradients point the wrong way
    flags = _flags(PGD(flipped, 0.2, 0.05, 10), x, y)
    assert any("worse than the random-sign" in f for f in flags)
    flags = _flags(PGD(flipped, 1.5, 0.3, 10, norm="l2"), x, y)
    assert any("worse than the Gaussian l2-sphere" in f for f in flags)


def test_flag_non_finite(batch):
    x, y = batch

    class NaNModel(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] * float("nan")

    flags = _flags(PGD(NaNModel(), checks="cheap"), x, y)
    assert any("non-finite" in f for f in flags)


def test_audit_runs_full_checks_once(model, batch):
    x, y = batch
    atk = PGD(model, checks="off")
    report = audit(atk, x, y)
    assert report.checks == "full" and report.success is not None
    assert atk.checks == "off"

"""The threat-model table (ncscope.attacks.threat): defaults, step rules, radius checks.

Sources of the rules: Madry et al., ICLR 2018 and Su et al., TMLR 2024 (experimental setup:
l_inf 8/255 with steps of 2/255, l2 128/255 with steps of 15/255, 10 steps); Zhang et al.,
ICML 2019, official TRADES code (l2: SGD with ``lr = epsilon / perturb_steps * 2``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from _attack_helpers import (
    digits_data,
    official_trades_l2,
    one_line_error,
    trained_digits_model,
)
from ncscope.attacks import (
    FGSM,
    PGD,
    THREAT_DEFAULTS,
    TRADES,
    GaussianL2,
    RandomSign,
    ThreatModel,
    UniformLinf,
    default_alpha,
    threat_model,
)

pytestmark = pytest.mark.filterwarnings("ignore::ncscope.attacks.AttackSanityWarning")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return trained_digits_model()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_data()
    return x[1500:1564], y[1500:1564]




# ---- the table --------------------------------------------------------------------------


@pytest.mark.parametrize(("norm", "attack", "eps", "steps", "alpha"), [
    ("linf", "pgd", 8 / 255, 10, 2 / 255),          # Su et al. 2024: 2/255 at 8/255
    ("linf", "pgd", 0.1, 10, 0.025),                 # eps / 4
    ("linf", "trades", 0.031, 10, 0.031 / 4),        # official TRADES: 0.007 at 0.031
    ("l2", "pgd", 128 / 255, 10, 15 / 255),          # Su et al. 2024: 15/255 at 128/255
    ("l2", "pgd", 1.0, 10, 15 / 128),                # eps * 15/128
    ("l2", "trades", 128 / 255, 10, 2 * (128 / 255) / 10),  # official: epsilon/steps*2
    ("l2", "trades", 0.5, 4, 0.25),
    ("linf", "fgsm", 0.1, 1, 0.1),                   # one step of size eps
])
def test_default_alpha_rules(norm, attack, eps, steps, alpha):
    assert default_alpha(eps, norm, attack, steps) == alpha


def test_paper_values_are_exact():
    assert default_alpha(8 / 255) == 2 / 255
    assert default_alpha(128 / 255, "l2") == 15 / 255
    assert THREAT_DEFAULTS["linf"]["eps"] == 8 / 255 and THREAT_DEFAULTS["l2"]["eps"] == 128 / 255
    assert THREAT_DEFAULTS["linf"]["steps"] == THREAT_DEFAULTS["l2"]["steps"] == 10


def test_threat_model_fills_nones():
    assert threat_model("linf") == ThreatModel("linf", 8 / 255, 2 / 255, 10)
    assert threat_model("L2") == ThreatModel("l2", 128 / 255, 15 / 255, 10)
    trades_l2 = ThreatModel("l2", 128 / 255, 2 * (128 / 255) / 10, 10)
    assert threat_model("l2", attack="trades") == trades_l2
    assert threat_model("l2", 1.0, steps=20, attack="trades").alpha == 0.1
    assert threat_model("linf", 0.1, 0.03, 7) == ThreatModel("linf", 0.1, 0.03, 7)  # explicit
    assert threat_model("linf", attack="fgsm") == ThreatModel("linf", 8 / 255, 8 / 255, 1)
    assert threat_model("linf", 0.0).alpha == 1.0  # eps = 0: any positive step
    with pytest.raises(dataclasses.FrozenInstanceError):
        threat_model("linf").eps = 0.1  # type: ignore[misc]


def test_attacks_use_the_table(model):
    assert (PGD(model).eps, PGD(model).alpha, PGD(model).steps) == (8 / 255, 2 / 255, 10)
    l2 = PGD(model, norm="l2")
    assert (l2.eps, l2.alpha) == (128 / 255, 15 / 255)
    assert PGD(model, eps=0.2).alpha == 0.05
    assert PGD(model, eps=2.0, norm="l2").alpha == 2.0 * 15 / 128
    assert PGD(model, eps=0.2, alpha=0.01).alpha == 0.01  # explicit alphas are kept
    assert TRADES(model).alpha == 2 / 255
    assert TRADES(model, eps=0.1, alpha=0.02).alpha == 0.02
    assert FGSM(model, 0.1).alpha == 0.1


def test_trades_l2_default_step_is_two_eps_over_steps(model):
    atk = TRADES(model, norm="l2")
    assert atk.eps == 128 / 255 and atk.alpha == 2 * (128 / 255) / 10
    assert TRADES(model, eps=1.0, steps=5, norm="l2").alpha == 0.4
    assert TRADES(model, eps=1.0, steps=5, norm="l2").settings()["alpha"] == 0.4


def test_trades_l2_default_matches_official_code(model):
    """Default step, same global seed: the official l2 TRADES loop's perturbations."""
    x, _ = digits_data()
    x = x[1500:]
    for eps in (128 / 255, 1.0):
        torch.manual_seed(11)
        ours = TRADES(model, eps=eps, norm="l2")(x)
        torch.manual_seed(11)
        ref = official_trades_l2(model, x, eps, 10)
        assert float((ours - ref).abs().max()) <= 1e-5
        # the ball is used: the mean perturbation reaches (almost) the radius
        assert float((ours - x).flatten(1).norm(dim=1).mean()) >= 0.9 * eps


# ---- radius validation ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PGD, TRADES, FGSM, RandomSign, UniformLinf])
@pytest.mark.parametrize("eps", [8, 5, 255, 1.5])
def test_linf_eps_in_pixel_units(model, cls, eps):
    if cls in (RandomSign, UniformLinf):
        msg = one_line_error(ValueError, lambda: cls(eps), "eps", "[0, 1]", f"got {eps:g}")
    else:
        msg = one_line_error(ValueError, lambda: cls(model, eps=eps), "eps", "[0, 1]", f"{eps:g}")
    assert msg.startswith(f"{cls.name}: ")
    if eps in (8, 5, 255):
        assert f"did you mean {eps}/255?" in msg


def test_linf_eps_warns_above_half(model):
    with pytest.warns(UserWarning, match=r"PGD: l_inf eps=0\.6 exceeds 0\.5") as caught:
        PGD(model, eps=0.6)
    assert caught[0].filename == __file__  # points at the caller, not at ncscope
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD(model, eps=0.5)
        PGD(model, eps=1.0, norm="l2")  # (l2 radii are judged against the input)


def test_l2_eps_bounded_by_the_input_diameter(model, batch):
    x, y = batch  # 64 pixels: diameter sqrt(64) = 8
    PGD(model, eps=8.0, norm="l2", steps=1)(x, y)
    msg = one_line_error(ValueError, lambda: PGD(model, eps=128, norm="l2")(x, y),
                    "PGD", "eps=128", "sqrt(64)", "did you mean 128/255")
    assert "diameter" in msg
    one_line_error(ValueError, lambda: TRADES(model, eps=9.0, norm="l2")(x), "TRADES", "eps=9")
    one_line_error(ValueError, lambda: GaussianL2(10.0)(x), "GaussianL2", "radius=10")
    one_line_error(ValueError, lambda: PGD(model, alpha=0.0), "alpha", "> 0", "got 0")


# ---- evaluation loops -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pgd_linf", "pgd_l2_restarts", "trades_l2"])
def test_no_grad_gives_the_same_result(model, batch, kind):
    """Attacks switch gradients back on for the input: inside ``torch.no_grad()`` (a usual
    evaluation loop) the output is the same as outside, random start included."""
    x, y = batch

    def make():
        if kind == "pgd_linf":
            return PGD(model, seed=0)
        if kind == "pgd_l2_restarts":
            return PGD(model, norm="l2", restarts=2, seed=0)
        return TRADES(model, norm="l2", seed=0)

    ref = make()(x, y)
    with torch.no_grad():
        out = make()(x, y)
    assert torch.equal(out, ref)
    assert not torch.equal(ref, x)
    d = (ref - x).flatten(1)
    bound = d.abs().amax(1) if kind == "pgd_linf" else d.norm(dim=1)
    assert float(bound.max()) <= make().eps * (1 + 1e-5) + 1e-6
    assert math.isfinite(float(bound.mean()))

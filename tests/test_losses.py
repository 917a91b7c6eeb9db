"""ncscope.losses: CE, LS, FL, MSE against closed forms, finite differences and torch; the
registry (aliases, user losses, one-line errors); training with a non-CE loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ncscope.train
from _attack_helpers import one_line_error
from ncscope.losses import (
    LOSSES,
    canonical_loss,
    loss_value,
    make_loss,
    register_loss,
    resolve_loss,
    trades_kl,
)
from ncscope.train import TrainConfig, train

# Hand-made logits (3 samples, 4 classes) and labels; float64 throughout.
Z = [[2.0, 0.0, -1.0, 0.5], [0.5, 0.5, 0.5, 0.5], [-3.0, 1.0, 4.0, 0.0]]
Y = [0, 3, 1]


def _tensors() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(Z, dtype=torch.float64), torch.tensor(Y)


def _logp(row: list[float]) -> list[float]:
    """log softmax of one row, by hand."""
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


def _closed_form(name: str, **hyper: float) -> float:
    """The per-sample formula of each loss, averaged over the batch, in plain Python."""
    total = 0.0
    for row, y in zip(Z, Y, strict=True):
        logp = _logp(row)
        if name == "ce":
            total += -logp[y]
        elif name == "ls":
            a = hyper["alpha"]
            total += (1 - a) * (-logp[y]) + a * sum(-v for v in logp) / len(row)
        elif name == "fl":
            g = hyper["gamma"]
            total += -((1 - math.exp(logp[y])) ** g) * logp[y]
        elif name == "mse":
            b = hyper["beta"]
            total += sum((v - (b if j == y else 0.0)) ** 2 for j, v in enumerate(row)) / len(row)
    return total / len(Z)


CASES = [
    ("ce", {}),
    ("ls", {"alpha": 0.05}),
    ("ls", {"alpha": 0.3}),
    ("fl", {"gamma": 3.0}),
    ("fl", {"gamma": 0.5}),
    ("fl", {"gamma": 2.0}),
    ("mse", {"beta": 15.0}),
    ("mse", {"beta": 1.0}),
]


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_each_loss_equals_its_closed_form(name: str, hyper: dict) -> None:
    z, y = _tensors()
    got = float(make_loss(name, **hyper)(z, y))
    assert got == pytest.approx(_closed_form(name, **hyper), rel=1e-13, abs=1e-15)


def test_defaults_are_those_of_the_official_code() -> None:
    """Zhou et al. 2022's code: smoothing 0.05, gamma 3; MSE rescale 15."""
    z, y = _tensors()
    assert float(make_loss("ls")(z, y)) == pytest.approx(_closed_form("ls", alpha=0.05))
    assert float(make_loss("fl")(z, y)) == pytest.approx(_closed_form("fl", gamma=3.0))
    assert float(make_loss("mse")(z, y)) == pytest.approx(_closed_form("mse", beta=15.0))
    assert float(make_loss("ce")(z, y)) == pytest.approx(_closed_form("ce"))


@pytest.mark.parametrize(("name", "hyper"), CASES)
def test_gradients_match_finite_differences(name: str, hyper: dict) -> None:
    z, y = _tensors()
    z = (z + 0.1 * torch.randn(z.shape, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(1))).requires_grad_()
    fn = make_loss(name, **hyper)
    assert torch.autograd.gradcheck(lambda t: fn(t, y), (z,), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.1, 0.5, 0.9])
def test_ls_equals_torch_label_smoothing(alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(64, 7, dtype=torch.float64, generator=g)
    y = torch.randint(0, 7, (64,), generator=g)
    ref = F.cross_entropy(z, y, label_smoothing=alpha)
    torch.testing.assert_close(make_loss("ls", alpha=alpha)(z, y), ref, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(make_loss("ce", label_smoothing=alpha)(z, y), ref)


def test_fl_with_gamma_zero_is_cross_entropy_and_stable_at_huge_margins() -> None:
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(64, 7, dtype=torch.float64, generator=g)
    y = torch.randint(0, 7, (64,), generator=g)
    torch.testing.assert_close(make_loss("fl", gamma=0)(z, y), F.cross_entropy(z, y),
                               rtol=1e-14, atol=0)
    # p_y rounds to 1 (margin 1000): finite value 0 and finite gradients for gamma < 1 too
    big = torch.tensor([[1000.0, 0.0, -5.0], [0.0, -1000.0, 0.0]], dtype=torch.float64)
    for gamma in (0.5, 1.0, 3.0):
        t = big.clone().requires_grad_()
        out = make_loss("fl", gamma=gamma)(t, torch.tensor([0, 1]))
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(t.grad).all(), gamma
        # sample 1: p_y = 1, loss 0; sample 2: p_y = e^-1000 / 2, loss 1000 + log 2
        assert out.item() == pytest.approx(0.5 * (1000.0 + math.log(2.0)), rel=1e-15)


BAD = [
    ("ls", {"alpha": 1.0}, ValueError, ["'ls'", "alpha must be in [0, 1)", "got 1"]),
    ("ls", {"alpha": -0.1}, ValueError, ["alpha must be in [0, 1)", "got -0.1"]),
    ("fl", {"gamma": -1}, ValueError, ["'fl'", "gamma must be >= 0", "got -1", "use 3"]),
    ("fl", {"gamma": float("nan")}, ValueError, ["gamma must be finite"]),
    ("mse", {"beta": 0.0}, ValueError, ["'mse'", "beta must be > 0", "got 0"]),
    ("mse", {"beta": -15}, ValueError, ["beta must be > 0", "got -15"]),
    ("ce", {"label_smoothing": 1.5}, ValueError, ["label_smoothing must be in [0, 1)"]),
    ("fl", {"gama": 2}, ValueError, ["unknown option 'gama'", "valid options: gamma",
                                     "did you mean 'gamma'"]),
    ("mse", {"scale": 2}, ValueError, ["unknown option 'scale'", "valid options: beta"]),
    ("fl", {"gamma": "3"}, TypeError, ["gamma must be a real number", "'3'"]),
    ("hinge", {}, ValueError, ["unknown loss 'hinge'", "valid names:", "ce", "fl", "ls", "mse"]),
]


@pytest.mark.parametrize(("name", "hyper", "exc", "match"), BAD,
                         ids=[f"{n}-{'-'.join(h) or 'name'}" for n, h, _, _ in BAD])
def test_bad_hyper_parameters_are_one_line_errors(name, hyper, exc, match) -> None:
    one_line_error(exc, lambda: make_loss(name, **hyper), *match)


def test_bad_loss_kwargs_fail_when_the_training_config_is_built() -> None:
    one_line_error(ValueError, lambda: TrainConfig(loss="fl", loss_kwargs={"gamma": -2}),
                   "gamma must be >= 0")
    one_line_error(ValueError, lambda: TrainConfig(loss="ls", loss_kwargs={"smoothing": 0.1}),
                   "unknown option 'smoothing'", "valid options: alpha")


def test_names_aliases_and_the_train_reexports() -> None:
    assert canonical_loss("Focal-Loss") == "fl"
    assert canonical_loss("label_smoothing") == "ls"
    assert canonical_loss("cross_entropy") == "ce"
    assert canonical_loss("mean_square_error") == "mse"
    assert {"ce", "ls", "fl", "mse"} <= set(LOSSES)
    assert ncscope.train.LOSSES is LOSSES and ncscope.train.make_loss is make_loss
    assert ncscope.train.register_loss is register_loss
    assert ncscope.train.trades_kl is trades_kl


def test_user_loss_is_registered_and_selected_by_name() -> None:
    @register_loss("test_hinge")
    def hinge(margin: float = 1.0):
        def fn(logits, targets):
            true = logits.gather(1, targets[:, None])
            return (margin - true + logits).clamp_min(0).scatter(1, targets[:, None], 0).sum(1)\
                .mean()
        return fn

    try:
        z, y = _tensors()
        manual = sum(max(0.0, 2.0 - r[t] + v) for r, t in zip(Z, Y, strict=True)
                     for j, v in enumerate(r) if j != t) / len(Z)
        assert float(make_loss("Test-Hinge", margin=2.0)(z, y)) == pytest.approx(manual)
        assert float(loss_value("test_hinge", z, y, margin=2.0)) == pytest.approx(manual)
        assert resolve_loss(hinge(2.0)) is not None
        one_line_error(ValueError, lambda: make_loss("test_hinge", gamma=1),
                       "unknown option 'gamma'", "valid options: margin")
        one_line_error(ValueError, lambda: register_loss("test_hinge", hinge), "already")
        cfg = TrainConfig(loss="test_hinge", loss_kwargs={"margin": 0.5})
        assert cfg.loss == "test_hinge"
    finally:
        LOSSES.pop("test_hinge", None)


def test_resolve_loss_accepts_a_callable_but_not_with_kwargs() -> None:
    z, y = _tensors()
    assert float(loss_value(F.cross_entropy, z, y)) == pytest.approx(_closed_form("ce"))
    one_line_error(ValueError, lambda: resolve_loss(F.cross_entropy, {"gamma": 1}),
                   "need a registered loss name")
    one_line_error(TypeError, lambda: resolve_loss(3), "registered name or a callable")


def test_training_with_focal_loss() -> None:
    """A 2-epoch digits run with ``loss="fl"`` (gamma 2) trains and logs the focal loss."""
    cfg = TrainConfig.from_dict({
        "data": {"dataset": "digits", "n_per_class": 20, "n_test": 50},
        "model": {"name": "bn_mlp", "kwargs": {"widths": [32, 32]}},
        "mode": "st", "loss": "fl", "loss_kwargs": {"gamma": 2}, "epochs": 2,
        "batch_size": 50, "lr": 0.05, "threads": 1, "progress": False, "track_test": False,
    })
    out = train(cfg)
    h = out.history
    logs = h[(h["source"] == "training") & (h["metric"] == "run_loss")]
    assert len(logs) == 2 and logs["value"].notna().all()
    # the logged loss is the focal loss, smaller than the cross-entropy of the same logits
    ce = h[(h["source"] == "clean") & (h["metric"] == "loss") & h["class"].isna()
           & (h["epoch"] == 2)]["value"]
    assert float(logs["value"].iloc[-1]) < 2.31 and (ce > 0).all()
    assert out.config.loss == "fl" and out.config.loss_kwargs == {"gamma": 2}


def test_factory_reference_is_imported_and_bad_ones_are_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_loss_mod.py").write_text(
        "import torch.nn.functional as F\n\n"
        "def half_ce(scale: float = 0.5):\n"
        "    return lambda z, y: scale * F.cross_entropy(z, y)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from ncscope.losses import LOSSES, canonical_loss, make_loss

    try:
        assert canonical_loss("my_loss_mod:half_ce") == "my_loss_mod:half_ce"
        z, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
        assert torch.allclose(make_loss("my_loss_mod:half_ce")(z, y),
                              0.5 * torch.nn.functional.cross_entropy(z, y))
        for bad in ("no_such_mod_xyz:fn", "my_loss_mod:nope"):
            with pytest.raises(ValueError, match="cannot import") as err:
                canonical_loss(bad)
            assert "\n" not in str(err.value)
    finally:
        LOSSES.pop("my_loss_mod:half_ce", None)

"""NormalizedHead: cosine logits x scale (Yaras et al., NeurIPS 2022, §2: unit-norm features and
classifier rows, CE at temperature tau = 1 / scale) as a drop-in classifier of every built-in
model, found by the taps and the NC engine, trainable in ST / AT / TRADES.

The engine's contract under test: for the tapped penultimate features ``f = "classifier:in"``
and ``(W, b) = head_of(...)``, ``logits == f @ W.T + b`` (NC3 / NC4 assume it).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

import ncscope
from _attack_helpers import one_line_error
from ncscope.collapse.choose import head_of
from ncscope.collapse.taps import FeatureTaps
from ncscope.config import ConfigError, load_config
from ncscope.data import UnknownNameError, load_dataset
from ncscope.models import (
    DEFAULT_HEAD_SCALE,
    L2Normalize,
    NormalizedHead,
    available_models,
    classifier_of,
    create_model,
    find_classifier,
    linear_map,
    penultimate_layer,
)
from ncscope.models.config import ModelConfig
from ncscope.train import TrainConfig, train

#: a small input shape each built-in model accepts (the ImageNette variants need >= 32 px after
#: their extra down-sampling)
SHAPES = {
    "bn_mlp": (1, 8, 8),
    "small_cnn": (1, 12, 12),
    "vgg11_bn": (3, 32, 32),
    "vgg11_bn_imagenette": (3, 64, 64),
    "preactresnet18": (3, 32, 32),
    "preactresnet18_imagenette": (3, 64, 64),
}
SMALL = {"bn_mlp": {"widths": [16, 12]}, "small_cnn": {"channels": [4, 8], "hidden": 12}}


def reference_logits(x: torch.Tensor, w: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * cos(w_k, x_i)`` written out: dot products over products of norms."""
    dots = x @ w.T
    norms = x.norm(dim=1, keepdim=True) * w.norm(dim=1)[None, :]
    return scale * dots / norms


# ---------------------------------------------------------------------------- the head itself
def test_logits_are_scaled_cosines() -> None:
    torch.manual_seed(0)
    head = NormalizedHead(7, 5, scale=3.5).double()
    x = torch.randn(11, 7, dtype=torch.float64) * 4
    assert head.bias is None and head.weight.shape == (5, 7)
    torch.testing.assert_close(head(x), reference_logits(x, head.weight.detach(), 3.5),
                               rtol=1e-12, atol=1e-12)
    # effective_linear: the map on unit-norm inputs, with the rows of W normalised and scaled
    w_eff, b_eff = linear_map(head)
    assert b_eff is None
    torch.testing.assert_close(w_eff.norm(dim=1), torch.full((5,), 3.5, dtype=torch.float64))
    torch.testing.assert_close(head(x), F.normalize(x, dim=1) @ w_eff.T, rtol=1e-12, atol=1e-12)
    # any leading dimensions, like nn.Linear
    torch.testing.assert_close(head(x.view(11, 1, 7)).squeeze(1), head(x))
    assert "scale=3.5" in repr(head)


def test_gradients_by_finite_differences() -> None:
    torch.manual_seed(1)
    head = NormalizedHead(6, 4, scale=2.0).double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = head.weight.detach().clone().requires_grad_(True)

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return functional_call(head, {"weight": w}, (x,))

    assert gradcheck(f, (x, w), eps=1e-6, atol=1e-8)
    assert gradcheck(L2Normalize(), (x,), eps=1e-6, atol=1e-8)
    # the gradient of a logit is orthogonal to its feature (scale invariance in h)
    (g,) = torch.autograd.grad(f(x, w)[:, 0].sum(), x)
    torch.testing.assert_close((g * x).sum(dim=1), torch.zeros(5, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_logits_ignore_the_norms_of_rows_and_features() -> None:
    torch.manual_seed(2)
    head = NormalizedHead(8, 6, scale=7.0).double()
    x = torch.randn(9, 8, dtype=torch.float64)
    before = head(x)
    with torch.no_grad():
        head.weight[2] *= 13.0
        head.weight[4] *= 0.01
    torch.testing.assert_close(head(x), before, rtol=1e-12, atol=1e-12)
    scaled = x.clone()
    scaled[0] *= 250.0
    scaled[3] *= 1e-3
    torch.testing.assert_close(head(scaled), before, rtol=1e-12, atol=1e-12)


def test_logits_are_bounded_by_the_scale_and_reach_it() -> None:
    torch.manual_seed(3)
    scale = 4.0
    head = NormalizedHead(10, 10, scale=scale)
    x = torch.randn(500, 10) * 100
    assert head(x).abs().max() <= scale * (1 + 1e-6)
    with torch.no_grad():  # a feature along row k (or against it) hits +-scale exactly
        w = head.weight.detach()
        out = head(torch.cat([3 * w, -0.5 * w]))
    torch.testing.assert_close(out.diagonal(), torch.full((10,), scale))
    torch.testing.assert_close(out[10:].diagonal(), torch.full((10,), -scale))
    assert head(torch.zeros(1, 10)).detach().abs().max() == 0  # zero feature: zero logits


# ---------------------------------------------------------------------------- built-in models
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_builtin_model_takes_the_head_and_keeps_the_engine_contract(name: str) -> None:
    assert set(SHAPES) == set(available_models())
    torch.manual_seed(4)
    shape = SHAPES[name]
    model = create_model(name, input_shape=shape, head="normalized", head_scale=6.0,
                         **SMALL.get(name, {})).double().eval()
    x = torch.rand(5, *shape, dtype=torch.float64)
    assert find_classifier(model, None, x) == "classifier"  # verified on a probe batch
    assert penultimate_layer(model, None, x) == "classifier:in"
    head = classifier_of(model)
    assert isinstance(head, NormalizedHead) and head.scale == 6.0
    assert isinstance(model.feature_norm, L2Normalize)
    pen = "classifier:in"
    with FeatureTaps(model, [pen]) as taps, torch.no_grad():
        logits = model(x)
        feats = taps.features[pen]
    # the penultimate features are the unit-norm ones of the paper
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(model.forward_features(x), feats)
    # the contract NC3/NC4 rely on: logits = W_eff f + b_eff, W_eff = scale * W / ||W||_row
    w, b = head_of(model, [pen])[pen]
    assert b is None
    torch.testing.assert_close(w, 6.0 * F.normalize(head.weight.detach(), dim=1))
    torch.testing.assert_close(feats @ w.T, logits, rtol=1e-12, atol=1e-12)
    assert logits.abs().max() <= 6.0 + 1e-9


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_default_head_is_unchanged(name: str) -> None:
    model = create_model(name, input_shape=SHAPES[name], **SMALL.get(name, {}))
    assert type(model.classifier) is nn.Linear and model.classifier.bias is not None
    assert model.feature_norm is None
    assert "feature_norm" not in dict(model.named_modules())


def test_the_fast_attack_twin_computes_the_same_logits() -> None:
    from ncscope.attacks.fast import twin_for

    torch.manual_seed(5)
    model = create_model("bn_mlp", head="normalized", widths=[16, 12]).eval()
    x = torch.rand(8, 1, 8, 8)
    twin = twin_for(model)
    assert "folded 2" in twin.note  # the BN layers fold, the head is kept as it is
    with torch.no_grad():
        torch.testing.assert_close(twin.net(x), model(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- user models
def user_net(normalise: bool) -> nn.Sequential:
    torch.manual_seed(6)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 16), nn.ReLU()]
    layers += [L2Normalize()] if normalise else []
    return nn.Sequential(*layers, NormalizedHead(16, 10, scale=5.0))


def test_a_user_model_with_the_head_is_found_by_name_free_search() -> None:
    model = user_net(normalise=True)
    x = torch.rand(4, 1, 8, 8)
    key = find_classifier(model, None, x)  # rule 5: the last linear whose output is the output
    assert key == "4" and penultimate_layer(model, None, x) == "4:in"
    with FeatureTaps(model, ["4:in"]) as taps, torch.no_grad():
        logits = model(x)
    w, b = head_of(model, ["4:in"], key)["4:in"]
    torch.testing.assert_close(taps.features["4:in"] @ w.T, logits, rtol=1e-5, atol=1e-5)


def test_a_user_model_without_l2normalize_is_refused_in_one_line() -> None:
    model = user_net(normalise=False)
    x = torch.rand(4, 1, 8, 8)
    one_line_error(ValueError, lambda: find_classifier(model, None, x), "'3'",
                   "NormalizedHead", "L2Normalize")
    one_line_error(ValueError, lambda: find_classifier(model, "3", x), "L2Normalize")
    assert find_classifier(model, "3") == "3"  # no probe: nothing to check


def test_analyze_measures_a_normalized_head_model() -> None:
    torch.manual_seed(7)
    data = load_dataset("digits", n_per_class=10)
    model = create_model("bn_mlp", dataset="digits", head="normalized", widths=[16, 12]).eval()
    df = ncscope.analyze(model, data, sources=["clean", "pgd"], eps=0.1, steps=2,
                         progress=False)
    rows = df[(df.source == "clean") & (df.reference == "own") & df["class"].isna()]
    pen = rows[rows.layer == "classifier:in"].set_index("metric")["value"]
    assert {"features.block1", "features.block2", "classifier:in"} <= set(rows.layer)
    assert math.isfinite(pen["nc1"]) and math.isfinite(pen["nc3"])
    # the engine reads W_eff = scale * W / ||W||_row: every row has the same norm
    assert pen["equinorm_weights"] < 1e-6


# ---------------------------------------------------------------------------- configs
def test_config_selection_for_every_builtin_model() -> None:
    for name in available_models():
        cfg = ModelConfig(name=name, head="normalized", head_scale=12.0,
                          kwargs=SMALL.get(name, {}))
        model = cfg.build("digits" if name in SMALL else "cifar10")
        assert isinstance(model.classifier, NormalizedHead) and model.classifier.scale == 12.0
    assert ModelConfig("bn_mlp", head="normalized").head_scale == DEFAULT_HEAD_SCALE
    assert ModelConfig("bn_mlp", head=" Normalized ").head == "normalized"
    plain = ModelConfig("bn_mlp").build("digits")
    assert type(plain.classifier) is nn.Linear


def test_config_from_overrides_yaml_and_round_trip(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  name: small_cnn\n  head: normalized\n  head_scale: 4\n")
    cfg = load_config(TrainConfig, path)
    assert (cfg.model.head, cfg.model.head_scale) == ("normalized", 4.0)
    cfg = load_config(TrainConfig, overrides=["model.head=normalized", "model.head_scale=2.5"])
    assert (cfg.model.head, cfg.model.head_scale) == ("normalized", 2.5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def _model(**kw):
    return lambda: ModelConfig(**{"name": "bn_mlp", **kw})


BAD = {
    "unknown-head": (UnknownNameError, _model(head="cosine"),
                     ("'cosine'", "model.head", "normalized")),
    "head-none": (UnknownNameError, _model(head=None), ("model.head", "linear, normalized")),
    "scale-zero": (ValueError, _model(head="normalized", head_scale=0.0),
                   ("model.head_scale=0.0", "> 0")),
    "scale-negative": (ValueError, _model(head="normalized", head_scale=-2),
                       ("model.head_scale=-2", "> 0")),
    "scale-nan": (ValueError, _model(head="normalized", head_scale=float("nan")),
                  ("model.head_scale=nan", "finite")),
    "scale-inf": (ValueError, _model(head="normalized", head_scale=float("inf")),
                  ("head_scale=inf",)),
    "scale-bool": (TypeError, _model(head="normalized", head_scale=True),
                   ("model.head_scale=True",)),
    "scale-str": (TypeError, _model(head="normalized", head_scale="10"),
                  ("model.head_scale='10'",)),
    "scale-without-normalized": (ValueError, _model(head_scale=10.0),
                                 ("model.head_scale=10.0", "model.head=normalized")),
    "head-in-kwargs": (ValueError, _model(kwargs={"head": "normalized"}),
                       ("model.kwargs.head", "model.head")),
    "factory-head": (ValueError, _model(name="math:sqrt", head="normalized"),
                     ("model.head=normalized", "'math:sqrt'", "NormalizedHead")),
    "module-scale-zero": (ValueError, lambda: NormalizedHead(4, 2, scale=0), ("scale=0", "> 0")),
    "module-scale-none": (TypeError, lambda: NormalizedHead(4, 2, scale=None), ("scale=None",)),
    "create-unknown-head": (UnknownNameError, lambda: create_model("bn_mlp", head="arcface"),
                            ("'arcface'", "head")),
    "create-scale-negative": (ValueError, lambda: create_model("vgg11_bn", head="normalized",
                                                               head_scale=-1.0),
                              ("head_scale=-1.0",)),
    "override-scale-text": (ConfigError,
                            lambda: load_config(TrainConfig, overrides=["model.head_scale=abc"]),
                            ("model.head_scale",)),
    "override-unknown-head": (UnknownNameError,
                              lambda: load_config(TrainConfig, overrides=["model.head=cos"]),
                              ("'cos'", "model.head")),
}


@pytest.mark.parametrize(("exc", "build", "match"), list(BAD.values()), ids=list(BAD))
def test_bad_head_settings_are_one_line_errors(exc, build, match) -> None:
    one_line_error(exc, build, *match)


# ---------------------------------------------------------------------------- training
TINY = {
    "data": {"dataset": "digits", "n_per_class": 20},
    "model": {"name": "bn_mlp", "kwargs": {"widths": [32, 32]}, "head": "normalized",
              "head_scale": 10.0},
    "epochs": 2,
    "batch_size": 50,
    "lr": 0.05,
    "eps": 0.1,
    "steps": 2,
    "threads": 1,
    "progress": False,
    "track_test": False,
    "track_test_attack": False,
}


@pytest.mark.parametrize("mode", ["st", "at", "trades"])
def test_training_modes_with_the_normalized_head(mode: str) -> None:
    res = train(TrainConfig.from_dict({**TINY, "mode": mode}))
    assert isinstance(res.model.classifier, NormalizedHead)
    h = res.history
    assert set(h["epoch"]) == {1, 2}
    pen = h[(h.layer == "classifier:in") & (h.source == "clean") & (h.reference == "own")]
    for metric in ("nc1", "nc3", "equinorm_weights"):
        values = pen[pen.metric == metric]["value"]
        assert len(values) == 2 and values.map(math.isfinite).all(), metric
    assert (pen[pen.metric == "equinorm_weights"]["value"] < 1e-6).all()
    perturbed = "pgd" if mode == "st" else "perturbed"
    assert (h[h.source == perturbed]["layer"] == "classifier:in").any()

"""Layer taps on models built from plain torch modules (no ncscope model code)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncscope import FeatureTaps, list_layers, nc_metrics


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True)),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 3),
    ).eval()


def test_list_layers_and_glob() -> None:
    m = small_cnn()
    names = list_layers(m)
    assert names[:4] == ["0", "1", "2", "3"] and "3.0" in names
    assert ("6", "Linear") in list_layers(m, with_types=True)
    taps = FeatureTaps(m, ["3.*", "0"])
    assert taps.names == ["0", "3.0", "3.1"]


def test_flatten_gap_and_input_capture() -> None:
    m = small_cnn()
    x = torch.rand(5, 1, 6, 6)
    out, feats = FeatureTaps(m, ["0", "6:in"], reduce="flatten")(x)
    assert feats["0"].shape == (5, 4 * 36) and feats["6:in"].shape == (5, 32)
    assert torch.allclose(feats["6:in"] @ m[6].weight.T + m[6].bias, out, atol=1e-6)
    _, gap = FeatureTaps(m, "0", reduce="gap")(x)
    assert torch.allclose(gap["0"], feats["0"].reshape(5, 4, 36).mean(-1), atol=1e-6)


def test_features_are_safe_from_inplace_ops() -> None:
    m = small_cnn()
    x = torch.rand(3, 1, 6, 6)
    _, feats = FeatureTaps(m, "1")(x)  # BN output, then ReLU(inplace=True) mutates it
    expected = m[1](m[0](x)).flatten(1)
    assert (feats["1"] < 0).any() and torch.allclose(feats["1"], expected, atol=1e-6)


def test_hooks_removed_and_one_forward_per_call() -> None:
    m = small_cnn()
    with FeatureTaps(m, ["0", "3.0"]) as taps:
        m(torch.rand(2, 1, 6, 6))
        assert taps.features["0"].shape[0] == 2
        m(torch.rand(7, 1, 6, 6))
        assert taps.features["3.0"].shape[0] == 7
    assert not m[0]._forward_hooks and not m._forward_pre_hooks


def test_unknown_layer_names_closest() -> None:
    m = nn.Sequential()
    m.add_module("encoder", nn.Linear(4, 4))
    m.add_module("classifier", nn.Linear(4, 2))
    with pytest.raises(ValueError, match="closest: classifier") as exc:
        FeatureTaps(m, "clasifier")
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="suffix"):
        FeatureTaps(m, "encoder:middle")
    with pytest.raises(ValueError, match="reduce"):
        FeatureTaps(m, "encoder", reduce="max")


def test_module_run_twice_is_an_error() -> None:
    act = nn.ReLU()
    m = nn.Sequential(nn.Linear(3, 3), act, nn.Linear(3, 3), act)
    with FeatureTaps(m, "1") as taps:
        m(torch.rand(2, 3))
        with pytest.raises(RuntimeError, match="more than once"):
            _ = taps.features


def test_taps_feed_the_engine() -> None:
    m = small_cnn()
    x = torch.rand(30, 1, 6, 6)
    y = torch.arange(3).repeat(10)
    logits, feats = FeatureTaps(m, ["0", "6:in"])(x)
    r = nc_metrics(feats["6:in"], y, weight=m[6].weight, bias=m[6].bias)
    assert r["nc4"] is not None and r["dim"] == 32
    assert nc_metrics(feats["0"], y)["dim"] == 144

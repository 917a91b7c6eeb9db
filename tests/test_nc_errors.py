"""Bad input to the NC engine gives a one-line error that says what to fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncscope import NCStats, nc_metrics

H = torch.randn(12, 5)
Y = torch.arange(3).repeat(4)


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(features=H, labels=Y[:-1]), "differ in length: 12 vs 11"),
        (dict(features=H, labels=Y + 5, num_classes=3), r"must lie in \[0, 3\)"),
        (dict(features=H, labels=Y - 1), r"labels must lie in \[0, 2\); got values from -1"),
        (dict(features=H.reshape(12, 5, 1), labels=Y), "must be 2-D"),
        (dict(features=H, labels=Y * 0, num_classes=3), "fewer than two"),
        (dict(features=H, labels=Y, weight=torch.randn(3, 4)), r"shape \(num_classes, d\)"),
        (dict(features=H, labels=Y, weight=torch.randn(3, 5), bias=torch.randn(4)), "bias"),
        (dict(features=H, labels=Y.float()), "integer"),
        (dict(features=H, labels=Y.reshape(3, 4)), "1-D"),
    ],
)
def test_bad_input_messages(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as exc:
        nc_metrics(**kwargs)
    one_line(exc)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_rejected(bad: float) -> None:
    h = H.clone()
    h[3, 2] = bad
    with pytest.raises(ValueError, match="NaN/Inf") as exc:
        nc_metrics(h, Y)
    one_line(exc)


def test_numpy_input_accepted() -> None:
    r = nc_metrics(H.numpy(), np.asarray(Y))
    assert r["num_classes"] == 3


def test_pass_order_errors() -> None:
    s = NCStats(3)
    with pytest.raises(ValueError, match="no reference"):
        s.compute()
    s.update(H, Y)
    with pytest.raises(ValueError, match="no measured"):
        s.compute()
    s.update_measured(H, Y)
    with pytest.raises(RuntimeError, match="reference pass is closed"):
        s.update(H, Y)
    with pytest.raises(ValueError, match="does not match"):
        s.update_measured(torch.randn(4, 6), Y[:4])
    s.reset()
    s.update(H, Y)  # usable again after reset


def test_measured_class_without_reference() -> None:
    s = NCStats(4).update(H, Y)
    with pytest.raises(ValueError, match="no reference samples"):
        s.update_measured(H[:2], torch.tensor([0, 3]))


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        NCStats(1)
    with pytest.raises(ValueError, match="global_mean"):
        NCStats(3, global_mean="median")

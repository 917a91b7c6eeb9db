"""A batch the model cannot read is a one-line error from the attack (checked once per input
signature by a one-image eval-mode probe that leaves the model's buffers and results alone)."""

from __future__ import annotations

import pytest
import torch

from ncscope.attacks import PGD, TRADES
from ncscope.models import create_model


@pytest.fixture(scope="module")
def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", dataset="fashion_mnist").eval()


@pytest.mark.parametrize(("transform", "needle"), [
    (lambda x: x.double(), "dtype float64"),
    (lambda x: x[:, 0], "shape (4, 28, 28)"),
    (lambda x: x.flatten(1), "shape (4, 784)"),
])
def test_misfit_batches_are_one_line_errors(cnn, transform, needle) -> None:
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    for attack in (PGD(cnn, eps=0.1, steps=1), TRADES(cnn, eps=0.1, steps=1)):
        with pytest.raises(ValueError) as err:
            attack(transform(x), y)
        msg = str(err.value)
        assert "\n" not in msg and needle in msg and "float32 (N, C, H, W)" in msg
        assert msg.startswith(type(attack).__name__)


def test_probe_changes_nothing(cnn) -> None:
    """Train-mode attacks update BatchNorm statistics by design; the probe itself does not:
    a fresh attack object (probe + attack) and a warmed one (attack only) give the same
    perturbation and the same running statistics."""
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    bn = next(m for m in cnn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    fresh = PGD(cnn, eps=0.1, steps=2, seed=0, model_mode="train")
    out_fresh = fresh(x, y)
    stats_fresh = bn.running_mean.clone()
    cnn.load_state_dict(state)
    warm = PGD(cnn, eps=0.1, steps=2, seed=0, model_mode="train")
    warm._inputs_seen.add((tuple(x.shape[1:]), x.dtype, x.device))  # skip the probe
    out_warm = warm(x, y)
    assert torch.equal(out_fresh, out_warm)
    assert torch.equal(stats_fresh, bn.running_mean)
    cnn.load_state_dict(state)

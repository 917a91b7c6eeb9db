"""ncscope.verify: exact affine propagation of ImageStars through every supported layer, the
interval baseline, and the chain / unsupported-layer errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ncscope.models import Normalize
from ncscope.verify import ImageStar, affine_step, chain, ibp, linf_ball


def _star(shape: tuple[int, ...], m: int = 3, seed: int = 0) -> ImageStar:
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(shape, generator=g, dtype=torch.float64)
    V = torch.randn((m, *shape), generator=g, dtype=torch.float64)
    return ImageStar(c, V, np.zeros((0, m)), np.zeros(0), -np.ones(m), np.ones(m))


def _layer(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p)
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        module.running_mean.normal_()
        module.running_var.uniform_(0.5, 2.0)
    return module.double().eval()


LAYERS = [
    ("conv", nn.Conv2d(2, 3, 3, padding=1), (2, 6, 7)),
    ("conv strided dilated", nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), (2, 9, 8)),
    ("conv groups", nn.Conv2d(4, 4, 3, groups=2, bias=True), (4, 6, 6)),
    ("conv transposed", nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1), (2, 4, 5)),
    ("conv transposed output_padding", nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1,
                                                          output_padding=1), (2, 3, 4)),
    ("avgpool", nn.AvgPool2d(2), (3, 6, 6)),
    ("avgpool stride padding", nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
    ("batchnorm2d", nn.BatchNorm2d(3), (3, 4, 4)),
    ("batchnorm1d", nn.BatchNorm1d(5), (5,)),
    ("linear", nn.Linear(6, 4), (6,)),
    ("flatten", nn.Flatten(), (2, 3, 3)),
    ("identity", nn.Identity(), (4,)),
    ("dropout", nn.Dropout(0.5), (4,)),
    ("normalize", Normalize([0.2, 0.5], [0.3, 0.25]), (2, 3, 3)),
]


@pytest.mark.parametrize(("name", "module", "shape"), LAYERS, ids=[n for n, _, _ in LAYERS])
def test_affine_step_is_exact(name: str, module: nn.Module, shape: tuple[int, ...]) -> None:
    layer = _layer(module)
    star = _star(shape)
    out = affine_step(layer, star)
    alpha = np.random.default_rng(1).uniform(-1, 1, size=(5, star.num_vars))
    with torch.no_grad():
        want = layer(star.points(alpha))
    got = out.points(alpha)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert out.c.dtype == torch.float64 and out.V.shape[0] == star.num_vars


def test_chain_of_sequential_and_bn_mlp_reproduces_forward() -> None:
    from ncscope.models import BNMLP

    model = BNMLP(widths=(8, 6), mean=0.3, std=0.4).eval()
    x = torch.rand(4, 1, 8, 8)
    layers = chain(model, x)
    assert [n for n, _ in layers][:2] == ["normalize", "flatten"]
    assert layers[-1][0] == "classifier"
    lo, hi = ibp(layers, x[0].double() - 0.01, x[0].double() + 0.01)
    with torch.no_grad():
        z = model.double()(x[:1].double())[0]
    assert bool((lo <= z).all()) and bool((z <= hi).all())


def test_unsupported_layer_is_one_line_error() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten())
    with pytest.raises(ValueError, match="MaxPool2d.*AvgPool2d") as err:
        chain(net)
    assert "'1'" in str(err.value) and "\n" not in str(err.value)


def test_branching_model_is_refused() -> None:
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(x) + self.a(x)

    with pytest.raises(ValueError, match="chain models"):
        chain(Res(), torch.rand(2, 4))


def test_linf_ball_clips_and_counts_variables() -> None:
    x = torch.tensor([[[0.0, 0.5], [1.0, 0.98]]])
    s = linf_ball(x, 0.05)
    lo, hi = s.estimate_bounds()
    assert np.allclose(lo, [0.0, 0.45, 0.95, 0.93]) and np.allclose(hi, [0.05, 0.55, 1.0, 1.0])
    assert s.num_vars == 4
    assert linf_ball(x, 0.05, pixels=[1]).num_vars == 1
    with pytest.raises(ValueError, match="eps"):
        linf_ball(x, 2.0)

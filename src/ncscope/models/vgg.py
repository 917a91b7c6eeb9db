"""VGG11-BN in the paper's CIFAR and ImageNette-160 variants (official ``vgg.py`` /
``vgg_imagenet.py``, Su et al. 2024, experimental setup).

Structure: ``Normalize -> features -> avgpool -> flatten -> classifier``, where ``features`` is
a flat ``nn.Sequential`` of cfg A ``[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512]``
(ImageNette: one more ``M`` at the end), every conv ``3x3, padding 1, bias`` + BatchNorm2d +
ReLU. Module names inside ``features``: ``conv{i}``, ``bn{i}``, ``relu{i}`` for conv block
``i = 1..8`` and ``pool{j}`` for the j-th max-pool, so the checkpoint order matches the official
``features.{k}`` order one to one. ReLUs are **not** in-place (the official code uses
``inplace=True``), so forward hooks see un-mutated tensors.

``avgpool`` is ``AdaptiveAvgPool2d(1)``: identical to the official ``AvgPool2d(2)`` on the
CIFAR 2x2 map and to ``AvgPool2d(5, stride=1)`` on the ImageNette 5x5 map, and valid for other
input sizes (e.g. 28x28 MNIST, where the official code crashes). Penultimate features: 512-d.

Initialisation (official code): conv weight ``N(0, sqrt(2 / (9 * n)))`` with ``n = C_in`` in the
CIFAR variant and ``n = C_out`` in the ImageNette variant, conv bias 0, BN weight 1 bias 0,
Linear weight ``N(0, 0.01)`` bias 0.

Taps (Su et al. 2024, §7, ``VerboseExecution_VGG``): the output of every conv block after its
ReLU, or after the max-pool when one follows: CIFAR ``features.{pool1, pool2, relu3, pool3,
relu5, pool4, relu7, relu8}``; ImageNette the same with ``features.pool5`` last.
With ``head="normalized"`` a :class:`~ncscope.models.L2Normalize` ``feature_norm`` sits
before a cosine :class:`~ncscope.models.NormalizedHead` ``classifier`` (Yaras et al. 2022);
``forward_features`` then returns the unit-norm features.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ncscope.models.normalize import Normalize
from ncscope.models.normalized import make_head

__all__ = ["VGG", "VGG11_CFG", "vgg11_bn", "vgg11_bn_imagenette"]

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)


class VGG(nn.Module):
    """VGG with BatchNorm; see the module docstring for names, taps and initialisation.

    Args:
        cfg: conv widths and ``"M"`` (2x2 max-pool) entries.
        in_channels: input channels (3 for CIFAR / ImageNette).
        num_classes: output classes.
        init_fan: ``"in"`` (CIFAR ``vgg.py``) or ``"out"`` (``vgg_imagenet.py``) for the conv
            weight standard deviation ``sqrt(2 / (k*k*n))``.
        mean, std: normalisation statistics for the leading :class:`Normalize`.
        head: ``"linear"`` (an ``nn.Linear``) or ``"normalized"`` (an :class:`L2Normalize`
            ``feature_norm`` then a :class:`NormalizedHead` ``classifier``; Yaras et al. 2022).
        head_scale: the normalized head's ``scale`` (``1 / tau``; default 10).
    """

    def __init__(
        self,
        cfg: Sequence[int | str] = VGG11_CFG,
        in_channels: int = 3,
        num_classes: int = 10,
        init_fan: Literal["in", "out"] = "in",
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        head: str = "linear",
        head_scale: float | None = None,
    ) -> None:
        super().__init__()
        if init_fan not in ("in", "out"):
            raise ValueError(f"init_fan must be 'in' or 'out', got {init_fan!r}")
        self.normalize = Normalize(mean, std)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        taps: list[str] = []
        c_in, n_conv, n_pool = in_channels, 0, 0
        for v in cfg:
            if v == "M":
                n_pool += 1
                layers[f"pool{n_pool}"] = nn.MaxPool2d(kernel_size=2, stride=2)
                if taps and taps[-1].startswith("relu"):
                    taps[-1] = f"pool{n_pool}"
            else:
                n_conv += 1
                c_out = int(v)
                layers[f"conv{n_conv}"] = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
                layers[f"bn{n_conv}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{n_conv}"] = nn.ReLU()
                taps.append(f"relu{n_conv}")
                c_in = c_out
        if n_conv == 0:
            raise ValueError("cfg needs at least one conv layer")
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.feature_norm, self.classifier = make_head(c_in, num_classes, head, head_scale)
        self.num_classes = num_classes
        self.init_fan = init_fan
        self.tap_layers = [f"features.{t}" for t in taps]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Apply the official initialisation (see the module docstring)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.in_channels if self.init_fan == "in" else m.out_channels
                n = m.kernel_size[0] * m.kernel_size[1] * fan
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:  # a NormalizedHead has none
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate 512-d features (the input of ``classifier``)."""
        h = self.flatten(self.avgpool(self.features(self.normalize(x))))
        return h if self.feature_norm is None else self.feature_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.classifier(self.forward_features(x))


def vgg11_bn(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    head: str = "linear",
    head_scale: float | None = None,
) -> VGG:
    """VGG11-BN, CIFAR variant (official ``vgg.py``; 32x32 inputs, conv init fan-in)."""
    return VGG(VGG11_CFG, in_channels, num_classes, "in", mean, std, head, head_scale)


def vgg11_bn_imagenette(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    head: str = "linear",
    head_scale: float | None = None,
) -> VGG:
    """VGG11-BN, ImageNette-160 variant (official ``vgg11_bn_pool``: final max-pool, 160x160
    inputs -> 5x5 map -> average pool, conv init fan-out)."""
    return VGG((*VGG11_CFG, "M"), in_channels, num_classes, "out", mean, std, head,
               head_scale)

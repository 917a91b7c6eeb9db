"""PreActResNet18 in the paper's CIFAR and ImageNette-160 variants (official
``preactresnet.py`` = Rice et al.'s, and ``preactresnet_imagenet.py``; Su et al. 2024).

CIFAR: ``normalize -> conv1 (3x3, 64) -> layer1..layer4 -> bn -> relu -> avgpool -> flatten ->
classifier``; PyTorch default initialisation.
ImageNette: ``normalize -> conv1 (7x7/2) -> bn1 -> relu1 -> maxpool (3x3/2) -> layer1..layer4
-> bn -> relu -> avgpool -> flatten -> classifier``; conv weights ``N(0, sqrt(2/(k*k*C_out)))``,
BN weight 1 bias 0, Linear PyTorch default. The first block of ``layer1`` has no
pre-activation (the stem's BN-ReLU plays that role), as in the official code.

Blocks (``layer{s}.{b}``): ``bn1 -> relu1 -> conv1 -> bn2 -> relu2 -> conv2`` plus the identity
or a 1x1 ``shortcut`` conv applied to the pre-activation; strides 1/2/2/2, widths
64/128/256/512. The residual sum is out-of-place and every ReLU is a non-in-place module, so
hooks see un-mutated tensors. ``avgpool`` is ``AdaptiveAvgPool2d(1)`` (= the official
``avg_pool2d(4)`` on 32x32 inputs and ``AvgPool2d(5)`` on 160x160 inputs). The official names
``linear`` / ``fc`` and ``final_bn`` are ``classifier`` and ``bn`` here.

Taps (Su et al. 2024, §7, ``VerboseExecution``: every top-level child): CIFAR ``conv1, layer1,
layer2, layer3, layer4, bn`` (``bn`` = pre-ReLU output of the final BN); ImageNette ``maxpool``
(the stem output) instead of ``conv1``.
With ``head="normalized"`` a :class:`~ncscope.models.L2Normalize` ``feature_norm`` sits
before a cosine :class:`~ncscope.models.NormalizedHead` ``classifier`` (Yaras et al. 2022);
``forward_features`` then returns the unit-norm features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ncscope.models.normalize import Normalize
from ncscope.models.normalized import make_head

__all__ = ["PreActBlock", "PreActResNet", "preactresnet18", "preactresnet18_imagenette"]


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016), optionally without the leading BN-ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, preactivate: bool = True):
        super().__init__()
        self.preactivate = preactivate
        if preactivate:
            self.bn1 = nn.BatchNorm2d(in_planes)
            self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``conv2(relu(bn2(conv1(pre)))) + shortcut``, ``pre = relu(bn1(x))``."""
        pre = self.relu1(self.bn1(x)) if self.preactivate else x
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + residual


class PreActResNet(nn.Module):
    """Pre-activation ResNet with a CIFAR (3x3) or ImageNet-style (7x7/2 + max-pool) stem.

    Args:
        num_blocks: blocks per stage, ``(2, 2, 2, 2)`` for PreActResNet18.
        in_channels: input channels.
        num_classes: output classes.
        stem: ``"cifar"`` or ``"imagenet"``.
        mean, std: normalisation statistics for the leading :class:`Normalize`.
        head: ``"linear"`` (an ``nn.Linear``) or ``"normalized"`` (an :class:`L2Normalize`
            ``feature_norm`` then a :class:`NormalizedHead` ``classifier``; Yaras et al. 2022).
        head_scale: the normalized head's ``scale`` (``1 / tau``; default 10).
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        num_classes: int = 10,
        stem: Literal["cifar", "imagenet"] = "cifar",
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        head: str = "linear",
        head_scale: float | None = None,
    ) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.stem = stem
        self.normalize = Normalize(mean, std)
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu1 = nn.ReLU()
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for s, (planes, n, stride) in enumerate(
            zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True), start=1
        ):
            blocks = []
            for b in range(n):
                preact = not (stem == "imagenet" and s == 1 and b == 0)
                blocks.append(PreActBlock(in_planes, planes, stride if b == 0 else 1, preact))
                in_planes = planes
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.feature_norm, self.classifier = make_head(in_planes, num_classes, head, head_scale)
        self.num_classes = num_classes
        first = "conv1" if stem == "cifar" else "maxpool"
        self.tap_layers = [first, "layer1", "layer2", "layer3", "layer4", "bn"]
        if stem == "imagenet":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official ImageNet-variant initialisation (conv fan-out normal, BN 1/0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate 512-d features (the input of ``classifier``)."""
        out = self.conv1(self.normalize(x))
        if self.stem == "imagenet":
            out = self.maxpool(self.relu1(self.bn1(out)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        h = self.flatten(self.avgpool(self.relu(self.bn(out))))
        return h if self.feature_norm is None else self.feature_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.classifier(self.forward_features(x))


def preactresnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    head: str = "linear",
    head_scale: float | None = None,
) -> PreActResNet:
    """PreActResNet18, CIFAR variant (Rice et al.; PyTorch default init)."""
    return PreActResNet((2, 2, 2, 2), in_channels, num_classes, "cifar", mean, std, head,
                        head_scale)


def preactresnet18_imagenette(
    num_classes: int = 10,
    in_channels: int = 3,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    head: str = "linear",
    head_scale: float | None = None,
) -> PreActResNet:
    """PreActResNet18, ImageNet-style variant used for ImageNette-160 (7x7/2 stem + max-pool)."""
    return PreActResNet((2, 2, 2, 2), in_channels, num_classes, "imagenet", mean, std, head,
                        head_scale)

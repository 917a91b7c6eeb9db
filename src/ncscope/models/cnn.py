"""Small CNN for Fashion-MNIST / MNIST-sized inputs (a CPU-scale stand-in for VGG).

``Normalize -> [Conv3x3 -> BN -> ReLU -> MaxPool2] x len(channels) -> global AvgPool -> Flatten
-> (Linear -> BN1d -> ReLU if hidden) -> Linear``. Module names: ``normalize``,
``features.block{i}`` (``conv``, ``bn``, ``relu``, ``pool``), ``features.avgpool``,
``features.flatten``, ``features.fc`` (``linear``, ``bn``, ``relu``; only when ``hidden``),
``classifier``. Taps: each conv block's output (after pooling) and ``features.fc``.
PyTorch default initialisation.
With ``head="normalized"`` a :class:`~ncscope.models.L2Normalize` ``feature_norm`` sits
before a cosine :class:`~ncscope.models.NormalizedHead` ``classifier`` (Yaras et al. 2022);
``forward_features`` then returns the unit-norm features.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ncscope.models.normalize import Normalize
from ncscope.models.normalized import make_head

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks, global average pooling, optional hidden FC, ``classifier``.

    Args:
        in_channels: input channels (1 for Fashion-MNIST).
        num_classes: output classes.
        channels: conv widths, default ``(32, 64, 128)`` (28x28 -> 14 -> 7 -> 3).
        hidden: width of the Linear-BN-ReLU layer before the classifier (``None``: no hidden
            layer, the penultimate features are the pooled conv features).
        mean, std: normalisation statistics for the leading :class:`Normalize`.
        head: ``"linear"`` (an ``nn.Linear``) or ``"normalized"`` (an :class:`L2Normalize`
            ``feature_norm`` then a :class:`NormalizedHead` ``classifier``; Yaras et al. 2022).
        head_scale: the normalized head's ``scale`` (``1 / tau``; default 10).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int | None = 128,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        head: str = "linear",
        head_scale: float | None = None,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("SmallCNN needs at least one conv block")
        self.normalize = Normalize(mean, std)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, c in enumerate(channels, start=1):
            layers[f"block{i}"] = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c, kernel_size=3, padding=1),
                    bn=nn.BatchNorm2d(c),
                    relu=nn.ReLU(),
                    pool=nn.MaxPool2d(2),
                )
            )
            c_in = c
        layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        taps = [f"features.block{i}" for i in range(1, len(channels) + 1)]
        d = c_in
        if hidden is not None:
            layers["fc"] = nn.Sequential(
                OrderedDict(linear=nn.Linear(d, hidden), bn=nn.BatchNorm1d(hidden), relu=nn.ReLU())
            )
            d = hidden
            taps.append("features.fc")
        self.features = nn.Sequential(layers)
        self.feature_norm, self.classifier = make_head(d, num_classes, head, head_scale)
        self.num_classes = num_classes
        self.tap_layers = taps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (the input of ``classifier``)."""
        h = self.features(self.normalize(x))
        return h if self.feature_norm is None else self.feature_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.classifier(self.forward_features(x))

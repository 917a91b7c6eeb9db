"""BN-MLP: the default model for the embedded digits data set (the su2024 study's digits recipe).

``Normalize -> Flatten -> [Linear -> BatchNorm1d -> ReLU] x len(widths) -> Linear``; the default
``64 -> 512 -> 512 -> 256 -> 128 -> 10`` is the reference CPU experiment's network.
Module names: ``normalize``, ``flatten``, ``features.block{i}`` (each with ``linear``, ``bn``,
``relu``), ``classifier``. Taps (``tap_layers``): every hidden block's output (= its ReLU),
``features.block1 .. features.block{L}``; the last one equals the penultimate features.
PyTorch default initialisation.
With ``bottleneck=d`` a linear ``features.bottleneck`` (``nn.Linear`` to ``d``, no BatchNorm or
ReLU, so the features can point anywhere in R^d) follows the blocks and is the last tap: the
penultimate layer of Jiang et al.'s generalized-collapse experiments, with K > d + 1 classes
(no simplex ETF fits in R^d).
With ``head="normalized"`` a :class:`~ncscope.models.L2Normalize` ``feature_norm`` sits
before a cosine :class:`~ncscope.models.NormalizedHead` ``classifier`` (Yaras et al. 2022);
``forward_features`` then returns the unit-norm features (no longer equal to the last
tap).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ncscope.models.normalize import Normalize
from ncscope.models.normalized import make_head

__all__ = ["BNMLP"]


class BNMLP(nn.Module):
    """Multi-layer perceptron with Linear-BN-ReLU hidden blocks and a final ``classifier``.

    Args:
        input_shape: shape of one input (e.g. ``(1, 8, 8)``); it is flattened.
        num_classes: output classes.
        widths: hidden widths, default ``(512, 512, 256, 128)``.
        mean, std: normalisation statistics for the leading :class:`Normalize`.
        head: ``"linear"`` (an ``nn.Linear``) or ``"normalized"`` (an :class:`L2Normalize`
            ``feature_norm`` then a :class:`NormalizedHead` ``classifier``; Yaras et al. 2022).
        head_scale: the normalized head's ``scale`` (``1 / tau``; default 10).
        bottleneck: width of an optional final linear layer (no BN, no ReLU) before the head.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        widths: Sequence[int] = (512, 512, 256, 128),
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        head: str = "linear",
        head_scale: float | None = None,
        bottleneck: int | None = None,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("BNMLP needs at least one hidden width")
        self.normalize = Normalize(mean, std)
        self.flatten = nn.Flatten()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        d_in = int(math.prod(input_shape))
        for i, w in enumerate(widths, start=1):
            blocks[f"block{i}"] = nn.Sequential(
                OrderedDict(linear=nn.Linear(d_in, w), bn=nn.BatchNorm1d(w), relu=nn.ReLU())
            )
            d_in = w
        taps = [f"features.block{i}" for i in range(1, len(widths) + 1)]
        if bottleneck is not None:
            if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
                raise ValueError(f"BNMLP: bottleneck must be a positive int, got {bottleneck!r}")
            blocks["bottleneck"] = nn.Linear(d_in, bottleneck)
            d_in = bottleneck
            taps.append("features.bottleneck")
        self.features = nn.Sequential(blocks)
        self.feature_norm, self.classifier = make_head(d_in, num_classes, head, head_scale)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        self.tap_layers = taps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (the input of ``classifier``)."""
        h = self.features(self.flatten(self.normalize(x)))
        return h if self.feature_norm is None else self.feature_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.classifier(self.forward_features(x))

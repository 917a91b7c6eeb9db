"""Small semantic-segmentation nets for mini-M2NIST (the two architectures compared by Tran et
al., CAV 2021: transposed convolution with average pooling vs dilated convolution).

Both are ``nn.Sequential`` chains (so :mod:`ncscope.verify` can propagate sets through them)
that start with their own :class:`Normalize` (pixels in [0, 1] in, logits ``(N, K, H, W)`` out):

* :func:`transposed_seg_net` — ``normalize → conv3×3 → ReLU → AvgPool2d(2) → conv3×3 → ReLU →
  ConvTranspose2d(4, stride 2, padding 1) → conv1×1``: down-sampling by average pooling,
  up-sampling by a transposed convolution;
* :func:`dilated_seg_net` — ``normalize → conv3×3 → ReLU → conv3×3 (dilation 2) → ReLU →
  conv1×1``: no down-sampling, the receptive field widened by dilation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ncscope.models.normalize import Normalize

__all__ = ["SEGMENTATION_NETS", "dilated_seg_net", "seg_net", "transposed_seg_net"]


def transposed_seg_net(num_classes: int = 11, channels: Sequence[int] = (4, 8),
                       mean: float = 0.0, std: float = 1.0) -> nn.Sequential:
    """Transposed-convolution + average-pooling segmentation net (input H, W even)."""
    c1, c2 = channels
    return nn.Sequential(OrderedDict(
        normalize=Normalize(mean, std),
        conv1=nn.Conv2d(1, c1, 3, padding=1), relu1=nn.ReLU(),
        pool=nn.AvgPool2d(2),
        conv2=nn.Conv2d(c1, c2, 3, padding=1), relu2=nn.ReLU(),
        up=nn.ConvTranspose2d(c2, c2, 4, stride=2, padding=1),
        classifier=nn.Conv2d(c2, num_classes, 1),
    ))


def dilated_seg_net(num_classes: int = 11, channels: Sequence[int] = (4, 8),
                    mean: float = 0.0, std: float = 1.0) -> nn.Sequential:
    """Dilated-convolution segmentation net without down-sampling."""
    c1, c2 = channels
    return nn.Sequential(OrderedDict(
        normalize=Normalize(mean, std),
        conv1=nn.Conv2d(1, c1, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(c1, c2, 3, padding=2, dilation=2), relu2=nn.ReLU(),
        classifier=nn.Conv2d(c2, num_classes, 1),
    ))


SEGMENTATION_NETS = {"transposed": transposed_seg_net, "dilated": dilated_seg_net}


def seg_net(name: str, **kwargs: object) -> nn.Sequential:
    """Build a segmentation net by name (``transposed`` or ``dilated``)."""
    if name not in SEGMENTATION_NETS:
        raise ValueError(f"seg_net: name={name!r} is not known; use one of "
                         f"{', '.join(SEGMENTATION_NETS)}")
    return SEGMENTATION_NETS[name](**kwargs)  # type: ignore[arg-type]

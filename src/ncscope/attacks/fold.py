"""Folding one eval-mode BatchNorm into the conv/linear layer before it (for ``fast=True``).

In eval mode ``BN(layer(x))`` is one affine map per channel after ``layer``, hence one layer
with rescaled weights and a new bias — the standard inference folding (Jacob et al., CVPR 2018,
§3.2; ``torch.nn.utils.fusion``). :class:`Fold` keeps a folded copy in step with the live
weights and running statistics; :class:`~ncscope.attacks.fast.AttackTwin` decides what to fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

__all__ = ["FOLDABLE", "Fold", "bn_kind_matches", "clone_layer", "fits"]


#: foldable layer type -> the BatchNorm type that may follow it (exact types only: a subclass
#: may override ``forward``, e.g. weight standardisation, and then folding would be wrong)
FOLDABLE: dict[type, type] = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d,
                              nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def bn_kind_matches(layer: nn.Module, bn: _BatchNorm) -> bool:
    """Whether ``bn`` may be folded into ``layer``: exact foldable types, matching widths."""
    want = FOLDABLE.get(type(layer))
    if want is None or type(bn) is not want:
        return False
    n_out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return bn.num_features == n_out


@dataclass
class Fold:
    """One folded pair: ``target`` (a new layer in the twin) = ``layer`` followed by ``bn``."""

    target: nn.Module
    layer: nn.Module
    bn: _BatchNorm

    @torch.no_grad()
    def refresh(self, channels_last: bool) -> None:
        """Fold the live weights and running statistics (``torch.nn.utils.fusion``'s formulas):
        ``s = gamma / sqrt(var + eps)``, ``W' = s * W`` per output channel,
        ``b' = s * (b - mean) + beta``; ``s`` and ``b'`` in float64, then one multiply in the
        weight's dtype written straight into the twin's layer (one pass over the weights)."""
        layer, bn = self.layer, self.bn
        w = layer.weight.detach()
        d = torch.float64
        assert bn.running_mean is not None and bn.running_var is not None
        scale = torch.rsqrt(bn.running_var.to(d) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach().to(d)
        shift = -bn.running_mean.to(d)
        if layer.bias is not None:
            shift = shift + layer.bias.detach().to(d)
        shift = shift * scale
        if bn.bias is not None:
            shift = shift + bn.bias.detach().to(d)
        scale = scale.to(w.dtype).view(-1, *([1] * (w.ndim - 1)))
        shift = shift.to(w.dtype)
        fmt = (torch.channels_last if channels_last and w.ndim == 4
               else torch.contiguous_format)
        target = self.target
        cur = target.weight
        if fits(cur, w, fmt):
            torch.mul(w, scale, out=cur)  # never in place on the model's own weight
        else:
            target.weight = nn.Parameter((w * scale).contiguous(memory_format=fmt),
                                         requires_grad=False)
        if fits(target.bias, shift, torch.contiguous_format):
            target.bias.copy_(shift)
        else:
            target.bias = nn.Parameter(shift, requires_grad=False)


def fits(cur: Tensor | None, like: Tensor, fmt: torch.memory_format) -> bool:
    """Whether ``cur`` can take a value shaped like ``like`` in place (same shape, dtype,
    device, memory format; not the meta placeholder of a fresh twin layer)."""
    return (isinstance(cur, Tensor) and cur.device == like.device and cur.dtype == like.dtype
            and cur.shape == like.shape and cur.is_contiguous(memory_format=fmt))


def clone_layer(layer: nn.Module) -> nn.Module:
    """A hook-free copy of a conv/linear layer's configuration (weights are set by refresh)."""
    if isinstance(layer, nn.Linear):
        out: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=True,
                                   device="meta")
    else:
        assert isinstance(layer, _ConvNd)
        out = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                          groups=layer.groups, bias=True, padding_mode=layer.padding_mode,
                          device="meta")
    out.train(False)
    return out

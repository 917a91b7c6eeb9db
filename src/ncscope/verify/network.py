"""A network as a chain of layers, and the exact affine steps of ImageStar reachability
(Tran et al., CAV 2021: an affine map of a star is the map of its centre plus the linear part
applied to each generator).

**Supported models.** Models whose forward pass is the chain of their leaf modules in
registration order: an ``nn.Sequential`` (nested ones included) or a model such as the
built-in BN-MLP whose ``forward`` runs its children one after the other (``normalize``,
``flatten``, ``features``, ``classifier``). :func:`chain` walks the leaves and checks on a probe
input that running them in order reproduces ``model(x)``; a model with branches (residual
blocks) fails that check with a one-line error. Supported leaves: ``Conv2d`` (stride, padding,
dilation, groups; zero padding), ``ConvTranspose2d``, ``AvgPool2d``, eval-mode
``BatchNorm1d`` / ``BatchNorm2d``, ``Linear``, ``Flatten``, ``Identity``, ``Dropout`` (eval), the
model's own :class:`~ncscope.models.Normalize`, and ``ReLU`` (approx-star, :mod:`.relu`).

Each affine step runs the torch layer on the centre (with its bias) and on the generators as
one batch (without its bias), in float64.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ncscope.models import Normalize
from ncscope.verify.star import ImageStar

__all__ = ["AFFINE", "affine_step", "box_of", "chain", "ibp", "is_affine"]

AFFINE = (nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d,
          nn.Linear, nn.Flatten, nn.Identity, nn.Dropout, Normalize)
_SUPPORTED = ("Conv2d, ConvTranspose2d, AvgPool2d, BatchNorm1d/2d (eval), Linear, Flatten, "
              "Identity, Dropout, Normalize, ReLU")


def is_affine(module: nn.Module) -> bool:
    """Whether ``module`` is one of the supported affine layers."""
    return isinstance(module, AFFINE)


def _check_leaf(name: str, module: nn.Module) -> None:
    if isinstance(module, (nn.ReLU, *AFFINE)):
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d) and module.padding_mode != "zeros":
            raise ValueError(f"ncscope.verify: layer {name!r} uses padding_mode="
                             f"{module.padding_mode!r}; only zero padding is supported")
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and module.running_mean is None:
            raise ValueError(f"ncscope.verify: layer {name!r} has no running statistics "
                             "(track_running_stats=False) and is not affine in eval mode")
        return
    fix = (" replace it by AvgPool2d (relaxed reachability covers affine layers and ReLU)"
           if isinstance(module, nn.MaxPool2d) else " rewrite the model with supported layers")
    raise ValueError(f"ncscope.verify: layer {name!r} ({type(module).__name__}) is not supported "
                     f"(supported: {_SUPPORTED});{fix}")


def chain(model: nn.Module, example: torch.Tensor | None = None,
          upto: str | None = None) -> list[tuple[str, nn.Module]]:
    """The leaf modules of ``model`` in registration order as float64 eval-mode copies,
    stopping before the module named ``upto`` (e.g. the classifier, for the penultimate
    features). With ``example`` (one batch of inputs) the chain is checked to reproduce
    ``model(example)`` (without ``upto``); a mismatch is a one-line ``ValueError``."""
    net = copy.deepcopy(model).double().eval()
    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children()) and n]
    if upto is not None:
        names = [n for n, _ in leaves]
        if upto not in names:
            raise ValueError(f"chain: upto={upto!r} is not a leaf module of the model; "
                             f"choose one of {', '.join(names)}")
        leaves = leaves[: names.index(upto)]
    for name, module in leaves:
        _check_leaf(name, module)
    if example is not None and upto is None:
        x = example.detach().double().cpu()
        with torch.no_grad():
            want = net(x)
            got = x
            for _, module in leaves:
                got = module(got)
        if not isinstance(want, torch.Tensor) or want.shape != got.shape or not torch.allclose(
                want, got, rtol=1e-9, atol=1e-9):
            raise ValueError("ncscope.verify: running the model's leaf modules in order does "
                             "not reproduce model(x); verification supports chain models "
                             "(nn.Sequential or forward = children in order), not branches")
    return leaves


def _linear_part(module: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """The layer without its bias (the linear part of the affine map) on a batch ``v``."""
    if isinstance(module, nn.Conv2d):
        return F.conv2d(v, module.weight, None, module.stride, module.padding, module.dilation,
                        module.groups)
    if isinstance(module, nn.ConvTranspose2d):
        return F.conv_transpose2d(v, module.weight, None, module.stride, module.padding,
                                  module.output_padding, module.groups, module.dilation)
    if isinstance(module, nn.Linear):
        return F.linear(v, module.weight)
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        return v * scale.view((1, -1) + (1,) * (v.ndim - 2))
    if isinstance(module, Normalize):
        return v / module.std.view((1, -1) + (1,) * (v.ndim - 2))
    if isinstance(module, nn.AvgPool2d | nn.Flatten | nn.Identity | nn.Dropout):
        return module(v)
    raise ValueError(f"ncscope.verify: {type(module).__name__} is not an affine layer")


def affine_step(module: nn.Module, star: ImageStar) -> ImageStar:
    """The exact image of ``star`` under an affine ``module`` (float64, eval mode): centre
    through the layer with bias, generators as a batch through its linear part."""
    with torch.no_grad():
        c = module(star.c.unsqueeze(0))[0]
        if star.num_vars:
            V = _linear_part(module, star.V)
        else:
            V = torch.zeros((0, *c.shape), dtype=torch.float64)
    return ImageStar(c.contiguous(), V.contiguous(), star.C, star.d, star.lb, star.ub)


def _abs_linear(module: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """``|A| r`` for the linear part ``A`` of an affine layer (interval radius)."""
    if isinstance(module, nn.Conv2d):
        return F.conv2d(r, module.weight.abs(), None, module.stride, module.padding,
                        module.dilation, module.groups)
    if isinstance(module, nn.ConvTranspose2d):
        return F.conv_transpose2d(r, module.weight.abs(), None, module.stride, module.padding,
                                  module.output_padding, module.groups, module.dilation)
    if isinstance(module, nn.Linear):
        return F.linear(r, module.weight.abs())
    return _linear_part(module, r).abs()


def ibp(layers: list[tuple[str, nn.Module]], lo: torch.Tensor, hi: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bound propagation (the baseline of the benchmark): elementwise bounds of the
    chain's output for inputs in the box ``[lo, hi]`` (one image, no batch dimension)."""
    mid, rad = ((lo + hi) / 2).double().unsqueeze(0), ((hi - lo) / 2).double().unsqueeze(0)
    with torch.no_grad():
        for _, module in layers:
            if isinstance(module, nn.ReLU):
                a, b = (mid - rad).clamp(min=0), (mid + rad).clamp(min=0)
                mid, rad = (a + b) / 2, (b - a) / 2
            else:
                mid, rad = module(mid), _abs_linear(module, rad)
    return (mid - rad)[0], (mid + rad)[0]


def box_of(star: ImageStar) -> tuple[torch.Tensor, torch.Tensor]:
    """The elementwise interval hull of a star (estimated bounds) in its element shape."""
    lo, hi = star.estimate_bounds()
    return (torch.from_numpy(np.ascontiguousarray(lo)).reshape(star.shape),
            torch.from_numpy(np.ascontiguousarray(hi)).reshape(star.shape))

"""The finite fully connected ReLU network in NTK parameterisation whose infinite-width kernels
:mod:`ncscope.ntk.analytic` computes (Jacot et al., NeurIPS 2018, §2)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ncscope.validation import check_int, check_real

__all__ = ["Centered", "NTKLinear", "NTKMLP"]


class NTKLinear(nn.Module):
    """``y = σ_w / sqrt(fan_in) · W x + σ_b · b`` with W, b ~ N(0, 1) (NTK parameterisation)."""

    def __init__(self, fan_in: int, fan_out: int, *, sigma_w2: float = 2.0,
                 sigma_b2: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in, generator=generator))
        self.bias = nn.Parameter(torch.randn(fan_out, generator=generator))
        self.w_scale = math.sqrt(sigma_w2 / fan_in)
        self.b_scale = math.sqrt(sigma_b2)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer."""
        return nn.functional.linear(x, self.weight * self.w_scale, self.bias * self.b_scale)


class NTKMLP(nn.Module):
    """Fully connected ReLU network in NTK parameterisation on flattened pixels.

    ``depth`` hidden layers of ``width`` units, ``num_classes`` linear outputs; the input is
    flattened, with no normalisation (the analytic kernels of :func:`ncscope.ntk.relu_kernels`
    with the same ``depth``, ``sigma_w2`` and ``sigma_b2`` are its infinite-width limit).

    Args:
        in_features: flattened input size (64 for the 8×8 digits).
        width: hidden units per layer (or a sequence, one per hidden layer).
        num_classes: outputs.
        depth: hidden layers (ignored when ``width`` is a sequence).
        sigma_w2, sigma_b2: weight and bias variances.
        seed: initialisation seed (``None``: the global RNG).
    """

    def __init__(self, in_features: int, width: int | Sequence[int], num_classes: int, *,
                 depth: int = 1, sigma_w2: float = 2.0, sigma_b2: float = 0.0,
                 seed: int | None = None) -> None:
        super().__init__()
        in_features = check_int("NTKMLP", "in_features", in_features, 1)
        num_classes = check_int("NTKMLP", "num_classes", num_classes, 1)
        check_real("NTKMLP", "sigma_w2", sigma_w2, 0.0, strict_low=True)
        check_real("NTKMLP", "sigma_b2", sigma_b2, 0.0)
        if isinstance(width, int):
            widths = [check_int("NTKMLP", "width", width, 1)] * check_int("NTKMLP", "depth",
                                                                          depth, 1)
        else:
            widths = [check_int("NTKMLP", "width", w, 1) for w in width]
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for w in widths:
            layers += [NTKLinear(fan_in, w, sigma_w2=sigma_w2, sigma_b2=sigma_b2, generator=gen),
                       nn.ReLU()]
            fan_in = w
        self.body = nn.Sequential(*layers)
        self.classifier = NTKLinear(fan_in, num_classes, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                                    generator=gen)
        self.widths = widths

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(n, num_classes)`` of images ``(n, ...)``."""
        return self.classifier(self.body(x))


class Centered(nn.Module):
    """``f(x; θ) − f(x; θ₀)``: a network minus a frozen copy of itself at initialisation.

    Its output at initialisation is zero, so under lazy training its mean over initialisations
    *and* each draw follow the kernel predictor f̄_τ of :class:`ncscope.ntk.KernelPredictor`
    (the random initial function, which adds its own gradients, is removed); the empirical NTK
    is the network's. The "centering" of Chizat, Oyallon & Bach, "On Lazy Training in
    Differentiable Programming", NeurIPS 2019 (§2.2: the output at initialisation is set to 0).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        initial = copy.deepcopy(model)
        for p in initial.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_initial", initial)  # frozen, not a trained submodule

    def forward(self, x: Tensor) -> Tensor:
        """``model(x) − model_at_init(x)``."""
        return self.model(x) - self._initial(x)

"""Random-noise baselines with the attack call shape ("Gaussian baseline" of Su et al. 2024).

Su, Zhang, Tsilivis, Kempe, "On the Robustness of Neural Collapse and the Neural Collapse of
Robustness", TMLR 2024, contrast adversarial perturbations with random ones of the same or
larger size, to show that the loss of Neural Collapse is specific to adversarial directions.
Their code has three controls, all clipped to [0, 1]: i.i.d. Gaussian noise with per-pixel
``sigma = 8/255``; a Gaussian direction rescaled to l2 norm exactly ``128/255``; a random corner
of the l_inf ball, ``x + (8/255) * sign(N(0, I))``. A uniform draw from the l_inf ball is added
as the start distribution of PGD (Madry et al. 2018).

Threat model: none (no model, no gradient); the output lies in [0, 1] and, for the bounded
sources, in their ball. The model argument is optional; when given together with labels, the
report holds the per-example cross-entropy and misclassification flags (one forward pass).
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks.base import (
    Attack,
    AttackReport,
    _check_range,
    _gaussian_l2,
    _normal,
    _random_sign,
    _real,
    _uniform,
    preserved_buffers,
)

__all__ = ["GaussianL2", "GaussianNoise", "NoiseSource", "RandomSign", "UniformLinf"]


class NoiseSource(Attack):
    """Base of gradient-free perturbation sources: same call shape as an attack.

    ``src(images, labels=None) -> Tensor``; labels are optional. The first constructor argument
    may be the model (for uniformity with attacks, e.g. ``GaussianNoise(model, sigma=0.1)``) or
    directly the size (``GaussianNoise(0.1)``).
    """

    requires_model: ClassVar[bool] = False
    requires_labels: ClassVar[bool] = False
    size_name: ClassVar[str] = "size"
    default_size: ClassVar[float] = 8 / 255

    def __init__(
        self,
        model: nn.Module | float | None = None,
        size: float | None = None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
    ) -> None:
        owner = self.name
        if isinstance(model, Tensor | numbers.Real) and not isinstance(model, bool):
            if size is not None:
                raise TypeError(f"{owner}: {self.size_name} given twice (positionally as the "
                                "first argument and again); pass the model first or omit it")
            model, size = None, model  # type: ignore[assignment]
        super().__init__(model, model_mode=model_mode, seed=seed,  # type: ignore[arg-type]
                         generator=generator, checks=checks)
        value = self.default_size if size is None else size
        self.size = _real(owner, self.size_name, value, low=0.0, hint=" (pixel units)")

    def _hparams(self) -> dict[str, Any]:
        return {self.size_name: self.size}

    def _sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        if labels is not None and self.model is None:
            _check_range(self.name, labels, None, "labels")
        out = self._sample(x, self._rng(x.device))
        if self.model is not None and labels is not None and level != "off":
            with torch.no_grad(), preserved_buffers(self.model):
                logits = self.model(out)
            report.forwards += 1
            if isinstance(logits, Tensor) and logits.ndim == 2:
                _check_range(self.name, labels, logits.shape[1], "labels")
                z = logits.float()
                report.objective = torch.logsumexp(z, 1) - z.gather(1, labels[:, None])[:, 0]
                report.success = z.argmax(dim=1) != labels
        return out


class GaussianNoise(NoiseSource):
    """I.i.d. Gaussian noise with per-pixel standard deviation ``sigma``, clipped to [0, 1].

    The "Gaussian baseline" of Su et al. (TMLR 2024, ``eval.py``; default ``sigma = 8/255``).
    Unbounded: its l2 norm is about ``sigma * sqrt(d)`` (1.74 for CIFAR at 8/255), far larger
    than any attack's ball. Signature: ``GaussianNoise(sigma)`` or ``GaussianNoise(model,
    sigma=...)``.
    """

    name: ClassVar[str] = "GaussianNoise"
    size_name: ClassVar[str] = "sigma"
    default_size: ClassVar[float] = 8 / 255

    def __init__(
        self,
        model: nn.Module | float | None = None,
        sigma: float | None = None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
    ) -> None:
        super().__init__(model, sigma, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks)

    @property
    def sigma(self) -> float:
        """Per-pixel standard deviation of the noise (pixel units)."""
        return self.size

    def _sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        return (x + self.size * _normal(x, gen)).clamp_(0.0, 1.0)


class GaussianL2(NoiseSource):
    """Gaussian direction rescaled to l2 norm exactly ``radius``, then clipped to [0, 1].

    The l2 noise control of Su et al. (TMLR 2024, ``train.py``; default ``radius = 128/255``,
    the l2 attack radius). Output within ``radius`` of the input (clipping only shrinks it).
    """

    name: ClassVar[str] = "GaussianL2"
    size_name: ClassVar[str] = "radius"
    default_size: ClassVar[float] = 128 / 255

    def __init__(
        self,
        model: nn.Module | float | None = None,
        radius: float | None = None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
    ) -> None:
        super().__init__(model, radius, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks)

    @property
    def radius(self) -> float:
        """l2 norm of every perturbation (pixel units)."""
        return self.size

    def _sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        return _gaussian_l2(x, self.size, gen)


class RandomSign(NoiseSource):
    """Random corner of the l_inf ball: ``clip_[0,1](x + eps * sign(N(0, I)))``.

    The l_inf noise control of Su et al. (TMLR 2024; default ``eps = 8/255``): the largest
    random perturbation inside the l_inf ball of the attack.
    """

    name: ClassVar[str] = "RandomSign"
    size_name: ClassVar[str] = "eps"
    default_size: ClassVar[float] = 8 / 255

    def __init__(
        self,
        model: nn.Module | float | None = None,
        eps: float | None = None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
    ) -> None:
        super().__init__(model, eps, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks)

    @property
    def eps(self) -> float:
        """Radius of the l_inf ball (pixel units)."""
        return self.size

    def _sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        return _random_sign(x, self.size, gen)


class UniformLinf(NoiseSource):
    """Uniform draw from the l_inf ball, ``clip_[0,1](x + U(-eps, eps))`` (default 8/255).

    The random start of PGD (Madry et al., ICLR 2018) used as a stand-alone baseline.
    """

    name: ClassVar[str] = "UniformLinf"
    size_name: ClassVar[str] = "eps"
    default_size: ClassVar[float] = 8 / 255

    def __init__(
        self,
        model: nn.Module | float | None = None,
        eps: float | None = None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
    ) -> None:
        super().__init__(model, eps, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks)

    @property
    def eps(self) -> float:
        """Radius of the l_inf ball (pixel units)."""
        return self.size

    def _sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        return (x + _uniform(x, -self.size, self.size, gen)).clamp_(0.0, 1.0)

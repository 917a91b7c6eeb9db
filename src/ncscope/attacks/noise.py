"""Random-noise baselines with the attack call shape ("Gaussian baseline" of Su et al. 2024).

Su, Zhang, Tsilivis, Kempe, "On the Robustness of Neural Collapse and the Neural Collapse of
Robustness", TMLR 2024, contrast adversarial perturbations with random ones of the same or
larger size, to show that the loss of Neural Collapse is specific to adversarial directions.
Their code has three controls, all clipped to [0, 1]: i.i.d. Gaussian noise with per-pixel
``sigma = 8/255``; a Gaussian direction rescaled to l2 norm exactly ``128/255``; a random corner
of the l_inf ball, ``x + (8/255) * sign(N(0, I))``. A uniform draw from the l_inf ball is added
as the start distribution of PGD (Madry et al. 2018).

One family: each source declares its size parameter (``size_name``: ``sigma``, ``radius`` or
``eps``), its default, the norm of its ball (``None``: unbounded) and a :meth:`~NoiseSource.sample`
method; the constructor, the validation and the call are :class:`NoiseSource`'s.

Threat model: none (no model, no gradient); the output lies in [0, 1] and, for the bounded
sources, in their ball. The model argument is optional; when given together with labels, the
report holds the per-example cross-entropy and misclassification flags (one forward pass).
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks.base import Attack, AttackReport
from ncscope.attacks.inputs import check_class_range
from ncscope.attacks.modes import preserved_buffers
from ncscope.attacks.sampling import gaussian_l2, normal, random_sign, uniform_linf
from ncscope.attacks.threat import check_eps

__all__ = ["GaussianL2", "GaussianNoise", "NoiseSource", "RandomSign", "UniformLinf"]


def size_alias(doc: str) -> property:
    """A read-only property returning the source's size under its own name (``sigma``...)."""
    return property(lambda self: self.size, doc=doc)


class NoiseSource(Attack):
    """Base of gradient-free perturbation sources: same call shape as an attack.

    ``src(images, labels=None) -> Tensor``; labels are optional. The first constructor argument
    may be the model (for uniformity with attacks, e.g. ``GaussianNoise(model, sigma=0.1)``) or
    directly the size (``GaussianNoise(0.1)``); the size may also be given by its own keyword
    (``sigma=``, ``radius=``, ``eps=``: the subclass's ``size_name``) or as ``size=``.

    Subclasses declare ``name``, ``size_name``, ``default_size``, ``norm`` (``"linf"``, ``"l2"``
    or ``None`` for unbounded noise) and implement :meth:`sample`.
    """

    requires_model: ClassVar[bool] = False
    requires_labels: ClassVar[bool] = False
    size_name: ClassVar[str] = "size"
    default_size: ClassVar[float] = 8 / 255
    #: norm of the ball the output stays in (``None``: unbounded)
    norm: ClassVar[str | None] = None

    def __init__(
        self,
        model: nn.Module | float | None = None,
        size: float | None = None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
        **named: float | None,
    ) -> None:
        owner, key = self.name, self.size_name
        unknown = sorted(set(named) - {key})
        if unknown:
            raise TypeError(f"{owner}: unexpected keyword argument(s) {', '.join(unknown)}; the "
                            f"size is {key}=")
        given = [v for v in (size, named.get(key)) if v is not None]
        if isinstance(model, Tensor | numbers.Real) and not isinstance(model, bool):
            model, given = None, [model, *given]  # type: ignore[list-item]
        if len(given) > 1:
            raise TypeError(f"{owner}: {key} given twice (positionally as the first argument "
                            "and again); pass the model first or omit it")
        super().__init__(model, model_mode=model_mode, seed=seed,  # type: ignore[arg-type]
                         generator=generator, checks=checks)
        value = given[0] if given else self.default_size
        self.size = check_eps(owner, value, self.norm, name=key)

    def _hparams(self) -> dict[str, Any]:
        return {self.size_name: self.size}

    def _ball(self) -> tuple[str, str, float] | None:
        return None if self.norm is None else (self.size_name, self.norm, self.size)

    def sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """A perturbed copy of the images ``x`` (in [0, 1]), drawn from ``gen``."""
        raise NotImplementedError

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        if labels is not None and self.model is None:
            check_class_range(self.name, labels, None, "labels")
        out = self.sample(x, self._rng(x.device))
        if self.model is not None and labels is not None and level != "off":
            with torch.no_grad(), preserved_buffers(self.model):
                logits = self.model(out)
            report.forwards += 1
            if isinstance(logits, Tensor) and logits.ndim == 2:
                check_class_range(self.name, labels, logits.shape[1], "labels")
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
    sigma = size_alias("Per-pixel standard deviation of the noise (pixel units).")

    def sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """``clip_[0,1](x + sigma * N(0, I))``."""
        return (x + self.size * normal(x, gen)).clamp_(0.0, 1.0)


class GaussianL2(NoiseSource):
    """Gaussian direction rescaled to l2 norm exactly ``radius``, then clipped to [0, 1].

    The l2 noise control of Su et al. (TMLR 2024, ``train.py``; default ``radius = 128/255``,
    the l2 attack radius). Output within ``radius`` of the input (clipping only shrinks it).
    """

    name: ClassVar[str] = "GaussianL2"
    size_name: ClassVar[str] = "radius"
    default_size: ClassVar[float] = 128 / 255
    norm: ClassVar[str | None] = "l2"
    radius = size_alias("l2 norm of every perturbation (pixel units).")

    def sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """``clip_[0,1](x + radius * d / ||d||)``, ``d ~ N(0, I)`` per example."""
        return gaussian_l2(x, self.size, gen)


class RandomSign(NoiseSource):
    """Random corner of the l_inf ball: ``clip_[0,1](x + eps * sign(N(0, I)))``.

    The l_inf noise control of Su et al. (TMLR 2024; default ``eps = 8/255``): the largest
    random perturbation inside the l_inf ball of the attack.
    """

    name: ClassVar[str] = "RandomSign"
    size_name: ClassVar[str] = "eps"
    default_size: ClassVar[float] = 8 / 255
    norm: ClassVar[str | None] = "linf"
    eps = size_alias("Radius of the l_inf ball (pixel units).")

    def sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """``clip_[0,1](x + eps * sign(N(0, I)))``."""
        return random_sign(x, self.size, gen)


class UniformLinf(NoiseSource):
    """Uniform draw from the l_inf ball, ``clip_[0,1](x + U(-eps, eps))`` (default 8/255).

    The random start of PGD (Madry et al., ICLR 2018) used as a stand-alone baseline.
    """

    name: ClassVar[str] = "UniformLinf"
    size_name: ClassVar[str] = "eps"
    default_size: ClassVar[float] = 8 / 255
    norm: ClassVar[str | None] = "linf"
    eps = size_alias("Radius of the l_inf ball (pixel units).")

    def sample(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """``clip_[0,1](x + U(-eps, eps))``."""
        return uniform_linf(x, self.size, gen)

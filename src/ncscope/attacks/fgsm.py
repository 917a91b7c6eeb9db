"""Fast Gradient Sign Method (FGSM).

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
one signed-gradient step of size ``eps`` from the clean input, clipped to [0, 1].

Threat model: white box, pixel space [0, 1], ``||x_adv - x||_inf <= eps``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ncscope.attacks.pgd import PGD

__all__ = ["FGSM"]


class FGSM(PGD):
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015).

    ``x_adv = clip_[0,1](x + eps * sign(grad_x loss(f(x), y)))`` — a single l_inf PGD step of
    size ``eps`` without random start (identical output to torchattacks' ``FGSM``).

    Threat model: white box; pixel space [0, 1]; ``||x_adv - x||_inf <= eps``.

    A one-step subclass of :class:`~ncscope.attacks.pgd.PGD`: ``steps=1``, no random start and
    the threat-model table's FGSM rule ``alpha = eps`` (:mod:`~ncscope.attacks.threat`).

    Args:
        model: classifier returning logits ``(B, K)``.
        eps: l_inf radius and step size (pixel units in [0, 1]; ``None``: 8/255).
        targeted, target_rule, loss: as for :class:`~ncscope.attacks.pgd.PGD`.
        model_mode, seed, generator, checks: see :class:`~ncscope.attacks.base.Attack`
            (``seed``/``generator`` only matter for ``target_rule="random"``).
        fast: run on the model's folded attack twin (eval mode only; see
            :class:`~ncscope.attacks.gradient.GradientAttack`); default ``False``: the model
            itself.
    """

    name: ClassVar[str] = "FGSM"
    step_rule: ClassVar[str] = "fgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float | None = None,
        targeted: bool = False,
        target_rule: str | None = "next",
        loss: str = "ce",
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
        fast: bool = False,
    ) -> None:
        super().__init__(model, eps=eps, alpha=None, steps=1, norm="linf", random_start=False,
                         restarts=1, targeted=targeted, target_rule=target_rule,
                         early_stop=False, loss=loss, model_mode=model_mode, seed=seed,
                         generator=generator, checks=checks, fast=fast)

    def _hparams(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": "linf",
            "targeted": self.targeted,
            "target_rule": self.target_rule if self.targeted else None,
            "loss": self.loss,
        }

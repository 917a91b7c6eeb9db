"""TRADES inner maximisation (KL divergence to the clean prediction).

Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between Robustness
and Accuracy", ICML 2019 (official ``trades.py``, used unchanged by Su et al. 2024): starting
from ``x + 0.001 * N(0, I)``, maximise ``KL(f(x) || f(x'))`` (summed over the batch, clean
prediction detached) by

* l_inf: ``steps`` signed-gradient steps of size ``alpha`` (default ``eps / 4``; the reference
  uses 0.007 at 0.031), each projected onto the ball and clipped to [0, 1];
* l2: normalised-gradient steps of size ``alpha`` (default ``2 * eps / steps``, the learning
  rate of the reference's SGD on the perturbation; a random direction replaces an all-zero
  gradient), each followed by the clip to [0, 1] and the l2 projection (``renorm``).

Threat model: white box, pixel space [0, 1], ``||x' - x||_p <= eps``, p = inf or 2. The labels
are not used by the objective (TRADES attacks the model's own clean prediction).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncscope.attacks.gradient import GradientAttack, GradientCall
from ncscope.attacks.inputs import check_class_range
from ncscope.attacks.sampling import normal
from ncscope.attacks.steps import bview, l2norm
from ncscope.attacks.threat import threat_model
from ncscope.validation import check_real

__all__ = ["TRADES"]


class TRADES(GradientAttack):
    """TRADES inner maximisation (Zhang et al., ICML 2019): KL to the clean prediction.

    ``atk(images, labels)`` returns the maximiser ``x'`` of ``KL(f(x) || f(x'))`` in the ball;
    labels are optional and only validated (and used for ``last_report.success``). The trainer
    computes its TRADES loss ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` itself and switches the
    model back to its own mode afterwards — the attack restores the mode it found.

    Threat model: white box; pixel space [0, 1]; ``||x' - x||_inf <= eps`` or
    ``||x' - x||_2 <= eps``.

    Args:
        model: classifier returning logits ``(B, K)``.
        eps: radius (pixel units; l_inf in [0, 1]). ``None``: the norm's default (8/255 for
            l_inf, 128/255 for l2).
        alpha: step size (> 0). ``None`` (default) selects the reference rule of
            :mod:`~ncscope.attacks.threat`: ``eps / 4`` for l_inf, ``2 * eps / steps`` (the SGD
            learning rate of the official code) for l2.
        steps: number of steps (>= 1; ``None``: the table's 10).
        norm: ``"linf"`` or ``"l2"``.
        model_mode: ``"eval"`` (default, as the official code) or ``"train"``.
        init_std: standard deviation of the Gaussian start (default 0.001, as the reference).
        seed, generator, checks: see :class:`~ncscope.attacks.base.Attack`.
        fast: run on the model's folded attack twin (eval mode only; see
            :class:`~ncscope.attacks.gradient.GradientAttack`); default ``False``: the model
            itself.

    Efficiency: the clean prediction is computed once per call (the reference recomputes it at
    every step: ``2 * steps`` forward passes there, ``steps + 1`` here) and gradients are taken
    with respect to the input only; the KL is evaluated on the reference's float path, so the
    perturbations match the official code's for the same random start.
    """

    name: ClassVar[str] = "TRADES"
    requires_labels: ClassVar[bool] = False
    success_driven: ClassVar[bool] = False  # maximises KL, not misclassification

    def __init__(
        self,
        model: nn.Module,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
        norm: str = "linf",
        model_mode: str = "eval",
        init_std: float = 0.001,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
        fast: bool = False,
    ) -> None:
        super().__init__(model, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks, fast=fast)
        owner = self.name
        tm = threat_model(norm, eps, alpha, steps, "trades", owner=owner)
        self.norm, self.eps, self.alpha, self.steps = tm.norm, tm.eps, tm.alpha, tm.steps
        self.init_std = check_real(owner, "init_std", init_std, 0.0)

    def _hparams(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "norm": self.norm,
            "init_std": self.init_std,
        }

    # ---- hooks of the gradient loop ------------------------------------------------------

    def prepare(self, call: GradientCall) -> None:
        """The clean prediction, once per call (the reference recomputes it at every step)."""
        clean = self._aux_forward(call.x, call.report)
        if call.labels is not None:
            check_class_range(self.name, call.labels, clean.shape[1], "labels")
        call.clean_probs = F.softmax(clean, dim=1)
        call.clean_pred = clean.argmax(dim=1)

    def start(self, call: GradientCall) -> Tensor:
        """``x + init_std * N(0, I)`` (not clipped, as the reference)."""
        delta = self.init_std * normal(call.x, call.gen)
        if self.norm == "l2":
            call.delta = delta
        return call.x + delta

    def objective(self, logits: Tensor, call: GradientCall) -> tuple[Tensor, Tensor | None]:
        """The summed KL divergence, on the same float path as the official code
        (``KLDivLoss(reduction="sum")(log_softmax(f(x')), softmax(f(x)))``), so that ncscope
        reproduces the reference perturbations, not only their distribution."""
        assert call.clean_probs is not None
        kl = F.kl_div(F.log_softmax(logits, dim=1), call.clean_probs, reduction="sum")
        return kl, None

    def score(self, logits: Tensor, call: GradientCall) -> Tensor:
        """Per-example ``KL(f(x) || f(x'))``."""
        assert call.clean_probs is not None
        logq = torch.log_softmax(logits.detach().float(), dim=1)
        return F.kl_div(logq, call.clean_probs, reduction="none").sum(dim=1)

    def success(self, logits: Tensor, call: GradientCall) -> Tensor:
        """Misclassified with respect to the labels (or the clean prediction without labels)."""
        ref = call.labels if call.labels is not None else call.clean_pred
        assert ref is not None
        return logits.detach().argmax(dim=1) != ref

    def step(self, call: GradientCall, x_adv: Tensor, grad: Tensor) -> Tensor:
        """l_inf: the projected signed step. l2: the official code's update of ``delta`` —
        normalised gradient (a random direction where it is zero), ``delta += alpha * g``,
        clip ``x + delta`` to [0, 1], ``renorm`` to radius ``eps``."""
        if self.norm == "linf":
            return super().step(call, x_adv, grad)
        assert call.delta is not None
        gn = l2norm(grad)
        g = grad / bview(gn.clamp_min(torch.finfo(gn.dtype).tiny), grad.ndim)
        zero = gn == 0
        if bool(zero.any()):  # reference: random direction where the gradient is 0
            g = torch.where(bview(zero, g.ndim), normal(g, call.gen), g)
        delta = call.delta + self.alpha * g
        delta = (call.x + delta).clamp_(0.0, 1.0) - call.x
        call.delta = torch.renorm(delta, p=2, dim=0, maxnorm=self.eps)
        return call.x + call.delta

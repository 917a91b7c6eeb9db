"""TRADES inner maximisation (KL divergence to the clean prediction).

Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between Robustness
and Accuracy", ICML 2019 (official ``trades.py``, used unchanged by Su et al. 2024): starting
from ``x + 0.001 * N(0, I)``, maximise ``KL(f(x) || f(x'))`` (summed over the batch, clean
prediction detached) by

* l_inf: ``steps`` signed-gradient steps of size ``alpha``, each projected onto the ball and
  clipped to [0, 1];
* l2: normalised-gradient steps of size ``alpha`` (the reference uses SGD with learning rate
  ``2 * eps / steps``; a random direction replaces an all-zero gradient), each followed by the
  clip to [0, 1] and the l2 projection (``renorm``).

Threat model: white box, pixel space [0, 1], ``||x' - x||_p <= eps``, p = inf or 2. The labels
are not used by the objective (TRADES attacks the model's own clean prediction).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncscope.attacks.base import (
    AttackReport,
    GradientAttack,
    _bview,
    _check_range,
    _Ctx,
    _int,
    _l2norm,
    _linf_step,
    _norm,
    _normal,
    _real,
)

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
        eps: radius (>= 0; default 8/255).
        alpha: step size (> 0; default 2/255). ``None`` selects the reference rule: ``eps / 4``
            for l_inf, ``2 * eps / steps`` (the SGD learning rate of the official code) for l2.
        steps: number of steps (>= 1; default 10).
        norm: ``"linf"`` or ``"l2"``.
        model_mode: ``"eval"`` (default, as the official code) or ``"train"``.
        init_std: standard deviation of the Gaussian start (default 0.001, as the reference).
        seed, generator, checks: see :class:`~ncscope.attacks.base.Attack`.
        fast: run on the model's folded attack twin (eval mode only; see
            :class:`~ncscope.attacks.base.GradientAttack`); default ``False``: the model itself.

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
        eps: float = 8 / 255,
        alpha: float | None = 2 / 255,
        steps: int = 10,
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
        self.eps = _real(owner, "eps", eps, low=0.0, hint=" (pixel units in [0, 1], e.g. 8/255)")
        self.steps = _int(owner, "steps", steps, low=1)
        self.norm = _norm(owner, norm)
        if alpha is None:
            alpha = self.eps / 4 if self.norm == "linf" else 2 * self.eps / self.steps
            if alpha == 0.0:  # eps = 0: any positive step gives the same (unchanged) output
                alpha = 1.0
        self.alpha = _real(owner, "alpha", alpha, low=0.0, strict=True,
                           hint=" (step size in pixel units, e.g. 2/255)")
        self.init_std = _real(owner, "init_std", init_std, low=0.0)

    def _hparams(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "norm": self.norm,
            "init_std": self.init_std,
        }

    # ---- objective: KL(clean || adversarial) ------------------------------------------------

    def _objective(self, logits: Tensor, ctx: _Ctx) -> Tensor:
        assert ctx.clean_probs is not None
        logq = torch.log_softmax(logits.detach().float(), dim=1)
        return F.kl_div(logq, ctx.clean_probs, reduction="none").sum(dim=1)

    def _grad_target(self, logits: Tensor, ctx: _Ctx) -> tuple[Tensor, Tensor | None]:
        """The summed KL divergence, on the same float path as the official code
        (``KLDivLoss(reduction="sum")(log_softmax(f(x')), softmax(f(x)))``), so that ncscope
        reproduces the reference perturbations, not only their distribution."""
        assert ctx.clean_probs is not None
        kl = F.kl_div(F.log_softmax(logits, dim=1), ctx.clean_probs, reduction="sum")
        return kl, None

    def _success(self, logits: Tensor, ctx: _Ctx) -> Tensor:
        ref = ctx.labels if ctx.labels is not None else ctx.clean_pred
        assert ref is not None
        return logits.detach().argmax(dim=1) != ref

    # ---- attack -------------------------------------------------------------------------

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        gen = self._rng(x.device)
        ctx = _Ctx(labels=labels)
        clean = self._aux_forward(x, report)
        if labels is not None:
            _check_range(self.name, labels, clean.shape[1], "labels")
        ctx.clean_probs = F.softmax(clean, dim=1)
        ctx.clean_pred = clean.argmax(dim=1)
        noise = _normal(x, gen)
        if self.norm == "linf":
            lo = (x - self.eps).clamp_(min=0.0)
            hi = (x + self.eps).clamp_(max=1.0)
            x_adv = x + self.init_std * noise
        else:
            delta = self.init_std * noise
            x_adv = x + delta
        with torch.enable_grad():
            for step in range(self.steps):
                x_adv.requires_grad_(True)
                logits = self._forward(x_adv, report)
                z = logits.detach()
                g = self._input_grad(x_adv, *self._grad_target(logits, ctx), report)
                del logits
                if step == 0:
                    self._start_checks(x_adv.detach(), z, g, report, level)
                if self.norm == "linf":
                    x_adv = _linf_step(x_adv, g, self.alpha, lo, hi)
                    continue
                gn = _l2norm(g)
                g = g / _bview(gn.clamp_min(torch.finfo(gn.dtype).tiny), g.ndim)
                zero = gn == 0
                if bool(zero.any()):  # reference: random direction where the gradient is 0
                    g = torch.where(_bview(zero, g.ndim), _normal(g, gen), g)
                delta = delta + self.alpha * g
                delta = (x + delta).clamp_(0.0, 1.0) - x
                delta = torch.renorm(delta, p=2, dim=0, maxnorm=self.eps)
                x_adv = x + delta
        x_adv = x_adv.detach()
        if self.norm == "l2":
            x_adv = x_adv.clamp_(0.0, 1.0)
        self._final_checks(x, x_adv, ctx, report, level)
        return x_adv

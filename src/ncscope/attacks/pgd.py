"""Projected Gradient Descent (PGD), l_inf and l2.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. Protocol of the paper's official code (Su, Zhang, Tsilivis, Kempe, TMLR 2024,
inherited from Rice, Wong, Kolter, "Overfitting in adversarially robust deep learning", ICML
2020): uniform random start in the l_inf ball (l2: Gaussian direction at radius ``r * eps``,
``r ~ U(0, 1)`` per example), ``steps`` signed-gradient (l2: normalised-gradient) steps of size
``alpha``, each followed by the projection onto the ball and the clip to [0, 1]; with several
restarts the perturbation with the highest final loss is kept per example; early stopping is off
by default.

Threat model: white box, pixel space [0, 1], ``||x_adv - x||_p <= eps`` with p = inf or 2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncscope.attacks.base import (
    AttackReport,
    GradientAttack,
    _bool,
    _bview,
    _check_range,
    _choice,
    _Ctx,
    _int,
    _l2_step,
    _l2norm,
    _linf_step,
    _norm,
    _normal,
    _randint,
    _real,
    _uniform,
)

__all__ = ["LOSSES", "PGD", "TARGET_RULES"]

TARGET_RULES: tuple[str, ...] = ("next", "random", "least_likely")
LOSSES: tuple[str, ...] = ("ce", "cw")


class PGD(GradientAttack):
    """Projected Gradient Descent (Madry et al., ICLR 2018), l_inf or l2, with restarts.

    Threat model: white box; pixel space [0, 1]; ``||x_adv - x||_inf <= eps`` (``norm="linf"``)
    or ``||x_adv - x||_2 <= eps`` (``norm="l2"``). The model owns its normalisation.

    Paper defaults (Su et al. 2024): l_inf ``eps=8/255, alpha=2/255, steps=10``, one random
    start; l2 ``eps=128/255, alpha=15/255, steps=10``; targeted attack to ``(y + 1) mod K``.

    Args:
        model: classifier returning logits ``(B, K)``; K is read from the logits.
        eps: radius of the ball (pixel units, >= 0).
        alpha: step size (> 0). l_inf: ``x + alpha * sign(g)``; l2: ``x + alpha * g/||g||``.
        steps: number of gradient steps (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        random_start: l_inf: ``U(-eps, eps)`` per pixel; l2: Gaussian direction scaled to
            ``r * eps``, ``r ~ U(0, 1)`` per example; then clipped to [0, 1]. The draws match
            torchattacks' ``PGD`` / ``PGDL2`` (same global RNG stream gives the same start).
        restarts: independent random starts; per example the output with the highest final
            objective is kept (ties go to the later restart, as in the reference code). One
            extra forward pass per restart is needed for this when ``restarts > 1``.
        targeted: minimise the cross-entropy of a target class instead of maximising that of
            the true label.
        target_rule: how targets are chosen when ``target=`` is not passed: ``"next"``
            (``(y + 1) mod K``, the paper's), ``"random"`` (uniform over classes != y),
            ``"least_likely"`` (lowest clean logit other than y), or ``None`` (targets must be
            passed). An explicit ``target=`` tensor always overrides the rule.
        early_stop: stop updating examples that are already misclassified (targeted: already
            classified as the target), as the reference code's option; off by default.
        loss: ``"ce"`` (cross-entropy, default) or ``"cw"`` (logit margin of Carlini & Wagner).
        model_mode, seed, generator, checks: see :class:`~ncscope.attacks.base.Attack`.
        fast: run on the model's folded attack twin (eval mode only; see
            :class:`~ncscope.attacks.base.GradientAttack`); default ``False``: the model itself.

    Efficiency and fidelity: gradients are taken with respect to the input only (parameters
    frozen; the cross-entropy on the reference's float path, so outputs match torchattacks and
    the paper's code to float precision), the l_inf projection and [0, 1] clip are one clamp
    against precomputed bounds, and the
    final-loss forward of the reference code is only run when it can change the result
    (``restarts > 1``). ``steps`` forward and backward passes per restart. (With
    ``model_mode="train"`` and one restart the reference's selection forward would also update
    the BatchNorm running statistics once more; here they see the ``steps`` attack batches.)

    Example::

        atk = PGD(model, eps=8/255, alpha=2/255, steps=10, seed=0)
        x_adv = atk(images, labels)
        atk.last_report.warnings   # sanity flags, [] if none
    """

    name: ClassVar[str] = "PGD"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        target_rule: str | None = "next",
        early_stop: bool = False,
        loss: str = "ce",
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
        fast: bool = False,
    ) -> None:
        super().__init__(model, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks, fast=fast)
        owner = self.name
        self.eps = _real(owner, "eps", eps, low=0.0, hint=" (pixel units in [0, 1], e.g. 8/255)")
        self.alpha = _real(owner, "alpha", alpha, low=0.0, strict=True,
                           hint=" (step size in pixel units, e.g. 2/255)")
        self.steps = _int(owner, "steps", steps, low=1)
        self.norm = _norm(owner, norm)
        self.random_start = _bool(owner, "random_start", random_start)
        self.restarts = _int(owner, "restarts", restarts, low=1)
        self.targeted = _bool(owner, "targeted", targeted)
        self.target_rule = _choice(owner, "target_rule", target_rule, (*TARGET_RULES, None))
        self.early_stop = _bool(owner, "early_stop", early_stop)
        self.loss = _choice(owner, "loss", loss, LOSSES)

    @property
    def accepts_target(self) -> bool:
        """Whether ``target=`` may be passed (targeted attacks only)."""
        return self.targeted

    def _hparams(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "norm": self.norm,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "targeted": self.targeted,
            "target_rule": self.target_rule if self.targeted else None,
            "early_stop": self.early_stop,
            "loss": self.loss,
        }

    # ---- objective: CE or CW margin of the true label (untargeted) or the target -------------

    def _objective(self, logits: Tensor, ctx: _Ctx) -> Tensor:
        z = logits.detach().float()
        assert ctx.cls is not None and ctx.onehot is not None
        z_cls = z.gather(1, ctx.cls[:, None])[:, 0]
        if self.loss == "ce":  # same float path as the reference's restart selection
            ce = F.cross_entropy(z, ctx.cls, reduction="none")
            return -ce if self.targeted else ce
        other = z.masked_fill(ctx.onehot.bool(), float("-inf")).amax(dim=1)
        margin = z_cls - other  # logit margin of cls over the best other class
        return margin if self.targeted else -margin

    def _grad_target(self, logits: Tensor, ctx: _Ctx) -> tuple[Tensor, Tensor | None]:
        """What to differentiate: the mean cross-entropy, exactly as the reference codes
        (``F.cross_entropy``, negated when targeted — same float path as torchattacks and
        Rice et al., hence bit-identical gradients), or the CW margin via its closed-form
        logit gradient."""
        assert ctx.cls is not None and ctx.onehot is not None
        if self.loss == "ce":
            ce = F.cross_entropy(logits, ctx.cls)
            return (-ce if self.targeted else ce), None
        z = logits.detach().float()
        other = z.masked_fill(ctx.onehot.bool(), float("-inf")).argmax(dim=1)
        g = F.one_hot(other, logits.shape[1]).to(ctx.onehot.dtype) - ctx.onehot
        if self.targeted:
            g.neg_()
        return logits, g.to(logits.dtype)

    def _success(self, logits: Tensor, ctx: _Ctx) -> Tensor:
        pred = logits.detach().argmax(dim=1)
        assert ctx.cls is not None
        return pred == ctx.cls if self.targeted else pred != ctx.cls

    # ---- attack -------------------------------------------------------------------------

    def _prepare(self, x: Tensor, logits: Tensor, target: Tensor | None, ctx: _Ctx,
                 report: AttackReport, gen: torch.Generator | None) -> None:
        """Runs once per call at the first forward pass, when K is known (for the
        least-likely rule: before the first step, on the clean logits)."""
        n_classes = logits.shape[1]
        assert ctx.labels is not None
        _check_range(self.name, ctx.labels, n_classes, "labels")
        if not self.targeted:
            ctx.cls = ctx.labels
        else:
            if n_classes < 2:
                raise ValueError(f"{self.name}: a targeted attack needs K >= 2 classes, the "
                                 f"model returns K={n_classes}")
            if target is not None:
                _check_range(self.name, target, n_classes, "target")
                ctx.cls = target
            elif self.target_rule == "next":
                ctx.cls = (ctx.labels + 1) % n_classes
            elif self.target_rule == "random":
                shift = _randint(n_classes - 1, ctx.labels.shape, x.device, gen) + 1
                ctx.cls = (ctx.labels + shift) % n_classes
            else:  # least_likely: lowest clean logit among the classes != y
                # (called before the first step with the clean logits: an auxiliary forward
                # inside the step would clobber buffers that a train-mode graph still holds)
                own = F.one_hot(ctx.labels, n_classes).bool()
                ctx.cls = logits.float().masked_fill(own, float("inf")).argmin(dim=1)
        ctx.onehot = F.one_hot(ctx.cls, n_classes).to(torch.float32)
        if self.targeted:
            report.targets = ctx.cls

    def _start(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            return (x + _uniform(x, -self.eps, self.eps, gen)).clamp_(0.0, 1.0)
        d = _normal(x, gen)
        n = _l2norm(d)
        r = _uniform(n, 0.0, 1.0, gen)
        d = d * _bview(r / n.clamp_min(torch.finfo(n.dtype).tiny) * self.eps, x.ndim)
        return (x + d).clamp_(0.0, 1.0)

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        if self.targeted and target is None and self.target_rule is None:
            raise ValueError(f"{self.name}: targeted attack without targets: pass target=... or "
                             "set target_rule to 'next', 'random' or 'least_likely'")
        gen = self._rng(x.device)
        ctx = _Ctx(labels=labels)
        nd = x.ndim
        if self.norm == "linf":
            lo = (x - self.eps).clamp_(min=0.0)
            hi = (x + self.eps).clamp_(max=1.0)
        best_x: Tensor | None = None
        best_obj: Tensor | None = None
        best_succ: Tensor | None = None
        if self.targeted and target is None and self.target_rule == "least_likely":
            self._prepare(x, self._aux_forward(x, report), None, ctx, report, gen)
        with torch.enable_grad():
            for restart in range(self.restarts):
                x_adv = self._start(x, gen)
                for step in range(self.steps):
                    x_adv.requires_grad_(True)
                    logits = self._forward(x_adv, report)
                    z = logits.detach()
                    if ctx.onehot is None:
                        self._prepare(x, z, target, ctx, report, gen)
                    active = None
                    if self.early_stop:
                        active = ~self._success(z, ctx)
                        if not bool(active.any()):
                            break
                    g = self._input_grad(x_adv, *self._grad_target(logits, ctx), report)
                    del logits
                    if restart == 0 and step == 0:
                        self._start_checks(x_adv.detach(), z, g, report, level)
                    if self.norm == "linf":
                        new = _linf_step(x_adv, g, self.alpha, lo, hi)
                    else:
                        new = _l2_step(x, x_adv, g, self.alpha, self.eps)
                    if active is not None:
                        new = torch.where(_bview(active, nd), new, x_adv.detach())
                    x_adv = new
                x_adv = x_adv.detach()
                if self.restarts == 1:
                    best_x = x_adv
                    continue
                # keep, per example, the final perturbation with the highest objective
                with torch.no_grad():
                    z = self._forward(x_adv, report)
                obj, succ = self._objective(z, ctx), self._success(z, ctx)
                if best_x is None or best_obj is None or best_succ is None:
                    best_x, best_obj, best_succ = x_adv, obj, succ
                else:
                    better = obj >= best_obj
                    best_x = torch.where(_bview(better, nd), x_adv, best_x)
                    best_obj = torch.where(better, obj, best_obj)
                    best_succ = torch.where(better, succ, best_succ)
        assert best_x is not None
        report.objective, report.success = best_obj, best_succ
        self._final_checks(x, best_x, ctx, report, level)
        return best_x

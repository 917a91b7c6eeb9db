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

from ncscope.attacks.gradient import GradientAttack, GradientCall
from ncscope.attacks.inputs import check_class_range
from ncscope.attacks.sampling import randint, uniform_l2_ball, uniform_linf
from ncscope.attacks.threat import threat_model
from ncscope.validation import check_bool, check_choice, check_int

__all__ = ["LOSSES", "PGD", "TARGET_RULES"]

TARGET_RULES: tuple[str, ...] = ("next", "random", "least_likely")
LOSSES: tuple[str, ...] = ("ce", "cw")


class PGD(GradientAttack):
    """Projected Gradient Descent (Madry et al., ICLR 2018), l_inf or l2, with restarts.

    Threat model: white box; pixel space [0, 1]; ``||x_adv - x||_inf <= eps`` (``norm="linf"``)
    or ``||x_adv - x||_2 <= eps`` (``norm="l2"``). The model owns its normalisation.

    Paper defaults (Su et al. 2024), the defaults here (:mod:`~ncscope.attacks.threat`): l_inf
    ``eps=8/255, alpha=2/255, steps=10``, one random start; l2 ``eps=128/255, alpha=15/255,
    steps=10``; targeted attack to ``(y + 1) mod K``.

    Args:
        model: classifier returning logits ``(B, K)``; K is read from the logits.
        eps: radius of the ball (pixel units; l_inf in [0, 1]). ``None``: the norm's default
            (8/255 for l_inf, 128/255 for l2).
        alpha: step size (> 0). l_inf: ``x + alpha * sign(g)``; l2: ``x + alpha * g/||g||``.
            ``None``: the threat-model rule, ``eps / 4`` (l_inf) or ``eps * 15/128`` (l2).
        steps: number of gradient steps (>= 1; ``None``: the table's 10).
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
            :class:`~ncscope.attacks.gradient.GradientAttack`); default ``False``: the model
            itself.
        paper_exact: with one restart, still run the final selection forward of the paper's
            ``attack_pgd`` (Rice et al. 2020; Su et al. 2024's code): the result is the same,
            but in train mode BatchNorm then sees ``steps + 1`` adversarial batches per call,
            as in the reference (default ``False``: ``steps`` batches, one forward saved).

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
    #: whose step rule fills ``alpha=None`` (:func:`~ncscope.attacks.threat.default_alpha`)
    step_rule: ClassVar[str] = "pgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
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
        paper_exact: bool = False,
    ) -> None:
        super().__init__(model, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks, fast=fast)
        owner = self.name
        self.selection_forward = check_bool(owner, "paper_exact", paper_exact)
        tm = threat_model(norm, eps, alpha, steps, self.step_rule, owner=owner)
        self.norm, self.eps, self.alpha, self.steps = tm.norm, tm.eps, tm.alpha, tm.steps
        self.random_start = check_bool(owner, "random_start", random_start)
        self.restarts = check_int(owner, "restarts", restarts, 1)
        self.targeted = check_bool(owner, "targeted", targeted)
        self.target_rule = check_choice(owner, "target_rule", target_rule, (*TARGET_RULES, None))
        self.early_stop = check_bool(owner, "early_stop", early_stop)
        self.loss = check_choice(owner, "loss", loss, LOSSES)

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
            "paper_exact": self.selection_forward,
        }

    # ---- hooks of the gradient loop ------------------------------------------------------

    def prepare(self, call: GradientCall) -> None:
        """Targets that need no forward pass are set at the first one (:meth:`on_first_logits`);
        the least-likely rule needs the clean logits first (an auxiliary forward inside the
        step would clobber buffers that a train-mode graph still holds)."""
        if self.targeted and call.target is None:
            if self.target_rule is None:
                raise ValueError(f"{self.name}: targeted attack without targets: pass "
                                 "target=... or set target_rule to 'next', 'random' or "
                                 "'least_likely'")
            if self.target_rule == "least_likely":
                self._set_classes(call, self._aux_forward(call.x, call.report))

    def start(self, call: GradientCall) -> Tensor:
        """Uniform in the l_inf ball, or a Gaussian direction at radius ``U(0, 1) * eps`` (l2),
        clipped to [0, 1] (torchattacks' draws); the clean images without random start."""
        if not self.random_start:
            return call.x.clone()
        if self.norm == "linf":
            return uniform_linf(call.x, self.eps, call.gen)
        return uniform_l2_ball(call.x, self.eps, call.gen)

    def on_first_logits(self, call: GradientCall, logits: Tensor) -> None:
        """Label range and targets, once K (the width of the logits) is known."""
        if call.onehot is None:
            self._set_classes(call, logits)

    def objective(self, logits: Tensor, call: GradientCall) -> tuple[Tensor, Tensor | None]:
        """The mean cross-entropy, exactly as the reference codes (``F.cross_entropy``, negated
        when targeted — same float path as torchattacks and Rice et al., hence bit-identical
        gradients), or the CW margin via its closed-form logit gradient."""
        assert call.cls is not None and call.onehot is not None
        if self.loss == "ce":
            ce = F.cross_entropy(logits, call.cls)
            return (-ce if self.targeted else ce), None
        z = logits.detach().float()
        other = z.masked_fill(call.onehot.bool(), float("-inf")).argmax(dim=1)
        g = F.one_hot(other, logits.shape[1]).to(call.onehot.dtype) - call.onehot
        if self.targeted:
            g.neg_()
        return logits, g.to(logits.dtype)

    def score(self, logits: Tensor, call: GradientCall) -> Tensor:
        """Per-example CE (or CW margin) of the true label; minus that of the target when
        targeted."""
        z = logits.detach().float()
        assert call.cls is not None and call.onehot is not None
        if self.loss == "ce":  # same float path as the reference's restart selection
            ce = F.cross_entropy(z, call.cls, reduction="none")
            return -ce if self.targeted else ce
        z_cls = z.gather(1, call.cls[:, None])[:, 0]
        other = z.masked_fill(call.onehot.bool(), float("-inf")).amax(dim=1)
        margin = z_cls - other  # logit margin of cls over the best other class
        return margin if self.targeted else -margin

    def success(self, logits: Tensor, call: GradientCall) -> Tensor:
        """Misclassified (untargeted) or classified as the target (targeted)."""
        pred = logits.detach().argmax(dim=1)
        assert call.cls is not None
        return pred == call.cls if self.targeted else pred != call.cls

    def active(self, logits: Tensor, call: GradientCall) -> Tensor | None:
        """With ``early_stop``: the examples not yet successful; else ``None`` (all)."""
        return ~self.success(logits, call) if self.early_stop else None

    def _set_classes(self, call: GradientCall, logits: Tensor) -> None:
        """Check the labels against K and set the class whose loss is ascended (untargeted) or
        descended (targeted: given targets, or drawn by the target rule)."""
        n_classes = logits.shape[1]
        labels, target = call.labels, call.target
        assert labels is not None
        check_class_range(self.name, labels, n_classes, "labels")
        if not self.targeted:
            call.cls = labels
        else:
            if n_classes < 2:
                raise ValueError(f"{self.name}: a targeted attack needs K >= 2 classes, the "
                                 f"model returns K={n_classes}")
            if target is not None:
                check_class_range(self.name, target, n_classes, "target")
                call.cls = target
            elif self.target_rule == "next":
                call.cls = (labels + 1) % n_classes
            elif self.target_rule == "random":
                shift = randint(n_classes - 1, labels.shape, call.x.device, call.gen) + 1
                call.cls = (labels + shift) % n_classes
            else:  # least_likely: lowest clean logit among the classes != y
                own = F.one_hot(labels, n_classes).bool()
                call.cls = logits.float().masked_fill(own, float("inf")).argmin(dim=1)
        call.onehot = F.one_hot(call.cls, n_classes).to(torch.float32)
        if self.targeted:
            call.report.targets = call.cls

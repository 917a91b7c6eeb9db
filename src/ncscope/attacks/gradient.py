"""The white-box gradient-attack loop, written once (FGSM, PGD, TRADES are its hooks).

Per call: ``prepare`` -> per restart: ``start`` -> ``steps`` x (forward, gradient of the
``objective`` with respect to the input, ``step``) -> per-example selection of the best restart
by ``score`` -> sanity checks of :mod:`ncscope.attacks.sanity` (Croce & Hein, ICML 2020). The
loop is Madry et al.'s PGD (ICLR 2018) in torchattacks' form; subclasses supply the start
point, the loss to ascend and the step, and read like torchattacks' single ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks.base import Attack, AttackReport
from ncscope.attacks.fast import AttackTwin, FastForward
from ncscope.attacks.modes import preserved_buffers
from ncscope.attacks.sampling import gaussian_l2, random_sign
from ncscope.attacks.sanity import check_determinism, check_noise_baseline, check_start_point
from ncscope.attacks.steps import bview, l2_step, linf_bounds, linf_step
from ncscope.models.adapters import logits_of
from ncscope.validation import check_bool

__all__ = ["GradientAttack", "GradientCall"]


@dataclass
class GradientCall:
    """State of one call of a gradient attack, handed to every hook.

    ``x``: clean images (validated, detached); ``labels`` / ``target``: validated class tensors
    or ``None``; ``report``: the call's :class:`~ncscope.attacks.base.AttackReport`; ``level``:
    the check level of this call; ``gen``: the generator to draw from (``None``: global RNG);
    ``lo`` / ``hi``: the l_inf ball intersected with [0, 1] (l_inf attacks). Attack-specific
    state: ``cls`` / ``onehot`` (PGD: the class whose loss is ascended or, targeted, descended),
    ``clean_probs`` / ``clean_pred`` (TRADES: the clean prediction), ``delta`` (TRADES l2: the
    perturbation, kept apart from ``x + delta`` as the official code does).
    """

    x: Tensor
    labels: Tensor | None
    target: Tensor | None
    report: AttackReport
    level: str
    gen: torch.Generator | None = None
    lo: Tensor | None = None
    hi: Tensor | None = None
    cls: Tensor | None = None
    onehot: Tensor | None = None
    clean_probs: Tensor | None = None
    clean_pred: Tensor | None = None
    delta: Tensor | None = None


class GradientAttack(Attack):
    """Base of white-box gradient attacks (FGSM, PGD, TRADES): the loop and its checks.

    Hooks (public, overridden by subclasses): :meth:`start` (required), :meth:`objective` (the
    loss to ascend, required), :meth:`score` and :meth:`success` (per-example value and success
    flag, required), :meth:`step` (default: the projected l_inf / l2 step of PGD),
    :meth:`prepare` and :meth:`on_first_logits` (per-call preparation, e.g. PGD's targets),
    :meth:`active` (early stopping; default: every example moves).

    ``fast=True`` (``model_mode="eval"`` only) is an opt-in wrapper
    (:class:`~ncscope.attacks.fast.FastForward`): the passes run on the model's
    :class:`~ncscope.attacks.fast.AttackTwin` (eval-mode BatchNorm folded into the preceding
    layer), the same function up to float rounding, checked against the model on the batch after
    every (re)build and on fully checked calls. The default ``fast=False`` runs the model itself
    and reproduces torchattacks and the reference codes bit for bit. The loop only ever calls
    :attr:`forward_model`, the model or its twin.
    """

    eps: float
    alpha: float
    norm: str
    steps: int
    #: independent starts; per example the one with the highest final :meth:`score` is kept
    restarts: int = 1
    #: whether success flags are the attack's goal (compared with the noise baseline's)
    success_driven: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, model_mode: str = "eval", seed: int | None = None,
                 generator: torch.Generator | None = None, checks: str = "first",
                 fast: bool = False) -> None:
        super().__init__(model, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks)
        self.fast = check_bool(self.name, "fast", fast)
        if self.fast and self.model_mode != "eval":
            raise ValueError(f"{self.name}: fast=True needs model_mode='eval' (it folds "
                             "BatchNorm with its running statistics); use fast=False for "
                             "train-mode attacks")
        self._fast_path = FastForward(self.name) if self.fast else None
        #: what the passes call: the model, or (``fast=True``) its attack twin
        self.forward_model: nn.Module | AttackTwin | None = model
        #: Run the per-restart selection forward even with one restart (PGD's paper_exact).
        self.selection_forward = False

    def settings(self) -> dict[str, Any]:
        """Name and every hyper-parameter (``fast`` included), JSON-serialisable."""
        out = super().settings()
        out["fast"] = self.fast
        return out

    def _ball(self) -> tuple[str, str, float] | None:
        return ("eps", self.norm, self.eps)

    def _setup(self, x: Tensor, report: AttackReport, level: str) -> None:
        assert self.model is not None
        path = self._fast_path
        self.forward_model = (self.model if path is None
                              else path.module(self.model, x, report, full_check=level == "full"))

    # ---- hooks ------------------------------------------------------------------------------

    def prepare(self, call: GradientCall) -> None:
        """Per-call preparation before the first start (default: nothing)."""

    def start(self, call: GradientCall) -> Tensor:
        """The start point of a restart (a new tensor, not ``call.x`` itself)."""
        raise NotImplementedError

    def on_first_logits(self, call: GradientCall, logits: Tensor) -> None:
        """Called once per call with the (detached) logits of the first forward pass, when the
        number of classes K is known (default: nothing)."""

    def objective(self, logits: Tensor, call: GradientCall) -> tuple[Tensor, Tensor | None]:
        """The loss to ascend, as ``(outputs, grad_outputs)`` for the input gradient: a scalar
        loss and ``None``, or the logits and the loss's gradient with respect to them."""
        raise NotImplementedError

    def score(self, logits: Tensor, call: GradientCall) -> Tensor:
        """Per-example value of the objective (restart selection, reports, noise baseline)."""
        raise NotImplementedError

    def success(self, logits: Tensor, call: GradientCall) -> Tensor:
        """Per-example success flags (misclassified / classified as the target)."""
        raise NotImplementedError

    def active(self, logits: Tensor, call: GradientCall) -> Tensor | None:
        """Examples still to be moved at this step (``None``: all; default)."""
        return None

    def step(self, call: GradientCall, x_adv: Tensor, grad: Tensor) -> Tensor:
        """One projected step: ``x + alpha * sign(g)`` (l_inf) or ``x + alpha * g/||g||``
        (l2), then the projection onto the ball and the clip to [0, 1] (Madry et al. 2018)."""
        if self.norm == "linf":
            assert call.lo is not None and call.hi is not None
            return linf_step(x_adv, grad, self.alpha, call.lo, call.hi)
        return l2_step(call.x, x_adv, grad, self.alpha, self.eps)

    # ---- the loop ---------------------------------------------------------------------------

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        call = GradientCall(x, labels, target, report, level, gen=self._rng(x.device))
        if self.norm == "linf":
            call.lo, call.hi = linf_bounds(x, self.eps)
        self.prepare(call)
        nd = x.ndim
        best_x: Tensor | None = None
        best_obj: Tensor | None = None
        best_succ: Tensor | None = None
        with torch.enable_grad():
            for restart in range(self.restarts):
                x_adv = self.start(call)
                for step in range(self.steps):
                    x_adv.requires_grad_(True)
                    logits = self._forward(x_adv, report)
                    z = logits.detach()
                    if restart == 0 and step == 0:
                        self.on_first_logits(call, z)
                    active = self.active(z, call)
                    if active is not None and not bool(active.any()):
                        break
                    g = self._input_grad(x_adv, *self.objective(logits, call), report)
                    del logits
                    if restart == 0 and step == 0:
                        self._start_checks(x_adv.detach(), z, g, report, level)
                    new = self.step(call, x_adv, g)
                    if active is not None:
                        new = torch.where(bview(active, nd), new, x_adv.detach())
                    x_adv = new
                x_adv = x_adv.detach().clamp_(0.0, 1.0)  # (a no-op where the step clipped)
                if self.restarts == 1 and not self.selection_forward:
                    best_x = x_adv
                    continue
                # keep, per example, the final perturbation with the highest objective
                with torch.no_grad():
                    z = self._forward(x_adv, report)
                obj, succ = self.score(z, call), self.success(z, call)
                if best_x is None or best_obj is None or best_succ is None:
                    best_x, best_obj, best_succ = x_adv, obj, succ
                else:
                    better = obj >= best_obj
                    best_x = torch.where(bview(better, nd), x_adv, best_x)
                    best_obj = torch.where(better, obj, best_obj)
                    best_succ = torch.where(better, succ, best_succ)
        assert best_x is not None
        report.objective, report.success = best_obj, best_succ
        self._final_checks(call, best_x)
        return best_x

    # ---- model passes -----------------------------------------------------------------------

    def _forward(self, x: Tensor, report: AttackReport) -> Tensor:
        assert self.forward_model is not None
        try:
            out = logits_of(self.forward_model(x))
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise TypeError(f"{self.name}: the model must return logits of shape (B, K), got "
                            f"{tuple(out.shape)}; pass output=<function output -> logits> "
                            "to analyze/sweep, or wrap the model")
        report.forwards += 1
        return out

    def _aux_forward(self, x: Tensor, report: AttackReport) -> Tensor:
        """Forward pass without gradient and without side effects on buffers."""
        assert self.model is not None
        with torch.no_grad(), preserved_buffers(self.model):
            return self._forward(x, report)

    def _input_grad(self, x: Tensor, outputs: Tensor, grad_outputs: Tensor | None,
                    report: AttackReport) -> Tensor:
        """Gradient with respect to the input only (``torch.autograd.grad``; parameters are
        frozen, so no parameter gradient is formed or stored)."""
        report.backwards += 1
        if not outputs.requires_grad:  # the model cut the graph: report, do not crash
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(outputs, x, grad_outputs=grad_outputs, allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    # ---- sanity checks (Croce & Hein 2020) ---------------------------------------------------

    def _start_checks(self, x0: Tensor, logits0: Tensor, grad0: Tensor, report: AttackReport,
                      level: str) -> None:
        """Checks at the start point (first step of the first restart)."""
        if level == "off":
            return
        report.zero_grad_fraction, found = check_start_point(logits0, grad0)
        report.warnings.extend(found)
        if level == "full":
            msg = check_determinism(logits0, self._aux_forward(x0, report))
            if msg:
                report.warnings.append(msg)

    def _final_checks(self, call: GradientCall, x_adv: Tensor) -> None:
        """Objective/success at the output and the random-noise baseline of the same size."""
        report, x = call.report, call.x
        if call.level != "full":
            return
        if report.objective is None or report.success is None:
            logits = self._aux_forward(x_adv, report)
            report.objective = self.score(logits, call)
            report.success = self.success(logits, call)
        gen = self._check_rng(x.device)
        if self.norm == "linf":
            noise, what = random_sign(x, self.eps, gen), "random-sign (l_inf corner)"
        else:
            noise, what = gaussian_l2(x, self.eps, gen), "Gaussian l2-sphere"
        logits_n = self._aux_forward(noise, report)
        by_success = self.success_driven
        msg = check_noise_baseline(report.objective, self.score(logits_n, call),
                                   report.success if by_success else None,
                                   self.success(logits_n, call) if by_success else None, what)
        if msg:
            report.warnings.append(msg)

"""Gradient-masking sanity flags, in the spirit of AutoAttack's runtime checks.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (``autoattack/checks.py``) flag evaluations that are likely
to over-estimate robustness. ncscope runs the same kind of checks while it attacks and reports
what it finds in ``attack.last_report.warnings`` (and through :mod:`warnings` with the category
:class:`AttackSanityWarning`), never silently:

* **zero gradient at the start point** — the input gradient of the attack objective is exactly
  zero for some examples, so a gradient attack cannot move them (saturated softmax, a
  non-differentiable layer, ``detach`` inside the model, ...);
* **non-deterministic outputs** — two forward passes on the same input give different logits
  (dropout active, a randomised defence): gradients are then those of a random function and
  Expectation-over-Transformation would be needed;
* **worse than random noise** — a random perturbation of the same size reaches a higher attack
  objective (or fools the model) on examples where the attack does not, a classic symptom of
  gradient masking;
* **non-finite values** — NaN/inf in the logits or the input gradient.

The helpers below are pure functions on tensors, and they are the ones the gradient attacks run
(:class:`~ncscope.attacks.gradient.GradientAttack`: :func:`check_start_point` at the start
point, :func:`check_determinism` and :func:`check_noise_baseline` on fully checked calls);
:func:`audit` runs an attack once with every check switched on and returns its report. This
module imports no other attack module at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ncscope.attacks.base import Attack, AttackReport

__all__ = [
    "AttackSanityWarning",
    "audit",
    "check_determinism",
    "check_noise_baseline",
    "check_nonfinite",
    "check_start_point",
    "check_zero_gradients",
    "nonfinite_message",
    "zero_gradient_mask",
    "zero_gradient_message",
]


class AttackSanityWarning(UserWarning):
    """Warning category for gradient-masking flags (Croce & Hein 2020 style sanity checks).

    Filter it like any warning, e.g. ``warnings.simplefilter("error", AttackSanityWarning)`` to
    turn every flag into an exception in a strict evaluation script.
    """


def gradient_row_max(grad: Tensor) -> Tensor:
    """Per-example ``max |grad|`` of a ``(B, ...)`` gradient: 0 for an all-zero row, NaN/inf
    where the row holds NaN/inf."""
    return grad.detach().flatten(1).abs().amax(dim=1)


def zero_gradient_mask(grad: Tensor) -> Tensor:
    """Per-example flag: ``True`` where the whole input gradient is exactly zero.

    ``grad`` has shape ``(B, ...)``; the result has shape ``(B,)`` (bool).
    """
    return gradient_row_max(grad) == 0


def zero_gradient_message(n_zero: int, n: int, where: str = "at the start point") -> str:
    """The zero-gradient flag's text."""
    return (
        f"zero input gradient {where} for {n_zero}/{n} examples: a gradient attack cannot move "
        "them (saturated softmax, detach or a non-differentiable layer in the model; possible "
        "gradient masking)"
    )


def nonfinite_message(n_bad: int, n: int, what: str) -> str:
    """The non-finite flag's text."""
    return f"non-finite values (NaN/inf) in the {what} for {n_bad}/{n} examples"


def check_zero_gradients(grad: Tensor, where: str = "at the start point") -> str | None:
    """Return a warning if some examples have an all-zero input gradient (AutoAttack's
    ``check_zero_gradients``), else ``None``."""
    if grad.shape[0] == 0:
        return None
    n_zero = int(zero_gradient_mask(grad).sum())
    return zero_gradient_message(n_zero, grad.shape[0], where) if n_zero else None


def check_nonfinite(tensor: Tensor, what: str) -> str | None:
    """Return a warning if ``tensor`` contains NaN or inf, else ``None``."""
    bad = ~torch.isfinite(tensor.detach())
    if not bool(bad.any()):
        return None
    n_bad = int(bad.flatten(1).any(dim=1).sum()) if tensor.ndim > 1 else int(bad.sum())
    return nonfinite_message(n_bad, tensor.shape[0], what)


def check_start_point(logits: Tensor, grad: Tensor) -> tuple[float, list[str]]:
    """The free checks at an attack's start point, fused into one pass and one host sync:
    non-finite logits, non-finite input gradients, all-zero input gradients (in this order).

    Returns the share of examples with an all-zero gradient and the warnings (empty if none).
    Equivalent to :func:`check_nonfinite` on both tensors and :func:`check_zero_gradients`.
    """
    n = grad.shape[0]
    gmax = gradient_row_max(grad)
    n_zero, n_bad_grad, n_bad_logits = torch.stack([
        (gmax == 0).sum(),
        (~torch.isfinite(gmax)).sum(),
        (~torch.isfinite(logits.detach()).all(dim=1)).sum(),
    ]).tolist()
    found = []
    if n_bad_logits:
        found.append(nonfinite_message(n_bad_logits, n, "logits"))
    if n_bad_grad:
        found.append(nonfinite_message(n_bad_grad, n, "input gradient"))
    if n_zero:
        found.append(zero_gradient_message(n_zero, n))
    return n_zero / n, found


def check_determinism(logits_a: Tensor, logits_b: Tensor, rtol: float = 1e-4) -> str | None:
    """Compare two forward passes on the same input; warn if they differ (randomised model).

    The tolerance is relative to the logit scale, so that benign floating-point
    non-determinism of GPU kernels is not reported.
    """
    a = logits_a.detach().float()
    b = logits_b.detach().float()
    scale = 1.0 + float(a.abs().amax()) if a.numel() else 1.0
    diff = (a - b).abs()
    if a.numel() == 0 or float(diff.amax()) <= rtol * scale:
        return None
    n_diff = int((diff.amax(dim=1) > rtol * scale).sum())
    return (
        f"non-deterministic model outputs: two forward passes on the same input differ for "
        f"{n_diff}/{a.shape[0]} examples (max |diff| {float(diff.amax()):.3g}); dropout active or "
        "a randomised defence: gradients are unreliable, consider model_mode='eval' or EOT"
    )


def check_noise_baseline(
    objective_attack: Tensor,
    objective_noise: Tensor,
    success_attack: Tensor | None = None,
    success_noise: Tensor | None = None,
    noise: str = "random noise",
) -> str | None:
    """Warn when a random perturbation of the same size does better than the attack.

    ``objective_*`` are per-example values of the quantity the attack maximises; ``success_*``
    optional per-example success flags. Flagged (symptoms of gradient masking, or of far too few
    steps / too small a step size):

    * the noise reaches a higher *mean* objective than the attack;
    * the noise succeeds (misclassifies / hits the target) on an example where the attack fails
      — as AutoAttack flags Square finding points the white-box attacks missed.

    A few examples where the noise gets a higher objective but the same outcome are normal for
    a local attack and are only mentioned in the message when a flag is raised.
    """
    oa = objective_attack.detach().double()
    on = objective_noise.detach().double()
    n = oa.shape[0]
    if n == 0:
        return None
    parts = []
    mean_a, mean_n = float(oa.mean()), float(on.mean())
    if mean_n > mean_a + 1e-6 * (1.0 + abs(mean_a)):
        n_worse = int((on > oa + 1e-6 * (1.0 + oa.abs())).sum())
        parts.append(f"a higher mean objective ({mean_n:.4g} vs {mean_a:.4g}; higher on "
                     f"{n_worse}/{n} examples)")
    if success_attack is not None and success_noise is not None:
        n_fooled = int((success_noise & ~success_attack).sum())
        if n_fooled:
            parts.append(f"success on {n_fooled}/{n} examples where the attack fails")
    if not parts:
        return None
    return (
        f"attack does worse than the {noise} baseline of the same size: the noise reaches "
        + " and ".join(parts)
        + " (possible gradient masking, or too few steps / too small a step size)"
    )


def audit(
    attack: Attack, images: Tensor, labels: Tensor | None = None, target: Tensor | None = None
) -> AttackReport:
    """Run ``attack`` once on a batch with every sanity check on and return its report.

    The attack's own ``checks`` level is restored afterwards. Use it on one representative
    batch before a long evaluation, as AutoAttack does with its first batch.
    """
    saved = attack.checks
    attack.checks = "full"
    try:
        attack(images, labels, target=target)
    finally:
        attack.checks = saved
    assert attack.last_report is not None
    return attack.last_report

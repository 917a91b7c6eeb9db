"""Threat models: the one table of default radii, step sizes and step counts.

Every attack works in pixel space [0, 1] and keeps its output in the ball
``||x_adv - x||_p <= eps`` (p = inf or 2). When ``eps``, ``alpha`` or ``steps`` is not given,
it comes from this table (:data:`THREAT_DEFAULTS`, read through :func:`threat_model`):

========  ===========  ==========================  ================================  =====
norm      default eps  PGD step ``alpha``          TRADES step ``alpha``             steps
========  ===========  ==========================  ================================  =====
``linf``  8/255        ``eps / 4``  (2/255)        ``eps / 4``  (2/255)              10
``l2``    128/255      ``eps * 15/128``  (15/255)  ``2 * eps / steps``  (25.6/255)   10
========  ===========  ==========================  ================================  =====

(values in brackets: at the default eps and steps). FGSM is one step of size ``eps``
(Goodfellow et al., ICLR 2015).

Sources:

* l_inf PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
  ICLR 2018, and Su, Zhang, Tsilivis, Kempe, "On the Robustness of Neural Collapse and the Neural
  Collapse of Robustness", TMLR 2024 (experimental setup: eps = 8/255, step 2/255, 10 steps,
  i.e. ``alpha = eps / 4``);
* l2 PGD: Su et al. 2024, experimental setup (eps = 128/255, step 15/255, 10 steps), expressed
  as the rule ``alpha = eps * 15/128`` so that other radii keep the same step-to-radius ratio;
* TRADES inner maximisation: Zhang et al., "Theoretically Principled Trade-off between
  Robustness and Accuracy", ICML 2019, official code: l_inf step 0.007 at eps 0.031
  (about ``eps / 4``: the PGD rule is used), l2 ``SGD(lr=epsilon / perturb_steps * 2)`` on the
  perturbation with normalised gradients, i.e. ``alpha = 2 * eps / steps``.

Validation: l_inf radii must lie in [0, 1] (a warning above 0.5: the ball then holds almost the
whole image box), and ``eps=8`` is an error that suggests ``8/255``; steps are > 0. An l2 radius
can only be judged against the input: :func:`check_radius` (run by every attack call) refuses
one larger than the diameter ``sqrt(d)`` of the box [0, 1]^d of a ``d``-pixel example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ncscope.validation import NORMS, check_choice, check_int, check_norm, check_real, warn_user

__all__ = [
    "NORMS",
    "THREAT_ATTACKS",
    "THREAT_DEFAULTS",
    "ThreatModel",
    "check_eps",
    "check_radius",
    "default_alpha",
    "threat_model",
]

#: Attacks whose step rule the table knows.
THREAT_ATTACKS: tuple[str, ...] = ("pgd", "trades", "fgsm")
#: l_inf radii above this are legal but suspicious (warned about).
LINF_WARN_ABOVE = 0.5


def _pgd_linf(eps: float, steps: int) -> float:
    return eps / 4


def _pgd_l2(eps: float, steps: int) -> float:
    return eps * 15 / 128


def _trades_l2(eps: float, steps: int) -> float:
    return 2 * eps / steps


def _fgsm(eps: float, steps: int) -> float:
    return eps


#: norm -> default eps, default steps, and attack -> step rule ``(eps, steps) -> alpha``.
THREAT_DEFAULTS: dict[str, dict] = {
    "linf": {"eps": 8 / 255, "steps": 10,
             "alpha": {"pgd": _pgd_linf, "trades": _pgd_linf, "fgsm": _fgsm}},
    "l2": {"eps": 128 / 255, "steps": 10,
           "alpha": {"pgd": _pgd_l2, "trades": _trades_l2, "fgsm": _fgsm}},
}


@dataclass(frozen=True)
class ThreatModel:
    """A complete threat model: ``||x_adv - x||_norm <= eps`` reached by ``steps`` steps of size
    ``alpha`` (pixel units). Build it with :func:`threat_model` to fill the defaults."""

    norm: str
    eps: float
    alpha: float
    steps: int


def default_alpha(eps: float, norm: str = "linf", attack: str = "pgd", steps: int = 10) -> float:
    """The table's step size for ``attack`` ("pgd" | "trades" | "fgsm") at radius ``eps``.

    ``default_alpha(8/255) == 2/255``, ``default_alpha(128/255, "l2") == 15/255`` and
    ``default_alpha(128/255, "l2", "trades", 10) == 2 * (128/255) / 10``. Pure rule: ``eps=0``
    gives 0 (:func:`threat_model` turns that into a positive step).
    """
    key = check_norm("default_alpha", norm)
    kind = check_choice("default_alpha", "attack", attack, THREAT_ATTACKS)
    eps = check_real("default_alpha", "eps", eps, 0.0)
    steps = check_int("default_alpha", "steps", steps, 1)
    return THREAT_DEFAULTS[key]["alpha"][kind](eps, steps)


def check_eps(owner: str, eps: object, norm: str | None, name: str = "eps") -> float:
    """Validate a radius (or noise scale) for ``norm``: finite and >= 0; for ``"linf"`` also
    <= 1 (pixel units: an ``eps`` such as 8 is an error suggesting ``8/255``) and warned about
    above 0.5. l2 radii are checked against the input at call time (:func:`check_radius`)."""
    out = check_real(owner, name, eps, 0.0, hint=" (pixel units, e.g. 8/255)")
    if norm == "linf" and out > 1.0:
        fix = f"; did you mean {out:g}/255?" if out <= 255 else "; images are in [0, 1]"
        raise ValueError(f"{owner}: {name} must be in [0, 1] for the l_inf norm (pixel "
                         f"units), got {out:g}{fix}")
    if norm == "linf" and out > LINF_WARN_ABOVE:
        warn_user(f"{owner}: l_inf {name}={out:g} exceeds {LINF_WARN_ABOVE:g}: the ball covers "
                  f"most of the image box [0, 1] (the usual radius is 8/255 = 0.0314)")
    return out


def check_radius(owner: str, eps: float, norm: str, images: Tensor, name: str = "eps") -> None:
    """At call time: an l2 radius must not exceed the diameter ``sqrt(d)`` of the image box
    [0, 1]^d (``d`` = numbers per example), beyond which the ball constrains nothing."""
    if norm != "l2":
        return
    d = math.prod(images.shape[1:])
    diameter = math.sqrt(d)
    if eps > diameter:
        fix = (f"; did you mean {eps:g}/255 = {eps / 255:.4g}?" if eps / 255 <= diameter
               else "")
        raise ValueError(f"{owner}: l2 {name}={eps:g} exceeds the diameter sqrt({d}) = "
                         f"{diameter:.4g} of the image box [0, 1]^{d} (pixel units){fix}")


def threat_model(norm: str, eps: float | None = None, alpha: float | None = None,
                 steps: int | None = None, attack: str = "pgd", *,
                 owner: str = "threat_model") -> ThreatModel:
    """The :class:`ThreatModel` for ``norm`` with every ``None`` filled from the table.

    ``alpha=None`` follows ``attack``'s step rule at the resolved ``eps`` and ``steps``; at
    ``eps = 0`` (nothing can move) it becomes 1.0, any positive step giving the same unchanged
    output. Explicit values are validated (``eps``: see :func:`check_eps`; ``alpha > 0``;
    ``steps >= 1``) with one-line messages naming ``owner``.
    """
    key = check_norm(owner, norm)
    kind = check_choice(owner, "attack", attack, THREAT_ATTACKS)
    row = THREAT_DEFAULTS[key]
    eps_out = row["eps"] if eps is None else check_eps(owner, eps, key)
    if steps is None:
        steps_out = 1 if kind == "fgsm" else row["steps"]
    else:
        steps_out = check_int(owner, "steps", steps, 1)
    if alpha is None:
        alpha_out = row["alpha"][kind](eps_out, steps_out)
        if alpha_out == 0.0:
            alpha_out = 1.0
    else:
        alpha_out = check_real(owner, "alpha", alpha, 0.0, strict_low=True,
                               hint=" (step size in pixel units, e.g. 2/255)")
    return ThreatModel(norm=key, eps=eps_out, alpha=alpha_out, steps=steps_out)

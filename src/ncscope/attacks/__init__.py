"""Adversarial attacks and random-noise baselines in pixel space [0, 1].

One module per family:

* :mod:`~ncscope.attacks.fgsm` — :class:`FGSM` (Goodfellow et al., ICLR 2015);
* :mod:`~ncscope.attacks.pgd` — :class:`PGD`, l_inf / l2, restarts, targeted (Madry et al.,
  ICLR 2018; protocol of Su et al., TMLR 2024);
* :mod:`~ncscope.attacks.trades` — :class:`TRADES` inner maximisation (Zhang et al., ICML 2019);
* :mod:`~ncscope.attacks.noise` — :class:`GaussianNoise`, :class:`GaussianL2`,
  :class:`RandomSign`, :class:`UniformLinf` (the noise controls of Su et al. 2024);
* :mod:`~ncscope.attacks.autoattack` — :class:`AutoAttackSource`, AutoAttack (Croce & Hein,
  ICML 2020) through the optional ``pyautoattack`` package, the robust-accuracy reference;
* :mod:`~ncscope.attacks.sanity` — gradient-masking flags (Croce & Hein, ICML 2020) and
  :func:`audit`;
* :mod:`~ncscope.attacks.fast` — :class:`AttackTwin`, what gradient attacks run with
  ``fast=True`` (eval-mode BatchNorm folded into the preceding layer).

and the shared machinery, one idea per module: :mod:`~ncscope.attacks.threat` (the table of
default radii, steps and step rules: :func:`threat_model`, :func:`default_alpha`),
:mod:`~ncscope.attacks.base` (:class:`Attack`, :class:`AttackReport`: the call protocol),
:mod:`~ncscope.attacks.gradient` (:class:`GradientAttack`: the gradient loop, once),
:mod:`~ncscope.attacks.inputs` (image/label validation), :mod:`~ncscope.attacks.modes` (model
mode and buffers), :mod:`~ncscope.attacks.sampling` (random draws), :mod:`~ncscope.attacks.steps`
(projected steps), :mod:`~ncscope.attacks.fold` (BatchNorm folding). Argument checks come from
:mod:`ncscope.validation`.

Every class shares the call shape ``atk(images, labels, target=None) -> perturbed images``,
``atk.settings()`` (JSON-serialisable dict) and ``atk.last_report``. Models own their
normalisation; attacks never see mean/std. From the rest of ncscope this package imports only
:mod:`ncscope.validation`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ncscope.attacks.autoattack import AutoAttackReport, AutoAttackSource, autoattack_installed
from ncscope.attacks.base import CHECK_LEVELS, Attack, AttackReport
from ncscope.attacks.fast import AttackTwin, twin_for
from ncscope.attacks.fgsm import FGSM
from ncscope.attacks.gradient import GradientAttack
from ncscope.attacks.modes import MODEL_MODES, model_state, preserved_buffers
from ncscope.attacks.noise import GaussianL2, GaussianNoise, NoiseSource, RandomSign, UniformLinf
from ncscope.attacks.pgd import LOSSES, PGD, TARGET_RULES
from ncscope.attacks.sanity import AttackSanityWarning, audit
from ncscope.attacks.threat import (
    NORMS,
    THREAT_DEFAULTS,
    ThreatModel,
    default_alpha,
    threat_model,
)
from ncscope.attacks.trades import TRADES

#: Registry: ``settings()["name"]`` -> class.
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (FGSM, PGD, TRADES, GaussianNoise, GaussianL2, RandomSign, UniformLinf)
}


def make_attack(spec: str | dict[str, Any], model: nn.Module | None = None,
                **overrides: Any) -> Attack:
    """Build an attack from its name or from a ``settings()`` dict (round trip).

    ``make_attack(atk.settings(), model)`` rebuilds an equivalent attack (a user generator is
    not serialisable: such settings come back with the global RNG unless ``generator=`` is
    passed in ``overrides``). Example: ``make_attack("PGD", model, eps=8/255, norm="linf")``.
    """
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        kwargs.pop("generator", None)
    else:
        raise TypeError(f"make_attack: spec must be a name or a settings dict, got "
                        f"{type(spec).__name__}")
    cls = ATTACKS.get(name) if isinstance(name, str) else None
    if cls is None:
        valid = ", ".join(sorted(ATTACKS))
        raise ValueError(f"make_attack: unknown attack {name!r}; valid names are {valid}")
    kwargs.update(overrides)
    if cls is FGSM:
        kwargs.pop("norm", None)
    return cls(model, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "ATTACKS",
    "CHECK_LEVELS",
    "FGSM",
    "LOSSES",
    "MODEL_MODES",
    "NORMS",
    "PGD",
    "TARGET_RULES",
    "THREAT_DEFAULTS",
    "TRADES",
    "Attack",
    "AttackReport",
    "AttackSanityWarning",
    "AttackTwin",
    "AutoAttackReport",
    "AutoAttackSource",
    "autoattack_installed",
    "GaussianL2",
    "GaussianNoise",
    "GradientAttack",
    "NoiseSource",
    "RandomSign",
    "ThreatModel",
    "UniformLinf",
    "audit",
    "default_alpha",
    "make_attack",
    "model_state",
    "preserved_buffers",
    "threat_model",
    "twin_for",
]

"""AutoAttack as a perturbation source and as the robust-accuracy reference.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. The standard version runs, on the examples still classified
correctly after the previous component: untargeted APGD on the cross-entropy, targeted APGD on
the DLR loss (9 target classes), targeted FAB (9 target classes) and the Square attack (5000
queries). The authors' implementation is used as packaged by ``pyautoattack`` on PyPI (an
optional dependency: ``pip install 'ncscope[autoattack]'``), imported when a source is built.

Threat model: white box, pixel space [0, 1], ``||x_adv - x||_p <= eps`` (``p`` = inf or 2).
An example AutoAttack cannot fool is returned unchanged; a fooled one carries the perturbation
of the component that fooled it first, so the output is a perturbation source like any
ncscope attack (``src(x, y) -> x'``), and the share of its outputs still classified correctly is
AutoAttack's robust accuracy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks.base import Attack, AttackReport
from ncscope.attacks.steps import l2_project, linf_bounds
from ncscope.attacks.threat import THREAT_DEFAULTS, check_eps
from ncscope.models.adapters import logits_of
from ncscope.validation import check_choice, check_int, check_norm

__all__ = ["AA_VERSIONS", "AutoAttackReport", "AutoAttackSource", "autoattack_installed"]

#: AutoAttack versions (Croce & Hein 2020): ``standard`` (APGD-CE, APGD-T, FAB-T, Square),
#: ``plus`` (all six components with restarts), ``rand`` (APGD-CE and APGD-DLR with expectation
#: over transformation, for randomised defences), ``custom`` (the components in ``attacks=``).
AA_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
#: Components that ``attacks=`` may name (``version="custom"``).
AA_COMPONENTS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")

_INSTALL = "pip install 'ncscope[autoattack]'"
_LOGGER = "auto-attack"
_PROGRESS = re.compile(r"^(\S+) - \d+/\d+ - (\d+) out of \d+ successfully perturbed$")


@dataclass
class AutoAttackReport(AttackReport):
    """What one call of :class:`AutoAttackSource` found (``src.last_report``).

    Besides the :class:`~ncscope.attacks.base.AttackReport` fields (``success``: the example is
    misclassified at the output; ``warnings``: AutoAttack's own runtime checks, e.g. a
    randomised or dynamic model, zero gradients, Square beating the gradient attacks;
    ``forwards``/``backwards``: passes through the model):

    ``n_attacked``: examples given to AutoAttack (all, or the first ``n_ex``);
    ``clean_accuracy`` / ``robust_accuracy``: accuracy of the model on them before and after
    the attack (the latter on the returned images: AutoAttack's robust accuracy);
    ``robust_after``: the robust accuracy after each component, in the order they ran (the
    ensemble is cumulative: a component only attacks the examples the previous ones left);
    ``attacks``: the components that ran (AutoAttack stops early once no example is left);
    ``package``: the implementation and its version;
    ``seconds``: wall time of the call.
    """

    n_attacked: int = 0
    clean_accuracy: float | None = None
    robust_accuracy: float | None = None
    robust_after: dict[str, float] = field(default_factory=dict)
    attacks: list[str] = field(default_factory=list)
    package: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(n_attacked=self.n_attacked, clean_accuracy=self.clean_accuracy,
                   robust_accuracy=self.robust_accuracy, robust_after=dict(self.robust_after),
                   attacks=list(self.attacks), package=self.package, seconds=self.seconds)
        return out


def autoattack_installed() -> bool:
    """Whether the optional ``pyautoattack`` package (the authors' implementation) is
    importable."""
    return importlib.util.find_spec("pyautoattack") is not None


def _import_pyautoattack() -> Any:
    try:
        import pyautoattack
    except ImportError:
        raise ImportError(f"AutoAttackSource needs the pyautoattack package: {_INSTALL}") from None
    return pyautoattack


class _Logits(nn.Module):
    """The model as AutoAttack sees it: logits (read by :func:`logits_of`), with the forward
    passes and the backward passes through the logits counted."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = 0
        self.backwards = 0

    def _count_backward(self, grad: Tensor) -> None:
        self.backwards += 1

    def forward(self, x: Tensor) -> Tensor:
        out = logits_of(self.model(x))
        self.forwards += 1
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out


class _Records(logging.Handler):
    """Collects AutoAttack's log records during one call."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _captured_log() -> Iterator[_Records]:
    """Route AutoAttack's logger (progress at DEBUG, runtime checks at WARNING) to a collector
    for the duration of a call: its checks become the report's warnings, its progress lines
    give the per-component counts; the logger's settings are restored afterwards."""
    log = logging.getLogger(_LOGGER)
    handler = _Records()
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


@contextlib.contextmanager
def _private_rng(device: torch.device) -> Iterator[None]:
    """AutoAttack seeds the global torch RNG (CPU and CUDA) before each component; restore both
    afterwards, so that building and calling the source leaves the caller's random stream as it
    was (CUDA states only when CUDA is in use, so a CPU run never initialises it)."""
    cuda = device.type == "cuda" or (torch.cuda.is_available() and torch.cuda.is_initialized())
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        yield


class AutoAttackSource(Attack):
    """AutoAttack (Croce & Hein, ICML 2020) with the ncscope call shape.

    ``src(images, labels) -> perturbed images`` (pixels in [0, 1], batch first; the model owns
    its normalisation), usable as a :func:`ncscope.collapse.sweep` / :func:`ncscope.analyze`
    source; ``src.last_report`` (:class:`AutoAttackReport`) holds the clean and robust accuracy
    of the call, the robust accuracy after each component and AutoAttack's runtime checks
    (also emitted as :class:`~ncscope.attacks.sanity.AttackSanityWarning`). The model is
    attacked in eval mode with its parameters frozen; the global torch RNG is left untouched.

    Args:
        model: classifier returning logits ``(B, K)`` (or an output
            :func:`ncscope.models.logits_of` reads them from).
        eps: radius in pixel units (``None``: the threat-model table, ℓ∞ 8/255, ℓ2 128/255).
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"`` (default; the version robustness is reported with),
            ``"plus"``, ``"rand"``, or ``"custom"`` with ``attacks=``.
        seed: AutoAttack's seed (every call starts from it, as AutoAttack does for every batch).
        n_ex: attack only the first ``n_ex`` examples of each call (the others are returned
            unchanged and left out of the report's accuracies); ``None``: all.
        batch_size: AutoAttack's internal batch size.
        attacks: the components of a ``version="custom"`` run, from ``apgd-ce``, ``apgd-dlr``,
            ``apgd-t``, ``fab``, ``fab-t``, ``square``.
    """

    name: ClassVar[str] = "AutoAttack"

    def __init__(
        self,
        model: nn.Module,
        eps: float | None = None,
        norm: str = "linf",
        version: str = "standard",
        seed: int | None = 0,
        n_ex: int | None = None,
        *,
        batch_size: int = 250,
        attacks: Sequence[str] | None = None,
    ) -> None:
        owner = self.name
        self._package = _import_pyautoattack()
        super().__init__(model, seed=seed, checks="off")
        self.norm = check_norm(owner, norm)
        self.eps = (THREAT_DEFAULTS[self.norm].eps if eps is None
                    else check_eps(owner, eps, self.norm))
        self.version = check_choice(owner, "version", version, AA_VERSIONS)
        if attacks is not None:
            names = [c.replace("-", "_") for c in AA_COMPONENTS]  # check_choice's spelling
            attacks = [check_choice(owner, "attacks", a, names).replace("_", "-")
                       for a in attacks]
            if self.version != "custom" or not attacks:
                raise ValueError(f"{owner}: attacks= needs version='custom' and at least one "
                                 f"component; got version={self.version!r}, attacks={attacks}")
        elif self.version == "custom":
            raise ValueError(f"{owner}: version='custom' needs attacks=[...] from "
                             f"{', '.join(AA_COMPONENTS)}")
        self.attacks = None if attacks is None else list(attacks)
        self.n_ex = None if n_ex is None else check_int(owner, "n_ex", n_ex, 1)
        self.batch_size = check_int(owner, "batch_size", batch_size, 1)

    def settings(self) -> dict[str, Any]:
        """Name and every hyper-parameter, JSON-serialisable."""
        return {"name": self.name, "eps": self.eps, "norm": self.norm, "version": self.version,
                "attacks": self.attacks, "seed": self.seed, "n_ex": self.n_ex,
                "batch_size": self.batch_size, "model_mode": self.model_mode}

    def _hparams(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings().items() if k != "name"}

    def _ball(self) -> tuple[str, str, float] | None:
        return ("eps", self.norm, self.eps)

    def __call__(self, images: Tensor, labels: Tensor | None = None,
                 target: Tensor | None = None) -> Tensor:
        """Perturb ``images`` given ``labels`` (both required); returns a detached tensor like
        ``images``, ``last_report`` describes the call."""
        self._extra: dict[str, Any] = {}
        out = super().__call__(images, labels, target)
        base = self.last_report
        assert base is not None
        report = AutoAttackReport(**{f.name: getattr(base, f.name) for f in fields(base)})
        for key, value in self._extra.items():
            setattr(report, key, value)
        report.package = f"pyautoattack {getattr(self._package, '__version__', '?')}"
        self.last_report = report
        return out

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        assert labels is not None and self.model is not None
        t0 = time.perf_counter()
        n = x.shape[0] if self.n_ex is None else min(self.n_ex, x.shape[0])
        xs, ys = x[:n].float(), labels[:n]
        net = _Logits(self.model)
        with _private_rng(x.device), _captured_log() as log, torch.no_grad():
            aa = self._package.AutoAttack(
                net, norm={"linf": "Linf", "l2": "L2"}[self.norm], eps=self.eps,
                version=self.version, attacks=self.attacks, seed=self.seed, device=x.device)
            clean = net(xs).argmax(1) == ys
            x_aa, _ = aa.run_standard_evaluation(xs, ys, batch_size=self.batch_size)
            x_aa = self._project(xs, x_aa.to(xs))
            fooled = net(x_aa).argmax(1) != ys
        out = x.clone()
        out[:n] = x_aa.to(x.dtype)
        report.success = fooled
        report.forwards, report.backwards = net.forwards, net.backwards
        n_clean = int(clean.sum())
        fooled_by: dict[str, int] = {}  # per component, in the order they ran
        for rec in log.records:
            msg = rec.getMessage()
            if rec.levelno >= logging.WARNING:
                report.warnings.append(f"AutoAttack check: {msg}")
            elif m := _PROGRESS.match(msg):
                fooled_by[m[1]] = fooled_by.get(m[1], 0) + int(m[2])
        robust_after: dict[str, float] = {}
        left = n_clean
        for name, k in fooled_by.items():
            left -= k
            robust_after[name] = left / n
        self._extra = {
            "n_attacked": n,
            "clean_accuracy": n_clean / n,
            "robust_accuracy": int((~fooled).sum()) / n,
            "robust_after": robust_after,
            "attacks": list(fooled_by),
            "seconds": time.perf_counter() - t0,
        }
        return out

    def _project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Onto the threat model's ball and [0, 1] (AutoAttack's outputs may exceed the radius
        by float rounding, ~1e-8)."""
        if self.norm == "linf":
            lo, hi = linf_bounds(x, self.eps)
            return torch.max(torch.min(x_adv, hi), lo)
        return l2_project(x, x_adv, self.eps)

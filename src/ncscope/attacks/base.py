"""Common base of every ncscope attack and perturbation source.

Threat model (all attacks)
--------------------------
Inputs are images (or any feature tensors) **in pixel space [0, 1]**, batch first: ``(B, ...)``
— 4-D images and 2-D flat inputs work alike. The model owns its normalisation (a normalisation
module inside the model, as RobustBench does); attacks never see a mean or a std. Every output
lies inside the perturbation ball around the input (l_inf or l2, radius ``eps``) and inside
[0, 1]. Images may exceed [0, 1] by at most ``1e-6`` (they are clamped to [0, 1] first);
anything further out is an error.

Hygiene
-------
During an attack the model is put in the mode given by ``model_mode`` (``"eval"``: BatchNorm uses
running statistics and Dropout is off; ``"train"``: the adversarial-training protocol of
Madry et al. 2018 / Rice et al. 2020 used by the paper, where BatchNorm uses — and updates — the
batch statistics), every parameter's ``requires_grad`` is switched off so that gradients are
taken with respect to the input only (``torch.autograd.grad``; no ``.grad`` is ever written on a
parameter), and both are restored exactly afterwards, module by module. Randomness comes from
``generator`` (a ``torch.Generator``), or a private generator seeded with ``seed``, or else the
global torch RNG.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks.fast import AttackTwin, twin_for
from ncscope.attacks.sanity import (
    AttackSanityWarning,
    check_determinism,
    check_noise_baseline,
    zero_gradient_message,
)

__all__ = [
    "CHECK_LEVELS",
    "MODEL_MODES",
    "NORMS",
    "RANGE_TOL",
    "Attack",
    "AttackReport",
    "GradientAttack",
    "model_state",
    "preserved_buffers",
]

NORMS: tuple[str, ...] = ("linf", "l2")
_NORM_ALIASES = {
    "linf": "linf",
    "l_inf": "linf",
    "inf": "linf",
    "l2": "l2",
    "l_2": "l2",
    "2": "l2",
}
MODEL_MODES: tuple[str, ...] = ("eval", "train")
CHECK_LEVELS: tuple[str, ...] = ("off", "cheap", "first", "full")
RANGE_TOL = 1e-6
#: Added to per-example gradient norms before dividing (as torchattacks' ``eps_for_division``).
NORM_EPS = 1e-10


# --------------------------------------------------------------------------------------------
# Argument validation (one-line messages that say what to fix)
# --------------------------------------------------------------------------------------------


def _real(owner: str, name: str, value: Any, *, low: float | None = None, strict: bool = False,
          hint: str = "") -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}{hint}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{owner}: {name} must be finite, got {out}{hint}")
    if low is not None and (out <= low if strict else out < low):
        op = ">" if strict else ">="
        raise ValueError(f"{owner}: {name} must be {op} {low:g}, got {out:g}{hint}")
    return out


def _int(owner: str, name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    if int(value) < low:
        raise ValueError(f"{owner}: {name} must be >= {low}, got {int(value)}")
    return int(value)


def _bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def _choice(owner: str, name: str, value: Any, choices: tuple[str | None, ...]) -> Any:
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: unknown {name} {value!r}; valid values are {valid}")
    return value


def _norm(owner: str, norm: Any) -> str:
    key = norm
    if isinstance(norm, str):
        key = norm.strip().lower()
    elif isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        key = "inf" if norm == math.inf else ("2" if norm == 2 else None)
    if key not in _NORM_ALIASES:
        raise ValueError(f"{owner}: unknown norm {norm!r}; valid norms are 'linf' and 'l2'")
    return _NORM_ALIASES[key]


def _validate_images(owner: str, images: Any) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"{owner}: images must be a torch.Tensor of shape (B, ...) in [0, 1], "
                        f"got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{owner}: images must be a floating-point tensor in [0, 1], got "
                        f"{images.dtype} (convert with images.float() / 255)")
    if images.ndim < 2:
        raise ValueError(f"{owner}: images must have a batch dimension, shape (B, ...), got "
                         f"shape {tuple(images.shape)} (use images.unsqueeze(0) for one example)")
    x = images.detach()
    if x.is_inference():
        x = x.clone()
    if x.numel() == 0:
        return x
    lo, hi = torch.aminmax(x)
    lo_f, hi_f = float(lo), float(hi)
    if not (lo_f >= -RANGE_TOL and hi_f <= 1.0 + RANGE_TOL):
        raise ValueError(
            f"{owner}: images must lie in [0, 1] (got min={lo_f:.4g}, max={hi_f:.4g}); attacks "
            "work in pixel space: pass un-normalised pixels and put the normalisation inside "
            "the model"
        )
    if lo_f < 0.0 or hi_f > 1.0:
        x = x.clamp(0.0, 1.0)
    return x


def _validate_labels(owner: str, labels: Any, batch: int, device: torch.device,
                     name: str = "labels") -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{owner}: {name} must be a 1-D torch.Tensor of class indices (int64), "
                        f"got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{owner}: {name} must be an integer tensor of class indices, got "
                        f"{labels.dtype} (use {name}.long())")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"{owner}: {name} must have shape (B,) = ({batch},) to match the images,"
                         f" got shape {tuple(labels.shape)}")
    out = labels.detach().to(device=device, dtype=torch.long)
    return out.clone() if out.is_inference() else out


def _check_range(owner: str, cls: Tensor, n_classes: int | None, name: str) -> None:
    """Class indices must lie in [0, K) (K = width of the logits; ``None``: only >= 0)."""
    if cls.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(cls))
    if n_classes is None:
        if lo < 0:
            raise ValueError(f"{owner}: {name} must be class indices >= 0, got min={lo}")
    elif lo < 0 or hi >= n_classes:
        raise ValueError(f"{owner}: {name} must lie in [0, K) = [0, {n_classes}) where K is the "
                         f"width of the model's logits, got min={lo}, max={hi}")


# --------------------------------------------------------------------------------------------
# Model state and randomness
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_state(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in ``mode`` ("eval" | "train") with all parameters frozen; restore after.

    Every module's ``training`` flag and every parameter's ``requires_grad`` flag are recorded
    and restored individually (so mixed-mode models, e.g. frozen BatchNorm, come back exactly as
    they were), also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.train(mode == "train")
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
        for p, was in flags:
            p.requires_grad_(was)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Run auxiliary forward passes without side effects on buffers.

    In train mode BatchNorm updates its running statistics on every forward; sanity checks and
    other auxiliary passes must not, so the buffers are copied and written back. A no-op when no
    module is in training mode.
    """
    if not any(m.training for m in model.modules()):
        yield
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def _same_device(gen: torch.Generator, device: torch.device) -> bool:
    g = gen.device
    return g.type == device.type and (g.index or 0) == (device.index or 0)


def _uniform(like: Tensor, low: float, high: float, gen: torch.Generator | None) -> Tensor:
    """``U(low, high)`` shaped like ``like`` (same draws as ``empty_like(like).uniform_``)."""
    if gen is None or _same_device(gen, like.device):
        return torch.empty_like(like).uniform_(low, high, generator=gen)
    out = torch.empty(like.shape, dtype=like.dtype, device=gen.device)
    return out.uniform_(low, high, generator=gen).to(like.device)


def _normal(like: Tensor, gen: torch.Generator | None) -> Tensor:
    """``N(0, 1)`` shaped like ``like`` (same draws as ``empty_like(like).normal_``)."""
    if gen is None or _same_device(gen, like.device):
        return torch.empty_like(like).normal_(generator=gen)
    out = torch.empty(like.shape, dtype=like.dtype, device=gen.device)
    return out.normal_(generator=gen).to(like.device)


def _randint(high: int, shape: tuple[int, ...], device: torch.device,
             gen: torch.Generator | None) -> Tensor:
    dev = device if gen is None else gen.device
    return torch.randint(high, shape, device=dev, generator=gen).to(device)


def _bview(t: Tensor, ndim: int) -> Tensor:
    """Reshape a per-example vector ``(B,)`` to broadcast against a ``(B, ...)`` batch."""
    return t.view((t.shape[0],) + (1,) * (ndim - 1))


def _l2norm(t: Tensor) -> Tensor:
    """Per-example l2 norm of a ``(B, ...)`` tensor (float32 or wider, as torchattacks)."""
    return torch.linalg.vector_norm(t.flatten(1), ord=2, dim=1)


def _random_sign(x: Tensor, eps: float, gen: torch.Generator | None) -> Tensor:
    """Random corner of the l_inf ball: ``clip(x + eps * sign(N(0, I)), 0, 1)``."""
    return (x + eps * torch.sign(_normal(x, gen))).clamp_(0.0, 1.0)


def _gaussian_l2(x: Tensor, radius: float, gen: torch.Generator | None) -> Tensor:
    """Gaussian direction rescaled to l2 norm ``radius``, then clipped to [0, 1]."""
    d = _normal(x, gen)
    n = _l2norm(d).clamp_min(torch.finfo(d.dtype).tiny)
    return (x + d * _bview(radius / n, x.ndim)).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class AttackReport:
    """What one call of an attack found (``attack.last_report``).

    ``warnings``: sanity flags (strings; also emitted as :class:`AttackSanityWarning`).
    ``objective``: per-example value of the quantity the attack maximises at its output, when it
    was computed anyway (restarts > 1, or full checks; CE of the true label for untargeted PGD,
    minus the CE of the target for targeted PGD, the KL divergence for TRADES), else ``None``.
    ``success``: per-example success flags when known (misclassified / classified as target).
    ``targets``: the target classes of a targeted attack (given or drawn by the rule), e.g. to
    group perturbed features by target label; ``None`` for untargeted attacks.
    ``zero_grad_fraction``: share of examples with an all-zero gradient at the start point.
    ``forwards`` / ``backwards``: model passes spent, sanity checks included.
    ``fast``: with ``fast=True``, what the attack ran (the folded twin, or why the model itself);
    ``None`` otherwise.
    """

    attack: str
    checks: str = "off"
    warnings: list[str] = field(default_factory=list)
    objective: Tensor | None = None
    success: Tensor | None = None
    targets: Tensor | None = None
    zero_grad_fraction: float | None = None
    forwards: int = 0
    backwards: int = 0
    fast: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (tensors reduced to means)."""
        return {
            "attack": self.attack,
            "checks": self.checks,
            "warnings": list(self.warnings),
            "mean_objective": None if self.objective is None else float(self.objective.mean()),
            "success_rate": None if self.success is None else float(self.success.float().mean()),
            "zero_grad_fraction": self.zero_grad_fraction,
            "forwards": self.forwards,
            "backwards": self.backwards,
            "fast": self.fast,
        }


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------


class Attack:
    """Base class of all ncscope attacks and perturbation sources.

    Call shape: ``atk(images, labels, target=None) -> Tensor`` — perturbed images with the same
    shape, dtype and device as ``images``, detached, inside the threat model's ball and [0, 1]
    (see the module docstring for the threat model). ``settings()`` returns the name and every
    hyper-parameter as a JSON-serialisable dict; ``last_report`` holds the
    :class:`AttackReport` of the latest call (sanity flags in the spirit of Croce & Hein 2020,
    AutoAttack).

    Args:
        model: the classifier (an ``nn.Module`` returning logits ``(B, K)``), ``None`` for
            perturbation sources that need none.
        model_mode: ``"eval"`` (default) or ``"train"``: the mode BatchNorm/Dropout are put in
            during the attack; the modes found are restored afterwards.
        seed: seed of a private ``torch.Generator`` (created on the images' device at first use
            and advanced by every call; :meth:`manual_seed` resets it).
        generator: a ``torch.Generator`` to draw from instead (mutually exclusive with ``seed``).
            With neither, the global torch RNG is used.
        checks: sanity checks: ``"off"``; ``"cheap"`` (free ones only: zero gradient at the
            start point, non-finite values); ``"full"`` (plus determinism and random-noise
            baseline, 2-3 extra forward passes per call); ``"first"`` (default: full on the first
            call of this object, cheap afterwards — like AutoAttack, which checks its first
            batch).
    """

    name: ClassVar[str] = "Attack"
    requires_model: ClassVar[bool] = True
    requires_labels: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module | None,
        *,
        model_mode: str = "eval",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        checks: str = "first",
    ) -> None:
        owner = type(self).name
        if model is None:
            if self.requires_model:
                raise TypeError(f"{owner}: model is required (an nn.Module returning logits)")
        elif not isinstance(model, nn.Module):
            raise TypeError(f"{owner}: model must be a torch.nn.Module returning logits (B, K), "
                            f"got {type(model).__name__}")
        self.model = model
        self.model_mode = _choice(owner, "model_mode", model_mode, MODEL_MODES)
        if seed is not None and generator is not None:
            raise ValueError(f"{owner}: give either seed or generator, not both")
        if seed is not None:
            seed = _int(owner, "seed", seed, low=0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{owner}: generator must be a torch.Generator, got "
                            f"{type(generator).__name__}")
        self.seed: int | None = seed
        self._generator = generator
        self._own_generators: dict[str, torch.Generator] = {}
        self._check_generators: dict[str, torch.Generator] = {}
        self.checks = _choice(owner, "checks", checks, CHECK_LEVELS)
        self._calls = 0
        self.last_report: AttackReport | None = None

    # ---- public API ---------------------------------------------------------------------

    @property
    def accepts_target(self) -> bool:
        """Whether ``target=`` may be passed to ``__call__``."""
        return False

    def __call__(self, images: Tensor, labels: Tensor | None = None,
                 target: Tensor | None = None) -> Tensor:
        owner = self.name
        with torch.inference_mode(False):
            x = _validate_images(owner, images)
            if labels is None:
                if self.requires_labels:
                    raise TypeError(f"{owner}: labels are required: call atk(images, labels) "
                                    "with a 1-D int64 tensor of class indices")
                y = None
            else:
                y = _validate_labels(owner, labels, x.shape[0], x.device)
            t = None
            if target is not None:
                if not self.accepts_target:
                    raise ValueError(f"{owner}: target= is only accepted by targeted attacks; "
                                     "construct the attack with targeted=True")
                t = _validate_labels(owner, target, x.shape[0], x.device, "target")
            level = self.checks
            if level == "first":
                level = "full" if self._calls == 0 else "cheap"
            report = AttackReport(attack=owner, checks=level)
            if x.shape[0] == 0:
                x_adv = x.clone()
            else:
                with contextlib.ExitStack() as stack:
                    if self.model is not None:
                        stack.enter_context(model_state(self.model, self.model_mode))
                    self._setup(x, report, level)
                    x_adv = self._run(x, y, t, report, level)
            self._calls += 1
        self.last_report = report
        for msg in report.warnings:
            warnings.warn(f"{owner}: {msg}", AttackSanityWarning, stacklevel=2)
        return x_adv.detach()

    def settings(self) -> dict[str, Any]:
        """Name and every hyper-parameter, JSON-serialisable (for reports and configs)."""
        out: dict[str, Any] = {"name": self.name}
        out.update(self._hparams())
        if self.requires_model or self.model is not None:
            out["model_mode"] = self.model_mode
        out["seed"] = self.seed
        out["generator"] = self._generator is not None
        out["checks"] = self.checks
        return out

    def manual_seed(self, seed: int) -> Attack:
        """(Re)seed the private generator; the next call draws as a fresh ``seed=`` attack."""
        if self._generator is not None:
            raise ValueError(f"{self.name}: this attack draws from a user generator; "
                             "seed that generator instead")
        self.seed = _int(self.name, "seed", seed, low=0)
        self._own_generators.clear()
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{self.name}({args})"

    # ---- for subclasses -------------------------------------------------------------------

    def _hparams(self) -> dict[str, Any]:
        raise NotImplementedError

    def _setup(self, x: Tensor, report: AttackReport, level: str) -> None:
        """Per-call preparation with the model already in ``model_mode`` (default: none)."""

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        raise NotImplementedError

    def _rng(self, device: torch.device) -> torch.Generator | None:
        if self._generator is not None:
            return self._generator
        if self.seed is None:
            return None
        key = str(device)
        gen = self._own_generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._own_generators[key] = gen
        return gen

    def _check_rng(self, device: torch.device) -> torch.Generator:
        """Separate, fixed-seed generator for sanity checks: they never shift the attack's
        random stream, so an attack gives the same output with or without checks."""
        key = str(device)
        gen = self._check_generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(0x5EED)
            self._check_generators[key] = gen
        return gen


@dataclass
class _Ctx:
    """Per-call state shared by the objective / success functions of a gradient attack."""

    labels: Tensor | None
    cls: Tensor | None = None
    onehot: Tensor | None = None
    clean_probs: Tensor | None = None
    clean_pred: Tensor | None = None


class GradientAttack(Attack):
    """Base of white-box gradient attacks (FGSM, PGD, TRADES).

    ``fast=True`` (``model_mode="eval"`` only) runs the passes on the model's
    :class:`~ncscope.attacks.fast.AttackTwin`: eval-mode BatchNorm folded into the preceding
    conv/linear layer and, on CPU, channels-last inputs for conv nets. The same function up to
    float rounding; the default ``fast=False`` runs the model itself and reproduces
    torchattacks and the reference codes bit for bit. The twin's logits are compared with the
    model's on the batch after every (re)build of the twin and on every fully checked call
    (``checks="full"``, or the first call with the default ``"first"``); if they disagree the
    model itself is used, with a warning.

    Subclasses define the per-example objective to maximise, what to differentiate for its input
    gradient (a scalar loss, or the logits with a closed-form logit gradient), and a success
    criterion; this class provides model passes with bookkeeping and the sanity
    checks of :mod:`ncscope.attacks.sanity` (Croce & Hein 2020).
    """

    eps: float
    norm: str
    #: whether success flags are the attack's goal (compared with the noise baseline's)
    success_driven: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, model_mode: str = "eval", seed: int | None = None,
                 generator: torch.Generator | None = None, checks: str = "first",
                 fast: bool = False) -> None:
        super().__init__(model, model_mode=model_mode, seed=seed, generator=generator,
                         checks=checks)
        self.fast = _bool(self.name, "fast", fast)
        if self.fast and self.model_mode != "eval":
            raise ValueError(f"{self.name}: fast=True needs model_mode='eval' (it folds "
                             "BatchNorm with its running statistics); use fast=False for "
                             "train-mode attacks")
        self._warned = False
        self._net: nn.Module | AttackTwin | None = model

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out["fast"] = self.fast
        return out

    def _setup(self, x: Tensor, report: AttackReport, level: str) -> None:
        """Pick what the passes run: the model, or (``fast=True``) its :class:`AttackTwin`,
        whose logits are checked against the model's on the batch after every (re)build and
        whenever ``level == "full"``."""
        self._net = self.model
        if not self.fast:
            return
        assert self.model is not None
        twin = twin_for(self.model)  # built once per model, brought up to date here
        if twin.folded and (not twin.verified or level == "full"):
            with torch.no_grad(), preserved_buffers(self.model):
                failure = twin.verify(x)
            report.forwards += 2
            if failure:
                warnings.warn(f"{self.name}: fast=True: {failure}", stacklevel=3)
                self._warned = True
        if not self._warned and twin.net is self.model and not twin.channels_last:
            warnings.warn(f"{self.name}: fast=True has no effect on this model: {twin.note}",
                          stacklevel=3)
            self._warned = True
        report.fast = twin.note
        self._net = twin

    # ---- objective interface ----------------------------------------------------------------

    def _objective(self, logits: Tensor, ctx: _Ctx) -> Tensor:
        raise NotImplementedError

    def _grad_target(self, logits: Tensor, ctx: _Ctx) -> tuple[Tensor, Tensor | None]:
        """``(outputs, grad_outputs)`` for the input gradient: a scalar loss and ``None``, or
        the logits and the objective's gradient with respect to them (closed form)."""
        raise NotImplementedError

    def _success(self, logits: Tensor, ctx: _Ctx) -> Tensor:
        raise NotImplementedError

    # ---- model passes -----------------------------------------------------------------------

    def _forward(self, x: Tensor, report: AttackReport) -> Tensor:
        assert self._net is not None
        out = self._net(x)
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(f"{self.name}: the model must return logits of shape (B, K), got "
                            f"{shape}; wrap models that return tuples or features")
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

    # ---- sanity checks ----------------------------------------------------------------------

    def _start_checks(self, x0: Tensor, logits0: Tensor, grad0: Tensor, report: AttackReport,
                      level: str) -> None:
        """Checks at the start point (first step of the first restart)."""
        if level == "off":
            return
        # one fused pass and one host sync: per-example max |g| flags zero and NaN/inf rows
        gmax = grad0.detach().flatten(1).abs().amax(dim=1)
        counts = torch.stack([
            (gmax == 0).sum(),
            (~torch.isfinite(gmax)).sum(),
            (~torch.isfinite(logits0.detach()).all(dim=1)).sum(),
        ]).tolist()
        n = grad0.shape[0]
        report.zero_grad_fraction = counts[0] / n
        if counts[2]:
            report.warnings.append(f"non-finite values (NaN/inf) in the logits for "
                                   f"{counts[2]}/{n} examples")
        if counts[1]:
            report.warnings.append(f"non-finite values (NaN/inf) in the input gradient for "
                                   f"{counts[1]}/{n} examples")
        if counts[0]:
            report.warnings.append(zero_gradient_message(counts[0], n))
        if level == "full":
            again = self._aux_forward(x0, report)
            msg = check_determinism(logits0, again)
            if msg:
                report.warnings.append(msg)

    def _final_checks(self, x: Tensor, x_adv: Tensor, ctx: _Ctx, report: AttackReport,
                      level: str) -> None:
        """Objective/success at the output and the random-noise baseline of the same size."""
        if level != "full":
            return
        if report.objective is None or report.success is None:
            logits = self._aux_forward(x_adv, report)
            report.objective = self._objective(logits, ctx)
            report.success = self._success(logits, ctx)
        gen = self._check_rng(x.device)
        if self.norm == "linf":
            noise, what = _random_sign(x, self.eps, gen), "random-sign (l_inf corner)"
        else:
            noise, what = _gaussian_l2(x, self.eps, gen), "Gaussian l2-sphere"
        logits_n = self._aux_forward(noise, report)
        by_success = self.success_driven
        msg = check_noise_baseline(report.objective, self._objective(logits_n, ctx),
                                   report.success if by_success else None,
                                   self._success(logits_n, ctx) if by_success else None, what)
        if msg:
            report.warnings.append(msg)


def _linf_step(x_adv: Tensor, grad: Tensor, alpha: float, lo: Tensor, hi: Tensor) -> Tensor:
    """``clip_[lo, hi](x_adv + alpha * sign(grad))`` with ``lo = max(x - eps, 0)``,
    ``hi = min(x + eps, 1)`` precomputed: the l_inf projection and the box clip in one op."""
    return torch.add(x_adv.detach(), torch.sign(grad), alpha=alpha).clamp_(lo, hi)


def _l2_project(x: Tensor, x_new: Tensor, eps: float) -> Tensor:
    """Project ``x_new`` onto the l2 ball of radius ``eps`` around ``x``, then clip to [0, 1]
    (torchattacks' PGDL2 order: ``delta *= min(eps / ||delta||, 1)``)."""
    delta = x_new - x
    n = _l2norm(delta)
    factor = torch.where(n > eps, eps / n.clamp_min(torch.finfo(n.dtype).tiny),
                         torch.ones_like(n))
    return (x + delta * _bview(factor, x.ndim)).clamp_(0.0, 1.0)


def _l2_step(x: Tensor, x_adv: Tensor, grad: Tensor, alpha: float, eps: float) -> Tensor:
    """Normalised-gradient step ``x_adv + alpha * g / (||g|| + 1e-10)``, l2 projection, box."""
    gn = _l2norm(grad) + NORM_EPS
    x_new = x_adv.detach() + alpha * (grad / _bview(gn, grad.ndim))
    return _l2_project(x, x_new, eps)

"""Common base of every ncscope attack and perturbation source: the call protocol.

``atk(images, labels=None, target=None) -> perturbed images``: the images are validated
(:mod:`~ncscope.attacks.inputs`: pixel space [0, 1], batch first), the radius is checked
against them (:func:`~ncscope.attacks.threat.check_radius`), the model is put in
``model_mode`` with frozen parameters (:mod:`~ncscope.attacks.modes`) and the subclass's
``_run`` produces the output, detached, inside the threat model's ball and [0, 1]. The
per-call findings go to ``atk.last_report`` (:class:`AttackReport`), sanity flags are also
emitted as :class:`~ncscope.attacks.sanity.AttackSanityWarning`. ``settings()`` gives every
hyper-parameter, JSON-serialisable. Randomness comes from ``generator`` (a
``torch.Generator``), or a private generator seeded with ``seed``, or else the global torch RNG.
Calls work inside ``torch.no_grad()`` and ``torch.inference_mode()`` (gradients are switched
back on for the input only).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks.inputs import validate_images, validate_labels
from ncscope.attacks.modes import MODEL_MODES, model_state, preserved_buffers
from ncscope.attacks.sanity import AttackSanityWarning
from ncscope.attacks.threat import check_radius
from ncscope.validation import check_choice, check_int

__all__ = ["CHECK_LEVELS", "Attack", "AttackReport"]

#: Sanity-check levels (see :class:`Attack`).
CHECK_LEVELS: tuple[str, ...] = ("off", "cheap", "first", "full")


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


class Attack:
    """Base class of all ncscope attacks and perturbation sources.

    Call shape: ``atk(images, labels, target=None) -> Tensor`` — perturbed images with the same
    shape, dtype and device as ``images``, detached, inside the threat model's ball and [0, 1]
    (see :mod:`ncscope.attacks.threat` for the threat models). ``settings()`` returns the name
    and every hyper-parameter as a JSON-serialisable dict; ``last_report`` holds the
    :class:`AttackReport` of the latest call (sanity flags in the spirit of Croce & Hein 2020,
    AutoAttack).

    Args:
        model: the classifier (an ``nn.Module`` returning logits ``(B, K)``, or an output
            :func:`ncscope.models.logits_of` reads them from: ``(logits, ...)``,
            ``out["logits"]``, ``out.logits``), ``None`` for perturbation sources that need
            none.
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
        self.model_mode = check_choice(owner, "model_mode", model_mode, MODEL_MODES)
        if seed is not None and generator is not None:
            raise ValueError(f"{owner}: give either seed or generator, not both")
        if seed is not None:
            seed = check_int(owner, "seed", seed, 0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{owner}: generator must be a torch.Generator, got "
                            f"{type(generator).__name__}")
        self.seed: int | None = seed
        self._generator = generator
        self._own_generators: dict[str, torch.Generator] = {}
        self._check_generators: dict[str, torch.Generator] = {}
        self.checks = check_choice(owner, "checks", checks, CHECK_LEVELS)
        self._calls = 0
        self._inputs_seen: set[tuple[Any, ...]] = set()
        self.last_report: AttackReport | None = None

    # ---- public API ---------------------------------------------------------------------

    @property
    def accepts_target(self) -> bool:
        """Whether ``target=`` may be passed to ``__call__``."""
        return False

    def __call__(self, images: Tensor, labels: Tensor | None = None,
                 target: Tensor | None = None) -> Tensor:
        """Perturb ``images`` (``(B, ...)`` in [0, 1]) given ``labels`` (``(B,)`` int64; optional
        for label-free sources and TRADES) and, for targeted attacks, ``target`` classes.

        Returns a detached tensor like ``images``; ``last_report`` describes the call.
        """
        owner = self.name
        with torch.inference_mode(False):
            x = validate_images(owner, images)
            ball = self._ball()
            if ball is not None:
                check_radius(owner, ball[2], ball[1], x, name=ball[0])
            if labels is None:
                if self.requires_labels:
                    raise TypeError(f"{owner}: labels are required: call atk(images, labels) "
                                    "with a 1-D int64 tensor of class indices")
                y = None
            else:
                y = validate_labels(owner, labels, x.shape[0], x.device)
            t = None
            if target is not None:
                if not self.accepts_target:
                    raise ValueError(f"{owner}: target= is only accepted by targeted attacks; "
                                     "construct the attack with targeted=True")
                t = validate_labels(owner, target, x.shape[0], x.device, "target")
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
                    self._check_model_input(owner, x)
                    self._setup(x, report, level)
                    x_adv = self._run(x, y, t, report, level)
            self._calls += 1
        self.last_report = report
        for msg in report.warnings:
            warnings.warn(f"{owner}: {msg}", AttackSanityWarning, stacklevel=2)
        return x_adv.detach()

    def _check_model_input(self, owner: str, x: Tensor) -> None:
        """Once per input shape/dtype: one forward of two images in the attack's model mode
        (buffers restored), so a batch the model cannot read is a one-line error instead of a
        deep torch traceback."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if self.model is None or key in self._inputs_seen:
            return
        try:
            with torch.no_grad(), preserved_buffers(self.model):
                self.model(x[:2])
        except (RuntimeError, ValueError) as exc:  # torch raises both for shape/dtype misfits
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"{owner}: the model cannot read images of shape {tuple(x.shape)} and dtype "
                f"{str(x.dtype).replace('torch.', '')} ({first}); give the batch shape and dtype "
                "the model was built for, e.g. float32 (N, C, H, W) pixels in [0, 1]"
            ) from None
        self._inputs_seen.add(key)

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
        self.seed = check_int(self.name, "seed", seed, 0)
        self._own_generators.clear()
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{self.name}({args})"

    # ---- for subclasses -------------------------------------------------------------------

    def _hparams(self) -> dict[str, Any]:
        """The subclass's hyper-parameters for :meth:`settings`."""
        raise NotImplementedError

    def _ball(self) -> tuple[str, str, float] | None:
        """``(parameter name, norm, radius)`` of the ball the output stays in, checked against
        every input (:func:`~ncscope.attacks.threat.check_radius`); ``None``: unbounded."""
        return None

    def _setup(self, x: Tensor, report: AttackReport, level: str) -> None:
        """Per-call preparation with the model already in ``model_mode`` (default: none)."""

    def _run(self, x: Tensor, labels: Tensor | None, target: Tensor | None,
             report: AttackReport, level: str) -> Tensor:
        """The perturbed images for validated inputs (model already in ``model_mode``)."""
        raise NotImplementedError

    def _rng(self, device: torch.device) -> torch.Generator | None:
        """The generator attack draws come from (``None``: the global RNG)."""
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

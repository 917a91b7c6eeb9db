"""Training modes as objects: a registry (:data:`MODES`, :func:`register_mode`) and the built-ins.

A *training mode* says how one batch becomes a loss. The trainer loop is mode-agnostic: per
epoch it puts the model in :meth:`TrainingMode.model_mode`, builds the epoch's attack with
:meth:`TrainingMode.build_attack` (from the config and a generator seeded with ``(seed, epoch,
rank, PURPOSE_TRAIN_ATTACK)``) and then, per batch, calls :meth:`TrainingMode.step` with a
:class:`StepContext` and backpropagates :attr:`StepOutput.loss`.

Built-in modes (the three of Su, Zhang, Tsilivis, Kempe, TMLR 2024, experimental setup, as in
their official code):

* ``"st"`` — :class:`StandardTraining`: ``loss(f(x), y)`` on the clean batch.
* ``"at"`` — :class:`AdversarialTraining` (Madry et al., ICLR 2018): ``x' = PGD(x)`` with the
  model in **train** mode during the attack (the paper's code, inherited from Rice et al. 2020:
  BatchNorm uses and updates the statistics of the perturbed batches; ``attack_mode="eval"``
  is an option), then ``loss(f(x'), y)`` only. With ``clean_forward=True`` the code's extra
  clean forward in train mode (no backward) follows: it gives the logged clean accuracy and
  also updates the BN running statistics.
* ``"trades"`` — :class:`TradesTraining` (Zhang et al., ICML 2019): ``x'`` maximises
  ``KL(f(x) || f(x'))`` in eval mode; then ``loss(f(x), y) + trades_beta * KL(f(x) || f(x'))``
  (KL summed, divided by the batch size) from one (DDP) forward of both inputs. With
  ``bn_quirk=True`` the epoch trains in eval mode, as the official TRADES code does (its attack
  calls ``model.eval()`` and nothing switches back): BN running statistics never move.

A new mode, e.g. MART (Wang et al., ICLR 2020) or a Neural-Collapse regulariser that needs
features, plugs in with :func:`register_mode` and is selected with ``TrainConfig(mode=...)``::

    @register_mode("nc_reg")
    class NCRegularised(TrainingMode):
        def step(self, ctx, x, y):
            logits, feats = ctx.forward_features(x, layers=["classifier:in"])
            h = feats["classifier:in"]
            ...                                   # e.g. within-class variance of h
            return StepOutput(ctx.loss_fn(logits, y) + 0.1 * penalty, clean_logits=logits)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ncscope.attacks import PGD, TRADES, Attack
from ncscope.data import UnknownNameError
from ncscope.losses import LossFn, trades_kl
from ncscope.models.adapters import logits_of

if TYPE_CHECKING:
    from ncscope.train.config import TrainConfig

__all__ = [
    "MODES",
    "AdversarialTraining",
    "MultiForward",
    "StandardTraining",
    "StepContext",
    "StepOutput",
    "TradesTraining",
    "TrainingMode",
    "attack_settings",
    "canonical_mode",
    "make_mode",
    "register_mode",
]

#: Registry of training modes (name -> :class:`TrainingMode` subclass), in registration order.
MODES: dict[str, type[TrainingMode]] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_mode(
    name: str,
    cls: type[TrainingMode] | None = None,
    *,
    aliases: Sequence[str] = (),
    overwrite: bool = False,
) -> Any:
    """Add a :class:`TrainingMode` subclass under ``name`` (usable as a class decorator).

    ``aliases`` are further names that select it (``"pgd"`` for ``"at"``). Registering a taken
    name raises ``ValueError`` unless ``overwrite=True``. Returns the class (or the decorator).
    """
    key = _key(name)

    def add(mode_cls: type[TrainingMode]) -> type[TrainingMode]:
        if not (isinstance(mode_cls, type) and issubclass(mode_cls, TrainingMode)):
            raise TypeError(f"mode {key!r} must be a TrainingMode subclass, got {mode_cls!r}")
        if key in MODES and not overwrite:
            raise ValueError(f"training mode {key!r} is already registered (pass overwrite=True)")
        MODES[key] = mode_cls
        for alias in aliases:
            _ALIASES[_key(alias)] = key
        return mode_cls

    return add if cls is None else add(cls)


def canonical_mode(name: str) -> str:
    """Registry key of ``name`` (case-insensitive, ``-`` = ``_``, aliases such as ``"pgd"`` or
    ``"standard"``); an unknown name raises :class:`UnknownNameError` listing the valid ones."""
    valid = ", ".join(MODES)
    if not isinstance(name, str):
        raise TypeError(f"mode must be a string; valid values: {valid}")
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in MODES:
        raise UnknownNameError(f"unknown mode {name!r}; valid values: {valid}")
    return key


def make_mode(config: TrainConfig) -> TrainingMode:
    """The :class:`TrainingMode` instance of ``config.mode``."""
    return MODES[canonical_mode(config.mode)](config)


def attack_settings(config: TrainConfig, generator: torch.Generator) -> dict[str, Any]:
    """Keyword arguments shared by the training attacks: ``eps``, ``alpha``, ``steps``,
    ``norm``, ``model_mode`` (``config.effective_attack_mode``), ``generator``, ``checks``
    (off) and ``fast`` (``fast_attacks``, only for eval-mode attacks)."""
    attack_mode = config.effective_attack_mode
    return {
        "eps": config.eps,
        "alpha": config.effective_alpha,
        "steps": config.steps,
        "norm": config.norm,
        "model_mode": attack_mode,
        "generator": generator,
        "checks": "off",
        "fast": config.fast_attacks and attack_mode == "eval",
    }


class MultiForward(nn.Module):
    """``forward(*xs)`` = the logits of ``model(x)`` (:func:`ncscope.models.logits_of`) for each
    input, as one (DDP) call with separate BN statistics per input; with ``layers=`` it also
    returns the (differentiable) features of those layers for each input
    (:class:`ncscope.collapse.FeatureTaps` with ``detach=False``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, *xs: Tensor, layers: Sequence[str] | None = None, reduce: str = "flatten"
    ) -> Any:
        """Logits of each input (one tensor for one input); with ``layers``: ``(logits,
        features)`` pairs, ``features`` a ``{layer: (B, d)}`` dict."""
        if layers is None:
            outs = tuple(logits_of(self.model(x)) for x in xs)
            return outs[0] if len(outs) == 1 else outs
        from ncscope.collapse import FeatureTaps

        pairs = []
        with FeatureTaps(self.model, list(layers), reduce=reduce, detach=False) as taps:
            for x in xs:
                logits = logits_of(self.model(x))
                pairs.append((logits, taps.features))
        return pairs[0] if len(pairs) == 1 else tuple(pairs)


@dataclass
class StepOutput:
    """What :meth:`TrainingMode.step` returns for one batch.

    Attributes:
        loss: scalar to backpropagate (a batch mean, so that DDP averages gradients right).
        clean_logits: logits of the clean batch, if computed (the epoch's ``run_clean_acc``).
        adv_logits: logits of the perturbed batch, if any (``run_adv_acc``).
        x_adv: the perturbed batch the loss saw, if any; spooled for the ``train_perturbed``
            NC when the mode has :attr:`TrainingMode.perturbs`.
        after_update: called by the trainer right after the optimiser step (under the same
            precision context); returns the clean logits for ``run_clean_acc`` (AT's logged
            clean forward in the order of the paper's code, ``paper_exact=True``).
    """

    loss: Tensor
    clean_logits: Tensor | None = None
    adv_logits: Tensor | None = None
    x_adv: Tensor | None = None
    after_update: Callable[[], Tensor] | None = None


@dataclass
class StepContext:
    """Everything a mode's :meth:`~TrainingMode.step` may use (one per epoch; ``batch`` and
    ``step`` are updated before each call).

    Attributes:
        model: the model being trained (unwrapped; a call does not synchronise DDP ranks).
        multi_forward: the (DDP-wrapped) :class:`MultiForward`; use :meth:`forward` /
            :meth:`forward_features`, which go through it, for the forwards that get gradients.
        loss_fn: the configured loss (:func:`ncscope.train.make_loss`).
        config: the run's :class:`~ncscope.train.TrainConfig`.
        attack: the epoch's attack from :meth:`TrainingMode.build_attack` (``None`` if none).
        epoch: 1-based epoch being trained; ``batch``: 0-based batch index in it; ``step``:
            optimiser steps taken before this batch.
        device: the training device.
    """

    model: nn.Module
    multi_forward: Callable[..., Any]
    loss_fn: LossFn
    config: TrainConfig
    attack: Attack | None = None
    epoch: int = 1
    batch: int = 0
    step: int = 0
    device: torch.device = torch.device("cpu")

    def forward(self, *xs: Tensor) -> Any:
        """Logits of each input in one (DDP) forward: a tensor for one input, else a tuple."""
        return self.multi_forward(*xs)

    def forward_features(self, *xs: Tensor, layers: Sequence[str], reduce: str = "flatten") -> Any:
        """Logits and features of the ``layers`` (specs as :class:`ncscope.collapse.FeatureTaps`,
        e.g. ``"classifier:in"``) in one (DDP) forward; gradients flow through the features.

        One input: ``(logits, {layer: (B, d)})``; several: a tuple of such pairs.
        """
        if isinstance(layers, str):
            layers = [layers]
        return self.multi_forward(*xs, layers=list(layers), reduce=reduce)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The epoch's attack applied to the batch (``attack(x, y)``)."""
        if self.attack is None:
            raise RuntimeError(
                f"training mode {self.config.mode!r} built no attack (its build_attack returned "
                "None) but its step asked for adversarial inputs"
            )
        return self.attack(x, y)


class TrainingMode:
    """Base class of training modes; subclass it and :func:`register_mode` the subclass.

    An instance is built per :class:`~ncscope.train.Trainer` from the run's config.
    Override :meth:`step` (required), :meth:`build_attack` (modes that perturb) and
    :meth:`model_mode` (modes that do not train in train mode). Set :attr:`perturbs` when
    :meth:`step` returns ``x_adv``, so that its perturbed batches are tracked.
    """

    #: Whether :meth:`step` returns the perturbed batch (tracked as ``train_perturbed``).
    perturbs: ClassVar[bool] = False

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def model_mode(self, epoch: int) -> str:
        """``"train"`` or ``"eval"``: the model's mode while training (1-based) ``epoch``."""
        return "train"

    def build_attack(self, model: nn.Module, generator: torch.Generator) -> Attack | None:
        """The attack used during one epoch (``None``: no attack); ``generator`` is seeded by
        the trainer from ``(seed, epoch, rank)`` so that every epoch is reproducible."""
        return None

    def step(self, ctx: StepContext, x: Tensor, y: Tensor) -> StepOutput:
        """The loss of one batch ``(x, y)`` (on the training device); no backward here."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(ctx, x, y)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.config.mode!r})"


@register_mode("st", aliases=("std", "std_train", "standard"))
class StandardTraining(TrainingMode):
    """Standard training: ``loss(f(x), y)`` on the clean batch."""

    def step(self, ctx: StepContext, x: Tensor, y: Tensor) -> StepOutput:
        """Clean forward and loss."""
        logits = ctx.forward(x)
        return StepOutput(ctx.loss_fn(logits, y), clean_logits=logits)


def _clean_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Logits of a no-gradient forward of the clean batch (in the model's current mode)."""
    with torch.no_grad():
        return logits_of(model(x))


@register_mode("at", aliases=("pgd", "pgd_train", "adv"))
class AdversarialTraining(TrainingMode):
    """PGD adversarial training (Madry et al. 2018) as in the code of Su et al. 2024: the
    loss is on the PGD examples only; PGD runs in ``config.effective_attack_mode`` (train by
    default); ``clean_forward`` adds the no-grad clean train-mode forward of that code."""

    perturbs = True

    def build_attack(self, model: nn.Module, generator: torch.Generator) -> Attack | None:
        """:class:`ncscope.attacks.PGD` with the config's eps / alpha / steps / norm / restarts
        and uniform random start (``random_start``)."""
        cfg = self.config
        return PGD(
            model,
            random_start=cfg.random_start,
            restarts=cfg.restarts,
            paper_exact=cfg.paper_exact,
            **attack_settings(cfg, generator),
        )

    def step(self, ctx: StepContext, x: Tensor, y: Tensor) -> StepOutput:
        """``loss(f(PGD(x)), y)``; then the optional clean forward (no gradient): before the
        optimiser step, or after it with ``paper_exact`` (the order of the paper's code, which
        decides the weights the clean batch updates BatchNorm's running statistics with)."""
        x_adv = ctx.perturb(x, y)
        adv_logits = ctx.forward(x_adv)
        loss = ctx.loss_fn(adv_logits, y)
        out = StepOutput(loss, adv_logits=adv_logits, x_adv=x_adv)
        if ctx.config.clean_forward:
            if ctx.config.paper_exact:
                out.after_update = functools.partial(_clean_logits, ctx.model, x)
            else:
                out.clean_logits = _clean_logits(ctx.model, x)
        return out


@register_mode("trades", aliases=("pgd_train_trades",))
class TradesTraining(TrainingMode):
    """TRADES (Zhang et al. 2019): ``loss(f(x), y) + trades_beta * KL(f(x) || f(x'))`` with
    ``x'`` from the eval-mode KL attack; ``bn_quirk`` trains in eval mode like the official
    code (BatchNorm running statistics stay at their initial values)."""

    perturbs = True

    def model_mode(self, epoch: int) -> str:
        """``"eval"`` with ``bn_quirk`` (official TRADES code), else ``"train"``."""
        return "eval" if self.config.bn_quirk else "train"

    def build_attack(self, model: nn.Module, generator: torch.Generator) -> Attack | None:
        """:class:`ncscope.attacks.TRADES` with the config's eps / alpha / steps / norm; the
        ``0.001 * N(0, I)`` start is dropped when ``random_start=False``."""
        cfg = self.config
        return TRADES(
            model,
            init_std=0.001 if cfg.random_start else 0.0,
            **attack_settings(cfg, generator),
        )

    def step(self, ctx: StepContext, x: Tensor, y: Tensor) -> StepOutput:
        """One forward of ``(x, x')``; natural loss plus ``beta`` times the KL term."""
        x_adv = ctx.perturb(x, y)
        clean_logits, adv_logits = ctx.forward(x, x_adv)
        loss = ctx.loss_fn(clean_logits, y) + ctx.config.trades_beta * trades_kl(
            adv_logits, clean_logits
        )
        return StepOutput(loss, clean_logits=clean_logits, adv_logits=adv_logits, x_adv=x_adv)

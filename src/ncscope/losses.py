"""Classification losses on logits: a registry (:data:`LOSSES`) with CE, LS, FL and MSE.

The bottom layer for losses: training (:mod:`ncscope.train`) and the unconstrained feature
model (:mod:`ncscope.ufm`) both select a loss here by name. It imports only
:mod:`ncscope.validation` and :class:`ncscope.data.UnknownNameError`.

One signature: a *loss factory* is registered under a name; ``factory(**hyper)`` checks its
hyper-parameters and returns ``fn(logits (B, K), targets (B,) int64) -> scalar``, the **mean over
the batch** (so that gradients average correctly across DistributedDataParallel ranks).

Built-in losses, with the defaults of the official code of Zhou, You, Li, Liu, Liu, Qu, Zhu,
"Are All Losses Created Equal: A Neural Collapse Perspective" (NeurIPS 2022;
``jinxinzhou/nc_loss``), where ``p = softmax(z)``:

=======  ================================================  ==========================
name     per-sample loss ``ℓ(z, y)``                        hyper-parameter (default)
=======  ================================================  ==========================
``ce``   ``−log p_y`` (optionally label-smoothed)           ``label_smoothing`` (0)
``ls``   ``(1−α)(−log p_y) + α · mean_j(−log p_j)``         ``alpha`` (0.05)
``fl``   ``−(1−p_y)^γ log p_y`` (Lin et al. 2017)           ``gamma`` (3)
``mse``  ``mean_j (z_j − β·[j = y])²``                      ``beta`` (15)
=======  ================================================  ==========================

Add your own with :func:`register_loss`; build one with :func:`make_loss`. The TRADES
robust term :func:`trades_kl` lives here too (it is not a registered loss: it compares two
sets of logits).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ncscope.data import UnknownNameError
from ncscope.validation import check_real, describe

__all__ = [
    "LOSSES",
    "LossFn",
    "canonical_loss",
    "cross_entropy",
    "focal",
    "label_smoothing",
    "loss_value",
    "make_loss",
    "mse",
    "register_loss",
    "resolve_loss",
    "trades_kl",
]

#: ``loss_fn(logits (B, K), targets (B,) int64) -> scalar tensor`` (batch mean).
LossFn = Callable[[Tensor, Tensor], Tensor]
#: Registry of loss factories, by name.
LOSSES: dict[str, Callable[..., LossFn]] = {}
_ALIASES = {
    "cross_entropy": "ce", "crossentropy": "ce", "xent": "ce",
    "label_smoothing": "ls", "focal": "fl", "focal_loss": "fl",
    "mean_square_error": "mse", "mean_squared_error": "mse",
}
_ZHOU = "Zhou et al. 2022"


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_loss(
    name: str, factory: Callable[..., LossFn] | None = None, *, overwrite: bool = False
) -> Callable[..., LossFn] | Callable[[Callable[..., LossFn]], Callable[..., LossFn]]:
    """Add a loss factory under ``name`` (usable as a decorator).

    ``factory(**hyper)`` must return ``fn(logits, targets) -> scalar`` (the batch mean).
    Names are case-insensitive, ``-`` and ``_`` alike; an existing name needs
    ``overwrite=True``.
    """
    key = _key(name)

    def add(fn: Callable[..., LossFn]) -> Callable[..., LossFn]:
        if key in LOSSES and not overwrite:
            raise ValueError(f"loss {key!r} is already registered (pass overwrite=True)")
        LOSSES[key] = fn
        return fn

    return add if factory is None else add(factory)


def _import_factory(spec: str) -> str:
    """Register the factory ``"package.module:function"`` under that name (imported in every
    process that resolves it, so training worker processes find it too)."""
    if spec in LOSSES:
        return spec
    module_name, _, attr = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnknownNameError(f"loss {spec!r}: cannot import it ({reason}); write "
                               "'package.module:factory' with the module on sys.path") from None
    if not callable(obj):
        raise UnknownNameError(f"loss {spec!r} is a {type(obj).__name__}, not a loss factory")
    LOSSES[spec] = obj  # type: ignore[assignment]
    return spec


def canonical_loss(name: str) -> str:
    """Registry key of ``name`` (case-insensitive, aliases); unknown names list the valid ones.

    A factory reference ``"package.module:function"`` is imported and registered under that
    name: the way to use your own loss in spawned training workers (``workers > 1``), where a
    loss registered at run time in the parent process does not exist."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string; valid names: {', '.join(sorted(LOSSES))}")
    if ":" in name:
        return _import_factory(name.strip())
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise UnknownNameError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))} "
                               "or a factory 'package.module:function'")
    return key


def _check_options(key: str, factory: Callable[..., LossFn], hyper: dict[str, object]) -> None:
    """Unknown keyword options are a one-line ValueError naming them and the valid ones."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for option in hyper:
        if option not in valid:
            names = ", ".join(valid) if valid else "none"
            close = difflib.get_close_matches(option, valid, n=1)
            fix = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"loss {key!r}: unknown option {option!r} = "
                             f"{describe(hyper[option])}; valid options: {names}{fix}")


def make_loss(name: str, **hyper: object) -> LossFn:
    """Build the registered loss ``name`` with hyper-parameters ``hyper``
    (``TrainConfig.loss_kwargs``); unknown or bad options are a one-line ValueError."""
    key = canonical_loss(name)
    factory = LOSSES[key]
    _check_options(key, factory, hyper)
    return factory(**hyper)


def resolve_loss(loss: str | LossFn, loss_kwargs: dict[str, object] | None = None) -> LossFn:
    """A loss function from a registered name (built with ``loss_kwargs``) or a ready
    ``fn(logits, targets)`` (then ``loss_kwargs`` must be empty)."""
    if isinstance(loss, str):
        return make_loss(loss, **(loss_kwargs or {}))
    if not callable(loss):
        raise TypeError(f"loss must be a registered name or a callable fn(logits, targets), "
                        f"got {describe(loss)}; valid names: {', '.join(sorted(LOSSES))}")
    if loss_kwargs:
        raise ValueError(f"loss_kwargs {sorted(loss_kwargs)} need a registered loss name; "
                         "bind them into your callable instead")
    return loss


def loss_value(loss: str | LossFn, logits: Tensor, targets: Tensor, **hyper: object) -> Tensor:
    """One evaluation: ``resolve_loss(loss, hyper)(logits, targets)`` (the batch mean)."""
    return resolve_loss(loss, hyper)(logits, targets)


def _hyper(key: str, option: str, value: object, low: float | None = None,
           high: float | None = None, *, strict_low: bool = False, strict_high: bool = False,
           hint: str = "") -> float:
    return check_real(f"loss {key!r}", option, value, low, high, strict_low, strict_high,
                      hint=hint)


@register_loss("ce")
def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy ``−log p_y`` (batch mean), the training loss of Su et al. 2024.

    ``label_smoothing`` is ``torch.nn.functional.cross_entropy``'s (0 = none, in [0, 1));
    ``ce`` with ``label_smoothing = α`` equals ``ls`` with ``alpha = α``.
    """
    ls = _hyper("ce", "label_smoothing", label_smoothing, 0.0, 1.0, strict_high=True,
                hint=" (0 = plain cross-entropy)")

    def fn(logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=ls)

    return fn


@register_loss("ls")
def label_smoothing(alpha: float = 0.05) -> LossFn:
    """Label smoothing (Szegedy et al. 2016), as in Zhou et al. 2022 and their code:
    ``ℓ = (1−α)(−log p_y) + α · (1/K) Σ_j (−log p_j)``, i.e. cross-entropy against the target
    ``(1−α)·e_y + α/K·1``. ``alpha`` in [0, 1), default 0.05 (the official code's
    ``--smoothing``); ``alpha = 0`` is cross-entropy."""
    a = _hyper("ls", "alpha", alpha, 0.0, 1.0, strict_high=True,
               hint=f" (the smoothing weight; {_ZHOU} use 0.05)")

    def fn(logits: Tensor, targets: Tensor) -> Tensor:
        logp = F.log_softmax(logits, dim=1)
        nll = -logp.gather(1, targets[:, None]).squeeze(1)
        return ((1.0 - a) * nll - a * logp.mean(dim=1)).mean()

    return fn


@register_loss("fl")
def focal(gamma: float = 3.0) -> LossFn:
    """Focal loss (Lin et al., ICCV 2017), as in Zhou et al. 2022 and their code:
    ``ℓ = −(1 − p_y)^γ log p_y``, with ``log p_y`` from ``log_softmax`` (stable for large
    logits) and ``1 − p_y = −expm1(log p_y)`` (no cancellation when ``p_y → 1``). ``gamma >= 0``,
    default 3 (the official code's ``--gamma``); ``gamma = 0`` is cross-entropy."""
    g = _hyper("fl", "gamma", gamma, 0.0, hint=f" (0 = cross-entropy; {_ZHOU} use 3)")

    def fn(logits: Tensor, targets: Tensor) -> Tensor:
        logpt = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        if g == 0.0:
            return (-logpt).mean()
        # 1 − p_y, floored at the smallest normal number: at p_y = 1 exactly (huge margins) a
        # γ < 1 would otherwise give 0 · ∞ = NaN in the backward pass.
        miss = (-torch.expm1(logpt)).clamp_min(torch.finfo(logpt.dtype).tiny)
        return (-(miss**g) * logpt).mean()

    return fn


@register_loss("mse")
def mse(beta: float = 15.0) -> LossFn:
    """Rescaled mean-squared error (Hui & Belkin, ICLR 2021), as in Zhou et al. 2022 and
    their code: ``F.mse_loss(z, β·onehot(y))``, the mean over batch **and** classes of
    ``(z_j − β·[j = y])²``. ``beta > 0`` is the target scale, default 15."""
    b = _hyper("mse", "beta", beta, 0.0, strict_low=True,
               hint=" (the target scale of the one-hot labels; e.g. 1 or 15)")

    def fn(logits: Tensor, targets: Tensor) -> Tensor:
        onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(logits, b * onehot)

    return fn


def trades_kl(logits_adv: Tensor, logits_nat: Tensor) -> Tensor:
    """TRADES robust term ``KL(f(x) || f(x'))`` summed over the batch and divided by its size.

    Exactly the official code's ``(1 / B) * KLDivLoss(reduction="sum")(log_softmax(f(x')),
    softmax(f(x)))`` (Zhang et al. 2019; used unchanged by Su et al. 2024). Gradients flow
    through both the adversarial and the natural logits, as in the reference.
    """
    batch = logits_nat.shape[0]
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="sum")
    return kl / max(batch, 1)

"""Training losses: a registry (:data:`LOSSES`, :func:`register_loss`) and the TRADES KL term.

A *loss factory* takes keyword options and returns ``loss_fn(logits, targets) -> scalar``
(the mean over the batch). The paper trains with cross-entropy (Su et al. 2024, experimental
setup); label smoothing, focal or MSE losses plug in with :func:`register_loss`::

    @register_loss("mse")
    def mse(scale: float = 1.0):
        def fn(logits, targets):
            onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
            return scale * F.mse_loss(logits, onehot)
        return fn

and are then selected with ``TrainConfig(loss="mse", loss_kwargs={"scale": 2.0})``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ncscope.data import UnknownNameError

__all__ = [
    "LOSSES",
    "LossFn",
    "canonical_loss",
    "cross_entropy",
    "make_loss",
    "register_loss",
    "trades_kl",
]

#: ``loss_fn(logits (B, K), targets (B,) int64) -> scalar tensor`` (batch mean).
LossFn = Callable[[Tensor, Tensor], Tensor]
#: Registry of loss factories, by name.
LOSSES: dict[str, Callable[..., LossFn]] = {}
_ALIASES = {"cross_entropy": "ce", "crossentropy": "ce", "xent": "ce"}


def register_loss(
    name: str, factory: Callable[..., LossFn] | None = None, *, overwrite: bool = False
) -> Callable[..., LossFn] | Callable[[Callable[..., LossFn]], Callable[..., LossFn]]:
    """Add a loss factory under ``name`` (usable as a decorator).

    ``factory(**loss_kwargs)`` must return ``fn(logits, targets) -> scalar`` (batch mean, so
    that gradients average correctly across DistributedDataParallel ranks).
    """
    key = name.strip().lower().replace("-", "_")

    def add(fn: Callable[..., LossFn]) -> Callable[..., LossFn]:
        if key in LOSSES and not overwrite:
            raise ValueError(f"loss {key!r} is already registered (pass overwrite=True)")
        LOSSES[key] = fn
        return fn

    return add if factory is None else add(factory)


def canonical_loss(name: str) -> str:
    """Registry key of ``name`` (case-insensitive, aliases); unknown names list the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string; valid names: {', '.join(sorted(LOSSES))}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise UnknownNameError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    return key


def make_loss(name: str, **kwargs: object) -> LossFn:
    """Build the registered loss ``name`` with ``kwargs`` (``TrainConfig.loss_kwargs``)."""
    return LOSSES[canonical_loss(name)](**kwargs)


@register_loss("ce")
def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy (batch mean), the paper's training loss; optional label smoothing
    (``torch.nn.functional.cross_entropy``'s ``label_smoothing``, 0 = none)."""
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    ls = float(label_smoothing)

    def fn(logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=ls)

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

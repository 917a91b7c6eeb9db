"""Normalized classifier head: unit-norm features and classifier rows, cosine logits x scale.

Yaras, Wang, Zhu, Balzano, Qu, "Neural Collapse with Normalized Features: A Geometric Analysis
over the Riemannian Manifold", NeurIPS 2022 (§2, the normalized unconstrained feature model):
features ``h`` and classifier rows ``w_k`` are constrained to the unit sphere and trained with
cross-entropy at temperature ``tau`` on ``z_k = <w_k, h>``, i.e. CE on ``z / tau``. Here::

    logits_k = scale * <w_k / ||w_k||, h / ||h||>        (no bias)

so ``scale = 1 / tau`` of the paper. The official code (``cjyaras/normalized-neural-collapse``,
``models/resnet.py``) computes ``features = tau * F.normalize(h)`` and renormalises the rows of
``fc.weight`` after every optimiser step, so its logits are ``tau * <w_k, h / ||h||>``: there
``scale = tau`` of the code (its ``--tau`` option is the *inverse* temperature, default 1).

Differences from the official code, on purpose: the rows are normalised inside ``forward`` (a
reparametrisation, no trainer hook), not projected after each step, so the logits are the same
function but the optimisation path differs; the head has no bias (the official ResNet18/50 keep
``fc_bias=True``, its variable-width ResNet and the paper's model have none).

Convention for the NC engine (``ncscope.collapse``): a built-in model with ``head="normalized"``
has an :class:`L2Normalize` called ``feature_norm`` right before its ``classifier``, so the
penultimate features ``"classifier:in"`` are the unit-norm ``h / ||h||`` of the paper, and the
head's own normalisation of its input is idempotent. The head's :meth:`NormalizedHead.
effective_linear` is ``(scale * W / ||W||_row, None)``; the engine reads it through
:func:`ncscope.models.linear_map`, so ``logits == W_eff @ features`` exactly (to rounding), as
NC3 / NC4 assume.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncscope.data import UnknownNameError

__all__ = [
    "DEFAULT_HEAD_SCALE",
    "HEADS",
    "L2Normalize",
    "NormalizedHead",
    "check_head",
    "make_head",
]

#: Classifier heads a built-in model can have (``ModelConfig.head``, ``create_model(head=)``).
HEADS = ("linear", "normalized")
#: ``scale`` of a normalized head when none is given: temperature ``tau = 0.1`` of Yaras et al.
DEFAULT_HEAD_SCALE = 10.0


def _check_scale(scale: Any, key: str) -> float:
    """``scale`` as a float, or a one-line ``ValueError`` / ``TypeError`` naming ``key``."""
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise TypeError(f"{key}={scale!r} must be a number > 0 (the cosine logits' scale = "
                        f"1 / temperature), e.g. {key}={DEFAULT_HEAD_SCALE:g}")
    value = float(scale)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key}={scale!r} must be a finite number > 0 (the cosine logits' "
                         f"scale = 1 / temperature), e.g. {key}={DEFAULT_HEAD_SCALE:g}")
    return value


def check_head(head: Any, head_scale: Any = None, *, prefix: str = "") -> tuple[str, float | None]:
    """Validate a head choice: ``head`` in :data:`HEADS` and ``head_scale`` (``None``: the
    default) a finite number > 0, given only with ``head="normalized"``. Returns
    ``(head, scale)`` with the default scale filled in (``None`` for ``"linear"``); errors are
    one line naming the key (``prefix`` + ``head`` / ``head_scale``), the value and the fix."""
    if not isinstance(head, str) or head.strip().lower() not in HEADS:
        raise UnknownNameError(f"unknown head {head!r} ({prefix}head); valid names: "
                               f"{', '.join(HEADS)}")
    head = head.strip().lower()
    if head == "linear":
        if head_scale is not None:
            raise ValueError(f"{prefix}head_scale={head_scale!r} applies only to "
                             f"{prefix}head=normalized; set {prefix}head=normalized or drop "
                             f"{prefix}head_scale")
        return head, None
    if head_scale is None:
        return head, DEFAULT_HEAD_SCALE
    return head, _check_scale(head_scale, f"{prefix}head_scale")


class L2Normalize(nn.Module):
    """``x / max(||x||, eps)`` along ``dim`` (default: the last, the feature dimension).

    Put it right before a :class:`NormalizedHead` so that the head's input -- the penultimate
    feature the NC engine taps as ``"<classifier>:in"`` -- is the unit-norm feature of Yaras et
    al. 2022. A zero vector stays zero.
    """

    def __init__(self, dim: int = -1, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim = int(dim)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        """Unit-norm ``x`` along ``dim``."""
        return F.normalize(x, dim=self.dim, eps=self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class NormalizedHead(nn.Linear):
    """Cosine classifier: ``logits = scale * (W / ||W||_row) @ (h / ||h||)``, no bias.

    A drop-in ``nn.Linear`` (same ``weight`` of shape ``(out_features, in_features)``, ``bias``
    is ``None``), so :func:`~ncscope.models.find_classifier` and the layer taps find it as they
    find any final linear layer. The rows of ``weight`` are free parameters, normalised in
    ``forward``; logits lie in ``[-scale, scale]``.

    Args:
        in_features: feature dimension ``d``.
        out_features: number of classes ``K``.
        scale: ``1 / tau`` of Yaras et al. 2022 (CE on ``z / tau``); ``tau`` of their code.
        eps: floor of the norms (a zero feature gives zero logits).

    :meth:`effective_linear` is the linear map the NC engine uses on unit-norm features: put
    an :class:`L2Normalize` before the head (the built-in models do, as ``feature_norm``) so
    that ``logits == W_eff @ features`` holds for the tapped ``"<classifier>:in"``.
    """

    def __init__(self, in_features: int, out_features: int,
                 scale: float = DEFAULT_HEAD_SCALE, *, eps: float = 1e-12,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        value = _check_scale(scale, "scale")
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.scale = value
        self.eps = float(eps)

    def effective_linear(self) -> tuple[Tensor, Tensor | None]:
        """``(scale * W / ||W||_row, None)``: the linear map applied to unit-norm features
        (the protocol :func:`ncscope.models.linear_map` reads; gradients flow)."""
        return self.scale * F.normalize(self.weight, dim=1, eps=self.eps), None

    def forward(self, x: Tensor) -> Tensor:
        """Cosine logits times ``scale`` for features ``x`` of shape ``(*, in_features)``."""
        weight, _ = self.effective_linear()
        return F.linear(F.normalize(x, dim=-1, eps=self.eps), weight)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale:g}")


def make_head(in_features: int, num_classes: int, head: str = "linear",
              head_scale: float | None = None) -> tuple[nn.Module | None, nn.Linear]:
    """The ``(feature_norm, classifier)`` pair of a built-in model: ``(None, nn.Linear)`` for
    ``head="linear"``, ``(L2Normalize(), NormalizedHead(scale))`` for ``head="normalized"``
    (validated by :func:`check_head`)."""
    kind, scale = check_head(head, head_scale)
    if kind == "linear":
        return None, nn.Linear(in_features, num_classes)
    assert scale is not None
    return L2Normalize(), NormalizedHead(in_features, num_classes, scale)

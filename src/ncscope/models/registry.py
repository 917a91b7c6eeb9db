"""Model registry: :data:`MODELS`, :func:`create_model`, :func:`available_models`.

``create_model`` fills the number of classes, the input shape and the normalisation statistics
from a data set (``dataset="cifar10"`` or a :class:`ncscope.data.DatasetInfo`) unless they are
given explicitly; without any, :class:`Normalize` is the identity (mean 0, std 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ncscope.data import DatasetInfo, UnknownNameError, get_dataset_info
from ncscope.models.cnn import SmallCNN
from ncscope.models.mlp import BNMLP
from ncscope.models.preactresnet import preactresnet18, preactresnet18_imagenette
from ncscope.models.vgg import vgg11_bn, vgg11_bn_imagenette

__all__ = ["MODELS", "ModelSpec", "available_models", "create_model", "register_model"]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """Registry entry: ``builder(num_classes, input_shape, mean, std, **kw)``, the default
    ``input_shape`` ``(C, H, W)`` and a one-line ``description``."""

    builder: Builder
    input_shape: tuple[int, int, int]
    description: str


def _mlp(num_classes: int, input_shape: Sequence[int], mean: Any, std: Any, **kw: Any):
    return BNMLP(input_shape, num_classes, mean=mean, std=std, **kw)


def _cnn(num_classes: int, input_shape: Sequence[int], mean: Any, std: Any, **kw: Any):
    return SmallCNN(input_shape[0], num_classes, mean=mean, std=std, **kw)


def _conv(fn: Callable[..., nn.Module]) -> Builder:
    def build(num_classes: int, input_shape: Sequence[int], mean: Any, std: Any, **kw: Any):
        return fn(num_classes, input_shape[0], mean, std, **kw)

    return build


MODELS: dict[str, ModelSpec] = {
    "bn_mlp": ModelSpec(
        _mlp, (1, 8, 8), "Linear-BN-ReLU MLP 64-512-512-256-128-C (digits default)"
    ),
    "small_cnn": ModelSpec(
        _cnn, (1, 28, 28), "3 conv-BN-ReLU-pool blocks + FC 128 (Fashion-MNIST default)"
    ),
    "vgg11_bn": ModelSpec(_conv(vgg11_bn), (3, 32, 32), "VGG11-BN, CIFAR variant (paper)"),
    "vgg11_bn_imagenette": ModelSpec(
        _conv(vgg11_bn_imagenette), (3, 160, 160), "VGG11-BN with final pool, ImageNette-160"
    ),
    "preactresnet18": ModelSpec(
        _conv(preactresnet18), (3, 32, 32), "PreActResNet18, CIFAR variant (Rice et al.)"
    ),
    "preactresnet18_imagenette": ModelSpec(
        _conv(preactresnet18_imagenette),
        (3, 160, 160),
        "PreActResNet18, ImageNet-style stem, ImageNette-160",
    ),
}

_ALIASES = {
    "mlp": "bn_mlp",
    "bnmlp": "bn_mlp",
    "cnn": "small_cnn",
    "smallcnn": "small_cnn",
    "vgg11bn": "vgg11_bn",
    "vgg": "vgg11_bn",
    "vgg11_bn_pool": "vgg11_bn_imagenette",
    "preact_resnet18": "preactresnet18",
    "preactresnet": "preactresnet18",
    "preact_resnet18_imagenette": "preactresnet18_imagenette",
}


def available_models() -> list[str]:
    """Sorted names accepted by :func:`create_model` (aliases such as ``mlp`` not listed)."""
    return sorted(MODELS)


def register_model(name: str, spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Add a user architecture to :data:`MODELS`."""
    key = _canonical(name)
    if key in MODELS and not overwrite:
        raise ValueError(f"model {key!r} is already registered (pass overwrite=True)")
    MODELS[key] = spec


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    in_channels: int | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    dataset: str | DatasetInfo | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model with a leading :class:`Normalize`.

    Args:
        name: a name from :func:`available_models` (case-insensitive; ``-`` = ``_``).
        num_classes: output classes (default: the data set's, else 10).
        input_shape: ``(C, H, W)`` of one input (default: the data set's, else the model's).
        in_channels: overrides ``input_shape[0]``.
        mean, std: normalisation statistics (default: the data set's, else 0 / 1).
        dataset: registry name or :class:`DatasetInfo` supplying the defaults above.
        **kwargs: architecture options (e.g. ``widths`` for ``bn_mlp``; ``channels`` /
            ``hidden`` for ``small_cnn``); every built-in model also takes ``head`` (``"linear"``
            or ``"normalized"``) and ``head_scale`` (see :class:`~ncscope.models.NormalizedHead`).

    The returned model has ``classifier`` (final ``nn.Linear``), ``tap_layers``,
    ``num_classes`` and ``input_shape`` attributes (with ``head="normalized"`` also the
    :class:`~ncscope.models.L2Normalize` ``feature_norm`` in front of the classifier).
    """
    key = _canonical(name)
    if key not in MODELS:
        raise UnknownNameError(
            f"unknown model {name!r}; valid names: {', '.join(available_models())}"
        )
    spec = MODELS[key]
    info = get_dataset_info(dataset) if isinstance(dataset, str) else dataset
    if num_classes is None:
        num_classes = info.num_classes if info is not None else 10
    shape = tuple(input_shape) if input_shape is not None else None
    if shape is None:
        shape = info.input_shape if info is not None else spec.input_shape
    if in_channels is not None:
        shape = (int(in_channels), *shape[1:])
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {shape}")
    if mean is None:
        mean = info.mean if info is not None else 0.0
    if std is None:
        std = info.std if info is not None else 1.0
    model = spec.builder(num_classes, shape, mean, std, **kwargs)
    model.input_shape = tuple(int(s) for s in shape)
    model.model_name = key
    return model

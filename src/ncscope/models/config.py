"""The ``model`` config section shared by every command (train, analyze, reproduce studies).

``name`` is a registry name or a factory ``"package.module:function"``: ``--set
model.name=mypkg.nets:make_net`` imports ``mypkg.nets`` and builds ``make_net(**kwargs)``,
passing the data set's ``num_classes`` / ``input_shape`` (and ``mean`` / ``std``) when the
factory takes parameters of those names.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ncscope.data import DatasetInfo, UnknownNameError, get_dataset_info
from ncscope.models.registry import MODELS, _canonical, available_models, create_model

__all__ = ["ModelConfig", "is_factory", "load_factory"]


def is_factory(name: str) -> bool:
    """Whether ``name`` is a factory reference ``"package.module:function"``."""
    return ":" in name


def load_factory(spec: str) -> Callable[..., Any]:
    """Import the callable ``"package.module:attr"`` (``attr`` may be dotted); a bad module or
    attribute is a one-line ``ValueError``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model.name {spec!r}: a factory is written 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure: one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"model.name {spec!r}: cannot import module {module_name!r} "
                         f"({reason}); check the spelling and that it is on sys.path / "
                         "PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model.name {spec!r}: module {module_name!r} has no attribute "
                             f"{attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model.name {spec!r}: {attr!r} is a {type(obj).__name__}, not a "
                         "callable that builds the model")
    return obj


def _offered(fn: Callable[..., Any], info: DatasetInfo) -> dict[str, Any]:
    """The data set's ``num_classes`` / ``input_shape`` / ``mean`` / ``std`` the factory takes by
    name (``num_classes`` and ``input_shape`` also through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offer = {"num_classes": info.num_classes, "input_shape": tuple(info.input_shape),
             "mean": tuple(info.mean), "std": tuple(info.std)}
    return {k: v for k, v in offer.items()
            if k in params or (var_kw and k in ("num_classes", "input_shape"))}


@dataclass
class ModelConfig:
    """Which model a job builds (YAML section ``model``; ``--set model.name=small_cnn``).

    Attributes:
        name: registry name (:func:`ncscope.models.available_models`), a factory
            ``"package.module:function"`` (see the module docstring), or ``None``: the data
            set's default model.
        kwargs: architecture options (e.g. ``{"widths": [64, 64]}`` for ``bn_mlp``; a factory's
            keyword arguments).
        classifier: module name of the final linear layer (``None``: found as
            :func:`ncscope.models.find_classifier` says).
    """

    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    classifier: str | None = None

    def __post_init__(self) -> None:
        if self.name is None:
            return
        if is_factory(str(self.name)):
            load_factory(str(self.name))  # a bad module or attribute fails here, in one line
            return
        key = _canonical(str(self.name))
        if key not in MODELS:
            raise UnknownNameError(f"unknown model {self.name!r} (model.name); valid names: "
                                   f"{', '.join(available_models())} or a factory "
                                   "'package.module:function'")
        self.name = key

    def resolved_name(self, dataset: str | DatasetInfo) -> str:
        """The model name, or the data set's default when ``name`` is ``None``."""
        if self.name is not None:
            return self.name
        info = dataset if isinstance(dataset, DatasetInfo) else get_dataset_info(dataset)
        if info.default_model is None:
            raise ValueError(f"data set {info.name!r} has no default model; set model.name")
        return info.default_model

    def build(self, dataset: str | DatasetInfo) -> nn.Module:
        """Create the model for ``dataset`` (its input shape, classes and normalisation)."""
        name = self.resolved_name(dataset)
        if not is_factory(name):
            return create_model(name, dataset=dataset, **self.kwargs)
        fn = load_factory(name)
        info = dataset if isinstance(dataset, DatasetInfo) else get_dataset_info(dataset)
        try:
            model = fn(**{**_offered(fn, info), **self.kwargs})
        except TypeError as exc:
            raise TypeError(f"model.name {name!r}: {str(exc).splitlines()[0]}") from None
        if not isinstance(model, nn.Module):
            raise TypeError(f"model.name {name!r} returned {type(model).__name__}, not a "
                            "torch.nn.Module")
        return model

"""The ``model`` config section shared by every command (train, analyze, reproduce studies).

``name`` is a registry name or a factory ``"package.module:function"``: ``--set
model.name=mypkg.nets:make_net`` imports ``mypkg.nets`` and builds ``make_net(**kwargs)``,
passing the data set's ``num_classes`` / ``input_shape`` (and ``mean`` / ``std``) when the
factory takes parameters of those names.

``head`` / ``head_scale`` pick the classifier of a built-in model: ``--set model.head=normalized
--set model.head_scale=10`` gives it an :class:`~ncscope.models.L2Normalize` and a cosine
:class:`~ncscope.models.NormalizedHead` (Yaras et al., NeurIPS 2022; ``head_scale = 1 / tau``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ncscope.data import DatasetInfo, UnknownNameError, get_dataset_info
from ncscope.models.normalized import check_head
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
        head: classifier of a built-in model: ``"linear"`` (``nn.Linear``) or
            ``"normalized"`` (:class:`~ncscope.models.L2Normalize` then
            :class:`~ncscope.models.NormalizedHead`: cosine logits times ``head_scale``).
        head_scale: the normalized head's ``scale`` = ``1 / tau`` of Yaras et al. 2022 (``None``:
            :data:`~ncscope.models.DEFAULT_HEAD_SCALE`, filled in); only with
            ``head="normalized"``.
    """

    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    classifier: str | None = None
    head: str = "linear"
    head_scale: float | None = None

    def __post_init__(self) -> None:
        self.head, self.head_scale = check_head(self.head, self.head_scale, prefix="model.")
        taken = [k for k in ("head", "head_scale") if k in self.kwargs]
        if taken:
            raise ValueError(f"model.kwargs.{taken[0]}: set model.{taken[0]} instead (one "
                             "place for the head: model.head / model.head_scale)")
        if self.name is None:
            return
        if is_factory(str(self.name)):
            self._no_factory_head(str(self.name))
            load_factory(str(self.name))  # a bad module or attribute fails here, in one line
            return
        key = _canonical(str(self.name))
        if key not in MODELS:
            raise UnknownNameError(f"unknown model {self.name!r} (model.name); valid names: "
                                   f"{', '.join(available_models())} or a factory "
                                   "'package.module:function'")
        self.name = key

    def _no_factory_head(self, name: str) -> None:
        if self.head != "linear":
            raise ValueError(f"model.head={self.head} applies to built-in models; the factory "
                             f"{name!r} builds its own head (use ncscope.models.NormalizedHead "
                             "after an L2Normalize in it)")

    def resolved_name(self, dataset: str | DatasetInfo) -> str:
        """The model name, or the data set's default when ``name`` is ``None``."""
        if self.name is not None:
            return self.name
        info = dataset if isinstance(dataset, DatasetInfo) else get_dataset_info(dataset)
        if info.default_model is None:
            raise ValueError(f"data set {info.name!r} has no default model; set model.name")
        return info.default_model

    def head_kwargs(self) -> dict[str, Any]:
        """``{"head": ..., "head_scale": ...}`` for a built-in model's builder; empty for the
        default linear head (so user-registered builders without these parameters work)."""
        if self.head == "linear":
            return {}
        return {"head": self.head, "head_scale": self.head_scale}

    def build(self, dataset: str | DatasetInfo) -> nn.Module:
        """Create the model for ``dataset`` (its input shape, classes and normalisation)."""
        name = self.resolved_name(dataset)
        if not is_factory(name):
            try:
                return create_model(name, dataset=dataset, **self.kwargs, **self.head_kwargs())
            except TypeError as exc:
                if self.head == "linear" or "head" not in str(exc):
                    raise
                raise TypeError(f"model.head={self.head}: model {name!r} does not take a head "
                                f"option ({str(exc).splitlines()[0]}); use model.head=linear "
                                "or add head / head_scale parameters to its builder") from None
        self._no_factory_head(name)
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

"""The ``model`` config section shared by every command (train, analyze, reproduce studies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ncscope.data import DatasetInfo, UnknownNameError, get_dataset_info
from ncscope.models.registry import MODELS, _canonical, available_models, create_model


@dataclass
class ModelConfig:
    """Which model a job builds (YAML section ``model``; ``--set model.name=small_cnn``).

    Attributes:
        name: registry name (:func:`ncscope.models.available_models`); ``None``: the data
            set's default model.
        kwargs: architecture options (e.g. ``{"widths": [64, 64]}`` for ``bn_mlp``).
        classifier: module name of the final linear layer (``None``: the model's
            ``classifier_name`` or ``"classifier"``).
    """

    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    classifier: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            key = _canonical(str(self.name))
            if key not in MODELS:
                raise UnknownNameError(f"unknown model {self.name!r} (model.name); valid names: "
                                 f"{', '.join(available_models())}")
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
        return create_model(self.resolved_name(dataset), dataset=dataset, **self.kwargs)

"""Training configuration: :class:`TrainConfig` = :class:`~ncscope.train.settings.TrainSettings`
plus the ``data`` and ``model`` sections, with (de)serialisation through the one config loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncscope.config import from_dict, load_config, to_dict
from ncscope.data.config import DataConfig
from ncscope.models.config import ModelConfig
from ncscope.train.modes import MODES
from ncscope.train.settings import RESUME_FREE_FIELDS, TRACK_LAYER_CHOICES, TrainSettings

__all__ = ["MODES", "RESUME_FREE_FIELDS", "TRACK_LAYER_CHOICES", "TrainConfig", "TrainSettings"]


@dataclass
class TrainConfig(TrainSettings):
    """Everything a training run needs: :class:`TrainSettings` plus the ``data`` and ``model``
    sections (``--set data.n_train=500``, ``--set model.kwargs.widths=[64,64]``)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if isinstance(self.data, Mapping):
            self.data = from_dict(DataConfig, dict(self.data), prefix="data.")
        if isinstance(self.model, Mapping):
            self.model = from_dict(ModelConfig, dict(self.model), prefix="model.")
        if not isinstance(self.data, DataConfig) or not isinstance(self.model, ModelConfig):
            raise TypeError("data and model must be DataConfig / ModelConfig sections (or dicts)")
        self.model.name = self.model.resolved_name(self.data.dataset)
        super().__post_init__()

    @classmethod
    def from_sections(cls, data: DataConfig, model: ModelConfig, settings: TrainSettings,
                      **changes: Any) -> TrainConfig:
        """Combine a study's ``data``, ``model`` and ``train`` sections (plus changes)."""
        return cls.from_dict({**to_dict(settings), "data": to_dict(data),
                              "model": to_dict(model), **changes})

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict of every field (round-trips through from_dict)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a (nested) dict; unknown keys are an error that lists the valid ones."""
        if not isinstance(data, Mapping):
            raise TypeError(f"config must be a mapping, got {type(data).__name__}")
        return from_dict(cls, dict(data))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML (or JSON) file written by :meth:`to_yaml` or by hand."""
        return load_config(cls, path)

    def to_yaml(self) -> str:
        """The config as YAML text (keys in field order)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def digits_recipe(cls, mode: str = "st", **overrides: Any) -> TrainConfig:
        """The small digits recipe of the su2024 study.

        BN-MLP 64-512-512-256-128-10 on the 1347 digits training images, SGD 0.9, lr 0.05,
        piecewise schedule (per iteration), weight decay 5e-4, batch 128, 300 epochs, PGD-10
        l_inf ``eps = 0.1``, ``alpha = eps / 4``, one random start. ``overrides`` change any field
        (e.g. ``bn_quirk=True`` for the official TRADES code's variant).
        """
        base: dict[str, Any] = {
            "data": {"dataset": "digits"},
            "model": {"name": "bn_mlp"},
            "mode": mode,
            "epochs": 300,
            "batch_size": 128,
            "lr": 0.05,
            "schedule": "piecewise",
            "eps": 0.1,
            "alpha": 0.025,
            "steps": 10,
        }
        base.update(overrides)
        return cls.from_dict(base)

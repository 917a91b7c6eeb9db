"""The ``data`` config section shared by every command (train, analyze, reproduce studies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from ncscope.data.registry import get_dataset_info, load_dataset


@dataclass
class DataConfig:
    """Which data a job reads (YAML section ``data``; ``--set data.n_train=500``).

    Attributes:
        dataset: registry name (:func:`ncscope.data.available_datasets`).
        root: folder of the data files (``None``: the registry's default).
        n_train / n_per_class: stratified / balanced subset of the training split.
        n_test: stratified subset of the test split.
        seed: seed of the subset choice (the data themselves do not depend on it).
        kwargs: loader options (e.g. ``split_seed`` for digits; ``shape`` for synthetic).
    """

    dataset: str = "digits"
    root: str | None = None
    n_train: int | None = None
    n_per_class: int | None = None
    n_test: int | None = None
    seed: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dataset = get_dataset_info(self.dataset).name  # unknown name: lists the valid ones
        for name in ("n_train", "n_per_class", "n_test"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"data.{name} must be a positive integer or null; got {value!r}")
        if self.n_train is not None and self.n_per_class is not None:
            raise ValueError("data: set at most one of n_train and n_per_class")

    def load(self, split: str = "train") -> Dataset:
        """Load ``split`` with this section's subset and loader options."""
        if split == "train":
            return load_dataset(self.dataset, self.root, split="train", n_train=self.n_train,
                                n_per_class=self.n_per_class, seed=self.seed, **self.kwargs)
        return load_dataset(self.dataset, self.root, split=split, n_train=self.n_test,
                            seed=self.seed, **self.kwargs)

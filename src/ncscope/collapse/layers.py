"""One NCStats per tapped layer, fed from the feature dicts of :class:`FeatureTaps`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ncscope.collapse.stats import NCStats


class LayerNC:
    """Streaming NC statistics for several layers at once (same two-pass protocol as NCStats).

    ``classifiers`` maps a layer key (e.g. ``"classifier:in"``) to its ``(W, b)``; other layers
    get no classifier (NC3/NC2-of-W are ``None``; NC4 and leaps use ``predictions`` if given).
    """

    def __init__(
        self,
        num_classes: int,
        layers: Sequence[str],
        classifiers: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]] | None = None,
        **options: Any,
    ) -> None:
        classifiers = dict(classifiers or {})
        unknown = set(classifiers) - set(layers)
        if unknown:
            raise ValueError(f"classifiers given for layers not tapped: {sorted(unknown)}")
        self.layers = list(layers)
        self.stats = {
            name: NCStats(num_classes, *classifiers.get(name, (None, None)), **options)
            for name in self.layers
        }

    def _check(self, features: Mapping[str, torch.Tensor]) -> None:
        missing = [n for n in self.layers if n not in features]
        if missing:
            raise ValueError(f"features for layers {missing} are missing from this batch")

    def update(self, features: Mapping[str, torch.Tensor], labels: torch.Tensor) -> LayerNC:
        """Pass 1 for every layer (reference features)."""
        self._check(features)
        for name, s in self.stats.items():
            s.update(features[name], labels)
        return self

    def update_measured(
        self,
        features: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
        *,
        predictions: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> LayerNC:
        """Pass 2 for every layer (measured features around the reference means)."""
        self._check(features)
        for name, s in self.stats.items():
            s.update_measured(features[name], labels, predictions=predictions, targets=targets)
        return self

    def compute(self) -> dict[str, dict[str, float | int | None]]:
        """``{layer: NCStats.compute()}`` in tap order."""
        return {name: s.compute() for name, s in self.stats.items()}

    def merge(self, other: LayerNC) -> LayerNC:
        """Add another LayerNC over the same layers (in place)."""
        if other.layers != self.layers:
            raise ValueError("cannot merge LayerNC objects over different layers")
        for name, s in self.stats.items():
            s.merge(other.stats[name])
        return self

    def all_reduce(self, group: Any = None) -> LayerNC:
        """Sum every layer's accumulators over ``torch.distributed`` ranks."""
        for s in self.stats.values():
            s.all_reduce(group)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Per-layer :meth:`NCStats.state_dict`."""
        return {name: s.state_dict() for name, s in self.stats.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> LayerNC:
        """Restore per-layer states saved by :meth:`state_dict`."""
        for name, s in self.stats.items():
            s.load_state_dict(state[name])
        return self

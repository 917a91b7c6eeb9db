"""ncscope: Neural Collapse under adversarial attack and adversarial training.

Layers, bottom to top: ``data``, ``models``, ``collapse`` (layer taps + NC statistics),
``attacks``, ``train``, ``experiments``, ``report``, ``cli``. Lower layers never import
higher ones.
"""

from ncscope.collapse import (
    FeatureTaps,
    NCStats,
    list_layers,
    nc_metrics,
    simplex_similarity,
)

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: the engine does not pull in attacks/experiments
    if name == "analyze":
        from ncscope.experiments.analyze import analyze

        return analyze
    raise AttributeError(f"module 'ncscope' has no attribute {name!r}")


__all__ = [
    "FeatureTaps",
    "NCStats",
    "__version__",
    "analyze",
    "list_layers",
    "nc_metrics",
    "simplex_similarity",
]

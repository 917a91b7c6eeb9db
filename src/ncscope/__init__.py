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

__all__ = [
    "FeatureTaps",
    "NCStats",
    "__version__",
    "list_layers",
    "nc_metrics",
    "simplex_similarity",
]

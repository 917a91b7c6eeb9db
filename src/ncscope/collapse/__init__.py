"""Layer taps and exact streaming Neural-Collapse statistics (no training, no attacks here)."""

from ncscope.collapse.layers import LayerNC
from ncscope.collapse.metrics import nc_metrics, simplex_similarity
from ncscope.collapse.stats import NCStats
from ncscope.collapse.taps import FeatureTaps, list_layers

__all__ = ["FeatureTaps", "LayerNC", "NCStats", "list_layers", "nc_metrics", "simplex_similarity"]

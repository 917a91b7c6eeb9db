"""Layer taps, exact streaming NC statistics, the metric registry and the one measurement sweep
(no training, no attacks here); :mod:`~ncscope.collapse.gnc`: one-vs-rest distances and the
generalized-NC metrics."""

from ncscope.collapse.gnc import OneVsRest, min_margin, one_vs_rest, one_vs_rest_margins
from ncscope.collapse.layers import LayerNC
from ncscope.collapse.measure import Measurement
from ncscope.collapse.metrics import nc_metrics, simplex_similarity
from ncscope.collapse.reference import ClassMeanSums, Reference
from ncscope.collapse.registry import METRICS, Metric, NCView, register_metric, unregister_metric
from ncscope.collapse.schema import COLUMNS, long_frame, wide
from ncscope.collapse.spool import TensorSpool
from ncscope.collapse.stats import NCStats
from ncscope.collapse.sweep import Source, sweep
from ncscope.collapse.taps import FeatureTaps, list_layers

__all__ = [
    "COLUMNS",
    "METRICS",
    "ClassMeanSums",
    "FeatureTaps",
    "LayerNC",
    "Measurement",
    "Metric",
    "NCStats",
    "NCView",
    "OneVsRest",
    "Reference",
    "Source",
    "TensorSpool",
    "list_layers",
    "long_frame",
    "min_margin",
    "nc_metrics",
    "one_vs_rest",
    "one_vs_rest_margins",
    "register_metric",
    "simplex_similarity",
    "sweep",
    "unregister_metric",
    "wide",
]

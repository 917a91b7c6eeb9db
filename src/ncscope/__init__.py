"""ncscope: Neural Collapse under adversarial attack and adversarial training.

Layers, bottom to top: ``data``, ``models``, ``collapse`` (layer taps, the NC engine, the metric
registry and the one measurement sweep), ``attacks``, ``train``, ``experiments`` (``analyze``
and the studies of ``ncscope reproduce``), ``report``, ``cli``. Lower layers never import
higher ones.
"""

from ncscope.collapse import (
    METRICS,
    FeatureTaps,
    NCStats,
    Source,
    list_layers,
    nc_metrics,
    register_metric,
    simplex_similarity,
    sweep,
    wide,
)

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: the engine does not pull in attacks/experiments
    if name == "analyze":
        from ncscope.experiments.analyze import analyze

        return analyze
    if name == "load_run":
        from ncscope.report.load import load_run

        return load_run
    if name == "plot":
        import ncscope.plot as plot

        return plot
    raise AttributeError(f"module 'ncscope' has no attribute {name!r}")


__all__ = [
    "METRICS",
    "FeatureTaps",
    "NCStats",
    "Source",
    "__version__",
    "analyze",
    "list_layers",
    "load_run",
    "nc_metrics",
    "register_metric",
    "simplex_similarity",
    "sweep",
    "wide",
]

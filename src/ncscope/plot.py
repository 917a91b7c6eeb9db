"""Plots of the long tables (:mod:`ncscope.collapse.schema`) from any model.

Each function takes a table returned by :func:`ncscope.analyze` / :func:`ncscope.collapse.sweep`
or a training history (``TrainResult.history``, ``history.csv``), selects rows by the schema's
columns, and returns a matplotlib :class:`~matplotlib.figure.Figure` (nothing is written or
shown; ``fig.savefig(...)`` it). Tables read back from CSV work as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["angles", "layerwise", "leap_2d", "nc_vs_epoch"]


def _aggregate(df: pd.DataFrame) -> pd.DataFrame:
    if "class" in df:
        return df[df["class"].isna()]
    return df


def _need(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs the columns {missing} of the long schema "
                         "(a table from ncscope.analyze, ncscope.collapse.sweep or a history)")


def layerwise(df: pd.DataFrame, metric: str = "nc1", *, split: str = "train",
              reference: str = "own", sources: Sequence[str] | None = None,
              log: bool | None = None) -> Figure:
    """``metric`` by layer (depth order), one line per source, for one view
    (``split``/``reference``; the own view of a targeted source is its by-target view)."""
    _need(df, ("layer", "depth", "source", "split", "reference", "metric", "value"), "layerwise")
    a = _aggregate(df)
    a = a[(a.metric == metric) & (a.split == split) & (a.reference == reference)]
    if a.empty:
        raise ValueError(f"no rows for metric={metric!r}, split={split!r}, "
                         f"reference={reference!r}")
    names = list(dict.fromkeys(a.sort_values("depth", kind="stable").layer))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.6))
    for source in sources or list(dict.fromkeys(a.source)):
        s = a[a.source == source]
        if "group" in s and reference == "clean":
            s = s[s.group == "label"]
        s = s.groupby("layer", sort=False).value.first().reindex(names)
        ax.plot(range(len(names)), s.to_numpy(float), "o-", label=source)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel(metric)
    if log if log is not None else metric.startswith(("nc1", "trace", "cdnv")):
        ax.set_yscale("log")
    ax.set_title(f"{metric} by layer ({split}, {reference} means)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def nc_vs_epoch(history: pd.DataFrame, metrics: Sequence[str] = ("nc1", "nc4"), *,
                layer: str | None = None, split: str = "train", reference: str = "own",
                sources: Sequence[str] | None = None) -> Figure:
    """Per-epoch curves of ``metrics`` at one layer (default: the deepest tracked layer), one
    line per source (and per ``run`` when the table has that column)."""
    _need(history, ("epoch", "layer", "depth", "source", "split", "reference", "metric", "value"),
          "nc_vs_epoch")
    h = _aggregate(history)
    h = h[(h.split == split) & (h.reference == reference) & h.layer.notna()]
    if h.empty:
        raise ValueError(f"no rows for split={split!r}, reference={reference!r}")
    pick = layer if layer is not None else h.sort_values("depth").layer.iloc[-1]
    h = h[h.layer == pick]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    groups = ["run", "source"] if "run" in h else ["source"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        m = h[h.metric == metric]
        if sources is not None:
            m = m[m.source.isin(sources)]
        for key, g in m.groupby(groups, sort=False):
            label = " ".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
            g = g.sort_values("epoch")
            ax.plot(g.epoch, g.value.astype(float), "-", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric.startswith(("nc1", "trace", "cdnv")):
            ax.set_yscale("log")
        elif metric == "nc4":
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"{metric} at {pick}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def angles(df: pd.DataFrame, *, sources: Sequence[str] | None = None,
           layer: str | None = None) -> Figure:
    """Per-class angle (degrees) between the clean and the perturbed class means at one layer
    (default: the deepest), one bar group per source (train split, clean reference, by label)."""
    _need(df, ("class", "metric", "source", "split", "reference", "layer", "depth"), "angles")
    a = df[df["class"].notna() & (df.metric == "class_angle") & (df.split == "train")
           & (df.reference == "clean")]
    if "group" in a:
        a = a[a.group == "label"]
    if a.empty:
        raise ValueError("no per-class angle rows (analyze with per_class=True)")
    pick = layer if layer is not None else a.sort_values("depth").layer.iloc[-1]
    a = a[a.layer == pick]
    chosen = list(sources) if sources is not None else [s for s in dict.fromkeys(a.source)
                                                         if s != "clean"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / max(len(chosen), 1)
    for i, source in enumerate(chosen):
        s = a[a.source == source].sort_values("class")
        ax.bar(s["class"].astype(int) + (i - (len(chosen) - 1) / 2) * width,
               s.value.astype(float), width, label=source)
    ax.set_xlabel("class")
    ax.set_ylabel("angle clean vs perturbed mean (°)")
    ax.set_title(f"Per-class simplex angle at {pick}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def leap_2d(points: pd.DataFrame) -> Figure:
    """The 2-D leap view: clean features, clean class means and perturbed features with an
    arrow from their clean position. ``points`` has columns ``panel, kind (clean | mean |
    perturbed), label, x, y`` and ``x0, y0`` for perturbed points (as the su2024 study's
    ``points.csv``)."""
    _need(points, ("panel", "kind", "label", "x", "y"), "leap_2d")
    panels = list(dict.fromkeys(points.panel))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels, strict=True):
        p = points[points.panel == panel]
        clean, means, pert = (p[p.kind == k] for k in ("clean", "mean", "perturbed"))
        ax.scatter(clean.x, clean.y, s=5, c="0.75", label="clean")
        for _, r in pert.iterrows():
            ax.annotate("", xy=(r.x, r.y), xytext=(r.x0, r.y0),
                        arrowprops=dict(arrowstyle="->", lw=0.5,
                                        color=cmap(int(r.label) % 10)))
        ax.scatter(pert.x, pert.y, s=14, marker="x",
                   c=[cmap(int(c) % 10) for c in pert.label], label="perturbed")
        ax.scatter(means.x, means.y, s=150, marker="*", edgecolor="k",
                   c=[cmap(int(c) % 10) for c in means.label], label="clean means", zorder=5)
        ax.set_title(str(panel), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

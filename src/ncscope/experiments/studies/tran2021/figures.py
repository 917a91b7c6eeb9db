"""Figures and report tables of study ``tran2021``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ncscope.experiments.studies.plotting import save_figure  # noqa: E402


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Mean over images per (rF, heuristic): seconds, LPs, RV, RS, RIoU."""
    return (sweep.groupby(["rf", "heuristic"], sort=True)
            [["seconds", "lps", "crossing", "rv", "rs", "riou"]].mean().reset_index())


def sweep_figure(sweep: pd.DataFrame, figdir: Path) -> Path:
    """Seconds, LPs and RV against rF, one line per heuristic (rF = 0 and 1 shared)."""
    t = sweep_table(sweep)
    shared = t[t.heuristic == "any"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for h in [h for h in t.heuristic.unique() if h != "any"]:
        g = pd.concat([shared, t[t.heuristic == h]]).sort_values("rf")
        for ax, col in zip(axes, ("seconds", "lps", "rv"), strict=True):
            ax.plot(g.rf, g[col], marker="o", label=h)
    for ax, title in zip(axes, ("seconds per image", "LPs per image", "RV (robust pixels)"),
                         strict=True):
        ax.set_xlabel("relaxation factor rF")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    return save_figure(fig, figdir, "rf_sweep")


def nets_figure(nets: pd.DataFrame, figdir: Path) -> Path:
    """RV and RS of both nets under both attacks (means over images)."""
    t = nets.groupby(["attack", "net"])[["rv", "rs"]].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    attacks = list(t.attack.unique())
    for ax, col in zip(axes, ("rv", "rs"), strict=True):
        for k, net in enumerate(("transposed", "dilated")):
            vals = [float(t[(t.attack == a) & (t.net == net)][col].mean()) for a in attacks]
            ax.bar(np.arange(len(attacks)) + 0.38 * k, vals, width=0.36, label=net)
        ax.set_xticks(np.arange(len(attacks)) + 0.19, attacks)
        ax.set_title(col.upper(), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    return save_figure(fig, figdir, "nets")


def radius_figure(radius: pd.DataFrame, figdir: Path) -> Path:
    """Per model: certified collapse, certified logit and PGD radii of every sample."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    runs = list(dict.fromkeys(radius.run))
    for k, (col, label) in enumerate((("collapse_radius", "certified collapse"),
                                      ("logit_radius", "certified logit"),
                                      ("pgd_radius", "PGD (empirical)"))):
        for i, run in enumerate(runs):
            v = radius[radius.run == run][col].astype(float).replace(np.inf, np.nan).dropna()
            x = i + 0.25 * (k - 1) + np.linspace(-0.06, 0.06, max(len(v), 1))[: len(v)]
            ax.scatter(x, v, s=10, color=f"C{k}", alpha=0.7, label=label if i == 0 else None)
            if len(v):
                ax.hlines(v.median(), i + 0.25 * (k - 1) - 0.1, i + 0.25 * (k - 1) + 0.1,
                          color=f"C{k}", lw=2)
    ax.set_xticks(range(len(runs)), [r.upper() for r in runs])
    ax.set_ylabel("ε (ℓ∞, pixel units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, figdir, "radii")


def figures(folder: Path) -> list[tuple[Path, str]]:
    """Every figure of the study with its caption."""
    figdir = folder / "figures"
    return [
        (sweep_figure(pd.read_csv(folder / "sweep.csv"), figdir),
         "Relaxation-factor sweep on the transposed-conv net (darkening attack; means over "
         "images): seconds, LPs solved and the fraction of robust pixels RV, one line per "
         "heuristic choosing the LP-optimised neurons (rF = 0 and rF = 1 are shared)."),
        (nets_figure(pd.read_csv(folder / "nets.csv"), figdir),
         "Transposed-conv + average-pool net against the dilated net under the same attacks "
         "(ℓ∞ ball on the attacked pixels, and darkening): RV and RS."),
        (radius_figure(pd.read_csv(folder / "radius.csv"), figdir),
         "Per digits model and test sample: the certified collapse radius (every reachable "
         "penultimate feature nearest to its class mean), the certified logit radius and the "
         "smallest ε at which PGD flips the prediction; bars are medians."),
    ]


def tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """Segmentation nets, the sweep, the nets' comparison and the radii per model."""
    radius = pd.read_csv(folder / "radius.csv")
    med = radius.groupby("run", sort=False)[["collapse_radius", "logit_radius",
                                             "pgd_radius"]].median().reset_index()
    dig = pd.read_csv(folder / "digits_models.csv")
    nets = pd.read_csv(folder / "nets.csv")
    return [
        ("Segmentation nets (mini-M2NIST test pixel accuracy)",
         pd.read_csv(folder / "seg_models.csv")),
        ("rF sweep (means over images)", sweep_table(pd.read_csv(folder / "sweep.csv"))),
        ("Nets at equal attacks (means over images)",
         nets.groupby(["attack", "net"])[["seconds", "lps", "rv", "rs", "riou"]].mean()
         .reset_index()),
        ("Digits models: median radii", dig.merge(med, on="run")),
    ]

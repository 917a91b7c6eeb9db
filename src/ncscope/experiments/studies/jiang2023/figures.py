"""Figures and report tables of study ``jiang2023``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ncscope.experiments.studies.plotting import save_figure  # noqa: E402


def ufm_figure(ufm: pd.DataFrame, codes: pd.DataFrame, figdir: Path) -> Path:
    """GNC2 of the spherical UFM vs iteration per size, with both codes' values dashed."""
    sizes = list(dict.fromkeys(zip(ufm.K, ufm.d, strict=True)))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes), 3.5), squeeze=False)
    for ax, (k, d) in zip(axes[0], sizes, strict=True):
        g = ufm[(ufm["K"] == k) & (ufm.d == d) & (ufm.metric == "gnc2")].sort_values("iteration")
        ax.plot(g.iteration, g.value, label="spherical UFM")
        r = codes[(codes["K"] == k) & (codes.d == d)].iloc[0]
        ax.axhline(r.softmax_margin, ls="--", color="C1", label="softmax code")
        ax.axhline(r.tammes_margin, ls=":", color="C2", label="Tammes code")
        ax.set_title(f"K = {k}, d = {d}", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("GNC2 = min_k ρ_k")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, figdir, "ufm_gnc2")


def network_figure(history: pd.DataFrame, figdir: Path) -> Path:
    """GNC1, GNC2 and GNC3 of the bottleneck nets vs epoch (clean training data)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    h = history[(history.source == "clean") & (history.split == "train")
                & (history.reference == "own") & (history.group == "label")
                & history["class"].isna()]
    for ax, metric in zip(axes, ("gnc1", "gnc2", "gnc3"), strict=True):
        for run, g in h[h.metric == metric].groupby("run", sort=False):
            g = g.sort_values("epoch")
            ax.plot(g.epoch, g.value, label=run.upper())
        ax.set_title(metric.upper(), fontsize=10)
        ax.set_xlabel("epoch")
        if metric != "gnc2":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, figdir, "networks_gnc")


def geometry_figure(features: pd.DataFrame, figdir: Path) -> Path:
    """The 3-D bottleneck features of the ST net (unit-normalised), one colour per class,
    with the directions of the class means."""
    cols = [c for c in features.columns if c.startswith("h")][:3]
    h = features[cols].to_numpy()
    h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    fig = plt.figure(figsize=(5.2, 4.8))
    ax = fig.add_subplot(projection="3d")
    for c in sorted(features.label.unique()):
        sel = features.label.to_numpy() == c
        ax.scatter(*h[sel].T[: len(cols)], s=4, alpha=0.5, color=f"C{c % 10}", label=str(c))
        m = h[sel].mean(0)
        m = m / max(np.linalg.norm(m), 1e-12)
        ax.plot([0, m[0]], [0, m[1]], [0, m[2]], color=f"C{c % 10}", lw=2)
    ax.set_title("ST: unit-normalised 3-D bottleneck features", fontsize=10)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    return save_figure(fig, figdir, "bottleneck_3d")


def figures(folder: Path) -> list[tuple[Path, str]]:
    """Every figure of the study with its caption."""
    figdir = folder / "figures"
    codes = pd.read_csv(folder / "codes.csv")
    out = [
        (ufm_figure(pd.read_csv(folder / "ufm.csv"), codes, figdir),
         "Spherical UFM (one unit feature per class, logit scale annealed 2 → 60): the minimal "
         "one-vs-rest distance of its classifier (GNC2) per iteration, against the best "
         "softmax code (dashed) and Tammes code (dotted) found."),
        (network_figure(pd.read_csv(folder / "history.csv"), figdir),
         "Digits BN-MLP with a linear 3-D bottleneck (K = 10 > d + 1): GNC1 (NC1 of the "
         "normalised features), GNC2 (min one-vs-rest distance of the unit classifier rows) "
         "and GNC3 (1 − cosine of rows and centred class means) on clean training data."),
    ]
    if (folder / "features.csv").is_file():
        out.append((geometry_figure(pd.read_csv(folder / "features.csv"), figdir),
                    "The ST net's training features in its 3-D bottleneck, normalised to the "
                    "sphere, with the directions of the class means (lines)."))
    return out


def tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """Codes vs UFM per size, and each net at its last epoch."""
    codes = pd.read_csv(folder / "codes.csv")
    nets = pd.read_csv(folder / "networks.csv")
    cols = ["run", "clean test acc", "PGD test acc", "clean gnc1", "clean gnc2", "clean gnc3",
            "clean nc1", "pgd nc1", "perturbed nc1"]
    return [("Spherical UFM and codes (min one-vs-rest distance ρ; Tammes angle in degrees)",
             codes),
            ("Bottleneck nets at the last epoch", nets[[c for c in cols if c in nets]])]

"""Figures and report tables of study ``zhou2022``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ncscope.experiments.studies.plotting import save_figure  # noqa: E402

UFM_PANELS = (("nc1", "NC1  Tr(Σ_W Σ_B⁺)"), ("etf_error_weights", "NC2  ETF error of W"),
              ("nc3", "NC3  self-duality"))



def ufm_figure(ufm: pd.DataFrame, figdir: Path) -> Path:
    """NC1, NC2 (ETF error of W) and NC3 of the UFM vs iteration, one line per loss."""
    fig, axes = plt.subplots(1, len(UFM_PANELS), figsize=(13, 3.6))
    for ax, (metric, title) in zip(axes, UFM_PANELS, strict=True):
        for loss, g in ufm[ufm.metric == metric].groupby("loss", sort=False):
            g = g.sort_values("iteration")
            ax.plot(g.iteration, g.value.clip(lower=1e-18), label=loss)
        ax.set_yscale("log")
        ax.set_xlabel("L-BFGS iteration")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, figdir, "ufm_nc")


def _series(history: pd.DataFrame, run: str, source: str, metric: str = "nc1") -> pd.DataFrame:
    h = history
    s = h[(h.run == run) & (h.source == source) & (h.split == "train") & (h.metric == metric)
          & (h.reference == "own") & (h.group == "label") & h["class"].isna()]
    return s.sort_values("epoch")


def network_figure(history: pd.DataFrame, figdir: Path) -> Path:
    """NC1 of the penultimate layer vs epoch: clean (solid) and perturbed (dashed: ST fresh
    PGD, AT training-time perturbations), one colour per loss, one panel per mode."""
    modes = list(dict.fromkeys(history["mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 3.8), squeeze=False)
    colours = {loss: f"C{i}" for i, loss in enumerate(dict.fromkeys(history["loss"]))}
    for ax, mode in zip(axes[0], modes, strict=True):
        for run, h in history[history["mode"] == mode].groupby("run", sort=False):
            loss = h["loss"].iloc[0]
            pert = "perturbed" if (h.source == "perturbed").any() else "pgd"
            for source, style in (("clean", "-"), (pert, "--")):
                s = _series(history, run, source)
                ax.plot(s.epoch, s.value, style, color=colours[loss],
                        label=f"{loss} {source}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("NC1")
        ax.set_title(f"{mode.upper()}: NC1 of the penultimate layer (training data)",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, figdir, "networks_nc1")


def figures(folder: Path) -> list[tuple[Path, str]]:
    """Every figure of the study with its caption."""
    figdir = folder / "figures"
    ufm = pd.read_csv(folder / "ufm.csv")
    history = pd.read_csv(folder / "history.csv")
    return [
        (ufm_figure(ufm, figdir),
         "Regularised UFM solved by L-BFGS with each loss: NC1, the ETF error of the "
         "classifier (NC2) and self-duality (NC3) of every recorded iteration (log scale), "
         "measured by the same NC engine as the networks."),
        (network_figure(history, figdir),
         "Digits BN-MLP trained with each loss: NC1 of the penultimate layer on the training "
         "set at every tracked epoch. Solid: clean features; dashed: perturbed ones (ST: a "
         "fresh PGD after the epoch; AT: the training-time PGD examples)."),
    ]


def tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """The report tables: the UFM at its last iteration and every network at its last epoch."""
    ufm = pd.read_csv(folder / "ufm_final.csv")
    keep = ["loss", "status", "iterations", "seconds", "objective", "nc1",
            "etf_error_weights", "nc3", "equinorm_weights", "net_accuracy"]
    nets = pd.read_csv(folder / "networks.csv")
    cols = ["run", "mode", "loss", "epoch", "clean test acc", "PGD test acc", "first nc1",
            *[c for c in nets.columns if c.startswith(("clean ", "pgd ", "perturbed "))
              and c != "clean test acc"]]
    nets = nets[[c for c in cols if c in nets]].dropna(axis=1, how="all")
    return [("UFM at the last iteration (one row per loss)", ufm[[c for c in keep if c in ufm]]),
            ("Networks at the last epoch: test accuracies and NC1–NC4 of the penultimate "
             "layer on training data (clean; pgd: fresh eval-mode PGD; perturbed: AT's "
             "training-time perturbations)", nets)]

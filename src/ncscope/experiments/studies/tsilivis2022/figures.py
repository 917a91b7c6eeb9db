"""Figures and report tables of study ``tsilivis2022``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ncscope.experiments.studies.plotting import save_figure  # noqa: E402


def kernel_figure(conv: pd.DataFrame, transfer: pd.DataFrame, figdir: Path) -> Path:
    """Left: relative NTK error vs width. Right: accuracies of the nets vs width."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    g = conv.groupby("width")["rel_error"]
    a.errorbar(g.mean().index, g.mean(), yerr=g.std().fillna(0), marker="o", capsize=3)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("width")
    a.set_ylabel("‖Θ_emp − Θ‖_F / ‖Θ‖_F")
    a.set_title("empirical vs analytic NTK at initialisation", fontsize=10)
    a.grid(alpha=0.3)
    nets = transfer[transfer.model == "mlp"].sort_values("width")
    for col, label in (("clean_acc", "clean"), ("kernel_fgsm_acc", "kernel FGSM (transfer)"),
                       ("kernel_pgd_acc", "kernel PGD (transfer)"),
                       ("whitebox_pgd_acc", "white-box PGD")):
        b.plot(nets.width, nets[col], marker="o", label=label)
    kern = transfer[transfer.model == "kernel"]
    if len(kern):
        b.axhline(float(kern.kernel_pgd_acc.iloc[0]), ls=":", color="k",
                  label="kernel predictor under kernel PGD")
    b.set_xscale("log", base=2)
    b.set_xlabel("width")
    b.set_ylabel("test accuracy")
    b.set_title("training-free attacks on finite nets", fontsize=10)
    b.legend(fontsize=7)
    b.grid(alpha=0.3)
    return save_figure(fig, figdir, "ntk_transfer")


def eigen_figure(eig: pd.DataFrame, figdir: Path) -> Path:
    """Usefulness and robustness per eigen-feature."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(eig["index"], eig.usefulness, marker="o", ms=3, label="usefulness ρ")
    ax.plot(eig["index"], eig.robustness, marker="s", ms=3, label="robustness γ")
    ax.axhline(0.5, ls=":", color="gray")
    ax.set_xlabel("eigen-feature (0 = largest eigenvalue)")
    ax.set_ylabel("test accuracy of sign φ_i")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, figdir, "eigen_features")


def dynamics_figure(history: pd.DataFrame, figdir: Path) -> Path:
    """Kernel distance to initialisation, top-K mass and class alignment vs epoch."""
    metrics = ("ntk_dist_init", "ntk_top_mass", "ntk_class_alignment")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    h = history[history.layer.isna() & history.metric.isin(metrics)]
    for ax, metric in zip(axes, metrics, strict=True):
        for (run, source), g in h[h.metric == metric].groupby(["run", "source"], sort=False):
            g = g.sort_values("epoch")
            ax.plot(g.epoch, g.value, ls="-" if source == "clean" else "--",
                    label=f"{run.upper()} ({source})")
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, figdir, "kernel_dynamics")


def figures(folder: Path) -> list[tuple[Path, str]]:
    """Every figure of the study with its caption."""
    figdir = folder / "figures"
    return [
        (kernel_figure(pd.read_csv(folder / "kernel_convergence.csv"),
                       pd.read_csv(folder / "transfer.csv"), figdir),
         "Left: relative Frobenius error between the empirical NTK of NTK-parameterised MLPs at "
         "initialisation and the analytic NTK (mean ± sd over seeds). Right: test accuracy of "
         "MLPs trained by full-batch GD, clean, under kernel FGSM / PGD computed on the kernel "
         "predictor alone (transfer) and under white-box PGD, at the same ε."),
        (eigen_figure(pd.read_csv(folder / "eigen_features.csv"), figdir),
         "Eigen-features of the analytic NTK on a binary digit pair: usefulness (clean test "
         "accuracy of the sign of each feature) and robustness (under a PGD on that feature)."),
        (dynamics_figure(pd.read_csv(folder / "history.csv"), figdir),
         "Empirical NTK of the digits BN-MLP on a fixed probe batch per epoch, ST vs AT, clean "
         "(solid) and under PGD (dashed): kernel distance to initialisation, share of the "
         "spectral energy in the top-K eigenspace, and alignment of the top-K eigenvectors with "
         "the class indicators."),
    ]


def tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """NTK error by width, the transfer table, the top eigen-features, kernel dynamics."""
    conv = pd.read_csv(folder / "kernel_convergence.csv")
    by_width = conv.groupby("width", as_index=False).agg(
        rel_error=("rel_error", "mean"), rel_error_sd=("rel_error", "std"),
        seconds=("seconds", "mean"))
    history = pd.read_csv(folder / "history.csv")
    k = history[history.layer.isna() & history.metric.str.startswith("ntk_")]
    last = k[k.epoch == k.groupby("run").epoch.transform("max")]
    dyn = last.pivot_table(index=["run", "source"], columns="metric", values="value").reset_index()
    dyn.columns.name = None
    eig = pd.read_csv(folder / "eigen_features.csv")
    return [("Empirical vs analytic NTK at initialisation", by_width),
            ("Kernel attacks and their transfer (test accuracy)", pd.read_csv(folder /
                                                                              "transfer.csv")),
            ("Eigen-features (first 10)", eig.head(10)),
            ("Kernel dynamics at the last epoch", dyn)]

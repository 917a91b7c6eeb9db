"""Figures and report tables of study ``yaras2022`` (matplotlib, PNG and SVG).

Each figure function takes the study's tables and writes ``<name>.png`` and ``<name>.svg``
into ``out_dir``; it returns the PNG path. :func:`figures` and :func:`tables` are what the
study declares to the report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ncscope.collapse.schema import typed  # noqa: E402
from ncscope.experiments.studies.plotting import save_figure  # noqa: E402
from ncscope.experiments.studies.yaras2022.claims import nc1_by_epoch  # noqa: E402

SOLVERS = {"rgd_armijo": ("oblique, Riemannian GD", "#d62728", "-"),
           "gd_armijo": ("regularised, GD (matched)", "#1f77b4", "-"),
           "lbfgs": ("regularised, L-BFGS (reference)", "#1f77b4", ":")}
HEAD_COLORS = {"linear": "#1f77b4", "normalized": "#d62728"}
MODE_STYLES = {"st": "-", "at": "--"}
#: Floor of the log axes: NC1 of the UFMs falls to ~1e-30 once the features coincide.
FLOOR = 1e-16

TABLES = ("ufm_scales.csv", "ufm_scales_summary.csv", "ufm_compare.csv",
          "ufm_compare_summary.csv", "history.csv", "final.csv")



def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every table of a yaras2022 run folder by file stem (one-line error when missing)."""
    missing = [n for n in TABLES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a yaras2022 run folder (missing "
                                f"{', '.join(missing)}); run `ncscope reproduce yaras2022` "
                                "first")
    out = {n[:-4]: pd.read_csv(folder / n) for n in TABLES}
    out["history"] = typed(out["history"])
    return out


def etf_vs_iteration(traj: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> Path:
    """ETF error of W against iteration, one line per scale (log y)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    scales = sorted(set(traj.scale))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(scales):
        t = traj[(traj.scale == s) & (traj.metric == "etf_error_weights")].sort_values(
            "iteration")
        ax.plot(t.iteration, t.value.clip(lower=FLOOR), color=cmap(i / max(len(scales) - 1, 1)),
                lw=1.6, label=f"scale {s:g}")
    if len(summary):
        thr = float(summary["etf threshold"].iloc[0])
        ax.axhline(thr, color="gray", ls=":", lw=1, label=f"threshold {thr:g}")
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("iteration")
    ax.set_ylabel("ETF error of W (log scale)")
    ax.set_title("Oblique UFM, Riemannian GD (Armijo): classifier rows → simplex ETF",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save_figure(fig, out_dir, "ufm_etf_vs_iteration", bbox_tight=True)


def compare_curves(traj: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> Path:
    """NC1 (top) and ETF error of W (bottom) against iteration, oblique vs regularised, one
    column per compared scale."""
    scales = sorted(set(traj.scale))
    fig, axes = plt.subplots(2, len(scales), figsize=(4.4 * len(scales), 6.8), squeeze=False)
    thr = {"nc1": summary["nc1 threshold"].iloc[0] if len(summary) else None,
           "etf_error_weights": summary["etf threshold"].iloc[0] if len(summary) else None}
    for j, s in enumerate(scales):
        lam = summary[(summary.scale == s) & summary["lambda"].notna()]["lambda"]
        for i, metric in enumerate(("nc1", "etf_error_weights")):
            ax = axes[i, j]
            for solver, (label, color, style) in SOLVERS.items():
                t = traj[(traj.scale == s) & (traj.solver == solver)
                         & (traj.metric == metric)].sort_values("iteration")
                if len(t):
                    ax.plot(t.iteration, t.value.clip(lower=FLOOR), style, color=color, lw=1.6,
                            label=label)
            if thr[metric] is not None:
                ax.axhline(float(thr[metric]), color="gray", ls=":", lw=1,
                           label=f"threshold {float(thr[metric]):g}")
            ax.set_yscale("log")
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("iteration (linear to 10, log above)")
            ax.set_ylabel(f"{'NC1' if metric == 'nc1' else 'ETF error of W'} (log scale)")
            title = f"scale {s:g}" + (f", paired λ = {float(lam.iloc[0]):.3g}" if len(lam)
                                      else "")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("Normalized (oblique) vs regularised UFM at matched settings", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    return save_figure(fig, out_dir, "ufm_compare", bbox_tight=True)


def _acc_by_epoch(history: pd.DataFrame, run: str, source: str) -> pd.Series:
    h = history
    sel = h[(h.run == run) & (h.source == source) & (h.split == "test")
            & (h.metric == "net_accuracy") & (h.reference == "clean") & (h.group == "label")
            & h["class"].isna()]
    return sel.set_index("epoch").value.astype(float).sort_index()


def nc1_vs_epoch(history: pd.DataFrame, final: pd.DataFrame, out_dir: Path) -> Path:
    """Clean NC1, perturbed NC1 and test accuracy against epoch: both heads (colour), ST
    (solid) and AT (dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for row in final.itertuples(index=False):
        color, style = HEAD_COLORS.get(row.head, "k"), MODE_STYLES.get(row.mode, "-.")
        label = f"{row.head} head, {row.mode.upper()}"
        clean = nc1_by_epoch(history, row.run)
        axes[0].plot(clean.index, clean.values, style, color=color, lw=1.6, label=label)
        pert = nc1_by_epoch(history, row.run, "perturbed" if row.mode == "at" else "pgd")
        axes[1].plot(pert.index, pert.values, style, color=color, lw=1.6, label=label)
        for source, marker in (("clean", ""), ("pgd", "o")):
            acc = _acc_by_epoch(history, row.run, source)
            axes[2].plot(acc.index, 100 * acc.values, style, marker=marker, ms=3, color=color,
                         lw=1.4, label=f"{label}, {'clean' if source == 'clean' else 'PGD'}")
    titles = ("NC1 of clean training features", "NC1 of perturbed training features "
              "(AT: training-time; ST: fresh PGD)", "test accuracy (dots: PGD)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_ylabel("NC1 (log scale)")
    axes[2].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.suptitle("Digits BN-MLP, penultimate layer: linear vs normalized head, ST (solid) and "
                 "AT (dashed)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, out_dir, "nc1_vs_epoch", bbox_tight=True)


def figures(folder: Path) -> list[tuple[Path, str]]:
    """Every figure of the study with its caption, drawn into ``folder/figures``."""
    t = read_tables(folder)
    figdir = folder / "figures"
    return [
        (etf_vs_iteration(t["ufm_scales"], t["ufm_scales_summary"], figdir),
         "Oblique UFM (Riemannian gradient descent with Armijo steps; K, n, d as in the "
         "table): ETF error of the classifier rows against iteration for every swept logit "
         "scale (log scale, floored at 1e-16). Dotted: Y1's threshold."),
        (compare_curves(t["ufm_compare"], t["ufm_compare_summary"], figdir),
         "NC1 (top) and ETF error of W (bottom) against iteration: the oblique UFM vs the "
         "regularised UFM with the same start, the same Armijo gradient descent and λ paired "
         "to the scale (both minimisers have the same logits); dotted blue: L-BFGS on the "
         "regularised problem, for reference. Iteration axis linear up to 10, log above; "
         "values floored at 1e-16."),
        (nc1_vs_epoch(t["history"], t["final"], figdir),
         "Digits BN-MLP with a linear and a normalized (cosine, no bias) head, ST (solid) and "
         "PGD-AT (dashed), penultimate features (for the normalized head: the unit-norm "
         "features it classifies): NC1 of clean training features, NC1 of their perturbations "
         "(AT: the training-time perturbations; ST: a fresh PGD after the epoch), and clean "
         "and PGD test accuracy."),
    ]


def tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """The report tables of the study."""
    t = read_tables(folder)
    scales = t["ufm_scales_summary"].drop(columns=["etf threshold"])
    compare = t["ufm_compare_summary"].drop(columns=["nc1 threshold", "etf threshold"])
    final = t["final"]
    keep = ["run", "head", "mode", "epoch", "clean test acc", "PGD test acc", "first nc1",
            "clean nc1", "clean etf_error_means", "clean nc3", "clean nc4", "pgd nc1",
            "perturbed nc1", "pgd simplex angle", "perturbed simplex angle"]
    s_thr = t["ufm_scales_summary"]["etf threshold"]
    c_sum = t["ufm_compare_summary"]
    return [
        ("Oblique UFM over the scale sweep (iterations to: first recorded iteration with ETF "
         f"error of W ≤ {float(s_thr.iloc[0]) if len(s_thr) else float('nan'):g})", scales),
        ("Oblique vs regularised UFM (iterations to NC1 ≤ "
         f"{float(c_sum['nc1 threshold'].iloc[0]) if len(c_sum) else float('nan'):g} and ETF "
         "error of W ≤ "
         f"{float(c_sum['etf threshold'].iloc[0]) if len(c_sum) else float('nan'):g}; logit "
         "scale: mean ‖w_y‖·‖h‖ at the end, × scale for the oblique problem)", compare),
        ("Digits BN-MLP, linear vs normalized head (last tracked epoch; NC of training "
         "features, own class means; simplex angles in degrees, perturbed vs clean means)",
         final[[c for c in keep if c in final.columns]]),
    ]

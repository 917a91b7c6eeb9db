"""Figures and report tables of the su2024 study (matplotlib, written as PNG and SVG).

Each figure function takes the study's schema tables and writes ``<name>.png`` and
``<name>.svg`` into ``out_dir``; it returns the PNG path. :func:`figures` and :func:`tables`
are what the study declares to the report.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ncscope.collapse.schema import typed  # noqa: E402
from ncscope.experiments.robust import consistency_flag  # noqa: E402
from ncscope.experiments.studies.plotting import save_figure  # noqa: E402
from ncscope.experiments.studies.su2024.claims import (  # noqa: E402
    penultimate_of,
    perturbed_source,
)

RUN_COLORS = {"st": "#1f77b4", "at": "#d62728", "trades": "#2ca02c", "trades_bnquirk": "#9467bd"}
RUN_LABELS = {"st": "ST", "at": "AT (PGD)", "trades": "TRADES",
              "trades_bnquirk": "TRADES (BN quirk)"}



def nc_vs_epoch(history: pd.DataFrame, out_dir: Path) -> Path:
    """NC1–NC4 of the penultimate layer against epoch, clean (solid) vs perturbed (dashed)."""
    panels = [("nc1", "NC1 = Tr(Σ_W Σ_B⁺)"),
              ("equiangular_means", "NC2: mean |cos(μ̃_c, μ̃_c′) + 1/(K−1)|"),
              ("nc3", "NC3: ‖W/‖W‖ − M̃/‖M̃‖‖²"), ("nc4", "NC4: fraction NCC ≠ network")]
    fig, grid = plt.subplots(2, 2, figsize=(12, 8))
    axes = grid.ravel()
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for run, color in RUN_COLORS.items():
            h = history[(history.run == run) & (history.split == "train")
                        & (history.reference == "own") & (history.metric == metric)]
            for source, style in (("clean", "-"), (perturbed_source(h), "--")):
                sel = h[h.source == source]
                if not len(sel):
                    continue
                sel = sel[sel.layer == penultimate_of(sel.layer)].sort_values("epoch")
                y = sel.value.astype(float)
                ax.plot(sel.epoch, y, style, color=color, lw=1.6,
                        label=f"{RUN_LABELS[run]} {'clean' if source == 'clean' else 'perturbed'}")
        if metric == "nc4":  # a fraction that reaches exactly 0: log above 1e-3, linear below
            ax.set_yscale("symlog", linthresh=1e-3)
        else:
            ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("value (log scale)")
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Penultimate-layer NC on training data: clean (solid) vs training-time "
                 "perturbations (dashed)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_figure(fig, out_dir, "nc_vs_epoch", bbox_tight=True)


def layerwise(analysis: pd.DataFrame, out_dir: Path, eps_name: str = "main") -> Path:
    """Per model: NC1 by layer (clean vs PGD, own means) and NCC test accuracy by layer."""
    a = analysis[(analysis.eps_name == eps_name) & analysis["class"].isna()]
    runs = [r for r in RUN_COLORS if r in set(a.run)]
    fig, axes = plt.subplots(2, max(len(runs), 1), figsize=(4.2 * max(len(runs), 1), 7),
                             squeeze=False)
    for j, run in enumerate(runs):
        r = a[a.run == run]
        layers = r.sort_values("depth").drop_duplicates("depth").layer.tolist()
        x = np.arange(len(layers))
        for source, style, lab in (("clean", "o-", "clean"), ("pgd", "s--", "PGD")):
            own = r[(r.source == source) & (r.split == "train") & (r.reference == "own")
                    & (r.group == "label") & (r.metric == "nc1")].sort_values("depth")
            axes[0, j].plot(x[: len(own)], own.value.astype(float), style,
                            color=RUN_COLORS[run], label=lab)
            acc = r[(r.source == source) & (r.split == "test") & (r.reference == "clean")
                    & (r.metric == "ncc_accuracy")].sort_values("depth")
            axes[1, j].plot(x[: len(acc)], 100 * acc.value.astype(float), style,
                            color=RUN_COLORS[run], label=f"NCC, {lab} test")
        net = r[(r.source == "pgd") & (r.split == "test") & (r.reference == "clean")
                & (r.metric == "net_accuracy")]
        if len(net):
            axes[1, j].axhline(100 * float(net.value.iloc[0]), color="gray", ls=":",
                               label="network, PGD test")
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(f"{RUN_LABELS[run]}: NC1 by layer (train)", fontsize=10)
        axes[0, j].set_ylabel("NC1 (log scale)")
        axes[1, j].set_title(f"{RUN_LABELS[run]}: NCC accuracy, clean train means", fontsize=10)
        axes[1, j].set_ylabel("accuracy (%)")
        axes[1, j].set_ylim(-2, 102)
        for i in range(2):
            axes[i, j].set_xticks(x, [lay.replace("features.", "") for lay in layers],
                                  rotation=30, fontsize=8)
            axes[i, j].set_xlabel("tapped layer (input → output)")
            axes[i, j].grid(alpha=0.3)
            axes[i, j].legend(fontsize=8)
    fig.suptitle(f"Layer-wise collapse, clean vs PGD ({eps_name} ε)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_dir, f"layerwise_{eps_name}", bbox_tight=True)


def leap_2d(points: pd.DataFrame, out_dir: Path) -> Path:
    """2-D view of the last layer: clean simplex, perturbed features and their leaps.

    ``points`` has columns ``panel, kind (clean|perturbed|mean), label, x, y`` and, for
    perturbed points, ``x0, y0`` (the clean position) and ``pred``.
    """
    panels = list(dict.fromkeys(points.panel))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels, strict=True):
        p = points[points.panel == panel]
        means = p[p.kind == "mean"].sort_values("label")
        clean = p[p.kind == "clean"]
        pert = p[p.kind == "perturbed"]
        ax.scatter(clean.x, clean.y, s=5, c="0.75", alpha=0.5, label="clean features")
        for _, row in pert.iterrows():
            ax.annotate("", xy=(row.x, row.y), xytext=(row.x0, row.y0),
                        arrowprops=dict(arrowstyle="->", color=cmap(int(row.label) % 10),
                                        lw=0.5, alpha=0.5))
        ax.scatter(pert.x, pert.y, s=14, marker="x",
                   c=[cmap(int(c) % 10) for c in pert.label], label="perturbed (colour = label)")
        ax.scatter(means.x, means.y, s=150, marker="*", edgecolor="k",
                   c=[cmap(int(c) % 10) for c in means.label], label="clean class means",
                   zorder=5)
        for _, m in means.iterrows():
            ax.annotate(str(int(m.label)), (m.x, m.y), fontsize=9, weight="bold",
                        xytext=(4, 4), textcoords="offset points")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("PC 1 of the clean class means")
        ax.set_ylabel("PC 2 of the clean class means")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.suptitle("Last layer: each perturbed point (×) leaps from its clean position (arrow "
                 "tail) towards a clean vertex (★)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_dir, "leap_2d", bbox_tight=True)


def class_angles(analysis: pd.DataFrame, out_dir: Path, eps_name: str = "main") -> Path:
    """Per-class angle between clean and PGD class means (last layer), per model."""
    a = analysis[(analysis.eps_name == eps_name) & analysis["class"].notna()
                 & (analysis.source == "pgd") & (analysis.metric == "class_angle")
                 & (analysis.group == "label")]
    runs = [r for r in RUN_COLORS if r in set(a.run)]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        r = a[a.run == run]
        r = r[r.depth == r.depth.max()].sort_values("class")
        ax.bar(r["class"].astype(int) + (i - (len(runs) - 1) / 2) * width,
               r.value.astype(float), width, color=RUN_COLORS[run], label=RUN_LABELS[run])
    if len(a):
        ax.set_xticks(sorted(int(c) for c in a["class"].unique()))
    ax.set_xlabel("class")
    ax.set_ylabel("angle clean vs PGD class mean (degrees)")
    ax.set_title(f"Per-class clean-vs-perturbed angle, last layer ({eps_name} ε; "
                 "each simplex centred on its own mean)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, f"class_angles_{eps_name}", bbox_tight=True)


def read_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's ``history.csv`` and ``analysis.csv``, schema-typed (one-line error when
    missing). Parsed once per file version: claims, figures and tables of one report share
    the parse (each caller gets its own copy)."""
    paths = [folder / "history.csv", folder / "analysis.csv"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a su2024 run folder (missing {', '.join(missing)}); run "
            "`ncscope reproduce su2024` first"
        )
    key = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    history, analysis = _parse(key)
    return history.copy(), analysis.copy()


@functools.lru_cache(maxsize=4)
def _parse(key: tuple[tuple[str, int, int], ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    history, analysis = (typed(pd.read_csv(path)) for path, _, _ in key)
    return history, analysis


def figures(folder: Path) -> list[tuple[Path, str]]:
    """Every figure of the study with its caption, drawn into ``folder/figures``."""
    history, analysis = read_tables(folder)
    figdir = folder / "figures"
    figs = [
        (nc_vs_epoch(history, figdir),
         "NC1–NC4 of the penultimate layer on the training set at every tracked epoch (log "
         "scale; NC4, which reaches 0, on a symmetric-log axis linear below 1e-3). Solid: clean "
         "data; dashed: the perturbations of that epoch (ST: fresh PGD after the epoch; "
         "AT/TRADES: the training-time perturbations, measured with the epoch's final weights)."
         ),
        (layerwise(analysis, figdir, "main"),
         "Layer-wise NC1 (top, log scale) of clean and PGD training features with their own "
         "class means, and accuracy of the nearest-class-mean classifier built from clean "
         "training means at that layer on clean and PGD test data (bottom); dotted: the "
         "network's own PGD test accuracy."),
        (class_angles(analysis, figdir, "main"),
         "Per-class angle between the clean and the PGD class means of the last layer (each "
         "simplex centred on its own mean): small for AT (aligned simplices), large for ST."),
    ]
    if (folder / "points.csv").is_file():
        points = pd.read_csv(folder / "points.csv")
        if len(points):
            figs.insert(1, (leap_2d(points, figdir),
                            "Last-layer features projected on the top two principal directions "
                            "of the clean class means. Stars: clean class means (simplex "
                            "vertices); dots: clean training features; crosses: perturbed "
                            "features, with an arrow from their clean position."))
    return figs


def _accuracy_table(analysis: pd.DataFrame) -> pd.DataFrame:
    a = analysis[analysis["class"].isna() & (analysis.eps_name == "main")
                 & (analysis.split == "test") & (analysis.reference == "clean")
                 & (analysis.group == "label")]
    a = a[a.depth == a.groupby("run").depth.transform("max")]
    with_aa = bool((a.source == "autoattack").any())
    rows = []
    for run, r in a.groupby("run", sort=False):
        def val(source: str, metric: str, r: pd.DataFrame = r) -> float:
            s = r[(r.source == source) & (r.metric == metric)]
            return float(s.value.iloc[0]) if len(s) else float("nan")

        row = {"run": run, "eps": float(r[r.source == "pgd"].eps.iloc[0])
               if "eps" in r and (r.source == "pgd").any() else float("nan"),
               "clean test acc": val("clean", "net_accuracy"),
               "PGD test acc": val("pgd", "net_accuracy")}
        if with_aa:
            row["AutoAttack test acc"] = val("autoattack", "net_accuracy")
            row["AutoAttack check"] = consistency_flag(row["PGD test acc"],
                                                       row["AutoAttack test acc"])
        row.update({"NCC clean test acc": val("clean", "ncc_accuracy"),
                    "NCC PGD test acc": val("pgd", "ncc_accuracy")})
        rows.append(row)
    return pd.DataFrame(rows)


def _nc_table(analysis: pd.DataFrame) -> pd.DataFrame:
    a = analysis[analysis["class"].isna() & (analysis.split == "train")
                 & (analysis.reference == "own")]
    a = a[a.depth == a.groupby(["run", "eps_name"]).depth.transform("max")]
    keep = ["nc1", "equinorm_means", "equiangular_means", "nc3", "nc4"]
    a = a[a.metric.isin(keep)]
    t = a.pivot_table(index=["run", "eps_name", "source", "group"], columns="metric",
                      values="value", aggfunc="first").reset_index()
    t.columns.name = None
    return t[["run", "eps_name", "source", "group", *[k for k in keep if k in t]]]


def _robust_table(folder: Path) -> pd.DataFrame | None:
    """``robust_accuracy.csv`` as the report shows it (``None`` for folders written before it
    existed)."""
    path = folder / "robust_accuracy.csv"
    if not path.is_file():
        return None
    r = pd.read_csv(path, keep_default_na=False, na_values=[""])
    out = pd.DataFrame({"run": r.run, "eps": r.eps, "norm": r.norm, "test images": r.n,
                        "clean acc": r.clean, "PGD acc": r.pgd, "AutoAttack acc": r.autoattack})
    for col in [c for c in r.columns if c.startswith("after ")]:
        out[f"AA {col}"] = r[col]
    out["check"] = [c if isinstance(c, str) and c else (n if isinstance(n, str) else "")
                    for c, n in zip(r.check, r.note, strict=True)]
    return out


def tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """The report tables of the study."""
    _, analysis = read_tables(folder)
    out = [("Accuracies (test set, last layer for NCC)", _accuracy_table(analysis))]
    robust = _robust_table(folder)
    if robust is not None:
        out.append(("Robust accuracy: PGD vs AutoAttack (standard) on the same test images; "
                    "AutoAttack above PGD is a sanity failure, PGD more than 5 points above "
                    "AutoAttack suggests gradient masking", robust))
    out.append(("NC of the last layer on training data (own class means)", _nc_table(analysis)))
    return out

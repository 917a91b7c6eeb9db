"""Build figures, claims and ``report.html`` from a run folder (``ncscope report RUN_DIR``)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ncscope.report import figures
from ncscope.report.claims import judge_claims
from ncscope.report.html import write_report

REQUIRED = ("history.csv", "analysis.csv")


def _accuracy_table(analysis: pd.DataFrame) -> pd.DataFrame:
    a = analysis[analysis["class"].isna() & (analysis.eps_name == "main")
                 & (analysis.split == "test") & (analysis.reference == "clean")
                 & (analysis.group == "label")]
    a = a[a.depth == a.groupby("run").depth.transform("max")]
    rows = []
    for run, r in a.groupby("run", sort=False):
        def val(source: str, metric: str, r: pd.DataFrame = r) -> float:
            s = r[(r.source == source) & (r.metric == metric)]
            return float(s.value.iloc[0]) if len(s) else float("nan")

        rows.append({"run": run, "eps": float(r.eps.iloc[0]),
                     "clean test acc": val("clean", "net_accuracy"),
                     "PGD test acc": val("pgd", "net_accuracy"),
                     "NCC clean test acc": val("clean", "ncc_accuracy"),
                     "NCC PGD test acc": val("pgd", "ncc_accuracy")})
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


def build_report(run_dir: str | Path) -> Path:
    """Regenerate ``figures/`` and ``report.html`` (and claims) from the tables of ``run_dir``."""
    run = Path(run_dir)
    missing = [f for f in REQUIRED if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run} is not a reproduce run folder (missing {', '.join(missing)}); run "
            "`ncscope reproduce` first"
        )
    history = pd.read_csv(run / "history.csv")
    analysis = pd.read_csv(run / "analysis.csv")
    analysis["class"] = analysis.get("class", pd.Series(pd.NA, index=analysis.index))
    analysis["class"] = analysis["class"].astype("Int64")
    figdir = run / "figures"
    figs = [
        (figures.nc_vs_epoch(history, figdir),
         "NC1–NC4 of the penultimate layer on the training set at every tracked epoch (log "
         "scale; NC4, which reaches 0, on a symmetric-log axis linear below 1e-3). Solid: clean "
         "data; dashed: the perturbations of that epoch (ST: fresh PGD after the epoch; "
         "AT/TRADES: the training-time perturbations, measured with the epoch's final weights)."
         ),
        (figures.layerwise(analysis, figdir, "main"),
         "Layer-wise NC1 (top, log scale) of clean and PGD training features with their own "
         "class means, and accuracy of the nearest-class-mean classifier built from clean "
         "training means at that layer on clean and PGD test data (bottom); dotted: the "
         "network's own PGD test accuracy."),
        (figures.class_angles(analysis, figdir, "main"),
         "Per-class angle between the clean and the PGD class means of the last layer (each "
         "simplex centred on its own mean): small for AT (aligned simplices), large for ST."),
    ]
    if (run / "points.csv").is_file():
        points = pd.read_csv(run / "points.csv")
        if len(points):
            figs.insert(1, (figures.leap_2d(points, figdir),
                            "Last-layer features projected on the top two principal directions "
                            "of the clean class means. Stars: clean class means (simplex "
                            "vertices); dots: clean training features; crosses: perturbed "
                            "features, with an arrow from their clean position."))
    claims = judge_claims(history, analysis)
    (run / "claims.json").write_text(json.dumps([c.to_dict() for c in claims], indent=2))
    summary = {}
    if (run / "summary.json").is_file():
        summary = json.loads((run / "summary.json").read_text())
    cfg = {k: html.escape(str(v)) for k, v in summary.get("config", {}).items()}
    total = summary.get("timings_s", {}).get("total")
    intro = (
        f"Data: <code>{cfg.get('dataset', '?')}</code>, model <code>{cfg.get('model', '?')}"
        f"</code>, {cfg.get('epochs', '?')} epochs, main ε = {cfg.get('eps', '?')}, strong ε = "
        f"{cfg.get('eps_strong', '?')} (pixel units, ℓ∞ PGD-{cfg.get('steps', '?')}). "
        + (f"Wall time {total / 60:.1f} min. " if total else "")
        + "Every number below is computed from the tables in this folder; the verdicts are not "
        "written into the code."
    )
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()
                   and p.suffix in (".csv", ".json", ".jsonl", ".png", ".svg"))
    tables = [("Accuracies (test set, last layer for NCC)", _accuracy_table(analysis)),
              ("NC of the last layer on training data (own class means)", _nc_table(analysis))]
    return write_report(run / "report.html", title="ncscope reproduce — Neural Collapse under "
                        "attack and adversarial training", intro=intro, claims=claims,
                        figures=figs, tables=tables, files=files)

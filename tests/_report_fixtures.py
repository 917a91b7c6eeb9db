"""Small synthetic, schema-correct tables of a ``reproduce`` run folder (no training).

Schemas follow what ``ncscope reproduce`` writes:

* ``history``: ``run, epoch, layer, depth, source, split, reference, group, metric, value,
  class`` (source ``clean`` and the perturbed one: ``pgd`` for ST, ``perturbed`` for the
  adversarially trained runs; one tracked layer, the penultimate ``classifier:in``; the own-means
  views the rules read, plus decoy rows around the clean means);
* ``analysis``: ``run, eps_name, eps, layer, depth, source, split, reference, group, metric,
  value, class`` (``class`` is NA except on per-class rows);
* ``points``: ``panel, kind, label, x, y, pred, x0, y0``.

:func:`make_tables` returns tables on which every claim T1–T9 *holds*; the numbers the rules
read are dyadic (exact in binary) so that boundary cases can be built exactly. Helpers
:func:`set_nc1`, :func:`set_metric` and :func:`drop_runs` make variants in which one rule
fails or cannot be measured. Rows the rules must *not* read (NC1 of the ``clean``-reference
and test views, per-class rows) carry distinct decoy values, so a rule reading the wrong view
gives different numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

RUNS = ("st", "at", "trades", "trades_bnquirk")
LAYERS = ("features.block1", "features.block2", "classifier:in")
SOURCES = ("clean", "pgd", "pgd_targeted", "gaussian", "random_sign")
EPS = {"main": 0.1, "strong": 0.3}
K = 4  # classes of the per-class rows and of points.csv

# Own-means NC1 on training data, by depth (first → last tapped layer), per (run, eps_name).
NC1_OWN: dict[tuple[str, str], dict[str, list[float]]] = {
    # ST main: perturbed/clean ratio 1.5, 4, 20 (increasing); noise 1.5× clean.
    ("st", "main"): {"clean": [1.0, 0.5, 0.125], "pgd": [1.5, 2.0, 2.5],
                     "pgd_targeted": [1.0, 1.0, 1.0], "gaussian": [1.5, 0.75, 0.1875],
                     "random_sign": [1.5, 0.75, 0.1875]},
    # ST strong: targeted (by target) 0.25 ≤ 0.1 × untargeted 4.0.
    ("st", "strong"): {"clean": [1.0, 0.5, 0.125], "pgd": [2.0, 3.0, 4.0],
                       "pgd_targeted": [1.0, 0.5, 0.25], "gaussian": [1.5, 0.75, 0.25],
                       "random_sign": [1.5, 0.75, 0.25]},
    # AT: clean NC1 decreasing with depth (T9), PGD 3× clean at the last layer (T5).
    ("at", "main"): {"clean": [1.0, 0.5, 0.25], "pgd": [1.5, 1.0, 0.75],
                     "pgd_targeted": [1.5, 1.0, 0.75], "gaussian": [1.0, 0.5, 0.25],
                     "random_sign": [1.0, 0.5, 0.25]},
    # TRADES: clean NC1 4× and 5× AT's (T7).
    ("trades", "main"): {"clean": [1.5, 1.25, 1.0], "pgd": [2.0, 2.0, 2.0],
                         "pgd_targeted": [2.0, 2.0, 2.0], "gaussian": [1.5, 1.25, 1.0],
                         "random_sign": [1.5, 1.25, 1.0]},
    ("trades_bnquirk", "main"): {"clean": [1.5, 1.25, 1.25], "pgd": [2.0, 2.0, 2.0],
                                 "pgd_targeted": [2.0, 2.0, 2.0], "gaussian": [1.5, 1.25, 1.25],
                                 "random_sign": [1.5, 1.25, 1.25]},
}

# NCC accuracy (clean training means) on the test split, by depth: source -> values.
NCC_TEST = {
    "st": {"clean": [0.875, 0.9375, 0.96875], "pgd": [0.75, 0.5, 0.125]},  # T8: first > last
    "at": {"clean": [0.75, 0.8125, 0.875], "pgd": [0.5, 0.625, 0.6875]},
}
# Network accuracy on the test split: source -> value (T6: AT NCC 0.6875 vs net 0.6875 + 1/64).
NET_TEST = {"st": {"clean": 0.96875, "pgd": 0.0625}, "at": {"clean": 0.875, "pgd": 0.703125}}
# Clean-vs-perturbed simplex angle (degrees) around the clean means, last layer.
ANGLE = {("st", "main"): {"pgd": 60.0, "pgd_targeted": 40.0},
         ("st", "strong"): {"pgd": 90.0, "pgd_targeted": 20.0},  # T4: targeted < untargeted
         ("at", "main"): {"pgd": 10.0, "pgd_targeted": 12.0}}  # T5: AT 10 < ST 60
# Clean-vs-training-time-perturbation angle in the history (+ epoch index: the last epoch is
# read): AT 10 + 2 = 12 < ST 60 + 2 = 62 (T5).
HIST_ANGLE = {"st": 60.0, "at": 10.0}
LEAP_PRED_WHEN_WRONG = 0.9375  # T4: ≥ 0.9 (ST strong, untargeted PGD, clean reference)


def _history() -> pd.DataFrame:
    """Penultimate-layer tracking at epochs 1, 2, 4: ST clean NC1 1 → 0.0625 and NC4 0.0078125
    at the last epoch (T1 holds)."""
    epochs = [1, 2, 4]
    curves = {  # run -> (clean nc1, perturbed nc1, clean nc4)
        "st": ([1.0, 0.5, 0.0625], [4.0, 6.0, 8.0], [0.25, 0.0625, 0.0078125]),
        "at": ([2.0, 1.0, 0.5], [3.0, 1.5, 0.75], [0.25, 0.125, 0.0625]),
        "trades": ([2.0, 1.5, 1.0], [2.5, 2.0, 1.5], [0.25, 0.125, 0.0625]),
        "trades_bnquirk": ([2.0, 1.75, 1.5], [2.5, 2.25, 2.0], [0.25, 0.125, 0.0625]),
    }
    rows = []
    for run, (nc1_c, nc1_p, nc4_c) in curves.items():
        perturbed = "pgd" if run == "st" else "perturbed"
        for i, epoch in enumerate(epochs):
            for source, nc1 in (("clean", nc1_c[i]), (perturbed, nc1_p[i])):
                for ref, scale in (("own", 1.0), ("clean", 7.0)):  # clean-reference: decoys
                    metrics = {
                        "nc1": scale * nc1, "nc1_over_k": scale * nc1 / K,
                        "equinorm_means": 0.1 * nc1, "equiangular_means": 0.05 * nc1,
                        "nc3": 0.2 * nc1,
                        "nc4": scale * (nc4_c[i] if source == "clean" else 4 * nc4_c[i]),
                        "ncc_accuracy": 0.9, "net_accuracy": 0.95,
                    }
                    if ref == "clean":  # clean-vs-perturbed mean angle (T5 reads it)
                        metrics["simplex_angle"] = (0.0 if source == "clean" else
                                                    HIST_ANGLE.get(run, 45.0) + i)
                    rows += [dict(run=run, epoch=epoch, layer="classifier:in", depth=0,
                                  source=source, split="train", reference=ref, group="label",
                                  metric=m, value=v) for m, v in metrics.items()]
    df = pd.DataFrame(rows)
    df["class"] = pd.array([pd.NA] * len(df), dtype="Int64")
    return df


def _views(source: str) -> list[tuple[str, str, str]]:
    """(split, reference, group) views that ``analyze`` emits for ``source``."""
    own_group = "target" if source == "pgd_targeted" else "label"
    views = [("train", "own", own_group), ("train", "clean", "label")]
    if source == "pgd_targeted":
        views.append(("train", "clean", "target"))
    views.append(("test", "clean", "label"))
    return views


def _analysis() -> pd.DataFrame:
    rows = []
    for (run, eps_name), nc1_own in NC1_OWN.items():
        last = len(LAYERS) - 1
        for depth, layer in enumerate(LAYERS):
            for source in SOURCES:
                for split, ref, group in _views(source):
                    own = nc1_own[source][depth]
                    m: dict[str, float] = {}
                    if ref == "own":
                        m["nc1"] = own
                    elif split == "train":
                        m["nc1"] = 100.0 + 3 * own  # decoy: never read by the rules
                    else:
                        m["nc1"] = 1000.0 + own  # decoy
                    m["equinorm_means"] = 0.1 * own
                    m["equiangular_means"] = 0.05 * own
                    m["nc4"] = 0.01 * own
                    if depth == last:
                        m["nc3"] = 0.2 * own
                    if split == "test":
                        ncc = NCC_TEST.get(run, {}).get(source)
                        m["ncc_accuracy"] = ncc[depth] if ncc else 0.5
                        net = NET_TEST.get(run, {}).get(source)
                        m["net_accuracy"] = net if net is not None else 0.5
                    else:
                        m["ncc_accuracy"] = 0.25 if ref == "own" else 0.375  # decoys
                        m["net_accuracy"] = 0.375
                    if ref == "clean":
                        wrong = LEAP_PRED_WHEN_WRONG if split == "train" else 0.125
                        m["leap_pred_when_wrong"] = wrong if group == "label" else 0.125
                        ang = ANGLE.get((run, eps_name), {}).get(source)
                        if source == "clean":
                            ang = 0.0
                        base = 45.0 if ang is None else ang
                        # label view: the table values; by-target view of targeted PGD: the
                        # "aligned" angle, label view of targeted PGD: a large decoy
                        if source == "pgd_targeted" and group == "label":
                            base = 120.0
                        m["simplex_angle"] = base if split == "train" else base + 1.0
                        if source == "pgd_targeted":
                            m["target_success"] = 0.875
                    for metric, value in m.items():
                        rows.append(dict(run=run, eps_name=eps_name, eps=EPS[eps_name],
                                         layer=layer, depth=depth, source=source, split=split,
                                         reference=ref, group=group, metric=metric,
                                         value=float(value), **{"class": pd.NA}))
                    if ref == "clean" and split == "train":  # per-class angles
                        base = m["simplex_angle"]
                        for c in range(K):
                            for metric in ("class_angle", "class_distance"):
                                rows.append(dict(run=run, eps_name=eps_name, eps=EPS[eps_name],
                                                 layer=layer, depth=depth, source=source,
                                                 split=split, reference=ref, group=group,
                                                 metric=metric, value=base + 2.0 * c,
                                                 **{"class": c}))
    df = pd.DataFrame(rows)
    df["class"] = df["class"].astype("Int64")
    return df


def make_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, analysis) on which every claim T1–T9 holds."""
    return _history(), _analysis()


def _mask(a: pd.DataFrame, **sel: object) -> pd.Series:
    m = a["class"].isna()
    for k, v in sel.items():
        if v is not None:
            m &= a[k] == v
    return m


def set_metric(analysis: pd.DataFrame, value: float, *, run: str, source: str, metric: str,
               eps_name: str = "main", split: str = "train", reference: str = "own",
               group: str | None = None, layer: str | None = LAYERS[-1]) -> pd.DataFrame:
    """Copy of ``analysis`` with the selected aggregate rows set to ``value`` (``layer=None``:
    every layer). Raises if nothing matches (a typo must not pass silently)."""
    a = analysis.copy()
    m = _mask(a, run=run, source=source, metric=metric, eps_name=eps_name, split=split,
              reference=reference, group=group, layer=layer)
    if not m.any():
        raise KeyError(f"no rows for {run}/{eps_name}/{source}/{split}/{reference}/{metric}")
    a.loc[m, "value"] = float(value)
    return a


def set_nc1(analysis: pd.DataFrame, values: float | list[float], *, run: str, source: str,
            eps_name: str = "main") -> pd.DataFrame:
    """Own-means NC1 of one run/source: a number (last layer) or one value per layer."""
    group = "target" if source == "pgd_targeted" else "label"
    if isinstance(values, list):
        a = analysis
        for layer, v in zip(LAYERS, values, strict=True):
            a = set_metric(a, v, run=run, source=source, metric="nc1", eps_name=eps_name,
                           group=group, layer=layer)
        return a
    return set_metric(analysis, values, run=run, source=source, metric="nc1",
                      eps_name=eps_name, group=group)


def drop_runs(history: pd.DataFrame, analysis: pd.DataFrame, *runs: str
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables without ``runs`` (a profile that did not train them)."""
    return (history[~history.run.isin(runs)].reset_index(drop=True),
            analysis[~analysis.run.isin(runs)].reset_index(drop=True))


def make_points(per_class: int = 3) -> pd.DataFrame:
    """A small ``points.csv`` table: two panels, K clean means on a circle, clean points around
    them, ``per_class`` perturbed points per class leaping to the next class's mean."""
    rng = np.random.default_rng(0)
    ang = 2 * np.pi * np.arange(K) / K
    means = np.stack([np.cos(ang), np.sin(ang)], 1) * 4.0
    rows = []
    for panel in ("ST, untargeted PGD, ε=0.3", "AT, untargeted PGD, ε=0.1"):
        for c in range(K):
            for _ in range(8):
                x, y = means[c] + 0.3 * rng.standard_normal(2)
                rows.append(dict(panel=panel, kind="clean", label=c, x=x, y=y))
        rows += [dict(panel=panel, kind="mean", label=c, x=means[c, 0], y=means[c, 1])
                 for c in range(K)]
        for c in range(K):
            for _ in range(per_class):
                x0, y0 = means[c] + 0.3 * rng.standard_normal(2)
                p = (c + 1) % K
                x, y = means[p] + 0.3 * rng.standard_normal(2)
                rows.append(dict(panel=panel, kind="perturbed", label=c, pred=p, x=x, y=y,
                                 x0=x0, y0=y0))
    return pd.DataFrame(rows, columns=["panel", "kind", "label", "x", "y", "pred", "x0", "y0"])


SUMMARY = {
    "config": {"data": {"dataset": "digits"}, "model": {"name": "bn_mlp"},
               "train": {"epochs": 4, "eps": 0.1, "steps": 10, "norm": "linf"},
               "eps_strong": 0.3, "runs": list(RUNS)},
    "timings_s": {"total": 90.0},
    "threads": 1,
}


def write_run_folder(root: Path, *, history: pd.DataFrame | None = None,
                     analysis: pd.DataFrame | None = None, points: bool = True,
                     summary: bool = True) -> Path:
    """Write the su2024 study folder ``root/su2024`` as ``reproduce`` does (history.csv,
    analysis.csv, points.csv, summary.json, the study.json marker); return that folder."""
    run_dir = root / "su2024"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "study.json").write_text(json.dumps({"study": "su2024", "quick": False}))
    h, a = make_tables()
    h = h if history is None else history
    a = a if analysis is None else analysis
    h.to_csv(run_dir / "history.csv", index=False)
    a.to_csv(run_dir / "analysis.csv", index=False)
    if points:
        make_points().to_csv(run_dir / "points.csv", index=False)
    if summary:
        (run_dir / "summary.json").write_text(json.dumps(SUMMARY, indent=2))
    return run_dir

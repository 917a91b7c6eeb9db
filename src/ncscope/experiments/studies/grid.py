"""A grid of training runs that differ in one recipe choice (the loss, the classifier head),
each under ST and AT, trained in parallel and summarised from their tracking histories.

The related-work studies (``zhou2022``: losses; ``yaras2022``: normalized head) ask the same
question of the main study's recipe (Su et al. 2024: digits BN-MLP, SGD, PGD-AT): does a
choice change accuracy, robustness and the collapse of clean and perturbed features? Every run
is an ordinary :func:`ncscope.train.train` run with per-epoch tracking of the penultimate layer
through the one measurement sweep; nothing is measured outside it.

Sources in the histories (:mod:`ncscope.train.tracking`): ``clean``; ``pgd`` — a fresh
eval-mode PGD of the tracked model at the training ε (ST and AT alike, so the variants are
compared under the same attack); ``perturbed`` — for AT, the training-time perturbations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ncscope.collapse.schema import typed
from ncscope.data.config import DataConfig
from ncscope.models.config import ModelConfig
from ncscope.train import TrainConfig, TrainSettings
from ncscope.train.pool import train_many

__all__ = ["GridRun", "final_table", "grid_configs", "train_grid"]

#: Metrics of the final table: NC1–NC4 (Papyan, Han & Donoho, PNAS 2020) as registered in
#: :mod:`ncscope.collapse.metric_defs`.
NC_METRICS = ("nc1", "etf_error_means", "nc3", "nc4")


@dataclass
class GridRun:
    """One run of a grid: its name (run sub-folder), training mode (``st`` / ``at``), the
    changes to the shared ``train`` settings (e.g. ``{"loss": "fl"}``), an optional
    replacement ``model`` section, and the label columns it carries in the tables."""

    name: str
    mode: str
    changes: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig | None = None
    labels: dict[str, Any] = field(default_factory=dict)


def grid_configs(runs: list[GridRun], data: DataConfig, model: ModelConfig,
                 train: TrainSettings, folder: Path) -> dict[str, TrainConfig]:
    """The :class:`TrainConfig` of every run: the shared sections, the run's mode and changes,
    tracking of the penultimate layer at initialisation (epoch 0), epoch 1, every
    ``track_every`` and the last epoch
    (clean and fresh-PGD sources; AT also its training-time perturbations; test split with its
    PGD accuracy)."""
    epochs = sorted({1, train.epochs, *range(train.track_every, train.epochs + 1,
                                             train.track_every)})
    out = {}
    for r in runs:
        out[r.name] = TrainConfig.from_sections(
            data, r.model if r.model is not None else model, train,
            **{"mode": r.mode, "track_init": True, "track_epochs": epochs,
               "track_layers": "penultimate",
               "track_fresh_attack": True, "track_perturbed": r.mode != "st",
               "track_test": True, "track_test_attack": True,
               "out_dir": str(folder / r.name), "overwrite": True, "checkpoint_every": 1,
               "progress": False, **r.changes})
    return out


def train_grid(runs: list[GridRun], data: DataConfig, model: ModelConfig,
               train: TrainSettings, folder: Path, *, workers: int = 2, threads: int = 1,
               progress: str = "off", label: str = "grid") -> tuple[pd.DataFrame, dict]:
    """Train every run (``workers`` processes, each ``threads`` threads; a rerun continues
    from checkpoints) and return the histories of all runs in one schema-typed table with the
    columns ``run`` and every label key first, plus ``{run: seconds}``."""
    configs = grid_configs(runs, data, model, train, folder)
    seconds = train_many(configs, workers=workers, threads=threads, progress=progress,
                         label=label)
    frames = []
    for r in runs:
        h = pd.read_csv(folder / r.name / "history.csv")
        for key, value in reversed(list({"run": r.name, "mode": r.mode, **r.labels}.items())):
            h.insert(0, key, value)
        frames.append(h)
    return typed(pd.concat(frames, ignore_index=True)), seconds


def _pick(h: pd.DataFrame, source: str, split: str, metric: str, reference: str) -> pd.Series:
    s = h[(h.source == source) & (h.split == split) & (h.metric == metric)
          & (h.reference == reference) & (h.group == "label") & h["class"].isna()]
    return s.set_index("epoch").value.sort_index()


def final_table(history: pd.DataFrame, labels: list[str],
                extra: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run at its last tracked epoch: clean and PGD test accuracy, NC1–NC4 (and the
    ``extra`` metrics) of the clean training features and of their fresh-PGD perturbations
    (``pgd``) and, for AT, of the training-time perturbations (``perturbed``); plus the first
    tracked clean NC1 (at initialisation)."""
    rows = []
    for run, h in history.groupby("run", sort=False):
        row: dict[str, Any] = {"run": run, **{k: h[k].iloc[0] for k in ["mode", *labels]}}
        row["clean test acc"] = _last(_pick(h, "clean", "test", "net_accuracy", "clean"))
        row["PGD test acc"] = _last(_pick(h, "pgd", "test", "net_accuracy", "clean"))
        nc1 = _pick(h, "clean", "train", "nc1", "own")
        row["epoch"] = int(nc1.index[-1]) if len(nc1) else None
        row["first nc1"] = float(nc1.iloc[0]) if len(nc1) else float("nan")
        for source in ("clean", "pgd", "perturbed"):
            for metric in (*NC_METRICS, *extra):
                row[f"{source} {metric}"] = _last(_pick(h, source, "train", metric, "own"))
        for source in ("pgd", "perturbed"):  # degrees between perturbed and clean simplices
            row[f"{source} simplex angle"] = _last(_pick(h, source, "train", "simplex_angle",
                                                         "clean"))
        rows.append(row)
    return pd.DataFrame(rows)


def _last(s: pd.Series) -> float:
    return float(s.iloc[-1]) if len(s) else float("nan")

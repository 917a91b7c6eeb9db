"""Study ``yaras2022``: Yaras, Wang, Zhu, Balzano & Qu, "Neural Collapse with Normalized
Features: A Geometric Analysis over the Riemannian Manifold", NeurIPS 2022 — the normalized
(oblique) unconstrained feature model, and the normalized classifier head on the main study's
digits recipe, clean and under attack.

Parts:

(a) the oblique UFM (:func:`ncscope.ufm.solve_oblique`, Riemannian GD with Armijo steps) over
    a sweep of logit scales ``1/τ``: does it reach the simplex ETF, and where does it stall;
(b) the oblique vs the regularised UFM at matched settings (:mod:`.ufm_runs`): iterations to
    NC1 and ETF-error levels;
(c) the digits BN-MLP of ``su2024`` (SGD, ℓ∞ PGD-10 AT at ε = 0.1) with a linear and a
    :class:`~ncscope.models.NormalizedHead`, each under ST and AT
    (:func:`ncscope.experiments.studies.grid.train_grid`).

Tables written into the study folder:

* ``ufm_scales.csv`` / ``ufm_scales_summary.csv`` — (a): trajectories (``scale, iteration,
  metric, value``) and one row per scale;
* ``ufm_compare.csv`` / ``ufm_compare_summary.csv`` — (b): trajectories (``scale, problem,
  solver, iteration, metric, value``) and one row per (scale, solver);
* ``history.csv`` — (c): per-epoch tracking of the four runs (context ``head, mode, run``);
  ``final.csv`` — their :func:`~ncscope.experiments.studies.grid.final_table`;
* ``summary.json``; ``claims.json`` / ``claims.csv`` (written by ``ncscope reproduce``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncscope.data.config import DataConfig
from ncscope.experiments.studies.base import (
    Claim,
    Study,
    digits_recipe,
    progress_mode,
    read_summary,
    register_study,
    start_run,
    write_summary,
)
from ncscope.experiments.studies.grid import GridRun, final_table, train_grid
from ncscope.experiments.studies.yaras2022 import figures as y_figures
from ncscope.experiments.studies.yaras2022.claims import Rules, judge_claims
from ncscope.experiments.studies.yaras2022.ufm_runs import compare_problems, scale_sweep
from ncscope.models.config import ModelConfig
from ncscope.models.normalized import check_head
from ncscope.train import TrainSettings
from ncscope.validation import check_int, check_real

_OWNER = "yaras2022"
HEADS = ("linear", "normalized")
MODES = ("st", "at")


@dataclass
class UFMSettings:
    """The UFM parts (YAML section ``ufm``): K classes, ``n_per_class`` samples each, feature
    dimension ``dim``; ``scales`` swept in part (a), ``compare_scales`` compared in part (b)
    (each with its paired λ); every solver starts at ``lr`` (Armijo), runs at most
    ``max_iter`` iterations from the start drawn with ``seed`` and records NC every
    ``record_every`` iterations (1: the iteration counts are exact)."""

    num_classes: int = 10
    n_per_class: int = 20
    dim: int = 16
    scales: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 20.0, 30.0])
    compare_scales: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0])
    lr: float = 1.0
    max_iter: int = 600
    record_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.num_classes = check_int(_OWNER, "ufm.num_classes", self.num_classes, 2)
        self.n_per_class = check_int(_OWNER, "ufm.n_per_class", self.n_per_class, 1)
        self.dim = check_int(_OWNER, "ufm.dim", self.dim, self.num_classes - 1,
                             hint=" (a simplex ETF of K vectors needs K - 1 dimensions)")
        for name in ("scales", "compare_scales"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{_OWNER}: ufm.{name} must list at least one scale")
            setattr(self, name, [check_real(_OWNER, f"ufm.{name}[]", v, 0.0, strict_low=True,
                                            hint=" (the logit scale 1/tau, e.g. 10)")
                                 for v in values])
            if len(set(getattr(self, name))) != len(values):
                raise ValueError(f"{_OWNER}: ufm.{name} lists a scale twice: {values}")
        self.lr = check_real(_OWNER, "ufm.lr", self.lr, 0.0, strict_low=True)
        self.max_iter = check_int(_OWNER, "ufm.max_iter", self.max_iter, 1)
        self.record_every = check_int(_OWNER, "ufm.record_every", self.record_every, 1)
        self.seed = check_int(_OWNER, "ufm.seed", self.seed, 0)


@dataclass
class Yaras2022Config:
    """Settings of study ``yaras2022`` (YAML sections ``data``, ``model``, ``train``, ``ufm``,
    ``rules``).

    ``model`` is the linear-head network; the normalized-head runs use the same model with
    ``head="normalized"`` and ``head_scale`` (``1/τ``; 10 = the paper's τ = 0.1).
    ``train`` is what the four digits runs share (the study sets each run's mode).
    ``normalized_weight_decay`` (``None``: ``train.weight_decay``, the same recipe for both
    heads) replaces the weight decay of the normalized-head runs. ``workers`` processes of
    ``threads`` threads train the grid.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("bn_mlp"))
    # The main digits recipe, tracked every 10 epochs (su2024: 5) to stay within 3 minutes.
    train: TrainSettings = field(default_factory=lambda: digits_recipe(track_every=10))
    head_scale: float = 10.0
    normalized_weight_decay: float | None = None
    ufm: UFMSettings = field(default_factory=UFMSettings)
    rules: Rules = field(default_factory=Rules)
    workers: int = 2
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model.head != "linear":
            raise ValueError(f"{_OWNER}: model.head must stay linear (the study trains both "
                             "heads; set head_scale for the normalized one)")
        _, self.head_scale = check_head("normalized", self.head_scale, prefix="")
        if self.normalized_weight_decay is not None:
            self.normalized_weight_decay = check_real(
                _OWNER, "normalized_weight_decay", self.normalized_weight_decay, 0.0, 1.0)
        self.workers = check_int(_OWNER, "workers", self.workers, 1)
        self.threads = check_int(_OWNER, "threads", self.threads, 1)
        lo, hi = self.rules.reach_scales
        if not any(lo <= s <= hi for s in self.ufm.scales):
            raise ValueError(f"{_OWNER}: no scale of ufm.scales {self.ufm.scales} lies in "
                             f"rules.reach_scales [{lo:g}, {hi:g}]; Y1 would judge nothing")

    def model_for(self, head: str) -> ModelConfig:
        """The model section of a run with ``head`` (``linear`` / ``normalized``)."""
        if head == "linear":
            return self.model
        return dataclasses.replace(self.model, head="normalized", head_scale=self.head_scale)

    def grid(self) -> list[GridRun]:
        """The four runs, AT first (the longer ones start first in the worker pool)."""
        runs = []
        for mode in ("at", "st"):
            for head in HEADS:
                changes: dict[str, Any] = {}
                if head == "normalized" and self.normalized_weight_decay is not None:
                    changes["weight_decay"] = self.normalized_weight_decay
                runs.append(GridRun(f"{head}_{mode}", mode, changes, self.model_for(head),
                                    {"head": head}))
        return runs


QUICK = {"train.epochs": 3, "train.track_every": 2, "data.n_per_class": 30, "data.n_test": 100,
         "ufm.scales": [1, 10, 30],
         "ufm.compare_scales": [10], "ufm.max_iter": 300}


def run(cfg: Yaras2022Config, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Parts (a)–(c); writes the study's tables into ``folder``."""
    t_start = time.perf_counter()
    on, show = start_run(cfg, folder, progress)
    timings: dict[str, float] = {}
    u, r = cfg.ufm, cfg.rules
    common = dict(num_classes=u.num_classes, n_per_class=u.n_per_class, dim=u.dim, lr=u.lr,
                  max_iter=u.max_iter, seed=u.seed, record_every=u.record_every)

    t0 = time.perf_counter()
    traj, summary = scale_sweep(u.scales, etf_threshold=r.etf_threshold, **common)
    traj.to_csv(folder / "ufm_scales.csv", index=False)
    summary.to_csv(folder / "ufm_scales_summary.csv", index=False)
    timings["ufm:scales"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    traj, summary = compare_problems(u.compare_scales, nc1_threshold=r.nc1_threshold,
                                     etf_threshold=r.etf_compare_threshold, **common)
    traj.to_csv(folder / "ufm_compare.csv", index=False)
    summary.to_csv(folder / "ufm_compare_summary.csv", index=False)
    timings["ufm:compare"] = time.perf_counter() - t0
    if on:
        print(f"yaras2022: UFM sweep {timings['ufm:scales']:.1f} s, comparison "
              f"{timings['ufm:compare']:.1f} s", file=sys.stderr, flush=True)

    history, seconds = train_grid(cfg.grid(), cfg.data, cfg.model, cfg.train, folder,
                                  workers=cfg.workers, threads=cfg.threads,
                                  progress=progress_mode(show, on),
                                  label="yaras2022")
    timings.update({f"train:{k}": v for k, v in seconds.items()})
    history.to_csv(folder / "history.csv", index=False)
    final_table(history, ["head"]).to_csv(folder / "final.csv", index=False)
    return write_summary(folder, cfg, timings, t_start)


def _rules(folder: Path) -> Rules:
    return Rules(**read_summary(folder).get("config", {}).get("rules", {}))


def claims(folder: Path) -> list[Claim]:
    """Y1–Y4 judged from the tables in ``folder`` (thresholds: the run's ``rules``)."""
    t = y_figures.read_tables(folder)
    return judge_claims(t["ufm_scales_summary"], t["ufm_compare_summary"], t["history"],
                        t["final"], _rules(folder))


def describe(folder: Path) -> str:
    """One paragraph: the UFM settings, the network recipe and the wall time."""
    summary = read_summary(folder)
    if not summary:
        return ""
    c = summary.get("config", {})
    u, t, d = c.get("ufm", {}), c.get("train", {}), c.get("data", {})
    m = c.get("model", {})
    wd = c.get("normalized_weight_decay")
    total = summary.get("timings_s", {}).get("total")
    return (f"UFM: K = {u.get('num_classes', '?')}, n = {u.get('n_per_class', '?')} per class, "
            f"d = {u.get('dim', '?')}, CE, seed {u.get('seed', '?')}; oblique scales "
            f"{', '.join(f'{s:g}' for s in u.get('scales', []))}; compared at "
            f"{', '.join(f'{s:g}' for s in u.get('compare_scales', []))}. Network: "
            f"{d.get('dataset', '?')}, {m.get('name', '?')} with a linear head and a "
            f"normalized head (scale {c.get('head_scale', '?')}, weight decay "
            f"{t.get('weight_decay', '?') if wd is None else wd}), ST and {t.get('norm', '?')} "
            f"PGD-{t.get('steps', '?')} AT at ε = {t.get('eps', '?')}, "
            f"{t.get('epochs', '?')} epochs. "
            + (f"Wall time {total / 60:.1f} min. " if total else ""))


def with_seed(cfg: Yaras2022Config, seed: int) -> Yaras2022Config:
    """One repetition: the UFM start points and the training (initialisation, batch order,
    attack noise) seeded with ``seed``; the data are the same."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed),
                               ufm=dataclasses.replace(cfg.ufm, seed=seed))


STUDY = register_study(Study(
    name="yaras2022",
    title="Normalized features: the oblique UFM and a normalized head under attack",
    paper="Yaras, Wang, Zhu, Balzano & Qu, Neural Collapse with Normalized Features: A "
          "Geometric Analysis over the Riemannian Manifold, NeurIPS 2022",
    config=Yaras2022Config,
    run=run,
    claims=claims,
    figures=y_figures.figures,
    tables=y_figures.tables,
    default_config=None,
    quick=QUICK,
    describe=describe,
    with_seed=with_seed,
))

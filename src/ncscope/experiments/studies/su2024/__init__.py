"""Study ``su2024``: Su, Zhang, Tsilivis & Kempe, "On the Robustness of Neural Collapse and the
Neural Collapse of Robustness", TMLR 2024 — end to end on one data set (default: digits).

Runs: ST, PGD-AT, TRADES and TRADES with the official code's BatchNorm quirk, each trained with
per-epoch NC tracking (:mod:`ncscope.train`); then every model is analysed at the main ε (where
AT interpolates the adversarial training set) and ST also at a strong ε (where the targeted
attack mostly succeeds, for the leap). Tables written into the study folder (schema:
:mod:`ncscope.collapse.schema`):

* ``history.csv`` / ``history.jsonl`` — per-epoch tracking of every run (context ``run, epoch``);
* ``analysis.csv`` — :func:`ncscope.analyze` of every model (context ``run, eps_name, eps``),
  ``analysis_wide.csv`` one row per view;
* ``robust_accuracy.csv`` — PGD and AutoAttack robust accuracy of every model on the same test
  images (:func:`ncscope.experiments.robust.robust_reference`);
* ``points.csv`` — 2-D projections behind the leap figure;
* ``claims.json`` / ``claims.csv`` (written by ``ncscope reproduce``) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ncscope.attacks import PGD, threat_model
from ncscope.collapse import FeatureTaps
from ncscope.collapse.schema import typed, wide
from ncscope.config import to_dict
from ncscope.data import DatasetInfo, stratified_indices
from ncscope.data.config import DataConfig
from ncscope.experiments.analyze import AnalyzeSettings
from ncscope.experiments.robust import AUTOATTACK_MODES, robust_reference
from ncscope.experiments.studies.base import (
    Study,
    digits_recipe,
    progress_mode,
    read_summary,
    register_study,
    start_run,
    write_summary,
)
from ncscope.experiments.studies.su2024 import claims as su_claims
from ncscope.experiments.studies.su2024 import figures as su_figures
from ncscope.models import load_weights, penultimate_layer
from ncscope.models.config import ModelConfig
from ncscope.train import TrainConfig, TrainSettings
from ncscope.train.pool import train_many
from ncscope.train.tracking import fetch_batch, labels_of
from ncscope.validation import check_choice, check_int

RUNS = ("st", "at", "trades", "trades_bnquirk")



@dataclass
class Su2024Config:
    """Settings of study ``su2024`` (YAML sections ``data``, ``model``, ``train``, ``analyze``).

    ``train`` holds what every run shares (optimiser, attack, tracking cadence); the study sets
    per run the mode, the BN quirk and what is tracked. ``analyze`` measures every trained
    model; its ``eps`` (``None``) is the training ``eps`` — the main ε — and ST is also analysed
    at ``eps_strong``. ``autoattack`` (``auto`` / ``on`` / ``off``) and ``robust_n`` (test
    images, ``None``: all) set the robust-accuracy reference: PGD and standard AutoAttack on
    the same ``robust_n`` test images of every model (:func:`ncscope.experiments.robust.
    robust_reference`; ``auto`` runs AutoAttack when ``pyautoattack`` is installed).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("bn_mlp"))
    train: TrainSettings = field(default_factory=lambda: digits_recipe())
    analyze: AnalyzeSettings = field(default_factory=lambda: AnalyzeSettings(batch_size=512))
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    eps_strong: float = 0.3
    points_per_class: int = 15
    autoattack: str | bool = "auto"  # YAML reads a bare on / off as a boolean
    robust_n: int | None = 200
    workers: int = 2
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [r for r in self.runs if r not in RUNS]
        if bad:
            raise ValueError(f"unknown runs {bad}; valid: {', '.join(RUNS)}")
        if not 0 < self.eps_strong <= 1:
            raise ValueError(f"eps_strong must lie in (0, 1] (pixel units); got {self.eps_strong}")
        if self.workers < 1 or self.threads < 1 or self.points_per_class < 1:
            raise ValueError("workers, threads and points_per_class must be >= 1")
        if isinstance(self.autoattack, bool):  # YAML reads a bare on / off as a boolean
            self.autoattack = "on" if self.autoattack else "off"
        self.autoattack = check_choice("su2024", "autoattack", self.autoattack,
                                       AUTOATTACK_MODES)
        if self.robust_n is not None:
            self.robust_n = check_int("su2024", "robust_n", self.robust_n, 1)

    def train_config(self, run: str, folder: Path) -> TrainConfig:
        """The :class:`TrainConfig` of one run (``st``, ``at``, ``trades``,
        ``trades_bnquirk``)."""
        mode = "trades" if run.startswith("trades") else run
        t = self.train
        return TrainConfig.from_sections(
            self.data, self.model, t,
            mode=mode, bn_quirk=run == "trades_bnquirk",
            # The initialised model (epoch 0), the first epoch, every k-th and the last.
            track_init=True, track_every=1,
            track_epochs=sorted({1, t.epochs, *range(t.track_every, t.epochs + 1,
                                                     t.track_every)}),
            track_layers="all",
            # ST: fresh eval-mode PGD after the epoch; AT/TRADES: the training-time batches.
            track_fresh_attack=mode == "st", track_perturbed=mode != "st",
            track_test=True, track_test_attack=True,
            out_dir=str(folder / run), overwrite=True,
            checkpoint_every=1, threads=self.threads, progress=False,
        )

    def analyze_at(self, eps: float) -> AnalyzeSettings:
        """The analysis settings at radius ``eps`` (main: the training radius)."""
        a = to_dict(self.analyze)
        a["eps"] = eps
        return AnalyzeSettings(**a)


QUICK = {"train.epochs": 4, "train.track_every": 2, "points_per_class": 5, "robust_n": 40}


def _load_model(cfg: Su2024Config, folder: Path, run: str, info: DatasetInfo) -> nn.Module:
    model = cfg.model.build(info)
    return load_weights(model, folder / run / "model.pt").eval()


def _points(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: dict[str, Any],
            per_class: int, k: int, panel_prefix: str) -> list[dict[str, Any]]:
    """Project clean and perturbed penultimate features on the top-2 principal directions of
    the centred clean class means."""
    pen = penultimate_layer(model)
    with FeatureTaps(model, [pen]) as taps, torch.no_grad():
        model(x)
        h = taps.features[pen].double()
    means = torch.stack([h[y == c].mean(0) for c in range(k)])
    centre = means.mean(0)
    _, _, vt = torch.linalg.svd(means - centre, full_matrices=False)
    basis = vt[:2].T

    def proj(f: torch.Tensor) -> torch.Tensor:
        return (f - centre) @ basis

    pick = torch.cat([(y == c).nonzero().flatten()[:per_class] for c in range(k)])
    rows: list[dict[str, Any]] = []
    pc, pm = proj(h), proj(means)
    for panel, atk in attacks.items():
        name = f"{panel_prefix}{panel}"
        rows += [dict(panel=name, kind="clean", label=int(y[i]), x=float(pc[i, 0]),
                      y=float(pc[i, 1])) for i in range(len(y))]
        rows += [dict(panel=name, kind="mean", label=c, x=float(pm[c, 0]), y=float(pm[c, 1]))
                 for c in range(k)]
        xa = atk(x[pick], y[pick])
        with FeatureTaps(model, [pen]) as taps, torch.no_grad():
            pred = model(xa).argmax(1)
            pa = proj(taps.features[pen].double())
        for j, i in enumerate(pick.tolist()):
            rows.append(dict(panel=name, kind="perturbed", label=int(y[i]), pred=int(pred[j]),
                             x=float(pa[j, 0]), y=float(pa[j, 1]), x0=float(pc[i, 0]),
                             y0=float(pc[i, 1])))
    return rows


def _point_samples(data: Any, limit: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images behind the 2-D view: all of an in-memory set, else a stratified
    subset of ``limit`` (lazily loading sets such as ImageNette)."""
    if hasattr(data, "tensors"):
        return data.tensors[0], data.tensors[1]
    idx = [int(i) for i in stratified_indices(labels_of(data), min(limit, len(data)))]
    return fetch_batch(data, idx)


def run(cfg: Su2024Config, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Train every run, analyse every model, write the study's tables into ``folder``."""
    t_start = time.perf_counter()
    on, show = start_run(cfg, folder, progress)

    # 1. Train (several processes, each single-threaded); a rerun continues every run from
    # its newest checkpoint (a finished run only reloads its weights).
    runs = {r: cfg.train_config(r, folder) for r in cfg.runs}
    trained = train_many(runs, workers=cfg.workers, threads=cfg.threads, label="su2024",
                         progress=progress_mode(show, on))
    timings = {f"train:{r}": secs for r, secs in trained.items()}
    history = pd.concat([pd.read_csv(folder / r / "history.csv").assign(run=r)
                         for r in cfg.runs], ignore_index=True)
    history = typed(history[["run", *[c for c in history.columns if c != "run"]]])
    history.to_csv(folder / "history.csv", index=False)
    with open(folder / "history.jsonl", "w") as fh:
        for rec in history.to_dict(orient="records"):
            fh.write(json.dumps({k: (None if isinstance(v, float) and v != v else v)
                                 for k, v in rec.items()}) + "\n")

    # 2. Analyse every model at the main ε; ST also at the strong ε.
    train_set, test_set = cfg.data.load("train"), cfg.data.load("test")
    models = {r: _load_model(cfg, folder, r, train_set.info).to(cfg.analyze.device)
              for r in cfg.runs}
    eps_main = cfg.analyze.eps if cfg.analyze.eps is not None else cfg.train.eps
    frames = []
    for r, model in models.items():
        for eps_name, eps in (("main", eps_main), ("strong", cfg.eps_strong)):
            if eps_name == "strong" and r != "st":
                continue
            t0 = time.perf_counter()
            df = cfg.analyze_at(eps).measure(model, train_set, test_set,
                                             classifier=cfg.model.classifier,
                                             progress=show)
            timings[f"analyze:{r}:{eps_name}"] = time.perf_counter() - t0
            if on and not show:
                print(f"su2024 {r}: analysed at {eps_name} ε={eps:g}  "
                      f"{timings[f'analyze:{r}:{eps_name}']:.1f} s", file=sys.stderr, flush=True)
            df.insert(0, "eps_name", eps_name)
            df.insert(0, "run", r)
            frames.append(df)
    analysis = pd.concat(frames, ignore_index=True)
    analysis.to_csv(folder / "analysis.csv", index=False)
    wide(analysis).to_csv(folder / "analysis_wide.csv", index=False)

    # 2b. Robust accuracy with its reference: PGD and AutoAttack on the same test images.
    a = cfg.analyze
    robust = []
    for r, model in models.items():
        t0 = time.perf_counter()
        res = robust_reference(model, test_set, eps=eps_main, norm=a.norm, alpha=a.alpha,
                               steps=a.steps, restarts=a.restarts, n=cfg.robust_n,
                               seed=a.seed, autoattack=cfg.autoattack, fast=a.fast_attacks)
        timings[f"robust:{r}"] = time.perf_counter() - t0
        after = res.pop("autoattack_after")
        robust.append({"run": r, **res, **{f"after {k}": v for k, v in after.items()}})
        if on:
            print(f"su2024 {r}: robust accuracy PGD {res['pgd']:.3f}, AutoAttack "
                  f"{res['autoattack']:.3f} on {res['n']} test images  "
                  f"{timings[f'robust:{r}']:.1f} s", file=sys.stderr, flush=True)
    pd.DataFrame(robust).to_csv(folder / "robust_accuracy.csv", index=False)

    # 3. 2-D leap view of the last layer.
    x, y = _point_samples(train_set)
    x, y = x.to(cfg.analyze.device), y.to(cfg.analyze.device)
    k = train_set.info.num_classes
    rows: list[dict[str, Any]] = []
    a = cfg.analyze

    def pgd(model: nn.Module, eps: float, **kw: Any) -> PGD:
        tm = threat_model(a.norm, eps, a.alpha, a.steps, owner="su2024")
        return PGD(model, eps=tm.eps, alpha=tm.alpha, steps=tm.steps, norm=tm.norm,
                   seed=a.seed, fast=a.fast_attacks, **kw)

    if "st" in models:
        st, es = models["st"], cfg.eps_strong
        rows += _points(st, x, y, {
            f"untargeted PGD, ε={es:g}": pgd(st, es),
            f"targeted PGD → (y+1) mod K, ε={es:g}": pgd(st, es, targeted=True),
        }, cfg.points_per_class, k, "ST, ")
    if "at" in models:
        at = models["at"]
        rows += _points(at, x, y, {f"untargeted PGD, ε={eps_main:g}": pgd(at, eps_main)},
                        cfg.points_per_class, k, "AT, ")
    pd.DataFrame(rows).to_csv(folder / "points.csv", index=False)
    return write_summary(folder, cfg, timings, t_start)


def claims(folder: Path) -> list:
    """T1–T9 judged from the tables in ``folder``."""
    history, analysis = su_figures.read_tables(folder)
    return su_claims.judge_claims(history, analysis)


def describe(folder: Path) -> str:
    """One paragraph: data, model, epochs, radii and wall time of the run in ``folder``."""
    summary = read_summary(folder)
    if not summary:
        return ""
    c = summary.get("config", {})
    t, d, m = c.get("train", {}), c.get("data", {}), c.get("model", {})
    total = summary.get("timings_s", {}).get("total")
    return (f"Data: {d.get('dataset', '?')}, model {m.get('name', '?')}, "
            f"{t.get('epochs', '?')} epochs, main ε = {t.get('eps', '?')}, strong ε = "
            f"{c.get('eps_strong', '?')} (pixel units, {t.get('norm', '?')} PGD-"
            f"{t.get('steps', '?')}). " + (f"Wall time {total / 60:.1f} min. " if total else ""))


def with_seed(cfg: Su2024Config, seed: int) -> Su2024Config:
    """One repetition of the study: training (initialisation, batch order, attack noise) and
    analysis seeded with ``seed``; the data are the same."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed),
                               analyze=dataclasses.replace(cfg.analyze, seed=seed))


STUDY = register_study(Study(
    name="su2024",
    title="Neural Collapse under attack and adversarial training",
    paper="Su, Zhang, Tsilivis & Kempe, On the Robustness of Neural Collapse and the Neural "
          "Collapse of Robustness, TMLR 2024",
    config=Su2024Config,
    run=run,
    claims=claims,
    figures=su_figures.figures,
    tables=su_figures.tables,
    default_config="digits",
    quick=QUICK,
    describe=describe,
    with_seed=with_seed,
))

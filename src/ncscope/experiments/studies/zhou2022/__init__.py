"""Study ``zhou2022``: Zhou, You, Li, Liu, Liu, Qu & Zhu, "Are All Losses Created Equal: A
Neural Collapse Perspective", NeurIPS 2022 — and its question asked of adversarial training.

Runs:

(a) the regularised unconstrained feature model (UFM; the paper's §3) with CE, label smoothing,
    focal loss and MSE (:func:`ncscope.ufm.solve_regularized`, the NC metrics of every recorded
    iteration from the NC engine);
(b) the main study's digits BN-MLP (Su et al. 2024: SGD, ℓ∞ PGD-10 AT) trained with each loss
    under ST and under AT (:mod:`ncscope.experiments.studies.grid`), tracking NC of the clean
    training features and of their perturbations every ``track_every`` epochs.

Tables written into the study folder: ``ufm.csv`` (``loss, iteration, metric, value``),
``ufm_final.csv`` (one row per loss), ``history.csv`` (context ``run, mode, loss, epoch`` + the
long schema of :mod:`ncscope.collapse.schema`), ``networks.csv`` (one row per run at its last
epoch), ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ncscope.data.config import DataConfig
from ncscope.experiments.studies.base import (
    Study,
    digits_recipe,
    progress_mode,
    read_summary,
    register_study,
    start_run,
    write_summary,
)
from ncscope.experiments.studies.grid import GridRun, final_table, train_grid
from ncscope.experiments.studies.zhou2022 import claims as z_claims
from ncscope.experiments.studies.zhou2022 import figures as z_figures
from ncscope.losses import canonical_loss, make_loss
from ncscope.models.config import ModelConfig
from ncscope.train import TrainSettings
from ncscope.ufm import solve_regularized
from ncscope.validation import check_int

MODES = ("st", "at")


@dataclass
class UFMSettings:
    """The regularised UFM of part (a): K classes, ``n_per_class`` features each, dimension
    ``dim``, weight decays λ_W, λ_H, λ_b, L-BFGS until ``‖∇F‖ ≤ tol`` or ``max_iter``
    (:func:`ncscope.ufm.solve_regularized`)."""

    num_classes: int = 10
    n_per_class: int = 20
    dim: int = 32
    lambda_w: float = 5e-4
    lambda_h: float = 5e-4
    lambda_b: float = 5e-4
    max_iter: int = 2000
    tol: float = 1e-8
    record_every: int = 10
    seed: int = 0



@dataclass
class Zhou2022Config:
    """Settings of study ``zhou2022`` (YAML sections ``data``, ``model``, ``train``, ``ufm``).

    ``losses``: registered loss names (:mod:`ncscope.losses`) or your own loss factories as
    ``"package.module:function"`` (imported in every training worker); ``loss_kwargs``:
    per-loss hyper-parameters (``{fl: {gamma: 2}}``; default: the registry's, i.e. the
    official code's). ``modes``: ``st`` and/or ``at``; every loss is trained under every mode
    with the shared ``train`` settings (the loss is both the ST loss and the AT loss on PGD
    examples; PGD itself ascends cross-entropy, as in the main study).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("bn_mlp"))
    train: TrainSettings = field(default_factory=lambda: digits_recipe(epochs=40))
    ufm: UFMSettings = field(default_factory=UFMSettings)
    losses: list[str] = field(default_factory=lambda: ["ce", "ls", "fl", "mse"])
    loss_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    workers: int = 2
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.losses:
            raise ValueError("zhou2022: losses is empty; name at least one registered loss, "
                             "e.g. losses=[ce, mse]")
        self.losses = [canonical_loss(name) for name in self.losses]
        unknown = [k for k in self.loss_kwargs if canonical_loss(k) not in self.losses]
        if unknown:
            raise ValueError(f"zhou2022: loss_kwargs names {unknown}, which are not in losses "
                             f"{self.losses}; add them to losses or drop the entry")
        self.loss_kwargs = {canonical_loss(k): dict(v) for k, v in self.loss_kwargs.items()}
        for name, kwargs in self.loss_kwargs.items():
            make_loss(name, **kwargs)  # one-line error on a bad hyper-parameter
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"zhou2022: modes {self.modes} must be a non-empty list of "
                             f"{', '.join(MODES)}")
        self.workers = check_int("zhou2022", "workers", self.workers, 1)
        self.threads = check_int("zhou2022", "threads", self.threads, 1)

    def grid(self) -> list[GridRun]:
        """Every (loss, mode) run."""
        return [GridRun(f"{re.sub(r'[^A-Za-z0-9_]+', '_', loss)}_{mode}", mode,
                        {"loss": loss, "loss_kwargs": self.loss_kwargs.get(loss, {})},
                        labels={"loss": loss})
                for mode in self.modes for loss in self.losses]


QUICK = {"train.epochs": 4, "train.track_every": 2, "ufm.max_iter": 200}


def run(cfg: Zhou2022Config, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Solve the UFM with every loss, train every (loss, mode) network, write the tables."""
    t_start = time.perf_counter()
    on, show = start_run(cfg, folder, progress)
    timings: dict[str, float] = {}

    # (a) The UFM with every loss.
    u = cfg.ufm
    traj, finals = [], []
    for loss in cfg.losses:
        res = solve_regularized(loss, u.num_classes, u.n_per_class, u.dim,
                                lambda_w=u.lambda_w, lambda_h=u.lambda_h, lambda_b=u.lambda_b,
                                max_iter=u.max_iter, tol=u.tol, seed=u.seed,
                                record_every=u.record_every,
                                loss_kwargs=cfg.loss_kwargs.get(loss))
        timings[f"ufm:{loss}"] = res.seconds
        traj.append(res.trajectory.assign(loss=loss))
        nc = {k: v for k, v in res.final().items() if k != "loss"}  # (the engine's CE)
        finals.append({"loss": loss, "iterations": res.iterations, "status": res.status,
                       "grad_norm": res.grad_norm, "objective": res.objective,
                       "seconds": res.seconds, **nc})
        if on:
            print(f"zhou2022 UFM {loss}: {res.status} after {res.iterations} iterations, "
                  f"{res.seconds:.2f} s", file=sys.stderr, flush=True)
    ufm = pd.concat(traj, ignore_index=True)
    ufm[["loss", "iteration", "metric", "value"]].to_csv(folder / "ufm.csv", index=False)
    pd.DataFrame(finals).to_csv(folder / "ufm_final.csv", index=False)

    # (b) The digits network with every loss under ST and AT.
    history, seconds = train_grid(cfg.grid(), cfg.data, cfg.model, cfg.train, folder,
                                  workers=cfg.workers, threads=cfg.threads,
                                  progress=progress_mode(show, on),
                                  label="zhou2022")
    timings.update({f"train:{r}": s for r, s in seconds.items()})
    history.to_csv(folder / "history.csv", index=False)
    final_table(history, ["loss"]).to_csv(folder / "networks.csv", index=False)
    return write_summary(folder, cfg, timings, t_start)


def describe(folder: Path) -> str:
    """One paragraph: the UFM size, the network recipe and the wall time."""
    summary = read_summary(folder)
    if not summary:
        return ""
    c = summary.get("config", {})
    u, t, d, m = c.get("ufm", {}), c.get("train", {}), c.get("data", {}), c.get("model", {})
    total = summary.get("timings_s", {}).get("total")
    return (f"UFM: K = {u.get('num_classes')}, {u.get('n_per_class')} features per class, "
            f"d = {u.get('dim')}, λ_W = {u.get('lambda_w')}, λ_H = {u.get('lambda_h')}, "
            f"λ_b = {u.get('lambda_b')} (L-BFGS). Networks: {d.get('dataset', '?')}, "
            f"{m.get('name', '?')}, losses {', '.join(c.get('losses', []))}, "
            f"{t.get('epochs', '?')} epochs, modes {', '.join(c.get('modes', []))} (AT: "
            f"{t.get('norm', '?')} PGD-{t.get('steps', '?')} at ε = {t.get('eps', '?')}). "
            + (f"Wall time {total / 60:.1f} min. " if total else ""))


def with_seed(cfg: Zhou2022Config, seed: int) -> Zhou2022Config:
    """One repetition: the UFM start, the networks' training and attacks seeded with
    ``seed``."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed),
                               ufm=dataclasses.replace(cfg.ufm, seed=seed))


STUDY = register_study(Study(
    name="zhou2022",
    title="Are all losses created equal? Collapse with CE, LS, FL and MSE, clean and under AT",
    paper="Zhou, You, Li, Liu, Liu, Qu & Zhu, Are All Losses Created Equal: A Neural Collapse "
          "Perspective, NeurIPS 2022",
    config=Zhou2022Config,
    run=run,
    claims=z_claims.claims,
    figures=z_figures.figures,
    tables=z_figures.tables,
    default_config=None,
    quick=QUICK,
    describe=describe,
    with_seed=with_seed,
))

"""``ncscope reproduce``: the paper's experiments end to end on one data set (default: digits).

Trains ST, PGD-AT, TRADES and TRADES with the official code's BN quirk with per-epoch NC
tracking (:mod:`ncscope.train`), analyses every model at the main ε (where AT interpolates the
adversarial training set) and ST also at a strong ε (where the targeted attack mostly
succeeds, for the leap), then writes a run folder:

* ``history.csv`` / ``history.jsonl`` — per-epoch tracking, long format
  (``run, epoch, source, layer, metric, value``);
* ``analysis.csv`` — :func:`~ncscope.experiments.analyze.analyze` tables of every model, long
  format with ``run`` and ``eps_name``; ``analysis_wide.csv`` — one row per view;
* ``points.csv`` — 2-D projections behind the leap figure;
* ``claims.json`` / ``claims.csv`` — T1–T9 judged from these tables;
* ``summary.json`` — config, accuracies, timings; ``figures/*.png|svg``; ``report.html``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ncscope.attacks import PGD
from ncscope.collapse import FeatureTaps
from ncscope.config import to_dict
from ncscope.data import load_dataset
from ncscope.experiments.analyze import analyze, default_alpha, wide
from ncscope.models import penultimate_layer
from ncscope.report import judge_claims
from ncscope.report.claims import claims_frame

RUNS = ("st", "at", "trades", "trades_bnquirk")


@dataclass
class ReproduceConfig:
    """Settings of ``ncscope reproduce`` (YAML keys; ``--set key=value`` overrides)."""

    dataset: str = "digits"
    model: str = "bn_mlp"
    n_train: int | None = None
    data_root: str | None = None
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "piecewise"
    norm: str = "linf"
    eps: float = 0.1
    eps_strong: float = 0.3
    alpha: float | None = None
    steps: int = 10
    trades_beta: float = 6.0
    track_every: int = 5
    seed: int = 0
    threads: int = 1
    workers: int = 2
    analyze_batch: int = 512
    points_per_class: int = 15
    out_dir: str = "runs/reproduce"
    device: str = "cpu"
    progress: bool = True
    fast_attacks: bool = False

    def __post_init__(self) -> None:
        bad = [r for r in self.runs if r not in RUNS]
        if bad:
            raise ValueError(f"unknown runs {bad}; valid: {', '.join(RUNS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.track_every < 1:
            raise ValueError("epochs, batch_size and track_every must be >= 1")
        if not (0 < self.eps <= 1 and 0 < self.eps_strong <= 1):
            raise ValueError("eps and eps_strong must lie in (0, 1] (pixel units)")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("workers and threads must be >= 1")
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2'; got {self.norm!r}")

    def step_size(self, eps: float) -> float:
        """PGD step: ``alpha`` if set, else ``eps/4`` (ℓ∞) or ``eps/8`` (ℓ2; 16/255 at 128/255)."""
        return self.alpha if self.alpha is not None else default_alpha(eps, self.norm)


QUICK = {"epochs": 4, "track_every": 2, "points_per_class": 5}


def _train_one(cfg: ReproduceConfig, run: str, out: Path) -> tuple[Path, float]:
    """Train one model in this process; return (model file, seconds)."""
    from ncscope.experiments._train_adapter import train_run

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    train_run(cfg, run, out)
    return out / run / "model.pt", time.perf_counter() - t0


def _train_worker(args: tuple[ReproduceConfig, str, str]) -> tuple[str, float]:
    cfg, run, out = args
    path, secs = _train_one(cfg, run, Path(out))
    return str(path), secs


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


def reproduce(cfg: ReproduceConfig) -> dict[str, Any]:
    """Run the whole job; return a summary dict (also written to ``summary.json``)."""
    from ncscope.report.build import build_report

    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)

    # 1. Train (two processes on two cores; each single-threaded).
    jobs = [(cfg, run, str(out)) for run in cfg.runs]
    timings: dict[str, float] = {}
    show = cfg.progress and sys.stderr.isatty()
    if cfg.workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(cfg.workers, len(jobs))) as pool:
            results = list(tqdm(pool.imap(_train_worker, jobs, chunksize=1), total=len(jobs),
                                desc=f"train {', '.join(cfg.runs)}", unit="run",
                                disable=not show))
    else:
        results = [_train_worker(j) for j in tqdm(jobs, desc="train", unit="run",
                                                   disable=not show)]
    for run, (_, secs) in zip(cfg.runs, results, strict=True):
        timings[f"train:{run}"] = secs
    from ncscope.experiments._train_adapter import load_history, load_model

    history = pd.concat([load_history(out, run) for run in cfg.runs], ignore_index=True)
    history.to_csv(out / "history.csv", index=False)
    with open(out / "history.jsonl", "w") as fh:
        for rec in history.to_dict(orient="records"):
            fh.write(json.dumps(rec) + "\n")

    # 2. Analyse every model at the main ε; ST also at the strong ε.
    train = load_dataset(cfg.dataset, cfg.data_root, split="train", n_train=cfg.n_train,
                         seed=cfg.seed, **cfg.data_kwargs)
    test = load_dataset(cfg.dataset, cfg.data_root, split="test", **cfg.data_kwargs)
    models = {run: load_model(out, run, train.info).to(cfg.device) for run in cfg.runs}
    frames = []
    for run, model in models.items():
        for eps_name, eps in (("main", cfg.eps), ("strong", cfg.eps_strong)):
            if eps_name == "strong" and run != "st":
                continue
            t0 = time.perf_counter()
            df = analyze(model, train, test_data=test, eps=eps, norm=cfg.norm,
                         alpha=cfg.step_size(eps), steps=cfg.steps, batch_size=cfg.analyze_batch,
                         seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                         fast_attacks=cfg.fast_attacks)
            timings[f"analyze:{run}:{eps_name}"] = time.perf_counter() - t0
            df.insert(0, "eps", eps)
            df.insert(0, "eps_name", eps_name)
            df.insert(0, "run", run)
            frames.append(df)
    analysis = pd.concat(frames, ignore_index=True)
    analysis.to_csv(out / "analysis.csv", index=False)
    wides = []
    for (run, eps_name), df in analysis.groupby(["run", "eps_name"], sort=False):
        w = wide(df.drop(columns=["run", "eps_name", "eps"]))
        w.insert(0, "eps_name", eps_name)
        w.insert(0, "run", run)
        wides.append(w)
    pd.concat(wides, ignore_index=True).to_csv(out / "analysis_wide.csv", index=False)

    # 3. 2-D leap view of the last layer.
    x, y = train.tensors
    x, y = x.to(cfg.device), y.to(cfg.device)
    k = train.info.num_classes
    rows: list[dict[str, Any]] = []
    if "st" in models:
        st = models["st"]
        es = cfg.eps_strong
        rows += _points(st, x, y, {
            f"untargeted PGD, ε={es:g}": PGD(st, eps=es, alpha=cfg.step_size(es),
                                             steps=cfg.steps, norm=cfg.norm, seed=cfg.seed,
                                             fast=cfg.fast_attacks),
            f"targeted PGD → (y+1) mod K, ε={es:g}": PGD(st, eps=es, alpha=cfg.step_size(es),
                                                         steps=cfg.steps, norm=cfg.norm,
                                                         targeted=True, seed=cfg.seed,
                                                         fast=cfg.fast_attacks),
        }, cfg.points_per_class, k, "ST, ")
    if "at" in models:
        at = models["at"]
        rows += _points(at, x, y, {f"untargeted PGD, ε={cfg.eps:g}": PGD(
            at, eps=cfg.eps, alpha=cfg.step_size(cfg.eps), steps=cfg.steps, norm=cfg.norm,
            seed=cfg.seed, fast=cfg.fast_attacks)},
            cfg.points_per_class, k, "AT, ")
    points = pd.DataFrame(rows)
    points.to_csv(out / "points.csv", index=False)

    # 4. Claims and report.
    claims = judge_claims(history, analysis)
    (out / "claims.json").write_text(json.dumps([c.to_dict() for c in claims], indent=2))
    claims_frame(claims).to_csv(out / "claims.csv", index=False)
    timings["total"] = time.perf_counter() - t_start
    summary = {"config": to_dict(cfg), "timings_s": timings,
               "threads": cfg.threads, "workers": cfg.workers, "cpu_count": os.cpu_count()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = build_report(out)
    summary["report"] = str(report)
    summary["claims"] = claims
    return summary

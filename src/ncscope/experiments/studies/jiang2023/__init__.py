"""Study ``jiang2023``: Jiang, Zhou, Wang, Qu, Mixon, You & Zhu, "Generalized Neural Collapse for
a Large Number of Classes" (arXiv 2310.05351) — K > d + 1, where no simplex ETF fits in R^d.

Runs:

(a) the spherical UFM (:func:`ncscope.ufm.spherical_ufm`: unit rows and features, logit scale
    annealed, one feature per class) at each ``(K, d)`` of ``sizes``, against the best codes
    found by :func:`ncscope.ufm.tammes_code` (max-min angle) and
    :func:`ncscope.ufm.softmax_code` (max-min one-vs-rest distance ρ);
(b) the digits BN-MLP with a linear ``bottleneck``-dimensional penultimate layer (K = 10 >
    d + 1) trained under ST and AT (:mod:`ncscope.experiments.studies.grid`), the registered GNC
    metrics (``gnc1``-``gnc3``, per-class ``rho``) tracked like NC1, and a softmax code at
    ``(10, bottleneck)`` as the reference margin;
(c) beyond the paper: each trained net analysed (:func:`ncscope.analyze`) under untargeted PGD
    at the training ε — the leap statistics of the main study and the margins at K > d + 1.

Tables: ``codes.csv`` (one row per size: UFM GNC2 and both codes' values and margins),
``ufm.csv`` (``K, d, iteration, metric, value``), ``history.csv``, ``networks.csv``,
``analysis.csv``, ``features.csv`` (3-D penultimate features of the ST net for the figure),
``summary.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ncscope.collapse.gnc import min_margin
from ncscope.data.config import DataConfig
from ncscope.experiments.analyze import analyze
from ncscope.experiments.studies.base import (
    Study,
    digits_recipe,
    progress_mode,
    read_summary,
    register_study,
    seed_training,
    start_run,
    write_summary,
)
from ncscope.experiments.studies.grid import GridRun, final_table, train_grid
from ncscope.experiments.studies.jiang2023 import claims as j_claims
from ncscope.experiments.studies.jiang2023 import figures as j_figures
from ncscope.models import load_weights, penultimate_layer
from ncscope.models.config import ModelConfig
from ncscope.train import TrainSettings
from ncscope.ufm import softmax_code, spherical_ufm, tammes_code
from ncscope.validation import check_int

MODES = ("st", "at")


def _bottleneck_model() -> ModelConfig:
    return ModelConfig("bn_mlp", kwargs={"widths": [512, 256], "bottleneck": 3})



@dataclass
class Jiang2023Config:
    """Settings of study ``jiang2023`` (YAML sections ``data``, ``model``, ``train``).

    ``sizes``: the ``[K, d]`` pairs of the spherical UFM (K > d + 1 for generalized collapse);
    ``ufm_iterations``: its Armijo steps (logit scale annealed 2 → 60); ``code_restarts``:
    random starts of each code optimiser. ``model``: the digits BN-MLP with a linear
    ``bottleneck`` (its width is the d of the network part); ``modes``: ``st`` and/or ``at``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=_bottleneck_model)
    train: TrainSettings = field(default_factory=lambda: digits_recipe())
    sizes: list[list[int]] = field(default_factory=lambda: [[6, 2], [30, 3], [100, 10]])
    ufm_iterations: int = 3000
    code_restarts: int = 2
    modes: list[str] = field(default_factory=lambda: list(MODES))
    workers: int = 2
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for pair in self.sizes:
            if (len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int)
                                      for v in pair) or pair[0] < 2 or pair[1] < 1):
                raise ValueError(f"jiang2023: sizes entry {pair!r} must be [K, d] with integers "
                                 "K >= 2, d >= 1, e.g. [30, 3]")
        self.ufm_iterations = check_int("jiang2023", "ufm_iterations", self.ufm_iterations, 1)
        self.code_restarts = check_int("jiang2023", "code_restarts", self.code_restarts, 1)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"jiang2023: modes {self.modes} must be a non-empty list of "
                             f"{', '.join(MODES)}")
        self.workers = check_int("jiang2023", "workers", self.workers, 1)
        self.threads = check_int("jiang2023", "threads", self.threads, 1)


QUICK = {"train.epochs": 4, "train.track_every": 2, "ufm_iterations": 300, "code_restarts": 1,
         "sizes": [[6, 2], [12, 3]]}


def _codes(k: int, d: int, restarts: int, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    tam = tammes_code(k, d, restarts=restarts, seed=seed)
    soft = softmax_code(k, d, restarts=restarts, seed=seed)
    return {"tammes_angle_deg": float(torch.rad2deg(torch.tensor(tam.value))),
            "tammes_margin": min_margin(tam.W), "softmax_margin": soft.value,
            "codes_seconds": time.perf_counter() - t0}


def _features(model: torch.nn.Module, data: Any) -> pd.DataFrame:
    """The penultimate (bottleneck) features of the whole training set, with labels."""
    from ncscope.collapse import FeatureTaps

    x, y = data.tensors
    pen = penultimate_layer(model)
    with FeatureTaps(model, [pen]) as taps, torch.no_grad():
        model(x)
        h = taps.features[pen].double()
    out = pd.DataFrame(h.numpy(), columns=[f"h{i}" for i in range(h.shape[1])])
    out.insert(0, "label", y.numpy())
    return out


def run(cfg: Jiang2023Config, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Spherical UFM and codes per size, the bottleneck nets, their PGD analysis."""
    t_start = time.perf_counter()
    on, show = start_run(cfg, folder, progress)
    timings: dict[str, float] = {}
    seed = cfg.train.seed

    # (a) Spherical UFM vs codes.
    rows, traj = [], []
    for k, d in cfg.sizes:
        res = spherical_ufm(k, d, max_iter=cfg.ufm_iterations, seed=seed)
        fin = res.final()
        row = {"K": k, "d": d, "ufm_gnc2": fin.get("gnc2"), "ufm_gnc3": fin.get("gnc3"),
               "ufm_gnc1": fin.get("gnc1"), "ufm_iterations": res.iterations,
               "ufm_seconds": res.seconds, **_codes(k, d, cfg.code_restarts, seed)}
        rows.append(row)
        traj.append(res.trajectory.assign(K=k, d=d))
        timings[f"ufm:{k}x{d}"] = res.seconds + row["codes_seconds"]
        if on:
            print(f"jiang2023 ({k}, {d}): UFM GNC2 {row['ufm_gnc2']:.4f}, softmax code "
                  f"{row['softmax_margin']:.4f}, Tammes code {row['tammes_margin']:.4f}  "
                  f"{timings[f'ufm:{k}x{d}']:.1f} s", file=sys.stderr, flush=True)
    k_net = 10
    d_net = int(cfg.model.kwargs.get("bottleneck") or 0)
    if d_net:  # the reference margin of the network part
        rows.append({"K": k_net, "d": d_net, "network_reference": True,
                     **_codes(k_net, d_net, cfg.code_restarts, seed)})
    pd.DataFrame(rows).to_csv(folder / "codes.csv", index=False)
    ufm = pd.concat(traj, ignore_index=True)
    ufm[["K", "d", "iteration", "metric", "value"]].to_csv(folder / "ufm.csv", index=False)

    # (b) The bottleneck nets under ST and AT.
    grid = [GridRun(m, m, labels={}) for m in cfg.modes]
    history, seconds = train_grid(grid, cfg.data, cfg.model, cfg.train, folder,
                                  workers=cfg.workers, threads=cfg.threads,
                                  progress=progress_mode(show, on),
                                  label="jiang2023")
    timings.update({f"train:{r}": s for r, s in seconds.items()})
    history.to_csv(folder / "history.csv", index=False)
    nets = final_table(history, [], extra=("gnc1", "gnc2", "gnc3"))
    nets.to_csv(folder / "networks.csv", index=False)

    # (c) PGD analysis of each net at the training ε: leaps and margins at K > d + 1.
    train_set, test_set = cfg.data.load("train"), cfg.data.load("test")
    frames = []
    for r in cfg.modes:
        model = load_weights(cfg.model.build(train_set.info), folder / r / "model.pt").eval()
        df = analyze(model, train_set, layers=[penultimate_layer(model)],
                     sources=["clean", "pgd"], test_data=test_set, eps=cfg.train.eps,
                     norm=cfg.train.norm, seed=seed, progress=False)
        df.insert(0, "run", r)
        frames.append(df)
        if r == "st":
            _features(model, train_set).to_csv(folder / "features.csv", index=False)
    pd.concat(frames, ignore_index=True).to_csv(folder / "analysis.csv", index=False)
    return write_summary(folder, cfg, timings, t_start)


def describe(folder: Path) -> str:
    """One paragraph: the sizes, the network and the wall time."""
    summary = read_summary(folder)
    if not summary:
        return ""
    c = summary.get("config", {})
    t, m = c.get("train", {}), c.get("model", {})
    total = summary.get("timings_s", {}).get("total")
    sizes = ", ".join(f"({k}, {d})" for k, d in c.get("sizes", []))
    return (f"Spherical UFM at (K, d) = {sizes}; digits {m.get('name', '?')} with a "
            f"{m.get('kwargs', {}).get('bottleneck', '?')}-dimensional linear bottleneck, "
            f"{t.get('epochs', '?')} epochs, modes {', '.join(c.get('modes', []))}, PGD ε = "
            f"{t.get('eps', '?')}. " + (f"Wall time {total / 60:.1f} min. " if total else ""))



STUDY = register_study(Study(
    name="jiang2023",
    title="Generalized collapse for K > d + 1: softmax codes, spherical UFM, bottleneck nets",
    paper="Jiang, Zhou, Wang, Qu, Mixon, You & Zhu, Generalized Neural Collapse for a Large "
          "Number of Classes, arXiv 2310.05351",
    config=Jiang2023Config,
    run=run,
    claims=j_claims.claims,
    figures=j_figures.figures,
    tables=j_figures.tables,
    default_config=None,
    quick=QUICK,
    describe=describe,
    with_seed=seed_training,
))

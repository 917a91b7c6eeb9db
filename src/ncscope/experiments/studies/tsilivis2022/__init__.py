"""Study ``tsilivis2022``: Tsilivis & Kempe, "What Can the Neural Tangent Kernel Tell Us About
Adversarial Robustness?" (NeurIPS 2022) — on the digits, through :mod:`ncscope.ntk`.

Runs:

(a) analytic vs empirical NTK at initialisation of NTK-parameterised MLPs of growing width
    (``kernel_widths``, ``kernel_points`` stratified digits, ``kernel_seeds`` nets per width);
(b) training-free kernel FGSM / PGD on the kernel predictor (analytic NTK, the nets' training
    time) and their transfer to MLPs of several widths (``transfer_widths``) trained by
    full-batch GD on the squared loss, next to white-box PGD on each net, at ε = ``eps``;
(c) eigen-features of the digit pair ``pair``: usefulness and robustness of the top
    ``eigen_features`` kernel eigenvectors under a per-feature PGD at ε = ``eps``;
(d) kernel dynamics of the main study's digits BN-MLP under ST and AT: the trainer's
    ``track_ntk`` (distance to the initial and previous kernel, top-K spectral mass, class
    alignment on a fixed probe batch, clean and under PGD), with the usual NC tracking;
(e) beyond the paper: the ST net analysed (:func:`ncscope.analyze`) under white-box PGD and the
    training-free kernel PGD at ``leap_eps``: do transfer perturbations make features leap to
    the clean mean of the new prediction (Su et al. 2024, §4) as white-box ones do?

Tables: ``kernel_convergence.csv``, ``transfer.csv``, ``eigen_features.csv``, ``history.csv``
(the runs' tracking, kernel rows included), ``analysis.csv``, ``summary.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ncscope.attacks import PGD
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
from ncscope.experiments.studies.grid import GridRun, train_grid
from ncscope.experiments.studies.tsilivis2022 import claims as n_claims
from ncscope.experiments.studies.tsilivis2022 import figures as n_figures
from ncscope.experiments.studies.tsilivis2022 import parts
from ncscope.models import load_weights, penultimate_layer
from ncscope.models.config import ModelConfig
from ncscope.train import TrainSettings
from ncscope.validation import check_int, check_real

MODES = ("st", "at")


def _ints(name: str, values: list[int], low: int) -> list[int]:
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < low
                         for v in values):
        raise ValueError(f"tsilivis2022: {name} {values!r} must be a non-empty list of integers "
                         f">= {low}, e.g. [64, 256]")
    return list(values)


@dataclass
class Tsilivis2022Config:
    """Settings of study ``tsilivis2022`` (YAML sections ``data``, ``model``, ``train`` for part
    (d); the other keys as in the module docstring). ``depth``: hidden layers of the analytic
    kernel and of the finite MLPs; ``gd_steps`` and ``lr_scale``: their full-batch GD
    (lr = lr_scale·n / λ_max of the kernel); ``center``: train :class:`ncscope.ntk.Centered` nets
    (their output at initialisation removed, so that each wide net, not only their mean, follows
    the kernel predictor); ``transfer_n``: stratified training samples of
    parts (b) and (e); ``attack_steps``: PGD steps of every attack."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("bn_mlp"))
    train: TrainSettings = field(default_factory=lambda: digits_recipe(
        epochs=15, track_every=1, track_subset=10, track_ntk=3))
    depth: int = 1
    kernel_widths: list[int] = field(default_factory=lambda: [32, 128, 512, 2048])
    kernel_points: int = 50
    kernel_seeds: int = 4
    transfer_widths: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    transfer_n: int = 600
    gd_steps: int = 400
    lr_scale: float = 1.0
    center: bool = True
    eps: float = 0.1
    attack_steps: int = 10
    pair: list[int] = field(default_factory=lambda: [3, 8])
    eigen_features: int = 30
    leap_eps: float = 0.2
    modes: list[str] = field(default_factory=lambda: list(MODES))
    workers: int = 2
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.depth = check_int("tsilivis2022", "depth", self.depth, 1, 8)
        if not isinstance(self.center, bool):
            raise TypeError(f"tsilivis2022: center must be True or False, got {self.center!r}")
        self.kernel_widths = _ints("kernel_widths", self.kernel_widths, 1)
        self.transfer_widths = _ints("transfer_widths", self.transfer_widths, 1)
        self.kernel_points = check_int("tsilivis2022", "kernel_points", self.kernel_points, 2)
        self.kernel_seeds = check_int("tsilivis2022", "kernel_seeds", self.kernel_seeds, 1)
        self.transfer_n = check_int("tsilivis2022", "transfer_n", self.transfer_n, 10)
        self.gd_steps = check_int("tsilivis2022", "gd_steps", self.gd_steps, 1)
        self.lr_scale = check_real("tsilivis2022", "lr_scale", self.lr_scale, 0.0, 2.0,
                                   strict_low=True, strict_high=True,
                                   hint=" (GD on the squared loss diverges at >= 2)")
        self.eps = check_real("tsilivis2022", "eps", self.eps, 0.0, 1.0, strict_low=True)
        self.leap_eps = check_real("tsilivis2022", "leap_eps", self.leap_eps, 0.0, 1.0,
                                   strict_low=True)
        self.attack_steps = check_int("tsilivis2022", "attack_steps", self.attack_steps, 1)
        self.eigen_features = check_int("tsilivis2022", "eigen_features", self.eigen_features, 6)
        if (len(self.pair) != 2 or len(set(self.pair)) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in self.pair)):
            raise ValueError(f"tsilivis2022: pair {self.pair!r} must be two different class "
                             "indices, e.g. [3, 8]")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"tsilivis2022: modes {self.modes} must be a non-empty list of "
                             f"{', '.join(MODES)}")
        if self.train.track_ntk is None:
            raise ValueError("tsilivis2022: train.track_ntk must be set (probe samples per "
                             "class of the kernel dynamics), e.g. --set train.track_ntk=3")
        self.workers = check_int("tsilivis2022", "workers", self.workers, 1)
        self.threads = check_int("tsilivis2022", "threads", self.threads, 1)


QUICK = {"train.epochs": 3, "train.track_ntk": 1, "kernel_widths": [16, 64],
         "kernel_points": 12, "kernel_seeds": 2, "transfer_widths": [32, 128],
         "transfer_n": 200, "gd_steps": 50, "eigen_features": 8, "attack_steps": 3}


def _say(on: bool, text: str) -> None:
    if on:
        print(f"tsilivis2022 {text}", file=sys.stderr, flush=True)


def run(cfg: Tsilivis2022Config, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Parts (a)–(e) of the module docstring, into ``folder``."""
    t_start = time.perf_counter()
    on, show = start_run(cfg, folder, progress)
    timings: dict[str, float] = {}
    seed = cfg.train.seed
    train_set, test_set = cfg.data.load("train"), cfg.data.load("test")
    train, test = parts.tensors(train_set), parts.tensors(test_set)

    t0 = time.perf_counter()  # (a)
    probe = parts.subset(train, cfg.kernel_points, seed)[0]
    conv = parts.kernel_convergence(probe, cfg.kernel_widths, cfg.kernel_seeds, cfg.depth)
    conv.to_csv(folder / "kernel_convergence.csv", index=False)
    timings["kernel_convergence"] = time.perf_counter() - t0
    means = conv.groupby("width")["rel_error"].mean()
    _say(on, "(a) relative NTK error by width: " + ", ".join(
        f"{w}: {e:.3f}" for w, e in means.items()) + f"  {timings['kernel_convergence']:.1f} s")

    t0 = time.perf_counter()  # (b)
    small = parts.subset(train, cfg.transfer_n, seed)
    table, info = parts.transfer(small, test, widths=cfg.transfer_widths, depth=cfg.depth,
                                 eps=cfg.eps, steps=cfg.attack_steps, gd_steps=cfg.gd_steps,
                                 lr_scale=cfg.lr_scale, seed=seed, center=cfg.center)
    table.to_csv(folder / "transfer.csv", index=False)
    timings["transfer"] = time.perf_counter() - t0
    timings.update({f"transfer_{k}": v for k, v in info.items()})
    _say(on, f"(b) transfer at eps {cfg.eps}: " + "; ".join(
        f"{r.model}{'' if pd.isna(r.width) else int(r.width)} clean {r.clean_acc:.3f} "
        f"white-box {r.whitebox_pgd_acc:.3f} kernel-PGD {r.kernel_pgd_acc:.3f}"
        for r in table.itertuples()) + f"  {timings['transfer']:.1f} s")

    t0 = time.perf_counter()  # (c)
    eig = parts.eigen_table(train, test, pair=cfg.pair, depth=cfg.depth, eps=cfg.eps,
                            features=cfg.eigen_features, steps=cfg.attack_steps)
    eig.to_csv(folder / "eigen_features.csv", index=False)
    timings["eigen_features"] = time.perf_counter() - t0
    _say(on, f"(c) eigen-features {cfg.pair}: robustness of the top 5 "
         f"{eig.robustness.head(5).mean():.3f}, of the rest {eig.robustness.iloc[5:].mean():.3f}"
         f"  {timings['eigen_features']:.1f} s")

    grid = [GridRun(m, m, labels={}) for m in cfg.modes]  # (d)
    history, seconds = train_grid(grid, cfg.data, cfg.model, cfg.train, folder,
                                  workers=cfg.workers, threads=cfg.threads,
                                  progress=progress_mode(show, on), label="tsilivis2022")
    timings.update({f"train:{r}": s for r, s in seconds.items()})
    history.to_csv(folder / "history.csv", index=False)

    t0 = time.perf_counter()  # (e)
    frames = []
    if "st" in cfg.modes:
        model = load_weights(cfg.model.build(train_set.info), folder / "st" / "model.pt").eval()
        kernel_pgd = parts.kernel_source(train, depth=cfg.depth, eps=cfg.leap_eps,
                                         steps=cfg.attack_steps, seed=seed, n=cfg.transfer_n)
        white = PGD(model, eps=cfg.leap_eps, steps=cfg.attack_steps, checks="off", seed=seed)
        df = analyze(model, train_set, layers=[penultimate_layer(model)],
                     sources={"clean": None, "pgd": white, "kernel_pgd": kernel_pgd},
                     test_data=test_set, eps=cfg.leap_eps, steps=cfg.attack_steps,
                     seed=seed, progress=False)
        df.insert(0, "run", "st")
        frames.append(df)
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(folder / "analysis.csv", index=False)
    timings["leap_analysis"] = time.perf_counter() - t0
    return write_summary(folder, cfg, timings, t_start)


def describe(folder: Path) -> str:
    """One paragraph: the kernels, nets and runs, and the wall time."""
    summary = read_summary(folder)
    if not summary:
        return ""
    c = summary.get("config", {})
    t = c.get("train", {})
    total = summary.get("timings_s", {}).get("total")
    return (f"Analytic ReLU NTK of depth {c.get('depth', '?')} on the digits; empirical NTKs at "
            f"widths {c.get('kernel_widths')}; kernel attacks at ε = {c.get('eps')} transferred "
            f"to MLPs of widths {c.get('transfer_widths')} trained by full-batch GD for "
            f"{c.get('gd_steps')} steps on {c.get('transfer_n')} images; eigen-features of "
            f"digits {c.get('pair')}; kernel dynamics of the {c.get('model', {}).get('name')} "
            f"under {', '.join(c.get('modes', []))} for {t.get('epochs')} epochs "
            f"({t.get('track_ntk')} probe images per class). "
            + (f"Wall time {total / 60:.1f} min. " if total else ""))



STUDY = register_study(Study(
    name="tsilivis2022",
    title="The NTK view of robustness: kernel attacks, eigen-features, kernel dynamics",
    paper="Tsilivis & Kempe, What Can the Neural Tangent Kernel Tell Us About Adversarial "
          "Robustness?, NeurIPS 2022",
    config=Tsilivis2022Config,
    run=run,
    claims=n_claims.claims,
    figures=n_figures.figures,
    tables=n_figures.tables,
    default_config=None,
    quick=QUICK,
    describe=describe,
    with_seed=seed_training,
))

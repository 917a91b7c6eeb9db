"""Study ``tran2021``: Tran, Pal, Musau, Manzanas Lopez, Hamilton, Yang, Bak & Johnson,
"Robustness Verification of Semantic Segmentation Neural Networks Using Relaxed Reachability"
(CAV 2021, LNCS 12759) — relaxed ImageStar reachability (:mod:`ncscope.verify`) at CPU scale,
and beyond the paper a certified *collapse* radius of the main study's digits models.

Runs:

(a) two small segmentation nets on mini-M2NIST (:func:`ncscope.data.segmentation.mini_m2nist`,
    :mod:`ncscope.models.segmentation`) — transposed convolution + average pooling, and dilated
    convolution — trained with pixel-wise cross-entropy;
(b) the relaxation-factor sweep: ``rF`` × heuristic on the transposed-conv net under NNV's
    darkening attack of ``n_pixels`` pixels: seconds, LPs, RV, RS, RIoU, and a sampling check
    of every output bound;
(c) both nets at equal attacks (ℓ∞ of radius ``eps`` on the same pixels, and darkening) at
    ``compare_rf``;
(d) digits BN-MLPs under ST, AT and TRADES (the main study's recipe with fewer epochs, or the
    weights in ``digits_weights``): per correctly classified test sample the certified collapse
    radius, the certified logit radius and the PGD radius (:mod:`ncscope.verify.radius`).

Tables: ``seg_models.csv``, ``sweep.csv``, ``nets.csv``, ``digits_models.csv``,
``radius.csv``, ``summary.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ncscope.data.config import DataConfig
from ncscope.data.segmentation import mini_m2nist
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
from ncscope.experiments.studies.tran2021 import claims as t_claims
from ncscope.experiments.studies.tran2021 import figures as t_figures
from ncscope.experiments.studies.tran2021 import runs as t_runs
from ncscope.models import load_weights
from ncscope.models.config import ModelConfig
from ncscope.models.segmentation import seg_net
from ncscope.train import TrainConfig, TrainSettings
from ncscope.train.pool import train_many
from ncscope.validation import check_int
from ncscope.verify import HEURISTICS

MODES = ("st", "at", "trades")


@dataclass
class Tran2021Config:
    """Settings of study ``tran2021`` (YAML sections ``data``, ``model``, ``train`` for the
    digits models; the rest top level).

    Segmentation: ``seg_train`` / ``seg_test`` mini-M2NIST canvases, ``seg_epochs``,
    ``seg_lr``, ``seg_channels`` (both nets' widths); ``images`` test canvases verified;
    darkening of ``n_pixels`` pixels brighter than ``threshold`` with ``de``; ``rfs`` ×
    ``heuristics`` of the sweep; ``eps`` and ``compare_rf`` of the nets' comparison;
    ``samples`` sampled inputs per verified set (soundness check).
    Collapse radius: ``modes`` trained (or loaded from ``digits_weights/<mode>/model.pt``),
    ``radius_samples`` test samples per model, bisection on ``[0, eps_max]`` to ``tol``,
    ``radius_rf`` of the reachability, ``pgd_steps``, ``radius_check`` sampled inputs per
    certified ball.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        "bn_mlp", kwargs={"widths": [128, 64]}))
    train: TrainSettings = field(default_factory=lambda: digits_recipe(epochs=30))
    seg_train: int = 1000
    seg_test: int = 50
    seg_epochs: int = 30
    seg_lr: float = 0.01
    seg_channels: list[int] = field(default_factory=lambda: [8, 16])
    images: int = 3
    n_pixels: int = 30
    de: float = 0.1
    threshold: float = 150 / 255
    rfs: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    heuristics: list[str] = field(default_factory=lambda: list(HEURISTICS))
    eps: float = 0.05
    compare_rf: float = 0.5
    samples: int = 400
    modes: list[str] = field(default_factory=lambda: list(MODES))
    digits_weights: str | None = None
    radius_samples: int = 20
    eps_max: float = 0.3
    tol: float = 0.005
    radius_rf: float = 1.0
    pgd_steps: int = 20
    radius_check: int = 200
    workers: int = 2
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("seg_train", "seg_test", "seg_epochs", "images", "n_pixels", "samples",
                    "radius_samples", "pgd_steps", "radius_check", "workers", "threads"):
            setattr(self, key, check_int("tran2021", key, getattr(self, key), 1))
        if self.images > self.seg_test:
            raise ValueError(f"tran2021: images={self.images} must be <= seg_test="
                             f"{self.seg_test}")
        if len(self.seg_channels) != 2 or any(int(c) < 1 for c in self.seg_channels):
            raise ValueError(f"tran2021: seg_channels={self.seg_channels} must be two widths "
                             ">= 1, e.g. [8, 16]")
        if not self.rfs or any(not 0 <= float(r) <= 1 for r in self.rfs):
            raise ValueError(f"tran2021: rfs={self.rfs} must be a non-empty list in [0, 1]")
        for key, value in (("compare_rf", self.compare_rf), ("radius_rf", self.radius_rf),
                           ("de", self.de), ("threshold", self.threshold), ("eps", self.eps),
                           ("eps_max", self.eps_max)):
            if not 0 <= float(value) <= 1:
                raise ValueError(f"tran2021: {key}={value} must lie in [0, 1]")
        if not 0 < self.tol < self.eps_max:
            raise ValueError(f"tran2021: tol={self.tol} must lie in (0, eps_max)")
        bad_h = [h for h in self.heuristics if h not in HEURISTICS]
        if bad_h or not self.heuristics:
            raise ValueError(f"tran2021: heuristics={self.heuristics} must be a non-empty list "
                             f"of {', '.join(HEURISTICS)}")
        bad_m = [m for m in self.modes if m not in MODES]
        if bad_m or not self.modes:
            raise ValueError(f"tran2021: modes={self.modes} must be a non-empty list of "
                             f"{', '.join(MODES)}")


QUICK = {"seg_train": 200, "seg_test": 4, "seg_epochs": 3, "images": 1, "samples": 100,
         "rfs": [0.0, 0.5, 1.0], "heuristics": ["area", "random"], "n_pixels": 10,
         "train.epochs": 2, "radius_samples": 2, "radius_check": 50, "tol": 0.02, "workers": 1}


def _digits_models(cfg: Tran2021Config, folder: Path, progress: str, timings: dict) -> dict:
    """The digits models by mode: trained here (no NC tracking beyond the last epoch) or
    loaded from ``digits_weights``."""
    info = cfg.data.load("train").info
    if cfg.digits_weights is None:
        runs = {m: TrainConfig.from_sections(
            cfg.data, cfg.model, cfg.train, mode=m, track_epochs=[cfg.train.epochs],
            track_fresh_attack=False, track_perturbed=False, track_test=True,
            track_test_attack=True, out_dir=str(folder / "digits" / m), overwrite=True,
            checkpoint_every=0, progress=False) for m in cfg.modes}
        seconds = train_many(runs, workers=cfg.workers, threads=cfg.threads, progress=progress,
                             label="tran2021")
        timings.update({f"train:{m}": s for m, s in seconds.items()})
        base = folder / "digits"
    else:
        base = Path(cfg.digits_weights)
    out = {}
    for m in cfg.modes:
        path = base / m / "model.pt"
        if not path.is_file():
            raise ValueError(f"tran2021: digits_weights={cfg.digits_weights!r} has no {m}/"
                             "model.pt; point it at a run folder with st/, at/, trades/")
        out[m] = load_weights(cfg.model.build(info), path).eval()
    return out


def run(cfg: Tran2021Config, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Segmentation nets, the rF sweep, the nets' comparison and the collapse radii."""
    t_start = time.perf_counter()
    on, show = start_run(cfg, folder, progress)
    timings: dict[str, float] = {}
    seed = cfg.train.seed

    def say(msg: str) -> None:
        if on:
            print(f"tran2021: {msg}", file=sys.stderr, flush=True)

    # (a) Segmentation nets.
    tr = mini_m2nist(cfg.seg_train, "train", seed=seed)
    te = mini_m2nist(cfg.seg_test, "test", seed=seed)
    mean, std = float(tr.x.mean()), float(tr.x.std())
    nets, rows = {}, []
    for name in ("transposed", "dilated"):
        torch.manual_seed(seed)
        net = seg_net(name, channels=tuple(int(c) for c in cfg.seg_channels), mean=mean,
                      std=std)
        secs = t_runs.train_segmentation(net, tr, cfg.seg_epochs, cfg.seg_lr, seed)
        nets[name] = net
        rows.append({"net": name, "train_seconds": secs,
                     "parameters": sum(p.numel() for p in net.parameters()),
                     **t_runs.pixel_accuracy(net, te)})
        timings[f"seg:{name}"] = secs
        say(f"{name} net trained in {secs:.1f} s, test pixel accuracy "
            f"{rows[-1]['pixel_acc']:.3f}")
    pd.DataFrame(rows).to_csv(folder / "seg_models.csv", index=False)
    images = te.x[: cfg.images]

    # (b) The relaxation-factor sweep on the transposed-conv net.
    t0 = time.perf_counter()
    sweep = pd.DataFrame(t_runs.sweep_rows(nets["transposed"], images, cfg, seed))
    sweep.insert(0, "net", "transposed")
    sweep.to_csv(folder / "sweep.csv", index=False)
    timings["sweep"] = time.perf_counter() - t0
    say(f"rF sweep: {len(sweep)} verifications in {timings['sweep']:.1f} s")

    # (c) Transposed-conv vs dilated at equal attacks.
    t0 = time.perf_counter()
    comp = [r for name, net in nets.items()
            for r in t_runs.net_rows(name, net, images, cfg, seed)]
    pd.DataFrame(comp).to_csv(folder / "nets.csv", index=False)
    timings["nets"] = time.perf_counter() - t0

    # (d) Certified collapse radius of the digits models.
    models = _digits_models(cfg, folder, progress_mode(show, on), timings)
    train_set, test_set = cfg.data.load("train"), cfg.data.load("test")
    dig, radii = [], []
    for m, model in models.items():
        t0 = time.perf_counter()
        with torch.no_grad():
            acc = float((model(test_set.tensors[0]).argmax(1) == test_set.tensors[1])
                        .double().mean())
        radii += t_runs.collapse_radii(m, model, train_set.tensors, test_set.tensors, cfg, seed)
        timings[f"radius:{m}"] = time.perf_counter() - t0
        dig.append({"run": m, "clean_test_acc": acc})
        say(f"{m}: radii of {cfg.radius_samples} samples in {timings[f'radius:{m}']:.1f} s")
    pd.DataFrame(dig).to_csv(folder / "digits_models.csv", index=False)
    pd.DataFrame(radii).to_csv(folder / "radius.csv", index=False)
    return write_summary(folder, cfg, timings, t_start)


def describe(folder: Path) -> str:
    """One paragraph: the data, the attack, the sweep and the wall time."""
    summary = read_summary(folder)
    if not summary:
        return ""
    c = summary.get("config", {})
    total = summary.get("timings_s", {}).get("total")
    return (f"Mini-M2NIST ({c.get('seg_train')} training canvases 16×32, 2–3 digits), nets "
            f"trained {c.get('seg_epochs')} epochs; darkening of {c.get('n_pixels')} pixels "
            f"(de = {c.get('de')}) on {c.get('images')} test canvases, rF ∈ {c.get('rfs')}; "
            f"ℓ∞ ε = {c.get('eps')} on the same pixels for the nets' comparison; digits "
            f"{c.get('model', {}).get('name')} {', '.join(c.get('modes', []))}, radii by "
            f"bisection to {c.get('tol')} on [0, {c.get('eps_max')}]. "
            + (f"Wall time {total / 60:.1f} min. " if total else ""))



STUDY = register_study(Study(
    name="tran2021",
    title="Relaxed reachability of segmentation nets, and a certified collapse radius",
    paper="Tran, Pal, Musau, Manzanas Lopez, Hamilton, Yang, Bak & Johnson, Robustness "
          "Verification of Semantic Segmentation Neural Networks Using Relaxed Reachability, "
          "CAV 2021 (LNCS 12759)",
    config=Tran2021Config,
    run=run,
    claims=t_claims.claims,
    figures=t_figures.figures,
    tables=t_figures.tables,
    default_config=None,
    quick=QUICK,
    describe=describe,
    with_seed=seed_training,
))

"""What a study is: a declared config, runs, tables, figures and claims, registered by name.

A study is one module (or package) under :mod:`ncscope.experiments.studies` that builds a
:class:`Study` and registers it with :func:`register_study`. ``ncscope reproduce STUDY`` then
loads its config (the shipped YAML named by ``default_config``, ``--config`` and dotted
``--set`` overrides), runs it into ``<out>/<study>/``, judges its claims from the tables it
wrote, and the report renders one section per study. Claims are never written into code:
each :class:`Claim` carries the rule, the numbers it was judged on, and the verdict computed
from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ncscope.config import to_dict
from ncscope.train import TrainSettings


@dataclass
class Claim:
    """One row of a study's claims table."""

    id: str
    statement: str
    rule: str
    numbers: dict[str, float | None] = field(default_factory=dict)
    holds: bool | None = None
    note: str = ""
    #: Relative slack of the tightest condition of the rule (≥ 0 where it holds; ``None`` when
    #: not measured): how far the measured numbers are from flipping the verdict.
    margin: float | None = None

    def verdict(self) -> str:
        """``holds`` / ``does not hold`` / ``not measured``."""
        return {True: "holds", False: "does not hold", None: "not measured"}[self.holds]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (with the verdict string)."""
        return {**asdict(self), "verdict": self.verdict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claim:
        """Inverse of :meth:`to_dict`."""
        keys = ("id", "statement", "rule", "numbers", "holds", "note", "margin")
        return cls(**{k: data[k] for k in keys if k in data})


def finite(value: object) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, NaN or not a number (how claims read
    a table cell)."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    """One row per claim: id, statement, rule, numbers (formatted), verdict, margin, note."""
    def fmt(nums: dict[str, float | None]) -> str:
        return ", ".join(f"{k}={'n/a' if v is None else f'{v:.4g}'}" for k, v in nums.items())

    return pd.DataFrame([
        {"id": c.id, "claim": c.statement, "rule": c.rule, "numbers": fmt(c.numbers),
         "verdict": c.verdict(), "margin": c.margin, "note": c.note} for c in claims
    ], columns=["id", "claim", "rule", "numbers", "verdict", "margin", "note"])


def aggregate_claims(by_seed: dict[int, list[Claim]]) -> pd.DataFrame:
    """Claims of several seeds side by side: per claim the verdict of every seed, "holds in k
    of N", the margin (mean, min, max over seeds) and every number as mean ± std."""
    rows = []
    seeds = sorted(by_seed)
    first = by_seed[seeds[0]]
    for i, claim in enumerate(first):
        per = [by_seed[s][i] for s in seeds]
        k = sum(c.holds is True for c in per)
        margins = [c.margin for c in per if c.margin is not None]
        nums = {}
        for key in claim.numbers:
            vals = [c.numbers.get(key) for c in per if c.numbers.get(key) is not None]
            if vals:
                mean = sum(vals) / len(vals)
                std = (sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
                nums[key] = f"{mean:.4g} ± {std:.2g}"
        rows.append({
            "id": claim.id, "claim": claim.statement,
            "verdict": f"holds in {k} of {len(per)} seeds",
            "per_seed": ", ".join(c.verdict() for c in per),
            "margin_mean": sum(margins) / len(margins) if margins else None,
            "margin_min": min(margins) if margins else None,
            "margin_max": max(margins) if margins else None,
            "numbers": ", ".join(f"{k_}={v}" for k_, v in nums.items()),
        })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Study:
    """A reproducible study.

    Attributes:
        name: command-line name (``ncscope reproduce NAME``) and run sub-folder.
        title / paper: headline and the paper (with venue) it reproduces.
        config: the dataclass of its settings (sections ``data``, ``model``, ``train``,
            ``analyze`` where they apply).
        run: ``run(cfg, folder, progress) -> summary dict``: trains / measures and writes the
            study's tables into ``folder``.
        claims: ``claims(folder) -> list[Claim]`` judged from the tables in ``folder``.
        figures: ``figures(folder) -> [(png path, caption)]`` drawn from the tables.
        tables: ``tables(folder) -> [(title, DataFrame)]`` shown in the report.
        default_config: shipped YAML used when no ``--config`` is given (``None``: defaults).
        quick: overrides of the ``--quick`` profile (a smoke run, not evidence).
        describe: ``describe(folder) -> str``, a one-paragraph plain-text intro of the run.
        with_seed: ``with_seed(cfg, seed) -> cfg`` for ``ncscope reproduce --seeds N`` (the
            config of one repetition); ``None``: the study runs with one seed only.
    """

    name: str
    title: str
    paper: str
    config: type
    run: Callable[..., dict[str, Any]]
    claims: Callable[[Path], list[Claim]]
    figures: Callable[[Path], list[tuple[Path, str]]]
    tables: Callable[[Path], list[tuple[str, pd.DataFrame]]]
    default_config: str | None = None
    quick: dict[str, Any] = field(default_factory=dict)
    describe: Callable[[Path], str] = lambda folder: ""
    with_seed: Callable[[Any, int], Any] | None = None


STUDIES: dict[str, Study] = {}


def register_study(study: Study, *, replace: bool = False) -> Study:
    """Make ``study`` available to ``ncscope reproduce`` and the report."""
    if not study.name.isidentifier():
        raise ValueError(f"study name must be an identifier; got {study.name!r}")
    if study.name in STUDIES and not replace:
        raise ValueError(f"study {study.name!r} is already registered; pass replace=True")
    STUDIES[study.name] = study
    return study


def get_study(name: str) -> Study:
    """The registered study ``name`` (an unknown name lists the valid ones)."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(STUDIES)} (or 'all')")
    return STUDIES[name]


def progress_mode(shown: bool, on: bool) -> str:
    """The training pool's progress style: bars on a terminal, lines when progress is on but
    stderr is not a terminal, else off."""
    return "bars" if shown else "lines" if on else "off"


def write_summary(folder: Path, cfg: Any, timings: dict[str, float], t_start: float
                  ) -> dict[str, Any]:
    """Write the study's ``summary.json`` (its config, wall times with ``total`` measured from
    ``t_start``, threads, workers and the machine's CPU count) and return it."""
    timings["total"] = time.perf_counter() - t_start
    summary = {"config": to_dict(cfg), "timings_s": timings,
               "threads": getattr(cfg, "threads", None), "workers": getattr(cfg, "workers", None),
               "cpu_count": os.cpu_count()}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def read_summary(folder: Path) -> dict[str, Any]:
    """The ``summary.json`` of a study folder (``{}`` when the run has not written it)."""
    path = folder / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def start_run(cfg: Any, folder: Path, progress: bool) -> tuple[bool, bool]:
    """The opening of every study's ``run``: create ``folder``, set ``cfg.threads`` torch
    threads, and return ``(on, show)`` — progress messages wanted (``progress`` and
    ``cfg.progress``), and bars possible (on, with stderr a terminal)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    on = progress and cfg.progress
    return on, on and sys.stderr.isatty()


def seed_training(cfg: Any, seed: int) -> Any:
    """A study config with ``train.seed = seed`` (the ``with_seed`` of a study whose every
    random draw — initialisation, batch order, attacks, subsets — derives from the training
    seed)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def digits_recipe(**changes: Any) -> TrainSettings:
    """The main study's digits recipe as a ``train`` section (Su et al. 2024 at CPU scale: SGD,
    lr 0.05 piecewise, ℓ∞ PGD-10 at ε = 0.1, 100 epochs, tracking the full training and test
    sets every 5 epochs), with ``changes`` (e.g. ``epochs=40``). The default of every study that
    trains on digits; a partial ``--set train.KEY=...`` keeps the rest of it."""
    return dataclasses.replace(
        TrainSettings(epochs=100, lr=0.05, eps=0.1, track_every=5, track_subset=None), **changes)

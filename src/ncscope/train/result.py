"""What a training run returns (:class:`TrainResult`) and the hooks it calls (:class:`Callback`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from torch import nn

from ncscope.train.config import TrainConfig

if TYPE_CHECKING:
    from ncscope.train.trainer import Trainer

__all__ = ["Callback", "TrainResult"]


class Callback:
    """Hooks called by :class:`~ncscope.train.Trainer` (override what you need; all default
    to no-ops).

    ``epoch`` is always the 1-based number of the epoch concerned.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this call (after a resume: the first remaining epoch)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the first batch of ``epoch``."""

    def on_batch_end(self, trainer: Trainer, epoch: int, batch: int, logs: dict[str, Any]) -> None:
        """After the optimiser step of batch ``batch`` (0-based); ``logs``: loss, lr, step."""

    def on_epoch_end(
        self, trainer: Trainer, epoch: int, logs: dict[str, Any], rows: list[dict[str, Any]]
    ) -> None:
        """After ``epoch`` was trained, measured (``rows``, empty if not tracked) and saved."""

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the last epoch."""


@dataclass
class TrainResult:
    """What :func:`~ncscope.train.train` / :meth:`~ncscope.train.Trainer.fit` return.

    Attributes:
        model: the trained model (unwrapped, on its training device, in eval mode).
        history: the metric rows as a DataFrame (one row per epoch × source × reference ×
            layer; see :mod:`ncscope.train.tracking`).
        run_dir: the run folder (``None`` when ``out_dir`` was not set).
        config: the run's :class:`~ncscope.train.TrainConfig`.
        rows: the metric rows as dicts (the JSONL content).
        timings: per-epoch wall times (``train_s``, ``track_s``, ``checkpoint_s``) of this call.
    """

    model: nn.Module
    history: pd.DataFrame
    run_dir: Path | None
    config: TrainConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)

    def final(
        self, source: str = "train_clean", reference: str | None = None, layer: str | None = None
    ) -> dict[str, Any]:
        """The last measured row of ``source`` (around ``reference``, default: itself for train
        sources, ``train_clean`` for test sources) at ``layer`` (default: the penultimate)."""
        if reference is not None:
            ref = reference
        else:
            ref = "train_clean" if source.startswith("test") else source
        df = self.history
        if df.empty:
            raise ValueError("no rows were measured")
        sel = df[(df["source"] == source) & (df["reference"] == ref)]
        if layer is None:
            sel = sel[sel["layer"] == sel["layer"].iloc[-1]] if len(sel) else sel
        else:
            sel = sel[sel["layer"] == layer]
        if sel.empty:
            raise ValueError(f"no rows for source={source!r}, reference={ref!r}, layer={layer!r}")
        return sel.iloc[-1].to_dict()

    def summary(self) -> pd.DataFrame:
        """Per-epoch accuracies (one column per source) at the penultimate layer."""
        df = self.history
        if df.empty:
            return df
        pen = df["layer"].iloc[-1]
        own = df[
            (df["layer"] == pen)
            & ((df["reference"] == df["source"]) | df["source"].str.startswith("test"))
        ]
        wide = own.pivot_table(index="epoch", columns="source", values="accuracy")
        wide.columns = [f"{c}_acc" for c in wide.columns]
        return wide.reset_index()

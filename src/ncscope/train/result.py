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
        history: the metric rows as a DataFrame in the long schema with an ``epoch`` column
            (:mod:`ncscope.collapse.schema`; sources in :mod:`ncscope.train.tracking`).
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
        self,
        source: str = "clean",
        split: str = "train",
        reference: str | None = None,
        layer: str | None = None,
    ) -> dict[str, Any]:
        """Metrics of the last measured epoch of one view, as ``{metric: value}`` plus the
        view's keys (``epoch``, ``layer``, ``source``, ``split``, ``reference``).

        ``reference`` defaults to ``"own"`` on the training split and ``"clean"`` on the test
        split; ``layer`` to the penultimate (deepest) layer. Sources: ``clean``, ``perturbed``
        (training-time batches), ``pgd`` (fresh attack) — see :mod:`ncscope.train.tracking`.
        """
        ref = reference if reference is not None else ("own" if split == "train" else "clean")
        df = self.history
        if df.empty:
            raise ValueError("no rows were measured")
        sel = df[(df["source"] == source) & (df["split"] == split) & (df["reference"] == ref)
                 & (df["group"] == "label") & df["class"].isna()]
        if len(sel):
            pick = layer if layer is not None else sel.sort_values("depth")["layer"].iloc[-1]
            sel = sel[sel["layer"] == pick]
        if sel.empty:
            raise ValueError(f"no rows for source={source!r}, split={split!r}, "
                             f"reference={ref!r}, layer={layer!r}")
        last = sel[sel["epoch"] == sel["epoch"].max()]
        keys = {"epoch": int(last["epoch"].iloc[0]), "layer": last["layer"].iloc[0],
                "source": source, "split": split, "reference": ref}
        return {**keys, **dict(zip(last["metric"], last["value"], strict=True))}

    def summary(self) -> pd.DataFrame:
        """Per-epoch network accuracy at the penultimate layer, one column per measured
        ``<source>_<split>_acc`` (own means on train, clean means on test)."""
        df = self.history
        if df.empty:
            return df
        sel = df[(df["metric"] == "net_accuracy") & (df["group"] == "label")
                 & (((df["split"] == "train") & (df["reference"] == "own"))
                    | ((df["split"] == "test") & (df["reference"] == "clean")))]
        if sel.empty:
            return sel
        pen = sel.sort_values("depth")["layer"].iloc[-1]
        sel = sel[sel["layer"] == pen].assign(
            column=lambda d: d["source"] + "_" + d["split"] + "_acc")
        wide = sel.pivot_table(index="epoch", columns="column", values="value")
        wide.columns.name = None
        return wide.reset_index()

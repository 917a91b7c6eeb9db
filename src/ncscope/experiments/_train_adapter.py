"""Bridge between ``reproduce`` and :mod:`ncscope.train`: one run in, weights + history out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from torch import nn

from ncscope.data import DatasetInfo
from ncscope.models import create_model, load_weights
from ncscope.train import TrainConfig, train

if TYPE_CHECKING:
    from ncscope.experiments.reproduce import ReproduceConfig

#: Metrics copied from the trainer's rows into the reproduce history (long format).
METRICS = ("nc1", "nc1_over_k", "trace_ratio", "equinorm_means", "equiangular_means",
           "equinorm_weights", "equiangular_weights", "etf_error_means", "nc3", "nc4",
           "ncc_accuracy", "accuracy", "loss", "simplex_angle")


def train_config(cfg: ReproduceConfig, run: str, out: Path) -> TrainConfig:
    """The :class:`TrainConfig` of one reproduce run (``st``, ``at``, ``trades``,
    ``trades_bnquirk``)."""
    mode = "trades" if run.startswith("trades") else run
    return TrainConfig(
        dataset=cfg.dataset, model=cfg.model, mode=mode, epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay, schedule=cfg.schedule, seed=cfg.seed,
        n_train=cfg.n_train, data_seed=cfg.seed, data_root=cfg.data_root,
        data_kwargs=dict(cfg.data_kwargs),
        model_kwargs=dict(cfg.model_kwargs), eps=cfg.eps,
        alpha=cfg.step_size(cfg.eps), steps=cfg.steps, norm=cfg.norm,
        trades_beta=cfg.trades_beta, bn_quirk=run == "trades_bnquirk",
        # The initialised model (epoch 0), the first epoch, every k-th and the last.
        track_init=True,
        track_epochs=sorted({1, cfg.epochs, *range(cfg.track_every, cfg.epochs + 1,
                                                    cfg.track_every)}),
        track_layers="all",
        # ST: fresh eval-mode PGD after the epoch; AT/TRADES: the training-time perturbations.
        track_fresh_attack=mode == "st", track_perturbed=mode != "st",
        track_test=True, track_test_attack=True,
        out_dir=str(out / run), overwrite=True, checkpoint_every=max(cfg.epochs // 4, 1),
        threads=cfg.threads, progress=False, device=cfg.device,
        fast_attacks=cfg.fast_attacks,
    )


def train_run(cfg: ReproduceConfig, run: str, out: Path) -> None:
    """Train one run with :func:`ncscope.train.train` (writes ``out/run``)."""
    train(train_config(cfg, run, out))


def load_history(out: Path, run: str) -> pd.DataFrame:
    """The trainer's rows of ``run`` as the reproduce history: ``run, epoch, source
    (clean | perturbed), layer, metric, value`` (own class means)."""
    rows = pd.read_csv(out / run / "history.csv")
    perturbed = "train_pgd" if run == "st" else "train_perturbed"
    keep = rows[(rows.source == rows.reference)
                & rows.source.isin(["train_clean", perturbed])].copy()
    keep["source"] = keep.source.map({"train_clean": "clean", perturbed: "perturbed"})
    metrics = [m for m in METRICS if m in keep.columns]
    long = keep.melt(id_vars=["epoch", "source", "layer"], value_vars=metrics,
                     var_name="metric", value_name="value")
    long.insert(0, "run", run)
    return long.sort_values(["epoch", "source", "metric"]).reset_index(drop=True)


def load_model(out: Path, run: str, info: DatasetInfo | None = None) -> nn.Module:
    """The trained model of ``run`` (eval mode, CPU); ``info`` is the training data's
    :class:`DatasetInfo` (input shape and normalisation, as the trainer built the model)."""
    conf = json.loads((out / "config.json").read_text())
    model = create_model(conf["model"], dataset=info or conf["dataset"],
                         **conf.get("model_kwargs", {}))
    return load_weights(model, out / run / "model.pt").eval()

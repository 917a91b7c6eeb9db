"""``train(config)``: the config-in entry point — load the data, build the model, fit."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ncscope.train.config import TrainConfig
from ncscope.train.result import Callback, TrainResult
from ncscope.train.trainer import Trainer

__all__ = ["train"]


def train(
    config: TrainConfig | dict[str, Any],
    *,
    resume: bool | str | os.PathLike[str] = False,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Load the data, build the model and train it as ``config`` says.

    The data come from the ``data`` section (:meth:`ncscope.data.config.DataConfig.load`: the
    training split with its subset, the test split when tracked); the model from the ``model``
    section (:meth:`ncscope.models.config.ModelConfig.build` for the training data) after
    ``torch.manual_seed(config.seed)``. A missing data folder raises
    :class:`ncscope.data.DatasetNotFoundError` saying how to obtain it.
    Under ``torchrun`` the same call trains with DistributedDataParallel.

    Example::

        from ncscope.train import TrainConfig, train
        result = train(TrainConfig.digits_recipe("at", epochs=30, out_dir="runs/digits-at"))
        result.history            # pandas DataFrame of the per-epoch rows
        result.model, result.run_dir
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    prev_threads = torch.get_num_threads()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        train_data = cfg.data.load("train")
        test_data = None
        if cfg.track_test or cfg.track_test_attack:
            test_data = cfg.data.load("test")
        torch.manual_seed(cfg.seed)
        info = getattr(train_data, "info", None)
        model = cfg.model.build(info or cfg.data.dataset)
    finally:
        torch.set_num_threads(prev_threads)
    return Trainer(model, train_data, test_data, cfg, callbacks=callbacks).fit(resume=resume)

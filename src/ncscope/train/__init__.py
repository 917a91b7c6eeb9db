"""Training with Neural-Collapse tracking: ST, PGD adversarial training, TRADES and new modes.

Reproduces the training protocol of Su, Zhang, Tsilivis, Kempe, "On the Robustness of Neural
Collapse and the Neural Collapse of Robustness" (TMLR 2024, experimental setup, and their
official code): SGD 0.9, lr 0.1 with the per-iteration piecewise schedule, weight decay 5e-4,
batch 128, ST / AT (PGD in train mode, adversarial CE only) / TRADES (beta = 6, optional
BatchNorm quirk of the official code), and per-epoch NC on the clean training data and on the
training-time perturbations. Training modes are objects in a registry
(:mod:`ncscope.train.modes`: :func:`register_mode`), as are losses (:mod:`ncscope.losses`,
re-exported here: :func:`register_loss`) and schedules (:func:`register_schedule`).

Entry points: :func:`train` (config in, trained model + history + run folder out),
:class:`Trainer` (any ``nn.Module`` and data sets), :func:`track` (one measurement, reusable
on saved checkpoints). From the shell: ``ncscope train --config FILE`` (also under ``torchrun``).
Imports ``data``, ``models``, ``collapse``, ``attacks`` and ``losses`` only.
"""

from ncscope.collapse.spool import TensorSpool
from ncscope.losses import LOSSES, cross_entropy, make_loss, register_loss, trades_kl
from ncscope.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ncscope.train.config import TrainConfig, TrainSettings
from ncscope.train.distributed import DistInfo, derive_seed, epoch_batches
from ncscope.train.entry import train
from ncscope.train.history import HistoryWriter, read_jsonl, rows_to_frame
from ncscope.train.modes import (
    MODES,
    StepContext,
    StepOutput,
    TrainingMode,
    make_mode,
    register_mode,
)
from ncscope.train.result import Callback, TrainResult
from ncscope.train.schedules import SCHEDULES, lr_at, register_schedule
from ncscope.train.tracking import SOURCES, Tracker, resolve_track_layers, track
from ncscope.train.trainer import Trainer

__all__ = [
    "LOSSES",
    "MODES",
    "SCHEDULES",
    "SOURCES",
    "Callback",
    "CheckpointError",
    "DistInfo",
    "HistoryWriter",
    "StepContext",
    "StepOutput",
    "TensorSpool",
    "TrainConfig",
    "TrainSettings",
    "TrainResult",
    "TrainingMode",
    "Tracker",
    "Trainer",
    "cross_entropy",
    "derive_seed",
    "epoch_batches",
    "list_checkpoints",
    "load_checkpoint",
    "lr_at",
    "make_loss",
    "make_mode",
    "read_jsonl",
    "register_loss",
    "register_mode",
    "register_schedule",
    "resolve_track_layers",
    "rows_to_frame",
    "save_checkpoint",
    "track",
    "trades_kl",
    "train",
]

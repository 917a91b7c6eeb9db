"""The trainer: ST / PGD-AT / TRADES with per-epoch NC tracking, checkpoints and DDP.

Training modes (paper-brief §3.4, the official code of Su et al. 2024):

* ``st``: ``loss(f(x), y)`` on the clean batch.
* ``at`` (Madry et al. 2018): ``x' = PGD(x)`` with the model in **train** mode during the attack
  (``attack_mode="train"``, as the paper's code: BN uses and updates the batch statistics of the
  perturbed batches; ``"eval"`` is an option), then ``loss(f(x'), y)`` only (no clean term).
  With ``clean_forward=True`` the paper's extra clean forward in train mode (no backward) follows,
  for the logged clean accuracy; it also updates BN running statistics, as in the paper's code.
* ``trades`` (Zhang et al. 2019): ``x'`` maximises ``KL(f(x) || f(x'))`` with the model in eval
  mode; then, back in train mode, ``loss(f(x), y) + beta * KL(f(x) || f(x'))`` with the KL summed
  and divided by the batch size. ``bn_quirk=True`` reproduces the official code, where the model
  is never switched back: the whole TRADES training runs with BatchNorm in eval mode (running
  statistics stay at their initial values). One DDP forward computes both ``f(x)`` and ``f(x')``
  (two separate model calls, so BN batch statistics are per input as in the reference).

Optimisation (paper-brief §3.3): SGD (momentum 0.9, weight decay on every parameter), the
learning rate set before every iteration from the schedule at the fractional epoch
``t = epoch + (i + 1) / batches``.

Determinism: the batch order is ``DistributedSampler(seed).set_epoch(epoch)`` and the attack
noise comes from generators seeded with ``(seed, epoch, rank, purpose)``; with
``torch.use_deterministic_algorithms`` (on for CPU by default) a run is bit-for-bit repeatable
on CPU for a given seed and thread count, and a resumed run is identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ncscope.attacks import PGD, TRADES
from ncscope.data import load_dataset
from ncscope.models import create_model
from ncscope.train.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    checkpoint_path,
    get_rng_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from ncscope.train.config import RESUME_FREE_FIELDS, TrainConfig
from ncscope.train.distributed import (
    DistInfo,
    all_reduce_sum,
    cleanup_distributed,
    derive_seed,
    epoch_batches,
    setup_distributed,
)
from ncscope.train.history import HistoryWriter, rows_to_frame
from ncscope.train.losses import make_loss, trades_kl
from ncscope.train.schedules import lr_at
from ncscope.train.spool import TensorSpool
from ncscope.train.tracking import (
    PURPOSE_TRAIN_ATTACK,
    Tracker,
    fetch_batch,
    num_classes_of,
)

__all__ = ["Callback", "TrainResult", "Trainer", "train"]


class Callback:
    """Hooks called by :class:`Trainer` (override what you need; all default to no-ops).

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
    """What :func:`train` / :meth:`Trainer.fit` return.

    Attributes:
        model: the trained model (unwrapped, on its training device, in eval mode).
        history: the metric rows as a DataFrame (one row per epoch × source × reference ×
            layer; see :mod:`ncscope.train.tracking`).
        run_dir: the run folder (``None`` when ``out_dir`` was not set).
        config: the run's :class:`TrainConfig`.
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


class _MultiForward(nn.Module):
    """``forward(*xs)`` = ``model(x)`` for each input: one (DDP) call, separate BN statistics."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: Tensor) -> Tensor | tuple[Tensor, ...]:
        outs = tuple(self.model(x) for x in xs)
        return outs[0] if len(outs) == 1 else outs


def _resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but CUDA is not available (use device='cpu')")
        return torch.device("cuda", info.local_rank if info.active else torch.cuda.current_device())
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available (use device='cpu')")
    return torch.device(name)


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    import random

    random.seed(seed)


class Trainer:
    """Train any classifier ``nn.Module`` with ST / AT / TRADES and track NC per epoch.

    Args:
        model: pixel-space classifier (normalisation inside, final ``nn.Linear`` named
            ``classifier`` or given by a ``classifier_name`` attribute; see
            :func:`ncscope.models.prepare_model`).
        train_data: training set (``ImageDataset`` or any map-style data set of ``(x, y)``).
        test_data: test set for test accuracy / robust accuracy, or ``None``.
        config: :class:`TrainConfig` (its ``dataset`` / ``model`` fields are not used here).
        callbacks: :class:`Callback` objects.

    Use :meth:`fit` to train (optionally resuming); :meth:`track` measures the current model.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        test_data: Dataset | None = None,
        config: TrainConfig | None = None,
        *,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.train_data = train_data
        self.test_data = test_data
        self.config = config if config is not None else TrainConfig()
        self.callbacks = list(callbacks)
        n = len(train_data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the training set is empty")
        self.num_classes = num_classes_of(model, train_data)
        self.loss_fn = make_loss(self.config.loss, **self.config.loss_kwargs)
        self.run_dir = Path(self.config.out_dir) if self.config.out_dir is not None else None
        self.step = 0
        self.epoch = 0  # completed epochs
        self.rows: list[dict[str, Any]] = []
        self.timings: list[dict[str, Any]] = []
        self.dist = DistInfo()
        self.device = torch.device("cpu")
        self.optimizer = self._make_optimizer()
        self._forward: nn.Module = _MultiForward(model)
        self._tracker: Tracker | None = None

    # ------------------------------------------------------------------ building blocks
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )

    def _train_attack(self, epoch: int) -> PGD | TRADES | None:
        cfg = self.config
        if cfg.mode == "st":
            return None
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(cfg.seed, epoch, self.dist.rank, PURPOSE_TRAIN_ATTACK))
        common = {
            "eps": cfg.eps,
            "alpha": cfg.effective_alpha,
            "steps": cfg.steps,
            "norm": cfg.norm,
            "model_mode": cfg.effective_attack_mode,
            "generator": gen,
            "checks": "off",
            "fast": cfg.fast_attacks and cfg.effective_attack_mode == "eval",
        }
        if cfg.mode == "at":
            return PGD(self.model, random_start=cfg.random_start, restarts=cfg.restarts, **common)
        return TRADES(self.model, init_std=0.001 if cfg.random_start else 0.0, **common)

    @property
    def tracker(self) -> Tracker:
        """The :class:`Tracker` of this run (built on first use)."""
        if self._tracker is None:
            spool = self._spool_dir()
            self._tracker = Tracker(
                self.model,
                self.train_data,
                self.test_data,
                self.config,
                device=self.device,
                dist=self.dist,
                spool_dir=spool,
            )
        return self._tracker

    def _spool_dir(self) -> Path | None:
        if self.config.spool_dir is not None:
            return Path(self.config.spool_dir)
        return self.run_dir / ".spool" if self.run_dir is not None else None

    def track(
        self, epoch: int, perturbed: TensorSpool | None = None, extra: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Measure the current model (see :mod:`ncscope.train.tracking`); returns the rows."""
        return self.tracker.measure(epoch, perturbed=perturbed, extra=extra)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint payload (weights-only types): model, optimiser, counters, RNG, rows."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": get_rng_state(),
            "history": list(self.rows),
            "config": self.config.to_dict(),
            "world_size": self.dist.world_size,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str = "checkpoint") -> None:
        """Restore :meth:`state_dict` output; a config or model mismatch is a CheckpointError."""
        saved = dict(state["config"])
        now = self.config.to_dict()
        diff = sorted(
            k
            for k in set(saved) | set(now)
            if k not in RESUME_FREE_FIELDS and saved.get(k) != now.get(k)
        )
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
            raise CheckpointError(
                f"{source} was written with a different config ({detail}); resume with the "
                "same settings or start a new run folder"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{source} does not fit this model: {first}") from None
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.rows = [dict(r) for r in state["history"]]
        set_rng_state(state["rng"])

    def _resume_path(self, resume: bool | str | os.PathLike[str]) -> Path | None:
        if resume is False or resume is None:
            return None
        if resume is True:
            if self.run_dir is None:
                raise ValueError("resume=True needs config.out_dir (the run folder to resume)")
            found = list_checkpoints(self.run_dir / "checkpoints")
            return found[-1][1] if found else None
        return Path(resume)

    def _check_run_dir(self, resuming: bool, wanted: bool = False) -> None:
        if self.run_dir is None or resuming:
            return
        existing = [
            p for p in (self.run_dir / "history.jsonl", self.run_dir / "checkpoints") if p.exists()
        ]
        if existing and not self.config.overwrite:
            if wanted:
                raise FileExistsError(
                    f"run folder {self.run_dir} holds results but no checkpoint to resume "
                    "from; set overwrite=True to start over"
                )
            raise FileExistsError(
                f"run folder {self.run_dir} already holds results ({existing[0].name}); pass "
                "resume=True to continue it or set overwrite=True to start over"
            )

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool | str | os.PathLike[str] = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (or the remaining ones when resuming).

        ``resume``: ``True`` continues from the newest checkpoint in ``out_dir/checkpoints``
        (a fresh start when there is none), a path continues from that file. A corrupt,
        truncated or foreign checkpoint raises :class:`CheckpointError` before anything is
        written.
        """
        cfg = self.config
        prev_threads = torch.get_num_threads()
        prev_det = torch.are_deterministic_algorithms_enabled()
        prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        kind = (
            "cuda"
            if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        self.dist = setup_distributed(kind)
        try:
            if cfg.threads is not None:
                torch.set_num_threads(cfg.threads)
            self.device = _resolve_device(cfg.device, self.dist)
            det = cfg.deterministic if cfg.deterministic is not None else self.device.type == "cpu"
            torch.use_deterministic_algorithms(det, warn_only=True)
            return self._fit(resume)
        finally:
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            cleanup_distributed(self.dist)

    def _fit(self, resume: bool | str | os.PathLike[str]) -> TrainResult:
        cfg = self.config
        info = self.dist
        self.model.to(self.device)
        self.optimizer = self._make_optimizer()  # after .to(): state lives with the params
        ckpt_file = self._resume_path(resume)
        state = None
        if ckpt_file is not None:
            state = load_checkpoint(ckpt_file)  # CPU: RNG states must stay CPU tensors
        self._check_run_dir(resuming=state is not None, wanted=resume is not False)
        if state is not None:
            self.load_state_dict(state, source=f"checkpoint {ckpt_file}")
        else:
            self.epoch, self.step, self.rows = 0, 0, []
            _seed_globals(derive_seed(cfg.seed, 0, info.rank, 0))
        self._tracker = None
        _ = self.tracker  # validates the classifier / layers before any training
        writer = self._prepare_run_dir(fresh=state is None)

        if info.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward = DistributedDataParallel(_MultiForward(self.model), device_ids=ids)
        else:
            self._forward = _MultiForward(self.model)

        if state is None and cfg.track_init:
            rows = self.track(0)  # the initialised model: the start of the NC trajectory
            self.rows.extend(rows)
            if writer is not None:
                writer.append(rows)
        show = cfg.progress and info.is_main and sys.stderr.isatty()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        bar = tqdm(
            total=cfg.epochs,
            initial=self.epoch,
            desc=f"train {cfg.mode}",
            disable=not show,
            unit="epoch",
        )
        try:
            while self.epoch < cfg.epochs:
                epoch = self.epoch + 1
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch)
                tracked = cfg.is_tracked(epoch)
                spool = None
                if tracked and cfg.mode != "st" and cfg.track_perturbed:
                    spool = TensorSpool(self._spool_dir(), f"rank{info.rank}-train_perturbed")
                try:
                    t0 = time.perf_counter()
                    logs = self._train_epoch(epoch, spool, show)
                    t1 = time.perf_counter()
                    rows = self.track(epoch, spool, extra=logs) if tracked else []
                finally:
                    if spool is not None:
                        spool.delete()
                t2 = time.perf_counter()
                self.epoch = epoch
                self.rows.extend(rows)
                if writer is not None:
                    writer.append(rows)
                if self.run_dir is not None and info.is_main and cfg.is_checkpointed(epoch):
                    self.save_checkpoint()
                t3 = time.perf_counter()
                timing = {
                    "epoch": epoch,
                    "train_s": t1 - t0,
                    "track_s": t2 - t1,
                    "checkpoint_s": t3 - t2,
                }
                self.timings.append(timing)
                if self.run_dir is not None and info.is_main:
                    with open(self.run_dir / "timings.jsonl", "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(timing) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{logs['run_loss']:.3g}", lr=f"{logs['lr']:.3g}")
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, logs, rows)
        finally:
            bar.close()
        self.model.eval()
        if self.run_dir is not None and info.is_main and cfg.save_model:
            state_dict = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            atomic_torch_save(self.run_dir / "model.pt", state_dict)
        result = TrainResult(
            model=self.model,
            history=rows_to_frame(self.rows),
            run_dir=self.run_dir,
            config=cfg,
            rows=list(self.rows),
            timings=list(self.timings),
        )
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _prepare_run_dir(self, fresh: bool) -> HistoryWriter | None:
        if self.run_dir is None or not self.dist.is_main:
            return None
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir = self.run_dir / "checkpoints"
        if fresh:
            if ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)
        elif ckpt_dir.exists():  # temp files of a write interrupted by a crash
            for tmp in ckpt_dir.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / "timings.jsonl").unlink()
        atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        writer = HistoryWriter(self.run_dir)
        writer.reset(self.rows)  # on resume: exactly the checkpoint's rows
        return writer

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the completed epochs atomically and prune old ones."""
        assert self.run_dir is not None
        ckpt_dir = self.run_dir / "checkpoints"
        path = save_checkpoint(checkpoint_path(ckpt_dir, self.epoch), self.state_dict())
        prune_checkpoints(ckpt_dir, self.config.keep_epochs)
        return path

    def _train_epoch(self, epoch: int, spool: TensorSpool | None, show: bool) -> dict[str, Any]:
        """One epoch (1-based ``epoch``); returns the epoch-level log columns."""
        cfg = self.config
        info = self.dist
        model = self.model
        quirk = cfg.mode == "trades" and cfg.bn_quirk
        model.train()
        if quirk:  # official TRADES: attack_trades() calls model.eval() and nothing undoes it
            model.eval()
        batches = epoch_batches(
            len(self.train_data),
            cfg.batch_size,
            epoch - 1,
            cfg.seed,
            info,  # type: ignore[arg-type]
        )
        n_batches = len(batches)
        attack = self._train_attack(epoch)
        # loss sum, clean correct, clean n, adversarial correct, adversarial n, total n
        sums = torch.zeros(6, dtype=torch.float64)
        lr = cfg.lr
        for i, (idx, pad) in enumerate(
            tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not show, unit="batch")
        ):
            lr = lr_at(cfg.schedule, epoch - 1, i, n_batches, cfg.epochs, cfg.lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = fetch_batch(self.train_data, idx)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            keep = ~torch.as_tensor(pad, dtype=torch.bool, device=self.device)
            clean_logits = adv_logits = x_adv = None
            if cfg.mode == "st":
                clean_logits = self._forward(x)
                loss = self.loss_fn(clean_logits, y)
            elif cfg.mode == "at":
                assert attack is not None
                x_adv = attack(x, y)
                adv_logits = self._forward(x_adv)
                loss = self.loss_fn(adv_logits, y)
                if cfg.clean_forward:
                    with torch.no_grad():
                        clean_logits = model(x)
            else:
                assert attack is not None
                x_adv = attack(x, y)
                clean_logits, adv_logits = self._forward(x, x_adv)
                loss = self.loss_fn(clean_logits, y) + cfg.trades_beta * trades_kl(
                    adv_logits, clean_logits
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            if spool is not None and x_adv is not None:
                spool.append(x_adv[keep], y[keep])
            n_keep = int(keep.sum())
            loss_value = float(loss.detach())
            stats = [loss_value * n_keep, 0.0, 0.0, 0.0, 0.0, n_keep]
            if clean_logits is not None:
                stats[1] = float((clean_logits.detach().argmax(1) == y)[keep].sum())
                stats[2] = n_keep
            if adv_logits is not None:
                stats[3] = float((adv_logits.detach().argmax(1) == y)[keep].sum())
                stats[4] = n_keep
            sums += torch.tensor(stats, dtype=torch.float64)
            for cb in self.callbacks:
                cb.on_batch_end(self, epoch, i, {"loss": loss_value, "lr": lr, "step": self.step})
        if info.active:
            sums = all_reduce_sum(sums.to(self.device), info).cpu()
        loss_sum, c_ok, c_n, a_ok, a_n, n = sums.tolist()
        return {
            "step": self.step,
            "lr": lr,
            "run_loss": loss_sum / n if n else None,
            "run_clean_acc": c_ok / c_n if c_n else None,
            "run_adv_acc": a_ok / a_n if a_n else None,
        }


def train(
    config: TrainConfig | dict[str, Any],
    *,
    resume: bool | str | os.PathLike[str] = False,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Load the data, build the model and train it as ``config`` says.

    The training set is ``load_dataset(config.dataset, split="train", n_per_class / n_train,
    seed=config.data_seed)``; the test set (when tracked) is the test split, optionally a
    stratified ``n_test`` subset. The model is ``create_model(config.model, dataset=<train
    info>, **config.model_kwargs)`` built after ``torch.manual_seed(config.seed)``. A missing
    data folder raises :class:`ncscope.data.DatasetNotFoundError` saying how to obtain it.
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
        train_data = load_dataset(
            cfg.dataset,
            cfg.data_root,
            split="train",
            n_per_class=cfg.n_per_class,
            n_train=cfg.n_train,
            seed=cfg.data_seed,
            **cfg.data_kwargs,
        )
        test_data = None
        if cfg.track_test or cfg.track_test_attack:
            test_data = load_dataset(
                cfg.dataset,
                cfg.data_root,
                split="test",
                n_train=cfg.n_test,
                seed=cfg.data_seed,
                **cfg.data_kwargs,
            )
        torch.manual_seed(cfg.seed)
        info = getattr(train_data, "info", None)
        model = create_model(cfg.model, dataset=info or cfg.dataset, **cfg.model_kwargs)
    finally:
        torch.set_num_threads(prev_threads)
    return Trainer(model, train_data, test_data, cfg, callbacks=callbacks).fit(resume=resume)

"""The trainer: any training mode with per-epoch NC tracking, checkpoints and DDP.

The loop is mode-agnostic: each epoch it puts the model in the mode's
:meth:`~ncscope.train.modes.TrainingMode.model_mode`, builds the mode's attack, and for every
batch calls :meth:`~ncscope.train.modes.TrainingMode.step` and takes one SGD step on its loss.
The built-in modes (``st``, ``at``, ``trades``; Su et al. 2024, experimental setup, and their
official code) and how to add one are described in :mod:`ncscope.train.modes`.

Optimisation (Su et al. 2024, experimental setup; the code of Rice et al. 2020): SGD (momentum
0.9, weight decay on every parameter), the learning rate set before every iteration from the
schedule at the fractional epoch ``t = epoch + (i + 1) / batches``.

Determinism: the batch order is ``DistributedSampler(seed).set_epoch(epoch)`` and the attack
noise comes from generators seeded with ``(seed, epoch, rank, purpose)``; with
``torch.use_deterministic_algorithms`` (on for CPU by default) a run is bit-for-bit repeatable
on CPU for a given seed and thread count, and a resumed run is identical to an uninterrupted one.

Related modules: :mod:`ncscope.train.result` (:class:`TrainResult`, :class:`Callback`),
:mod:`ncscope.train.run_folder` (the output folder), :mod:`ncscope.train.runtime` (device,
threads, DDP set-up).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ncscope.attacks import Attack
from ncscope.collapse.spool import TensorSpool
from ncscope.losses import make_loss
from ncscope.models import as_dataset, find_classifier
from ncscope.runs import RunFolder
from ncscope.train.checkpoint import (
    CheckpointError,
    checkpoint_path,
    get_rng_state,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from ncscope.train.config import TrainConfig
from ncscope.train.distributed import DistInfo, all_reduce_sum, derive_seed, epoch_batches
from ncscope.train.history import HistoryWriter, rows_to_frame
from ncscope.train.modes import MultiForward, StepContext, make_mode
from ncscope.train.result import Callback, TrainResult
from ncscope.train.run_folder import (
    append_timing,
    check_resume_config,
    check_run_dir,
    failed,
    prepare_run_dir,
    resume_path,
    save_final_model,
)
from ncscope.train.runtime import (
    precision_context,
    seed_globals,
    to_memory_format,
    training_runtime,
)
from ncscope.train.schedules import lr_at
from ncscope.train.tracking import (
    PURPOSE_TRAIN_ATTACK,
    Tracker,
    fetch_batch,
    num_classes_of,
)

__all__ = ["Callback", "TrainResult", "Trainer"]


class Trainer:
    """Train any classifier ``nn.Module`` in any registered mode and track NC per epoch.

    Args:
        model: pixel-space classifier (normalisation inside); its final ``nn.Linear`` is
            ``config.model.classifier`` or found on a probe batch
            (:func:`ncscope.models.find_classifier`); its output is read by
            :func:`ncscope.models.logits_of`.
        train_data: training set: an ``ImageDataset``, a ``TensorDataset``, any map-style data
            set of ``(x, y)``, or ``(X, y)`` as tensors or numpy arrays.
        test_data: test set (same forms) for test accuracy / robust accuracy, or ``None``.
        config: :class:`TrainConfig` (its ``dataset`` / ``model`` fields are not used here).
        callbacks: :class:`Callback` objects.

    Use :meth:`fit` to train (optionally resuming); :meth:`track` measures the current model.
    ``trainer.mode`` is the :class:`~ncscope.train.modes.TrainingMode` of ``config.mode``.
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
        self.train_data = train_data = as_dataset(train_data)
        self.test_data = None if test_data is None else as_dataset(test_data)
        self.config = config if config is not None else TrainConfig()
        self.callbacks = list(callbacks)
        n = len(train_data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the training set is empty")
        example, _ = fetch_batch(train_data, [0, min(1, n - 1)])
        param = next(model.parameters(), None)
        if param is not None:
            example = example.to(param.device)
        self.classifier = find_classifier(model, self.config.model.classifier, example)
        self.num_classes = num_classes_of(model, train_data, self.classifier)
        self.loss_fn = make_loss(self.config.loss, **self.config.loss_kwargs)
        self.mode = make_mode(self.config)
        self.run_dir = Path(self.config.out_dir) if self.config.out_dir is not None else None
        self.step = 0
        self.epoch = 0  # completed epochs
        self.rows: list[dict[str, Any]] = []
        self.timings: list[dict[str, Any]] = []
        self.dist = DistInfo()
        self.device = torch.device("cpu")
        self.optimizer = self._make_optimizer()
        self._forward: nn.Module = MultiForward(model)
        self._tracker: Tracker | None = None

    # ------------------------------------------------------------------ building blocks
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.SGD(  # foreach: the same numbers as the per-tensor loop, fewer calls
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            foreach=True,
        )

    def _train_attack(self, epoch: int) -> Attack | None:
        """The mode's attack for (1-based) ``epoch``, with its own seeded generator."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.config.seed, epoch, self.dist.rank, PURPOSE_TRAIN_ATTACK))
        return self.mode.build_attack(self.model, gen)

    @property
    def tracker(self) -> Tracker:
        """The :class:`Tracker` of this run (built on first use)."""
        if self._tracker is None:
            self._tracker = Tracker(
                self.model,
                self.train_data,
                self.test_data,
                self.config,
                device=self.device,
                dist=self.dist,
                spool_dir=self._spool_dir(),
                classifier=self.classifier,
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
        check_resume_config(dict(state["config"]), self.config.to_dict(), source)
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

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the completed epochs atomically and prune old ones."""
        assert self.run_dir is not None
        ckpt_dir = self.run_dir / "checkpoints"
        path = save_checkpoint(checkpoint_path(ckpt_dir, self.epoch), self.state_dict())
        prune_checkpoints(ckpt_dir, self.config.keep_epochs)
        return path

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool | str | os.PathLike[str] = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (or the remaining ones when resuming).

        ``resume``: ``True`` continues from the newest checkpoint in ``out_dir/checkpoints``
        (a fresh start when there is none), a path continues from that file. A corrupt,
        truncated or foreign checkpoint raises :class:`CheckpointError` before anything is
        written. The run folder follows :mod:`ncscope.runs`; Ctrl-C raises
        :class:`ncscope.runs.Interrupted` (the epoch, whether a checkpoint can be resumed).
        """
        with training_runtime(self.config) as (self.dist, self.device):
            return self._fit(resume)

    def _start(self, resume: bool | str | os.PathLike[str]) -> HistoryWriter | None:
        """Load the checkpoint or seed a fresh run, prepare the run folder and the forward."""
        cfg, info = self.config, self.dist
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer()  # after .to(): state lives with the params
        ckpt_file = resume_path(self.run_dir, resume)
        state = None
        if ckpt_file is not None:
            state = load_checkpoint(ckpt_file)  # CPU: RNG states must stay CPU tensors
        check_run_dir(  # rank 0 owns the folder: others must not see its first files
            self.run_dir if info.is_main else None,
            overwrite=cfg.overwrite,
            resuming=state is not None,
            wanted=resume is not False,
        )
        if state is not None:
            self.load_state_dict(state, source=f"checkpoint {ckpt_file}")
        else:
            self.epoch, self.step, self.rows = 0, 0, []
            seed_globals(derive_seed(cfg.seed, 0, info.rank, 0))
        self._tracker = None
        _ = self.tracker  # validates the classifier / layers before any training
        writer = None
        if self.run_dir is not None and info.is_main:
            writer, folder = prepare_run_dir(self.run_dir, cfg, self.rows, fresh=state is None,
                                             epoch=self.epoch)
            self._folder = folder if state is None else None
        if info.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward = DistributedDataParallel(MultiForward(self.model), device_ids=ids)
        else:
            self._forward = MultiForward(self.model)
        if state is None and cfg.track_init:
            rows = self.track(0)  # the initialised model: the start of the NC trajectory
            self.rows.extend(rows)
            if writer is not None:
                writer.append(rows)
        return writer

    def _fit(self, resume: bool | str | os.PathLike[str]) -> TrainResult:
        self._folder: RunFolder | None = None  # claimed by a fresh start, until an epoch ends
        try:
            return self._loop(self._start(resume))
        except BaseException as exc:  # leave no folder without a result; say where Ctrl-C hit
            raise failed(exc, self._folder, self.run_dir, self.epoch, self.config) from None

    def _loop(self, writer: HistoryWriter | None) -> TrainResult:
        cfg, info = self.config, self.dist
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
                if tracked and self.mode.perturbs and cfg.track_perturbed:
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
                    append_timing(self.run_dir, timing)
                self._folder = None  # a result exists: the folder is kept from now on
                bar.update(1)
                bar.set_postfix(loss=f"{logs['run_loss']:.3g}", lr=f"{logs['lr']:.3g}")
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, logs, rows)
        finally:
            bar.close()
        self.model.eval()
        if self.run_dir is not None and info.is_main and cfg.save_model:
            save_final_model(self.run_dir, self.model)
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

    def _train_epoch(self, epoch: int, spool: TensorSpool | None, show: bool) -> dict[str, Any]:
        """One epoch (1-based ``epoch``); returns the epoch-level log columns."""
        cfg, info, mode = self.config, self.dist, self.mode
        model_mode = mode.model_mode(epoch)
        if model_mode not in ("train", "eval"):
            raise ValueError(
                f"{type(mode).__name__}.model_mode() must return 'train' or 'eval', "
                f"got {model_mode!r}"
            )
        self.model.train(model_mode == "train")
        n_data = len(self.train_data)  # type: ignore[arg-type]
        batches = epoch_batches(n_data, cfg.batch_size, epoch - 1, cfg.seed, info)
        n_batches = len(batches)
        ctx = StepContext(
            model=self.model,
            multi_forward=self._forward,
            loss_fn=self.loss_fn,
            config=cfg,
            attack=self._train_attack(epoch),
            epoch=epoch,
            device=self.device,
        )
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
            x = to_memory_format(x, cfg.channels_last)
            keep = ~torch.as_tensor(pad, dtype=torch.bool, device=self.device)
            ctx.batch, ctx.step = i, self.step
            with precision_context(cfg.precision, self.device):  # attack + forwards
                out = mode.step(ctx, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            if out.after_update is not None:
                with precision_context(cfg.precision, self.device):
                    out.clean_logits = out.after_update()
            self.step += 1
            if spool is not None:
                if out.x_adv is None:
                    raise RuntimeError(
                        f"{type(mode).__name__} has perturbs=True but its step returned no x_adv"
                    )
                spool.append(out.x_adv[keep], y[keep])
            n_keep = int(keep.sum())
            loss_value = float(out.loss.detach())
            stats = [loss_value * n_keep, 0.0, 0.0, 0.0, 0.0, n_keep]
            for j, logits in ((1, out.clean_logits), (3, out.adv_logits)):
                if logits is not None:
                    stats[j] = float((logits.detach().argmax(1) == y)[keep].sum())
                    stats[j + 1] = n_keep
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

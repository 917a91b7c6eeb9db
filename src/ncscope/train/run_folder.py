"""The run folder of a training run: the run-folder policy (:mod:`ncscope.runs`) applied to
``out_dir``, resume look-up, preparation and outputs.

Layout (``TrainConfig.out_dir``)::

    config.yaml          the run's TrainConfig
    history.jsonl / .csv metric rows (:mod:`ncscope.train.history`)
    timings.jsonl        per-epoch wall times
    checkpoints/         epoch_NNNN.pt (:mod:`ncscope.train.checkpoint`)
    model.pt             final weights (``save_model``)
    .spool/              scratch files of the perturbed batches (deleted after each epoch)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ncscope.runs import Interrupted, RunFolder, RunFolderError, check_output_path
from ncscope.train.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    list_checkpoints,
)
from ncscope.train.config import RESUME_FREE_FIELDS, TrainConfig
from ncscope.train.history import HistoryWriter, read_jsonl
from ncscope.train.result import Callback

__all__ = [
    "SCAFFOLDING",
    "EpochLog",
    "append_timing",
    "check_resume_config",
    "check_run_dir",
    "failed",
    "interrupted",
    "prepare_run_dir",
    "require_checkpoint",
    "resume_path",
    "save_final_model",
]


def resume_path(run_dir: Path | None, resume: bool | str | os.PathLike[str] | None) -> Path | None:
    """The checkpoint to resume from: ``False``/``None``: none; ``True``: the newest one in
    ``run_dir/checkpoints`` (``None`` when there is none); a path: that file."""
    if resume is False or resume is None:
        return None
    if resume is True:
        if run_dir is None:
            raise ValueError("resume=True needs config.out_dir (the run folder to resume)")
        found = list_checkpoints(run_dir / "checkpoints")
        return found[-1][1] if found else None
    return Path(resume)


def check_run_dir(
    run_dir: Path | None, *, overwrite: bool, resuming: bool, wanted: bool = False
) -> None:
    """The run-folder policy (:mod:`ncscope.runs`) for a fresh start: ``run_dir`` must be a
    writable folder path, empty or absent unless ``overwrite`` (the old run is then moved
    aside by :func:`prepare_run_dir`). Creates nothing.

    ``wanted``: a resume was asked for but no checkpoint exists (the message says so).
    """
    if run_dir is None:
        return
    folder = RunFolder(run_dir, "out_dir")
    if resuming:
        check_output_path(run_dir, "out_dir")
        return
    if wanted and folder.holds_results() and not overwrite:
        raise FileExistsError(
            f"out_dir={run_dir} holds results but no checkpoint to resume from; move it "
            "aside with --overwrite / overwrite=True to start over"
        )
    try:
        folder.check(overwrite=overwrite, resume_hint="continue it with --resume / resume=True")
    except RunFolderError as exc:
        if folder.holds_results() and not overwrite:
            raise FileExistsError(str(exc)) from None
        raise


def require_checkpoint(run_dir: str | os.PathLike[str] | None) -> Path:
    """The newest checkpoint of ``run_dir`` for ``--resume``; a one-line
    :class:`~ncscope.runs.RunFolderError` when there is none (the command line never starts a
    fresh run when a resume was asked for)."""
    if run_dir is None:
        raise RunFolderError("--resume needs out_dir (the run folder to continue); "
                             "set --set out_dir=PATH")
    check_output_path(run_dir, "out_dir")
    found = list_checkpoints(Path(run_dir) / "checkpoints")
    if not found:
        raise RunFolderError(
            f"--resume: out_dir={run_dir} holds no checkpoint to resume; run without "
            "--resume to start a fresh run"
        )
    return found[-1][1]


def check_resume_config(saved: dict[str, Any], now: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` when a checkpoint's config differs from the current one
    in a field that affects the numbers (all but ``RESUME_FREE_FIELDS``)."""
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


SCAFFOLDING = ("config.yaml", "history.jsonl", "history.csv")
"""What a fresh run writes before its first epoch ends (removed when it fails before)."""


def prepare_run_dir(
    run_dir: Path, config: TrainConfig, rows: list[dict[str, Any]], *, fresh: bool,
    epoch: int = 0,
) -> tuple[HistoryWriter, RunFolder]:
    """Claim the folder, write ``config.yaml`` and reset the history to ``rows``.

    A fresh start moves an earlier run aside (``config.overwrite``; nothing is deleted) and
    creates the folder; :meth:`~ncscope.runs.RunFolder.abandon` with :data:`SCAFFOLDING`
    undoes it when the run fails before its first epoch. A resume from the checkpoint of
    ``epoch`` removes the temporary files of a write interrupted by a crash and keeps the
    timings of the epochs up to ``epoch`` only (one run, one timings file).
    """
    folder = RunFolder(run_dir, "out_dir")
    if fresh:
        folder.claim(overwrite=config.overwrite)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir = run_dir / "checkpoints"
        if ckpt_dir.exists():  # temp files of a write interrupted by a crash
            for tmp in ckpt_dir.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        timings = run_dir / "timings.jsonl"
        if timings.exists():
            kept = [json.dumps(t) + "\n" for t in read_jsonl(timings)
                    if int(t.get("epoch", 0)) <= epoch]
            atomic_write_text(timings, "".join(kept))
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    writer = HistoryWriter(run_dir)
    writer.reset(rows)  # on resume: exactly the checkpoint's rows
    return writer, folder


def append_timing(run_dir: Path, timing: dict[str, Any]) -> None:
    """Append one epoch's wall times to ``timings.jsonl``."""
    with open(run_dir / "timings.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(timing) + "\n")


class EpochLog(Callback):
    """One progress line per epoch on stderr (what ``ncscope train`` shows when stderr is not a
    terminal): the epoch, running loss and accuracies, learning rate and wall time."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any], rows: list) -> None:
        if not trainer.dist.is_main:
            return
        t = trainer.timings[-1]
        cfg = trainer.config
        parts = [f"train {cfg.mode}: epoch {epoch}/{cfg.epochs}"]
        for key, label in (("run_loss", "loss"), ("run_clean_acc", "clean acc"),
                           ("run_adv_acc", "adv acc")):
            if logs.get(key) is not None:
                parts.append(f"{label} {logs[key]:.4g}")
        secs = t["train_s"] + t["track_s"] + t["checkpoint_s"]
        print("  ".join([*parts, f"lr {logs['lr']:.3g}", f"{secs:.2f} s"]), file=sys.stderr,
              flush=True)


def interrupted(run_dir: Path | None, epochs_done: int, config: TrainConfig, *,
                abandoned: bool = False) -> Interrupted:
    """What a Ctrl-C left: the epoch it stopped in and the newest (intact) checkpoint;
    ``abandoned``: the fresh run folder was removed (no epoch had ended)."""
    where = f"at epoch {min(epochs_done + 1, config.epochs)}/{config.epochs}"
    if run_dir is None:
        return Interrupted(f"{where} (no out_dir: nothing was saved)")
    if abandoned:
        return Interrupted(f"{where}, before the first epoch ended: nothing was kept")
    found = list_checkpoints(run_dir / "checkpoints")
    if found:
        return Interrupted(f"{where}; checkpoint of epoch {found[-1][0]} intact in {run_dir}",
                           resumable=True)
    return Interrupted(f"{where}, before the first checkpoint (checkpoint_every="
                       f"{config.checkpoint_every}); the rows so far are in {run_dir}",
                       leftover=True)


def failed(exc: BaseException, folder: RunFolder | None, run_dir: Path | None,
           epochs_done: int, config: TrainConfig) -> BaseException:
    """What a run that raised ``exc`` raises: a folder it claimed without a result yet is
    abandoned (:data:`SCAFFOLDING`); a Ctrl-C becomes :func:`interrupted`."""
    abandoned = folder is not None and folder.abandon(SCAFFOLDING)
    if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
        return interrupted(run_dir, epochs_done, config, abandoned=abandoned)
    return exc


def save_final_model(run_dir: Path, model: nn.Module) -> Path:
    """Write the model's ``state_dict`` (on CPU) atomically to ``model.pt``."""
    path = run_dir / "model.pt"
    atomic_torch_save(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return path

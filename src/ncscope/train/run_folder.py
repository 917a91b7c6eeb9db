"""The run folder of a training run: protection, resume look-up, preparation and outputs.

Layout (``TrainConfig.out_dir``)::

    config.yaml          the run's TrainConfig
    history.jsonl / .csv metric rows (:mod:`ncscope.train.history`)
    timings.jsonl        per-epoch wall times
    checkpoints/         epoch_NNNN.pt (:mod:`ncscope.train.checkpoint`)
    model.pt             final weights (``save_model``)
    .spool/              scratch files of the perturbed batches (deleted after each epoch)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from ncscope.train.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    list_checkpoints,
)
from ncscope.train.config import RESUME_FREE_FIELDS, TrainConfig
from ncscope.train.history import HistoryWriter

__all__ = [
    "append_timing",
    "check_resume_config",
    "check_run_dir",
    "prepare_run_dir",
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
    """Refuse a fresh start in a folder that already holds results (unless ``overwrite``).

    ``wanted``: a resume was asked for but no checkpoint exists (the message says so).
    """
    if run_dir is None or resuming:
        return
    existing = [p for p in (run_dir / "history.jsonl", run_dir / "checkpoints") if p.exists()]
    if existing and not overwrite:
        if wanted:
            raise FileExistsError(
                f"run folder {run_dir} holds results but no checkpoint to resume "
                "from; set overwrite=True to start over"
            )
        raise FileExistsError(
            f"run folder {run_dir} already holds results ({existing[0].name}); pass "
            "resume=True to continue it or set overwrite=True to start over"
        )


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


def prepare_run_dir(
    run_dir: Path, config: TrainConfig, rows: list[dict[str, Any]], *, fresh: bool
) -> HistoryWriter:
    """Create the folder, write ``config.yaml`` and reset the history to ``rows``.

    A fresh start removes old checkpoints; a resume removes the temporary files of a write
    interrupted by a crash and the timings of the interrupted call.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    if fresh:
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
    elif ckpt_dir.exists():  # temp files of a write interrupted by a crash
        for tmp in ckpt_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "timings.jsonl").unlink()
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    writer = HistoryWriter(run_dir)
    writer.reset(rows)  # on resume: exactly the checkpoint's rows
    return writer


def append_timing(run_dir: Path, timing: dict[str, Any]) -> None:
    """Append one epoch's wall times to ``timings.jsonl``."""
    with open(run_dir / "timings.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(timing) + "\n")


def save_final_model(run_dir: Path, model: nn.Module) -> Path:
    """Write the model's ``state_dict`` (on CPU) atomically to ``model.pt``."""
    path = run_dir / "model.pt"
    atomic_torch_save(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return path

"""Atomic, weights-only training checkpoints and exact resumption.

A checkpoint is a plain ``dict`` of tensors and Python scalars/containers (loadable with
``torch.load(..., weights_only=True)``; no pickled classes):

* ``format`` = ``"ncscope.train.checkpoint"``, ``version``;
* ``epoch`` (completed epochs), ``step`` (completed iterations);
* ``model`` (``state_dict``; BN running statistics included), ``optimizer`` (SGD momentum
  buffers and param groups);
* ``rng``: global torch / numpy / Python (and CUDA) RNG states. The batch order and the attack
  noise need no saved state: they are re-derived from ``(seed, epoch, rank)`` at every epoch
  (:func:`ncscope.train.distributed.derive_seed`, ``DistributedSampler.set_epoch``), so a resumed
  epoch draws exactly what the uninterrupted run drew;
* ``history`` (the metric rows so far; the run's JSONL/CSV are rewritten from them on resume,
  which drops rows of an epoch that was measured but not checkpointed before a crash);
* ``config`` (``TrainConfig.to_dict()``), ``world_size``.

Files are written atomically (:func:`ncscope.runs.atomic_write`): a temporary file in the same
folder, ``flush`` + ``fsync``, ``os.replace``, then an ``fsync`` of the folder; they get the
user's umask. :func:`load_checkpoint` turns every failure — missing, truncated, corrupt or
foreign file — into a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncscope.runs import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "checkpoint_path",
    "get_rng_state",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "ncscope.train.checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^epoch_(\d+)\.pt$")
_REQUIRED = ("epoch", "step", "model", "optimizer", "rng", "history", "config")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, truncated, corrupt, foreign or mismatched)."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, replace)."""
    atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (temp file, fsync, replace)."""
    atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def checkpoint_path(directory: str | os.PathLike[str], epoch: int) -> Path:
    """``directory/epoch_0007.pt`` for (1-based) ``epoch`` 7."""
    return Path(directory) / f"epoch_{epoch:04d}.pt"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the checkpoint files in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune_checkpoints(directory: str | os.PathLike[str], keep_epochs: Iterable[int]) -> None:
    """Delete every checkpoint but the newest and those of ``keep_epochs``."""
    found = list_checkpoints(directory)
    if not found:
        return
    keep = set(keep_epochs) | {found[-1][0]}
    for epoch, path in found:
        if epoch not in keep:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- RNG states
def get_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors / Python scalars (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    p = state["python"]
    random.setstate(
        (int(p["version"]), tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format/version tags) atomically to ``path``; returns the path."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    path = Path(path)
    atomic_write(path, lambda fh: torch.save(payload, fh))
    return path


def _one_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    first = (text[0] if text else type(exc).__name__).split(". ")[0]
    return first if len(first) <= 120 else first[:117] + "..."


def _diagnose(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        return "is not a torch checkpoint (unreadable bytes; corrupt or a different format)"
    if "Weights only load failed" in str(exc):
        return (
            "holds pickled Python objects that weights-only loading refuses "
            "(not an ncscope training checkpoint)"
        )
    return (
        "is truncated or damaged (not a complete torch zip archive: "
        f"{type(exc).__name__}: {_one_line(exc)})"
    )


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load and validate a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises :class:`CheckpointError` with a one-line message for a missing, truncated, corrupt or
    foreign file (a ``torch.save`` of something else). Nothing is written.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, pickled classes, ...
        raise CheckpointError(f"checkpoint {path} {_diagnose(path, exc)}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        what = type(obj).__name__ if not isinstance(obj, dict) else "a dict without the tag"
        raise CheckpointError(
            f"checkpoint {path} is not an ncscope training checkpoint ({what}; expected "
            f"format={CHECKPOINT_FORMAT!r})"
        )
    if obj.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {obj.get('version')!r}; this ncscope reads "
            f"version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    return obj

"""On-disk spool of perturbed batches: write during an epoch, stream back after it.

NC needs two passes over the measured data (class means first), and an attack must run only once
per batch; the paper also measures the perturbed batches generated *during* an AT/TRADES epoch
with the epoch's final weights (Su et al. 2024, §3: NC "on the data used in training"). The
official code keeps all of them in GPU memory (≈ 1.2 GB per CIFAR epoch). :class:`TensorSpool`
instead appends every perturbed batch, bit-exact (float32 stays float32), to a scratch file and
streams it back in ``batch_size`` chunks with sequential reads — as often as needed (the two NC
passes) — so memory stays O(batch) whatever the data-set size (a memory map would keep every
page it had read resident until it is unmapped). The files
are deleted on :meth:`TensorSpool.delete` (or when the context manager exits). Batches on CUDA
go to and come back from the file through page-locked (pinned) host memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ncscope.runs import file_mode

__all__ = ["TensorSpool"]

# Spool folders this process created: no empty scratch folder is left behind.
_CREATED: set[Path] = set()

_DTYPES = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.float16: np.float16,
}


def _host(t: Tensor) -> Tensor:
    """A contiguous CPU copy of ``t`` (row-major, whatever its memory format); from CUDA
    through page-locked (pinned) memory, the fast device-to-host path."""
    if t.device.type == "cuda":
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t)  # synchronous: the bytes are read right after
        return host
    return t.contiguous() if t.device.type == "cpu" else t.to("cpu").contiguous()


def _to(rows: np.ndarray, device: torch.device | None) -> Tensor:
    """A freshly read array as a tensor (no copy) on ``device``; to CUDA through a pinned
    buffer and an asynchronous copy (the caching host allocator keeps the buffer until the
    copy is done)."""
    out = torch.from_numpy(rows)
    if device is not None and device.type == "cuda":
        return out.pin_memory().to(device, non_blocking=True)
    return out if device is None else out.to(device)


class TensorSpool:
    """Append-only on-disk store of ``(images, labels)`` batches, streamed back in chunks.

    Args:
        directory: folder for the scratch files (created if needed; ``None``: the system
            temporary folder).
        prefix: file name prefix (e.g. ``"rank0-train_perturbed"``).

    Example::

        with TensorSpool(run_dir / ".spool", "perturbed") as spool:
            for x, y in batches:
                spool.append(attack(x, y), y)
            for x, y in spool.batches(256):     # pass 1
                ...
            for x, y in spool.batches(256):     # pass 2 (same bytes)
                ...
    """

    def __init__(self, directory: str | os.PathLike[str] | None, prefix: str = "spool") -> None:
        base = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        self.directory = base
        for attempt in range(3):  # another process (a DDP rank) may create or remove it too
            try:
                base.mkdir(parents=True)
                _CREATED.add(base)  # removed again by the last spool's delete() when empty
            except FileExistsError:
                pass
            try:
                fd, name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".x", dir=base)
                break
            except FileNotFoundError:  # removed between our mkdir and mkstemp: again
                if attempt == 2:
                    raise
        with contextlib.suppress(OSError):
            os.fchmod(fd, file_mode())  # the user's umask, not mkstemp's 0600
        os.close(fd)
        self.x_path = Path(name)
        self.y_path = self.x_path.with_suffix(".y")
        self._x = open(self.x_path, "wb")  # noqa: SIM115 - closed in close()/delete()
        self._y = open(self.y_path, "wb")  # noqa: SIM115
        self.t_path = self.x_path.with_suffix(".t")
        self._t = open(self.t_path, "wb")  # noqa: SIM115
        self.has_targets: bool | None = None
        self.sample_shape: tuple[int, ...] | None = None
        self.dtype: torch.dtype | None = None
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def append(self, images: Tensor, labels: Tensor, targets: Tensor | None = None) -> None:
        """Write a batch (any device; copied to CPU) of images ``(B, ...)``, labels ``(B,)`` and
        optional attack targets ``(B,)`` (give them for every batch or for none)."""
        x = images.detach()
        if self.sample_shape is None:
            if x.dtype not in _DTYPES:
                raise TypeError(f"TensorSpool stores float16/32/64 images, got {x.dtype}")
            self.sample_shape = tuple(x.shape[1:])
            self.dtype = x.dtype
        elif tuple(x.shape[1:]) != self.sample_shape or x.dtype != self.dtype:
            raise ValueError(
                f"batch of shape {tuple(x.shape[1:])}/{x.dtype} does not match the spool's "
                f"{self.sample_shape}/{self.dtype}"
            )
        if labels.shape != (x.shape[0],):
            raise ValueError("labels must have shape (B,) matching the images")
        self._x.write(_host(x).numpy().tobytes())
        if self.has_targets is None:
            self.has_targets = targets is not None
        elif self.has_targets != (targets is not None):
            raise ValueError("give attack targets for every batch of a spool or for none")
        self._y.write(_host(labels.detach().to(torch.int64)).numpy().tobytes())
        if targets is not None:
            if targets.shape != (x.shape[0],):
                raise ValueError("targets must have shape (B,) matching the images")
            self._t.write(_host(targets.detach().to(torch.int64)).numpy().tobytes())
        self.count += int(x.shape[0])

    def batches(
        self, batch_size: int, device: torch.device | str | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Stream the stored samples back in order, ``batch_size`` at a time (copies)."""
        for x, y, _ in self.batches_with_targets(batch_size, device):
            yield x, y

    def batches_with_targets(
        self, batch_size: int, device: torch.device | str | None = None
    ) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """Like :meth:`batches`, with the stored targets (``None`` when none were given)."""
        for fh in (self._x, self._y, self._t):
            fh.flush()
        if self.count == 0:
            return
        assert self.sample_shape is not None and self.dtype is not None
        dev = None if device is None else torch.device(device)
        per = int(np.prod(self.sample_shape, dtype=np.int64))
        with contextlib.ExitStack() as stack:  # sequential reads: no mapped pages stay resident
            fx = stack.enter_context(open(self.x_path, "rb"))
            fy = stack.enter_context(open(self.y_path, "rb"))
            ft = stack.enter_context(open(self.t_path, "rb")) if self.has_targets else None
            for i in range(0, self.count, batch_size):
                b = min(batch_size, self.count - i)
                xs = np.fromfile(fx, dtype=_DTYPES[self.dtype], count=b * per)
                x = _to(xs.reshape(b, *self.sample_shape), dev)
                y = _to(np.fromfile(fy, dtype=np.int64, count=b), dev)
                yield x, y, None if ft is None else _to(np.fromfile(ft, np.int64, count=b), dev)

    def close(self) -> None:
        """Close the writers (the files stay until :meth:`delete`)."""
        for fh in (self._x, self._y, self._t):
            if not fh.closed:
                fh.close()

    def delete(self) -> None:
        """Close and remove the scratch files."""
        self.close()
        for p in (self.x_path, self.y_path, self.t_path):
            p.unlink(missing_ok=True)
        if self.directory in _CREATED:
            with contextlib.suppress(OSError):  # not empty (another spool, another rank)
                self.directory.rmdir()
                _CREATED.discard(self.directory)

    def __enter__(self) -> TensorSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"TensorSpool({str(self.x_path)!r}, n={self.count}, shape={self.sample_shape})"

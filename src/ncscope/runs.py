"""The run-folder policy of every command (``train``, ``reproduce``, ``analyze``).

One policy, checked before any work starts and before anything is created:

* **Fresh runs never reuse results.** A fresh run refuses a folder (or output file) that
  already holds something, unless ``overwrite`` is given, which *moves the old run aside* to
  ``<path>.old-<YYYYmmdd-HHMMSS>`` -- nothing is ever deleted.
* **The path must be usable**: not a file where a folder is needed (or the reverse), no file
  in the way of the folders to create, writable.
* **Nothing half-written.** A job that fails (or is interrupted) before its first result
  removes what it created (:meth:`RunFolder.abandon`) and moves an old run it had moved aside
  back in place.
* **Files get the user's umask** (:func:`file_mode`), also those written atomically through a
  temporary file (:func:`atomic_write`: temporary file in the same folder, fsync,
  ``os.replace``, fsync of the folder).

:class:`RunFolderError` (a ``ValueError``) carries a one-line message naming the offending
key and path; :class:`Interrupted` (a ``KeyboardInterrupt``) says how far an interrupted job
got. The bottom layer: this module imports nothing from ncscope.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Interrupted",
    "RunFolder",
    "RunFolderError",
    "atomic_write",
    "check_output_path",
    "file_mode",
    "move_aside",
]

_UMASK_LOCK = threading.Lock()


class RunFolderError(ValueError):
    """A run folder or output path that cannot be used (one line: which key, which path)."""


class Interrupted(KeyboardInterrupt):
    """A job stopped by Ctrl-C; ``detail`` says how far it got, ``resumable`` whether it can
    be continued (``--resume``), ``leftover`` whether it left results that cannot (a fresh
    start then needs ``--overwrite``)."""

    def __init__(self, detail: str, *, resumable: bool = False, leftover: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.resumable = resumable
        self.leftover = leftover


# ------------------------------------------------------------------------------ file modes
def file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` gives a new file."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path`` and move it into place
    atomically (flush, fsync, ``os.replace``, fsync of the folder); the file gets the user's
    umask (:func:`file_mode`), not ``mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ------------------------------------------------------------------------------ checks
def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_path(path: str | os.PathLike[str], key: str, *, folder: bool = True) -> None:
    """Raise :class:`RunFolderError` when ``path`` cannot be written: a file where a folder
    is wanted (``folder=True``) or a folder where a file is wanted, a file in the way of the
    folders to create, or a read-only place. Creates nothing."""
    p = Path(path)
    if p.exists():
        if folder and not p.is_dir():
            raise RunFolderError(f"{key}={p} is a file, not a folder; give a folder path")
        if not folder and p.is_dir():
            raise RunFolderError(
                f"{key}={p} is a folder; give a file path (e.g. {p / 'analysis.csv'})")
    place = _existing_ancestor(p if folder else p.parent)
    if not place.is_dir():
        raise RunFolderError(f"{key}={p} cannot be created: {place} is a file")
    if not os.access(place, os.W_OK | os.X_OK):
        raise RunFolderError(f"{key}={p} is not writable ({place} is read-only)")


def _holds_something(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def _aside_name(path: Path) -> Path:
    path = path if path.name else path.resolve()  # "." has no name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.old-{stamp}-{n}")
    return target


def move_aside(path: str | os.PathLike[str]) -> Path:
    """Rename ``path`` to ``<path>.old-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3`` ... when taken);
    returns the new path."""
    p = Path(path)
    target = _aside_name(p)
    os.replace(p, target)
    return target


# ------------------------------------------------------------------------------ the folder
class RunFolder:
    """The output folder (or file) of one job.

    Args:
        path: the folder (``folder=True``) or the output file.
        key: the config key or option that named it (used in messages: ``out_dir``,
            ``--out``, ``out``).

    :meth:`check` raises before any work; :meth:`claim` moves an old run aside and creates the
    folder; :meth:`abandon` undoes :meth:`claim` when the job produced nothing.
    """

    def __init__(self, path: str | os.PathLike[str], key: str, *, folder: bool = True) -> None:
        self.path = Path(path)
        self.key = key
        self.folder = folder
        self.created: list[Path] = []
        self.moved_to: Path | None = None

    def holds_results(self) -> bool:
        """Whether the path exists and is not an empty folder."""
        return _holds_something(self.path)

    def check(self, *, overwrite: bool, resume_hint: str = "") -> None:
        """Raise :class:`RunFolderError` when the path is unusable, or holds an earlier run
        and ``overwrite`` is not set. Creates nothing."""
        check_output_path(self.path, self.key, folder=self.folder)
        if self.holds_results() and not overwrite:
            what = "a run" if self.folder else "a file"
            hint = f"{resume_hint} or " if resume_hint else ""
            raise RunFolderError(
                f"{self.key}={self.path} already holds {what}; {hint}move it aside with "
                "--overwrite / overwrite=True (nothing is deleted)"
            )
        if overwrite and self.holds_results():
            check_output_path(self.path.parent, self.key)

    def claim(self, *, overwrite: bool) -> RunFolder:
        """Check, move an earlier run aside (``overwrite``) and create the folder (a file's
        parent folder); remembers what it created. Returns ``self``."""
        self.check(overwrite=overwrite)
        if self.holds_results():
            self.moved_to = move_aside(self.path)
        target = self.path if self.folder else self.path.parent
        missing = []
        p = target
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        target.mkdir(parents=True, exist_ok=True)
        self.created = list(reversed(missing))  # outermost first
        return self

    def abandon(self, scaffolding: Iterable[str] = ()) -> bool:
        """Undo :meth:`claim` when the job produced nothing: when the folder holds only the
        ``scaffolding`` names (relative paths) and empty folders, remove them and the folders
        :meth:`claim` created, and move an earlier run it had moved aside back. Returns whether
        it did; a folder holding anything else is kept as it is."""
        root = self.path
        if self.folder and root.is_dir():
            ours = {root / s for s in scaffolding}
            files = [p for p in root.rglob("*") if not p.is_dir()]
            if any(p not in ours for p in files):
                return False
            for p in files:
                p.unlink(missing_ok=True)
            for d in sorted((p for p in root.rglob("*") if p.is_dir()),
                            key=lambda q: -len(q.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
        elif not self.folder and root.exists():
            return False
        for d in reversed(self.created):  # innermost first; only when empty
            with contextlib.suppress(OSError):
                d.rmdir()
        if self.moved_to is not None and not self.path.exists():
            os.replace(self.moved_to, self.path)
            self.moved_to = None
        return True

"""Train several runs in parallel processes, with per-epoch progress and a clean Ctrl-C.

:func:`train_many` trains named :class:`~ncscope.train.TrainConfig` runs in ``workers``
spawned processes (``threads`` threads each; one process trains them in turn when
``workers == 1``). Every run *continues from its newest checkpoint* (``resume=True``; a fresh
start when it has none), so rerunning after an interrupt finishes what was left.

* Progress: each worker sends ``(run, epoch, epochs, loss, seconds)`` after every epoch through
  a queue; the parent shows one tqdm bar per run on a terminal, else one line per epoch.
* Ctrl-C: the workers ignore SIGINT (started with it ignored, which Python keeps); the parent
  sets a stop event, each worker stops at its next batch end (the epoch is not finished, the
  newest checkpoint stays intact), the pool is closed and joined, and
  :class:`ncscope.runs.Interrupted` says which runs finished. A second Ctrl-C terminates the
  workers at once (checkpoints are written atomically, so they stay intact too).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from ncscope.runs import Interrupted
from ncscope.train.config import TrainConfig
from ncscope.train.entry import train
from ncscope.train.result import Callback

__all__ = ["train_many"]


class _StopRequested(Exception):  # noqa: N818 - a signal, not an error
    """Raised in a worker at a batch end once the parent asked the runs to stop."""


class _Report(Callback):
    """Sends ``(run, epoch, epochs, loss, seconds)`` after every epoch; stops on request."""

    def __init__(self, run: str, send: Callable[[tuple], None], stop: Any = None) -> None:
        self.run, self.send, self.stop = run, send, stop

    def on_batch_end(self, trainer: Any, epoch: int, batch: int, logs: dict[str, Any]) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _StopRequested

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any], rows: list) -> None:
        t = trainer.timings[-1]
        secs = t["train_s"] + t["track_s"] + t["checkpoint_s"]
        self.send((self.run, epoch, trainer.config.epochs, logs.get("run_loss"), secs))


_WORKER: dict[str, Any] = {}


def _init_worker(queue: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _WORKER.update(send=queue.put, stop=stop)


def _train_one(job: tuple[str, TrainConfig, int]) -> tuple[str, float, bool]:
    """Train (or continue) one run; ``(run, seconds, finished)``."""
    run, config, threads = job
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    report = _Report(run, _WORKER.get("send", lambda msg: None), _WORKER.get("stop"))
    try:
        train(config.replace(progress=False), resume=True, callbacks=[report])
    except _StopRequested:
        return run, time.perf_counter() - t0, False
    return run, time.perf_counter() - t0, True


class _Progress:
    """Per-epoch progress of every run: tqdm bars (``"bars"``), lines on stderr (``"lines"``)
    or nothing (``"off"``)."""

    def __init__(self, runs: dict[str, TrainConfig], mode: str, label: str) -> None:
        self.mode, self.label = mode, label
        self.last = dict.fromkeys(runs, 0)
        self.bars = {r: tqdm(total=c.epochs, desc=f"{label} {r}", unit="epoch", position=i,
                             leave=False) for i, (r, c) in enumerate(runs.items())
                     } if mode == "bars" else {}

    def __call__(self, msg: tuple) -> None:
        run, epoch, epochs, loss, secs = msg
        if run in self.bars:
            self.bars[run].update(epoch - self.last[run])
        elif self.mode == "lines":
            tail = f"  loss {loss:.4g}" if loss is not None else ""
            print(f"{self.label} {run}: epoch {epoch}/{epochs}{tail}  {secs:.1f} s",
                  file=sys.stderr, flush=True)
        self.last[run] = epoch

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start processes that ignore SIGINT (Python keeps an inherited SIG_IGN)."""
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _pool(jobs: list, workers: int, progress: _Progress, done: dict) -> None:
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    with _sigint_ignored():
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(queue, stop))
    pending = {job[0]: pool.apply_async(_train_one, (job,)) for job in jobs}

    def drain(timeout: float) -> None:
        with contextlib.suppress(queue_mod.Empty):
            progress(queue.get(timeout=timeout) if timeout else queue.get_nowait())
            while True:
                progress(queue.get_nowait())

    try:
        while len(done) < len(pending):
            drain(0.2)
            for run, res in pending.items():
                if run not in done and res.ready():
                    _, secs, finished = res.get()  # re-raises a worker's error
                    done[run] = (secs, finished)
    finally:
        stop.set()  # a no-op once every run has finished
        try:
            pool.close()
            while not all(res.ready() for res in pending.values()):
                drain(0.2)
            pool.join()
            drain(0)
        except BaseException:  # a second Ctrl-C: do not wait for the next batch
            pool.terminate()
            pool.join()
            raise
        finally:
            queue.close()
            queue.join_thread()


def train_many(runs: dict[str, TrainConfig], *, workers: int = 1, threads: int = 1,
               progress: str = "off", label: str = "train") -> dict[str, float]:
    """Train (or continue) every run of ``runs``; returns ``{run: seconds}``.

    ``progress``: ``"bars"``, ``"lines"`` or ``"off"``; ``label`` prefixes the progress lines
    and the :class:`~ncscope.runs.Interrupted` message of a Ctrl-C.
    """
    jobs = [(r, c, threads) for r, c in runs.items()]
    shown = _Progress(runs, progress, label)
    done: dict[str, tuple[float, bool]] = {}
    try:
        if workers > 1 and len(jobs) > 1:
            _pool(jobs, min(workers, len(jobs)), shown, done)
        else:
            _WORKER.update(send=shown)
            for job in jobs:
                _, secs, finished = _train_one(job)
                done[job[0]] = (secs, finished)
    except KeyboardInterrupt:
        finished = [r for r in runs if done.get(r, (0.0, False))[1]]
        stopped = [f"{r} (epoch {shown.last[r]}/{runs[r].epochs} done)" if shown.last[r]
                   else f"{r} (no epoch done in this call)" for r in runs if r not in finished]
        raise Interrupted(f"{label} while training: finished runs: {', '.join(finished) or 'none'}"
                          f"; stopped: {', '.join(stopped)}", resumable=True) from None
    finally:
        shown.close()
        _WORKER.clear()
    return {r: secs for r, (secs, _) in done.items()}

"""Checkpoints: atomic writes, pruning, clear errors for bad files, exact kill-and-resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ncscope.train import (
    CheckpointError,
    TrainConfig,
    list_checkpoints,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
    train,
)

TINY = {
    "data": {"dataset": "digits", "n_per_class": 20, "n_test": 100},
    "model": {"name": "bn_mlp", "kwargs": {"widths": [32, 32]}},
    "epochs": 3,
    "batch_size": 50,
    "lr": 0.05,
    "mode": "at",
    "eps": 0.1,
    "steps": 2,
    "threads": 1,
    "progress": False,
}


def tiny(tmp: Path, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "out_dir": str(tmp), **changes})


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_checkpoints_are_pruned_to_the_last_and_the_kept(tmp_path) -> None:
    res = train(tiny(tmp_path, epochs=4, keep_epochs=[2], track_every=2))
    found = [e for e, _ in list_checkpoints(tmp_path / "checkpoints")]
    assert found == [2, 4]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "epoch_0004.pt")
    assert ckpt["epoch"] == 4 and ckpt["step"] == 16 and ckpt["history"] == res.rows
    assert sorted({r["epoch"] for r in ckpt["history"]}) == [2, 4]
    early = load_checkpoint(tmp_path / "checkpoints" / "epoch_0002.pt")
    assert early["history"] == [r for r in res.rows if r["epoch"] <= 2]
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    assert TrainConfig.from_dict(ckpt["config"]) == res.config


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    path = tmp_path / "epoch_0001.pt"
    save_checkpoint(path, {"x": torch.ones(3)})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        save_checkpoint(path, {"x": lambda: None})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_0001.pt"]  # no temp file left


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished")
    train(tiny(run, epochs=2, track_test_attack=False))
    return run


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign_dict", "pickled_module"])
def test_bad_checkpoints_give_one_line_errors_and_overwrite_nothing(
    damage: str, finished_run: Path, tmp_path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for p in finished_run.rglob("*"):
        if p.is_file():
            dest = run / p.relative_to(finished_run)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    ckpt = run / "checkpoints" / "epoch_0002.pt"
    good = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(random.Random(0).randbytes(4096))
    elif damage == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 2}, ckpt)
    else:
        torch.save(torch.nn.Linear(2, 2), ckpt)
    before = _snapshot(run)
    cfg = tiny(run, epochs=2, track_test_attack=False)
    with pytest.raises(CheckpointError) as err:
        train(cfg, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and str(ckpt) in msg
    expected = {
        "truncated": "truncated or damaged",
        "garbage": "not a torch checkpoint",
        "foreign_dict": "not an ncscope training checkpoint",
        "pickled_module": "not an ncscope training checkpoint",
    }[damage]
    assert expected in msg
    assert _snapshot(run) == before  # nothing written, nothing replaced


def test_resume_with_a_different_config_is_refused(finished_run: Path, tmp_path) -> None:
    cfg = tiny(finished_run, epochs=2, track_test_attack=False, lr=0.07)
    before = _snapshot(finished_run)
    with pytest.raises(CheckpointError, match="different config.*lr"):
        train(cfg, resume=True)
    assert _snapshot(finished_run) == before
    # a change inside a section (data / model) is a different config too
    for section, changes in (("data", {"n_per_class": 10}), ("model", {"kwargs": {"widths": [8]}})):
        cfg = tiny(
            finished_run,
            epochs=2,
            track_test_attack=False,
            **{section: {**TINY[section], **changes}},
        )
        with pytest.raises(CheckpointError, match=f"different config.*{section}"):
            train(cfg, resume=True)
        assert _snapshot(finished_run) == before
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from ncscope.train import Callback, TrainConfig, train

    class Slow(Callback):
        def on_batch_end(self, trainer, epoch, batch, logs):
            with open(sys.argv[2], "w") as fh:
                fh.write(f"{epoch} {batch}")
            time.sleep(0.1)

    train(TrainConfig.from_yaml(sys.argv[1]), callbacks=[Slow()])
    """
)


def _progress(path: Path) -> tuple[int, int]:
    try:
        epoch, batch = path.read_text().split()
        return int(epoch), int(batch)
    except (OSError, ValueError):
        return (0, 0)


def test_sigkill_during_an_epoch_then_resume_is_exact(tmp_path) -> None:
    """A run killed (SIGKILL) in epoch 3 after the epoch-2 checkpoint, then resumed, ends with
    the same weights (torch.equal) and the same metric rows as an uninterrupted run."""
    cfg = tiny(tmp_path / "killed", epochs=4, track_layers="all")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    progress = tmp_path / "progress"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cfg_file), str(progress)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpt_dir = tmp_path / "killed" / "checkpoints"

    def newest() -> int:
        found = list_checkpoints(ckpt_dir)
        return found[-1][0] if found else 0

    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            k = newest()
            if k >= 2 and _progress(progress) >= (k + 1, 1):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
        err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL, f"run ended on its own: {err[-2000:]}"
    k = newest()  # normally 2
    assert 2 <= k < 4 and _progress(progress)[0] == k + 1  # killed inside the next epoch
    history = tmp_path / "killed" / "history.jsonl"
    assert {r["epoch"] for r in read_jsonl(history)} <= set(range(1, k + 2))
    # simulate a crash after measuring the epoch but before its checkpoint: stale + torn rows
    with open(history, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"epoch": k + 1, "source": "stale"}) + "\n" + '{"epoch": 3, "sou')

    resumed = train(cfg, resume=True)
    reference = train(cfg.replace(out_dir=str(tmp_path / "reference")))

    ref_state, res_state = reference.model.state_dict(), resumed.model.state_dict()
    assert ref_state.keys() == res_state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], res_state[key]), key
    assert resumed.rows == reference.rows
    assert read_jsonl(history) == read_jsonl(tmp_path / "reference" / "history.jsonl")
    assert (tmp_path / "killed" / "history.csv").read_text() == (
        tmp_path / "reference" / "history.csv"
    ).read_text()
    assert sorted({r["epoch"] for r in resumed.rows}) == [1, 2, 3, 4]

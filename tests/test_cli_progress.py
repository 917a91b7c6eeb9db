"""Visible progress, summaries, --help keys and Ctrl-C of the ``ncscope`` command."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ncscope.cli import main
from ncscope.models import create_model
from ncscope.train import TrainConfig
from ncscope.train.checkpoint import list_checkpoints, load_checkpoint

TINY = ["--set", "data.n_per_class=5", "--set", "model.kwargs.widths=[8]",
        "--set", "track_test_attack=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _ncscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "ncscope", *args]


def _default_sigint() -> None:
    """Give the child the default Ctrl-C: a job started in the background of a
    non-interactive shell inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_train_prints_a_line_per_epoch_and_a_summary(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--set", "epochs=2", *TINY, "--set", f"out_dir={out}"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()  # stderr is not a terminal here: lines, no bars
    assert [line.split("  ")[0] for line in lines] == ["train st: epoch 1/2",
                                                       "train st: epoch 2/2"]
    assert all("loss" in line and line.endswith(" s") for line in lines)
    assert "trained st on digits (bn_mlp): epochs 1-2 of 2" in captured.out
    assert f"run folder: {out}" in captured.out and "clean_train_acc" in captured.out
    # --quiet: no progress, the summary stays
    assert main(["train", "--quiet", "--set", "epochs=1", *TINY]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "out_dir not set: nothing written" in captured.out


def test_analyze_prints_a_line_per_model_and_a_summary(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.pt", "b.pt"):
        torch.save(create_model("bn_mlp", dataset="digits", widths=[8]).state_dict(), name)
    assert main(["analyze", "--set", "weights=[a.pt, b.pt]", "--set", "model.kwargs.widths=[8]",
                 "--set", "data.n_per_class=5", "--set", "sources=[clean, pgd]",
                 "--set", "steps=1", "--set", "out=out/a.csv"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["analyze a.pt", "analyze b.pt"]
    assert "clean test acc" in lines[0] and "pgd test acc" in lines[0]
    assert "analysed 2 model(s) under clean, pgd on digits" in captured.out
    assert "out/a.csv" in captured.out and (tmp_path / "out" / "a.csv").is_file()


@pytest.mark.parametrize(("command", "keys"), [
    ("train", ["epochs  ", "400", "data.dataset", "model.kwargs", "out_dir", "overwrite"]),
    ("analyze", ["weights", "out ", "runs/analysis.csv", "data.n_per_class", "eps"]),
    ("reproduce", ["train.epochs", "100", "analyze.batch_size", "512", "workers"]),
])
def test_help_lists_the_config_keys_with_defaults(command: str, keys: list[str],
                                                  capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "config keys" in text and "ncscope configs" in text and "--overwrite" in text
    for key in keys:
        assert key in text, key


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_ctrl_c_during_train_then_resume(tmp_path) -> None:
    """SIGINT after the first epoch: one line saying how to resume, exit 130, the checkpoint
    intact; the printed command then completes the run."""
    run = tmp_path / "run"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(TrainConfig(
        data={"dataset": "digits", "n_per_class": 5}, model={"kwargs": {"widths": [8]}},
        epochs=150, batch_size=10, track_every=1000, track_test=False, track_test_attack=False,
        out_dir=str(run)).to_yaml())
    proc = subprocess.Popen(_ncscope("train", "--config", str(cfg_file), "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=_default_sigint)
    timings = run / "timings.jsonl"
    _wait_for(lambda: proc.poll() is not None or (timings.is_file() and timings.read_text()))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncscope: interrupted at epoch "), err
    assert "intact" in lines[0] and lines[0].endswith("--resume")
    newest = list_checkpoints(run / "checkpoints")[-1][1]
    assert load_checkpoint(newest)["epoch"] < 150  # loads: intact
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[0] == "ncscope"
    done = subprocess.run(_ncscope(*command[1:]), capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    epochs = [json.loads(t)["epoch"] for t in timings.read_text().splitlines()]
    # one run, each epoch at most once (a Ctrl-C between a checkpoint and its timing line
    # loses that line)
    assert epochs == sorted(set(epochs)) and epochs[-1] == 150 and len(epochs) >= 149


@pytest.mark.slow
def test_reproduce_progress_ctrl_c_and_resume(tmp_path) -> None:
    """Per-epoch lines of the parallel runs, Ctrl-C while they train (one line, exit 130, no
    leaked-semaphore warning), then --resume finishes and prints the summary."""
    out = tmp_path / "rep"
    args = ["reproduce", "--quick", "--set", "runs=[st, at]", "--set", "data.n_per_class=5",
            "--set", "train.epochs=8", "--set", "points_per_class=2", "--out", str(out)]
    proc = subprocess.Popen(_ncscope(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, preexec_fn=_default_sigint)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")))
    reader.start()
    _wait_for(lambda: proc.poll() is not None or any("epoch 2/8" in x for x in err_lines))
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join()
    assert proc.returncode == 130, "".join(err_lines)
    assert any(x.startswith("su2024 st: epoch 1/8") for x in err_lines)
    assert any(x.startswith("su2024 at: epoch 1/8") for x in err_lines)
    last = err_lines[-1].strip()
    assert last.startswith("ncscope: interrupted su2024 while training") and "stopped" in last
    assert last.endswith("--resume") and not any("leaked" in x for x in err_lines)
    done = subprocess.run(_ncscope(*shlex.split(last.split("resume with: ", 1)[1])[1:]),
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr and "su2024 st: analysed at main" in done.stderr
    assert "claims hold" in done.stdout and f"report: {out / 'report.html'}" in done.stdout
    for r in ("st", "at"):
        epochs = [json.loads(t)["epoch"] for t in
                  (out / "su2024" / r / "timings.jsonl").read_text().splitlines()]
        assert epochs == sorted(set(epochs)) and epochs[-1] == 8 and len(epochs) >= 7
    assert Path(out / "su2024" / "study.json").is_file()
    assert not list((out / "su2024").glob("*.old-*"))  # every run continued, none restarted

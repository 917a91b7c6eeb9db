"""The run-folder policy of `train`, `reproduce` and `analyze` (ncscope.runs).

Every bad input is refused before anything is created: exit status 2, one line on stderr that
names the offending key or value, and the working folder unchanged (snapshot before/after).
A fresh run never reuses a folder; --overwrite moves the old run aside; a run that fails
before its first result leaves nothing behind; files get the user's umask.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from ncscope.cli import main
from ncscope.models import create_model
from ncscope.runs import Interrupted, RunFolder, RunFolderError
from ncscope.train import Callback, TrainConfig, train

TRAIN = ["train", "--quiet", "--set", "epochs=1", "--set", "data.n_per_class=5",
         "--set", "model.kwargs.widths=[8]", "--set", "track_test_attack=false"]
REPRO = ["reproduce", "--quick", "--quiet", "--set", "data.n_per_class=5"]
ANALYZE = ["analyze", "--quiet", "--set", "weights=[good.pt]", "--set",
           "model.kwargs.widths=[8]", "--set", "data.n_per_class=5"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")

# (argv, a fragment the one-line message must contain: the offending key or value)
BAD_INPUTS = [
    # train: keys and values
    (TRAIN + ["--set", "epoch=3"], "epoch"),
    (TRAIN + ["--set", "epochs=abc"], "epochs"),
    (TRAIN + ["--set", "epochs=0"], "epochs"),
    (TRAIN + ["--set", "lr=-1"], "lr"),
    (TRAIN + ["--set", "batch_size=0"], "batch_size"),
    (TRAIN + ["--set", "mode=at", "--set", "eps=-0.1"], "eps"),
    (TRAIN + ["--set", "mode=at", "--set", "eps=8"], "eps"),
    (TRAIN + ["--set", "mode=madry"], "madry"),
    (TRAIN + ["--set", "norm=l1"], "l1"),
    (TRAIN + ["--set", "model.name=resnet9000"], "resnet9000"),
    (TRAIN + ["--set", "data.dataset=imagenet21k"], "imagenet21k"),
    (TRAIN + ["--set", "track_epochs=[5]"], "track_epochs"),
    (TRAIN + ["--set", "bn_quirk=true"], "bn_quirk"),
    (TRAIN + ["--set", "device=tpu"], "tpu"),
    # train: files and folders
    (TRAIN + ["--config", "nope.yaml"], "nope.yaml"),
    (TRAIN + ["--config", "bad.yaml"], "bad.yaml"),
    (TRAIN + ["--set", "data.dataset=cifar10", "--set", "data.root=no_data"], "no_data"),
    (TRAIN + ["--set", "out_dir=finished"], "out_dir=finished"),
    (TRAIN + ["--set", "out_dir=fresh", "--resume"], "out_dir=fresh"),
    (TRAIN + ["--set", "out_dir=partial", "--resume"], "out_dir=partial"),
    (TRAIN + ["--resume"], "out_dir"),
    (TRAIN + ["--set", "out_dir=fresh", "--resume", "--overwrite"], "--overwrite"),
    (TRAIN + ["--set", "out_dir=afile"], "out_dir=afile"),
    (TRAIN + ["--set", "out_dir=afile/run"], "afile"),
    (TRAIN + ["--set", "model.name=vgg11_bn", "--set", "model.kwargs={}"], "vgg11_bn"),
    pytest.param(TRAIN + ["--set", "device=cuda"], "device", marks=NO_CUDA),
    # reproduce
    (["reproduce", "nostudy"], "nostudy"),
    (REPRO + ["--set", "train.epoch=3"], "train.epoch"),
    (REPRO + ["--set", "train.eps=-0.1"], "eps"),
    (REPRO + ["--set", "eps_strong=-1"], "eps_strong"),
    (REPRO + ["--set", "runs=[st,mart]"], "mart"),
    (REPRO + ["--set", "workers=0"], "workers"),
    (REPRO + ["--set", "model.name=vgg11_bn"], "vgg11_bn"),
    (REPRO + ["--out", "afile"], "--out=afile"),
    (REPRO + ["--out", "finished"], "--out=finished"),
    (REPRO + ["--out", "adir", "--resume"], "adir"),
    (REPRO + ["--resume", "--overwrite"], "--overwrite"),
    pytest.param(REPRO + ["--set", "train.device=cuda"], "train.device", marks=NO_CUDA),
    # analyze
    (["analyze"], "weights"),
    (["analyze", "--set", "weights=[missing.pt]"], "missing.pt"),
    (ANALYZE + ["--set", "weights=[bad.pt]"], "bad.pt"),
    (["analyze", "--quiet", "--set", "weights=[good.pt]", "--set", "data.n_per_class=5"],
     "good.pt"),
    (ANALYZE + ["--set", "out=adir"], "out=adir"),
    (ANALYZE + ["--set", "out=existing.csv"], "out=existing.csv"),
    (ANALYZE + ["--set", "out=afile/x.csv"], "afile"),
    (ANALYZE + ["--set", "eps=8"], "eps"),
    (ANALYZE + ["--set", "eps=-1"], "eps"),
    (ANALYZE + ["--set", "sources=[clean,fgsm]"], "fgsm"),
    (ANALYZE + ["--set", "restarts=0"], "restarts"),
    pytest.param(ANALYZE + ["--set", "device=cuda"], "device", marks=NO_CUDA),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A working folder with the files the bad inputs point at."""
    root = tmp_path_factory.mktemp("world")
    model = create_model("bn_mlp", dataset="digits", widths=[8])
    torch.save(model.state_dict(), root / "good.pt")
    (root / "bad.pt").write_bytes(b"not a weights file")
    (root / "bad.yaml").write_text("epochs: [\n")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "existing.csv").write_text("a,b\n1,2\n")
    (root / "adir").mkdir()
    for name in ("finished", "partial"):  # a run folder holding results, no checkpoint
        (root / name).mkdir()
        (root / name / "history.jsonl").write_text("{}\n")
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size, mode and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mode, st.st_mtime_ns)
    return out


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    argv: list[str], fragment: str, world: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(world)
    before = snapshot(world)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("ncscope: error: ") and fragment in lines[0], lines[0]
    assert snapshot(world) == before


def test_read_only_folder_is_refused(tmp_path, monkeypatch, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions (the path-under-a-file cases cover this)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main([*TRAIN, "--set", f"out_dir={ro / 'run'}"]) == 2
        assert "not writable" in capsys.readouterr().err and not (ro / "run").exists()
    finally:
        ro.chmod(0o755)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_moves_the_old_run_aside(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*TRAIN, "--set", "out_dir=run"]) == 0
    old = _digest(tmp_path / "run")
    assert main([*TRAIN, "--set", "out_dir=run", "--set", "seed=1"]) == 2  # refused
    assert main([*TRAIN, "--set", "out_dir=run", "--set", "seed=1", "--overwrite"]) == 0
    aside = sorted(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and _digest(aside[0]) == old  # moved, byte for byte
    new = _digest(tmp_path / "run")
    assert set(new) == set(old) and new["history.jsonl"] != old["history.jsonl"]
    assert TrainConfig.from_yaml(tmp_path / "run" / "config.yaml").seed == 1
    # analyze: an existing output file is moved aside the same way
    torch.save(create_model("bn_mlp", dataset="digits", widths=[8]).state_dict(), "m.pt")
    args = ["analyze", "--quiet", "--set", "weights=[m.pt]", "--set", "model.kwargs.widths=[8]",
            "--set", "data.n_per_class=5", "--set", "sources=[clean]", "--set", "out=a.csv"]
    assert main(args) == 0
    first = (tmp_path / "a.csv").read_bytes()
    assert main(args) == 2 and main([*args, "--overwrite"]) == 0
    assert [p.read_bytes() for p in tmp_path.glob("a.csv.old-*")] == [first]
    assert "moved to a.csv.old-" in capsys.readouterr().out


class _Fail(Callback):
    def __init__(self, epoch: int, exc: BaseException) -> None:
        self.epoch, self.exc = epoch, exc

    def on_batch_end(self, trainer, epoch, batch, logs) -> None:
        if epoch == self.epoch:
            raise self.exc


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(data={"dataset": "digits", "n_per_class": 5}, model={"kwargs": {"widths": [8]}},
                epochs=2, batch_size=25, track_test_attack=False, progress=False,
                out_dir=str(out))
    return TrainConfig.from_dict({**base, **kw})


def test_a_run_failing_before_its_first_result_leaves_nothing(tmp_path) -> None:
    run = tmp_path / "a" / "run"
    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(run, track_init=True), callbacks=[_Fail(1, RuntimeError("boom"))])
    assert list(tmp_path.iterdir()) == []  # no run folder, no empty history, no parent
    # with an old run moved aside by overwrite: the old run is put back in place
    train(_cfg(run))
    old = _digest(run)
    with pytest.raises(Interrupted) as err:
        train(_cfg(run, overwrite=True), callbacks=[_Fail(1, KeyboardInterrupt())])
    assert "before the first epoch ended" in err.value.detail and not err.value.resumable
    assert _digest(run) == old and list(run.parent.iterdir()) == [run]
    # after the first epoch the results are kept (and resumable with checkpoint_every=1)
    fresh = tmp_path / "b"
    with pytest.raises(Interrupted) as err:
        train(_cfg(fresh), callbacks=[_Fail(2, KeyboardInterrupt())])
    assert err.value.resumable and "checkpoint of epoch 1 intact" in err.value.detail
    assert (fresh / "checkpoints" / "epoch_0001.pt").is_file()


def test_timings_of_a_resumed_run_never_repeat_an_epoch(tmp_path) -> None:
    run = tmp_path / "run"
    cfg = _cfg(run, epochs=4, checkpoint_every=2, track_every=4)
    with pytest.raises(Interrupted):  # epoch 3 finished, not checkpointed; stopped in epoch 4
        train(cfg, callbacks=[_Fail(4, KeyboardInterrupt())])
    lines = (run / "timings.jsonl").read_text().splitlines()
    assert [json.loads(t)["epoch"] for t in lines] == [1, 2, 3]
    train(cfg, resume=True)
    lines = (run / "timings.jsonl").read_text().splitlines()
    assert [json.loads(t)["epoch"] for t in lines] == [1, 2, 3, 4]


def test_files_get_the_user_umask(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        train(_cfg(tmp_path / "run", epochs=1))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").rglob("*")
             if p.is_file()}
    assert {"config.yaml", "history.jsonl", "model.pt", "epoch_0001.pt"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes


def test_run_folder_policy_unit(tmp_path) -> None:
    folder = RunFolder(tmp_path / "x" / "y", "out")
    folder.check(overwrite=False)  # absent: fine, nothing created
    assert not (tmp_path / "x").exists()
    folder.claim(overwrite=False)
    (folder.path / "config.yaml").write_text("a: 1\n")
    assert not folder.abandon(["other.txt"])  # holds something else: kept
    assert folder.abandon(["config.yaml"]) and not (tmp_path / "x").exists()
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "r.txt").write_text("old")
    with pytest.raises(RunFolderError, match="out=.*z already holds a run"):
        RunFolder(tmp_path / "z", "out").check(overwrite=False)
    moved = RunFolder(tmp_path / "z", "out").claim(overwrite=True)
    assert moved.moved_to is not None and (moved.moved_to / "r.txt").read_text() == "old"
    assert moved.abandon() and (tmp_path / "z" / "r.txt").read_text() == "old"

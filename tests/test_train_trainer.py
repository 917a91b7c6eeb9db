"""Trainer: modes, BN protocol, determinism, outputs, tracking against in-memory oracles.

Everything runs on tiny digits subsets (200 images, a 2-hidden-layer BN-MLP of width 32, PGD
with 2-3 steps), so each test takes about a second on one CPU thread.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from ncscope.collapse import FeatureTaps, nc_metrics
from ncscope.data import load_dataset
from ncscope.models import create_model
from ncscope.train import (
    Callback,
    TensorSpool,
    Tracker,
    TrainConfig,
    Trainer,
    lr_at,
    read_jsonl,
    track,
    train,
)
from ncscope.train.tracking import PURPOSE_FRESH_ATTACK

TINY = {
    "dataset": "digits",
    "model": "bn_mlp",
    "model_kwargs": {"widths": [32, 32]},
    "n_per_class": 20,
    "n_test": 100,
    "epochs": 2,
    "batch_size": 50,
    "lr": 0.05,
    "eps": 0.1,
    "steps": 2,
    "threads": 1,
    "progress": False,
}


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("mode", ["st", "at", "trades"])
def test_each_mode_trains_and_writes_the_run_folder(mode: str, tmp_path) -> None:
    cfg = tiny(mode=mode, out_dir=str(tmp_path / "run"), track_layers="all")
    res = train(cfg)
    run = tmp_path / "run"
    assert res.run_dir == run
    for name in ("config.yaml", "history.jsonl", "history.csv", "model.pt", "timings.jsonl"):
        assert (run / name).is_file(), name
    assert TrainConfig.from_yaml(run / "config.yaml") == cfg
    # only the final checkpoint is kept (checkpoint_every=1, no keep_epochs)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch_0002.pt"]
    assert not any((run / ".spool").iterdir())  # scratch files are deleted
    rows = read_jsonl(run / "history.jsonl")
    assert rows == res.rows
    csv = pd.read_csv(run / "history.csv")
    assert len(csv) == len(rows) == len(res.history)
    sources = set(res.history["source"])
    expected = {"train_clean", "test_clean", "test_pgd"}
    expected |= {"train_pgd"} if mode == "st" else {"train_perturbed"}
    assert sources == expected
    assert set(res.history["epoch"]) == {1, 2}
    assert list(res.history["layer"].unique()) == ["features.block1", "classifier:in"]
    pert = res.history[res.history["source"].isin(["train_perturbed", "train_pgd"])]
    assert (pert["n"] == 200).all()  # every training example exactly once
    assert set(pert["reference"]) == {pert["source"].iloc[0], "train_clean"}
    last = res.final("train_clean")
    assert last["epoch"] == 2 and 0.0 <= last["accuracy"] <= 1.0 and last["nc1"] > 0
    assert res.final("test_pgd")["reference"] == "train_clean"
    assert list(res.summary()["epoch"]) == [1, 2]
    state = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in res.model.state_dict().items())


def test_training_is_bit_for_bit_deterministic() -> None:
    cfg = tiny(mode="at", track_layers="all")
    a, b = train(cfg), train(cfg)
    assert _state_equal(a.model, b.model)
    assert a.rows == b.rows
    c = train(cfg.replace(seed=1))
    assert not _state_equal(a.model, c.model)


def _first_bn(model: nn.Module) -> nn.BatchNorm1d:
    return next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))


@pytest.mark.parametrize(
    ("changes", "per_batch"),
    [
        ({"mode": "st"}, 1),
        # paper's AT: `steps` train-mode attack forwards + adversarial forward + clean forward
        ({"mode": "at"}, 3 + 2),
        ({"mode": "at", "attack_mode": "eval"}, 2),
        ({"mode": "at", "clean_forward": False}, 3 + 1),
        # canonical TRADES: eval-mode attack, back to train mode for f(x) and f(x')
        ({"mode": "trades"}, 2),
        # official TRADES code: BN stays in eval mode for the whole training
        ({"mode": "trades", "bn_quirk": True}, 0),
    ],
)
def test_batchnorm_protocol_of_each_mode(changes: dict, per_batch: int) -> None:
    cfg = tiny(epochs=1, steps=3, track_test=False, track_test_attack=False, **changes)
    res = train(cfg)
    bn = _first_bn(res.model)
    batches = 200 // 50
    assert int(bn.num_batches_tracked) == per_batch * batches
    frozen = torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) and torch.equal(
        bn.running_var, torch.ones_like(bn.running_var)
    )
    assert frozen == (per_batch == 0)


def test_trainer_attack_settings() -> None:
    model = create_model("bn_mlp", dataset="digits", widths=[8])
    data = load_dataset("digits", n_per_class=2)
    at = Trainer(model, data, config=tiny(mode="at", eps=0.2))
    atk = at._train_attack(1)
    assert type(atk).__name__ == "PGD" and atk.model_mode == "train"
    assert atk.eps == 0.2 and atk.alpha == pytest.approx(0.05) and atk.steps == 2
    tr = Trainer(model, data, config=tiny(mode="trades", alpha=0.01))
    atk = tr._train_attack(1)
    assert type(atk).__name__ == "TRADES" and atk.model_mode == "eval" and atk.alpha == 0.01
    assert Trainer(model, data, config=tiny(mode="st"))._train_attack(1) is None


class _Recorder(Callback):
    def __init__(self) -> None:
        self.batches: list[tuple[int, int, float, int]] = []
        self.epochs: list[int] = []

    def on_batch_end(self, trainer, epoch, batch, logs) -> None:
        self.batches.append((epoch, batch, logs["lr"], torch.get_num_threads()))

    def on_epoch_end(self, trainer, epoch, logs, rows) -> None:
        self.epochs.append(epoch)


def test_callbacks_lr_per_iteration_and_threads() -> None:
    before = torch.get_num_threads()
    rec = _Recorder()
    cfg = tiny(epochs=4, schedule="piecewise", threads=1, track_epochs=[2])
    res = train(cfg, callbacks=[rec])
    assert torch.get_num_threads() == before  # restored after the run
    assert {t for *_, t in rec.batches} == {1}
    expected = [lr_at("piecewise", e - 1, i, 4, 4, 0.05) for e in range(1, 5) for i in range(4)]
    assert [lr for _, _, lr, _ in rec.batches] == expected
    assert rec.epochs == [1, 2, 3, 4]
    assert sorted(set(res.history["epoch"])) == [2, 4]  # listed epochs + the last one
    assert res.history["step"].max() == 16


def test_progress_bars_are_silent_without_a_terminal(capsys) -> None:
    train(tiny(epochs=1, progress=True, track_test_attack=False))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def _features(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad(), FeatureTaps(model, [layer]) as taps:
        logits = model(x)
        return taps.features[layer], logits


def _close(row: dict, ref: dict, keys=("nc1", "nc3", "nc4", "ncc_accuracy", "equiangular_means")):
    for k in keys:
        assert row[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


def test_streamed_perturbed_nc_equals_the_in_memory_oracle(tmp_path) -> None:
    """Rows from the on-disk spool (two streamed passes) equal nc_metrics on stacked arrays."""
    torch.manual_seed(0)
    data = load_dataset("digits", n_per_class=20)
    model = create_model("bn_mlp", dataset="digits", widths=[32, 16])
    res = Trainer(model, data, config=tiny(epochs=3, track_test=False, track_test_attack=False))
    model = res.fit().model
    cfg = tiny(
        track_test=False, track_test_attack=False, track_fresh_attack=True, eval_batch_size=7
    )
    tracker = Tracker(model, data, None, cfg, spool_dir=tmp_path)
    x, y = data.tensors
    g = torch.Generator().manual_seed(5)
    x_pert = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    with TensorSpool(tmp_path, "pert") as spool:
        for i in range(0, 200, 30):  # batches of another size than the measurement's
            spool.append(x_pert[i : i + 30], y[i : i + 30])
        rows = tracker.measure(3, perturbed=spool)
    head = model.classifier
    w, b = head.weight.detach(), head.bias.detach()
    h_clean, _ = _features(model, x, "classifier:in")
    h_pert, logits_pert = _features(model, x_pert, "classifier:in")
    by = {(r["source"], r["reference"]): r for r in rows}
    _close(by["train_clean", "train_clean"], nc_metrics(h_clean, y, w, b))
    _close(by["train_perturbed", "train_perturbed"], nc_metrics(h_pert, y, w, b))
    around = nc_metrics(h_pert, y, w, b, ref_features=h_clean, ref_labels=y)
    _close(by["train_perturbed", "train_clean"], {**around}, keys=("nc1", "ncc_accuracy", "nc4"))
    assert by["train_perturbed", "train_clean"]["simplex_angle"] == pytest.approx(
        around["simplex_angle"], rel=1e-9
    )
    acc = (logits_pert.argmax(1) == y).double().mean().item()
    assert by["train_perturbed", "train_perturbed"]["accuracy"] == pytest.approx(acc)
    # fresh eval-mode PGD: spooled on disk, equal to regenerating it in memory
    attack = tracker._attack(3, PURPOSE_FRESH_ATTACK)
    x_adv = torch.cat([attack(x[i : i + 7], y[i : i + 7]) for i in range(0, 200, 7)])
    h_adv, _ = _features(model, x_adv, "classifier:in")
    _close(by["train_pgd", "train_pgd"], nc_metrics(h_adv, y, w, b))
    assert list(tmp_path.iterdir()) == []  # spools removed


def test_track_function_and_user_model() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
            self.head = nn.Linear(16, 10)
            self.classifier_name = "head"

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    data = load_dataset("digits", n_per_class=10)
    test = load_dataset("digits", split="test", n_train=50)
    net = Net()
    res = Trainer(net, data, test, tiny(epochs=1, track_layers="all")).fit()
    # "all" = fallback taps (top-level children); "body" outputs the penultimate itself
    assert set(res.history["layer"]) == {"head:in"}
    rows = track(net, data, test, tiny(track_layers="penultimate"), epoch=7)
    assert {r["source"] for r in rows} == {"train_clean", "train_pgd", "test_clean", "test_pgd"}
    assert {r["epoch"] for r in rows} == {7} and {r["layer"] for r in rows} == {"head:in"}


def test_model_without_classifier_fails_before_training() -> None:
    rec = _Recorder()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    data = load_dataset("digits", n_per_class=5)
    with pytest.raises(ValueError, match="classifier"):
        Trainer(model, data, config=tiny(), callbacks=[rec]).fit()
    assert rec.batches == []


def test_existing_run_folder_is_protected(tmp_path) -> None:
    cfg = tiny(epochs=1, out_dir=str(tmp_path), track_test_attack=False)
    train(cfg)
    before = (tmp_path / "history.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        train(cfg)
    assert (tmp_path / "history.jsonl").read_bytes() == before
    res = train(cfg.replace(overwrite=True, seed=3))
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == res.rows
    # resume=True: nothing to resume in an empty folder -> a fresh run; results without a
    # checkpoint -> refused
    fresh = train(cfg.replace(out_dir=str(tmp_path / "new")), resume=True)
    assert fresh.rows == train(cfg.replace(out_dir=None)).rows
    for p in (tmp_path / "checkpoints").iterdir():
        p.unlink()
    with pytest.raises(FileExistsError, match="no checkpoint to resume"):
        train(cfg, resume=True)


def test_command_line_entry_point(tmp_path, capsys) -> None:
    from ncscope.train.__main__ import main

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(tiny(out_dir=str(tmp_path / "run")).to_yaml())
    assert main([str(cfg_file), "epochs=1", "mode=at", "track_test_attack=false"]) == 0
    assert "train_clean_acc" in capsys.readouterr().out
    saved = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert (saved.epochs, saved.mode) == (1, "at")
    assert main([str(cfg_file), "epochs=1"]) == 2  # folder holds results: refused
    assert "resume=True" in capsys.readouterr().err
    assert main([str(cfg_file), "mode=madry"]) == 2
    assert "valid values: st, at, trades" in capsys.readouterr().err


def test_track_init_measures_epoch_zero_without_changing_training() -> None:
    from ncscope.train import TrainConfig, train

    base = dict(
        dataset="digits",
        n_per_class=10,
        mode="at",
        epochs=2,
        eps=0.1,
        steps=2,
        progress=False,
        model_kwargs={"widths": [16]},
        track_test=False,
    )
    with_init = train(TrainConfig(**base, track_init=True))
    without = train(TrainConfig(**base))
    h = with_init.history
    first = set(h[h.epoch == 0].source)
    assert h.epoch.iloc[0] == 0 and "train_clean" in first and "train_perturbed" not in first
    assert h[h.epoch == 0].nc1.iloc[0] > h[h.epoch == 2].nc1.iloc[0]
    for (k, a), b in zip(
        with_init.model.state_dict().items(), without.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_fast_attacks_only_for_eval_mode_attacks() -> None:
    """``fast_attacks`` reaches the TRADES attack and the tracking PGD (eval mode); the paper's
    train-mode AT attack runs on the model itself; TRADES trains alike either way."""
    from ncscope.data import load_dataset
    from ncscope.models import create_model
    from ncscope.train import TrainConfig, train
    from ncscope.train.trainer import Trainer

    base = dict(
        dataset="digits",
        n_per_class=10,
        epochs=1,
        eps=0.1,
        steps=2,
        progress=False,
        model_kwargs={"widths": [16]},
        track_test=False,
        fast_attacks=True,
    )
    data = load_dataset("digits", n_per_class=10)
    model = create_model("bn_mlp", dataset="digits", widths=[16])

    def attack(**kw):
        return Trainer(model, data, config=TrainConfig(**base, **kw))._train_attack(1)

    assert attack(mode="at").fast is False  # the paper's AT attacks in train mode
    assert attack(mode="at", attack_mode="eval").fast is True
    assert attack(mode="trades").fast is True
    fast = train(TrainConfig(mode="trades", **base)).history
    exact = train(TrainConfig(mode="trades", **{**base, "fast_attacks": False})).history
    assert list(fast.columns) == list(exact.columns) and len(fast) == len(exact)
    assert abs(fast["nc1"].to_numpy() - exact["nc1"].to_numpy()).max() <= 0.05 * (
        1 + abs(exact["nc1"].to_numpy()).max()
    )

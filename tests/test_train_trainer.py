"""Trainer: modes, BN protocol, determinism, outputs, tracking against in-memory oracles.

Everything runs on tiny digits subsets (200 images, a 2-hidden-layer BN-MLP of width 32, PGD
with 2-3 steps), so each test takes about a second on one CPU thread. The history follows the
declared long schema (:mod:`ncscope.collapse.schema`): one row per epoch x layer x source x
view (split, reference, group) x metric.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from ncscope.cli import main
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
from ncscope.train.history import COLUMNS
from ncscope.train.tracking import PURPOSE_FRESH_ATTACK, labels_of

TINY = {
    "data": {"dataset": "digits", "n_per_class": 20, "n_test": 100},
    "model": {"name": "bn_mlp", "kwargs": {"widths": [32, 32]}},
    "epochs": 2,
    "batch_size": 50,
    "lr": 0.05,
    "eps": 0.1,
    "steps": 2,
    "threads": 1,
    "progress": False,
    "track_subset": None,  # these tests check the full-set measurements
}


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


def by_view(rows, layer: str = "classifier:in") -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(source, split, reference): {metric: value}}`` of one layer's aggregate rows."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in rows:
        if r["layer"] == layer and r["class"] is None:
            assert r["group"] == "label"  # every tracker view groups by the true label
            out.setdefault((r["source"], r["split"], r["reference"]), {})[r["metric"]] = r["value"]
    return out


def views(history: pd.DataFrame) -> set[tuple[str, str, str]]:
    """The measured (source, split, reference) views (the epoch-level ``training`` rows aside)."""
    h = history[history["source"] != "training"]
    return set(h[["source", "split", "reference"]].itertuples(index=False, name=None))


def metric(
    history: pd.DataFrame,
    epoch: int,
    name: str,
    source: str = "clean",
    split: str = "train",
    reference: str = "own",
) -> pd.Series:
    """Values of one metric of one view at ``epoch`` (one per layer, in depth order)."""
    h = history
    sel = h[
        (h["epoch"] == epoch)
        & (h["source"] == source)
        & (h["split"] == split)
        & (h["reference"] == reference)
        & (h["metric"] == name)
        & h["class"].isna()
    ]
    return sel.sort_values("depth")["value"].reset_index(drop=True)


def training_logs(history: pd.DataFrame, epoch: int) -> dict[str, float]:
    """The epoch-level logs (rows of source ``training``) of ``epoch``."""
    h = history[(history["epoch"] == epoch) & (history["source"] == "training")]
    assert h["layer"].isna().all() and h["reference"].isna().all()
    return dict(zip(h["metric"], h["value"], strict=True))


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
    assert not (run / ".spool").exists()  # scratch files and their folder are deleted
    rows = read_jsonl(run / "history.jsonl")
    assert rows == res.rows
    csv = pd.read_csv(run / "history.csv")
    assert len(csv) == len(rows) == len(res.history)
    assert list(csv.columns) == list(res.history.columns) == list(COLUMNS)
    h = res.history
    attacked = "pgd" if mode == "st" else "perturbed"  # ST: fresh PGD; AT/TRADES: the epoch's
    expected = {
        ("clean", "train", "own"),
        ("clean", "train", "clean"),
        ("clean", "test", "clean"),
        (attacked, "train", "own"),
        (attacked, "train", "clean"),
        ("pgd", "test", "clean"),
    }
    assert views(h) == expected
    assert set(h["source"]) == {"clean", "pgd", "perturbed", "training"} - (
        {"perturbed"} if mode == "st" else set()
    )
    assert set(h.loc[h["source"] != "training", "group"]) == {"label"}
    assert set(h["epoch"]) == {1, 2}
    assert list(h["layer"].dropna().unique()) == ["features.block1", "classifier:in"]
    pert = h[(h["source"] == attacked) & (h["split"] == "train")]
    n = pert[pert["metric"] == "n_measured"]
    assert len(n) == 2 * 2 * 2 and (n["value"] == 200).all()  # every example exactly once
    assert set(pert["reference"]) == {"own", "clean"}
    for epoch in (1, 2):
        logs = training_logs(h, epoch)
        assert set(logs) == {"step", "lr", "run_loss", "run_clean_acc", "run_adv_acc"}
        assert logs["step"] == 4 * epoch
    last = res.final("clean")
    assert last["epoch"] == 2 and last["layer"] == "classifier:in"
    assert 0.0 <= last["net_accuracy"] <= 1.0 and last["nc1"] > 0
    assert (last["split"], last["reference"]) == ("train", "own")
    assert res.final("pgd", "test")["reference"] == "clean"
    assert res.final("pgd", "test")["n_measured"] == 100
    summary = res.summary()
    assert list(summary["epoch"]) == [1, 2]
    assert set(summary.columns) == {
        "epoch",
        "clean_train_acc",
        "clean_test_acc",
        "pgd_test_acc",
        f"{attacked}_train_acc",
    }
    assert list(summary["clean_train_acc"]) == list(metric(h, 1, "net_accuracy")[1:]) + list(
        metric(h, 2, "net_accuracy")[1:]
    )
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
    assert training_logs(res.history, 2)["step"] == 8
    assert training_logs(res.history, 4)["step"] == 16
    assert training_logs(res.history, 4)["lr"] == expected[-1]


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
    by = by_view(rows)
    assert set(by) == {
        ("clean", "train", "own"),
        ("clean", "train", "clean"),
        ("perturbed", "train", "own"),
        ("perturbed", "train", "clean"),
        ("pgd", "train", "own"),
        ("pgd", "train", "clean"),
    }
    clean_ref = nc_metrics(h_clean, y, w, b)
    _close(by["clean", "train", "own"], clean_ref)
    _close(by["clean", "train", "clean"], clean_ref)  # the clean data around its own means
    _close(by["perturbed", "train", "own"], nc_metrics(h_pert, y, w, b))
    around = nc_metrics(h_pert, y, w, b, ref_features=h_clean, ref_labels=y)
    _close(by["perturbed", "train", "clean"], {**around}, keys=("nc1", "ncc_accuracy", "nc4"))
    assert by["perturbed", "train", "clean"]["simplex_angle"] == pytest.approx(
        around["simplex_angle"], rel=1e-9
    )
    # own-means views carry no simplex similarity (identically 0 there)
    assert "simplex_angle" not in by["perturbed", "train", "own"]
    acc = (logits_pert.argmax(1) == y).double().mean().item()
    assert by["perturbed", "train", "own"]["net_accuracy"] == pytest.approx(acc)
    assert by["perturbed", "train", "own"]["n_measured"] == 200
    # fresh eval-mode PGD: spooled on disk, equal to regenerating it in memory
    attack = tracker._attack(3, PURPOSE_FRESH_ATTACK)
    x_adv = torch.cat([attack(x[i : i + 7], y[i : i + 7]) for i in range(0, 200, 7)])
    h_adv, _ = _features(model, x_adv, "classifier:in")
    _close(by["pgd", "train", "own"], nc_metrics(h_adv, y, w, b))
    around = nc_metrics(h_adv, y, w, b, ref_features=h_clean, ref_labels=y)
    _close(by["pgd", "train", "clean"], around, keys=("nc1", "ncc_accuracy", "nc4"))
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
    assert set(res.history["layer"].dropna()) == {"head:in"}
    rows = track(net, data, test, tiny(track_layers="penultimate"), epoch=7)
    assert {(r["source"], r["split"]) for r in rows} == {
        ("clean", "train"),
        ("pgd", "train"),
        ("clean", "test"),
        ("pgd", "test"),
    }
    assert {r["epoch"] for r in rows} == {7} and {r["layer"] for r in rows} == {"head:in"}
    by = by_view(rows, "head:in")
    assert by["clean", "train", "own"]["n_measured"] == 100
    assert by["pgd", "test", "clean"]["n_measured"] == 50


def test_model_without_classifier_fails_before_training() -> None:
    rec = _Recorder()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh())  # no final nn.Linear
    data = load_dataset("digits", n_per_class=5)
    with pytest.raises(ValueError, match="not the final layer.*classifier"):
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


def _train_cli(cfg_file, *sets: str) -> int:
    return main(["train", "--config", str(cfg_file), *(a for kv in sets for a in ("--set", kv))])


def test_command_line_entry_point(tmp_path, capsys) -> None:
    """``ncscope train --config FILE --set key=value`` (dotted keys for the sections)."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(tiny(out_dir=str(tmp_path / "run")).to_yaml())
    sets = (
        "epochs=1",
        "mode=at",
        "track_test_attack=false",
        "data.n_per_class=10",
        "model.kwargs.widths=[16]",
    )
    assert _train_cli(cfg_file, *sets) == 0
    out = capsys.readouterr().out
    assert "clean_train_acc" in out and "perturbed_train_acc" in out
    saved = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert (saved.epochs, saved.mode) == (1, "at")
    assert (saved.data.n_per_class, saved.data.n_test, saved.model.kwargs) == (
        10,
        100,
        {"widths": [16]},
    )
    h = pd.read_csv(tmp_path / "run" / "history.csv")
    assert (h.loc[(h["source"] == "clean") & (h["metric"] == "n_measured"), "value"] == 100).all()
    assert _train_cli(cfg_file, "mode=madry") == 2
    assert "valid values: st, at, trades" in capsys.readouterr().err
    assert _train_cli(cfg_file, "data.n_per_class=0") == 2
    assert "data.n_per_class must be a positive integer" in capsys.readouterr().err
    assert _train_cli(cfg_file, "model.name=resnet9000") == 2
    assert "valid names: bn_mlp" in capsys.readouterr().err
    assert _train_cli(cfg_file, "dataset=digits") == 2  # the old flat keys are gone
    err = capsys.readouterr().err
    assert "unknown config key(s) dataset" in err and "data" in err and "\n" not in err.strip()


def test_command_line_refuses_a_folder_with_results(tmp_path, capsys) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(tiny(out_dir=str(tmp_path / "run"), epochs=1).to_yaml())
    assert _train_cli(cfg_file, "track_test_attack=false") == 0
    before = (tmp_path / "run" / "history.jsonl").read_bytes()
    capsys.readouterr()
    assert _train_cli(cfg_file, "track_test_attack=false") == 2  # folder holds results: refused
    assert "resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "history.jsonl").read_bytes() == before


def test_command_line_resume_with_another_config_is_a_one_line_error(tmp_path, capsys) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(tiny(out_dir=str(tmp_path / "run"), epochs=1).to_yaml())
    assert _train_cli(cfg_file, "track_test_attack=false") == 0
    capsys.readouterr()
    args = ["train", "--config", str(cfg_file), "--set", "track_test_attack=false", "--resume"]
    assert main([*args, "--set", "lr=0.07"]) == 2
    assert "different config" in capsys.readouterr().err


def test_track_init_measures_epoch_zero_without_changing_training() -> None:
    from ncscope.train import TrainConfig, train

    base = dict(
        data={"dataset": "digits", "n_per_class": 10},
        model={"kwargs": {"widths": [16]}},  # name: the data set's default (bn_mlp)
        mode="at",
        epochs=2,
        eps=0.1,
        steps=2,
        progress=False,
        track_test=False,
    )
    with_init = train(TrainConfig(**base, track_init=True))
    without = train(TrainConfig(**base))
    assert with_init.config.model.name == "bn_mlp"
    h = with_init.history
    first = set(h[h.epoch == 0].source)
    # no training-time perturbations and no epoch logs exist before the first epoch
    assert h.epoch.iloc[0] == 0 and "clean" in first
    assert "perturbed" not in first and "training" not in first
    assert metric(h, 0, "nc1")[0] > metric(h, 2, "nc1")[0]
    assert [r for r in with_init.rows if r["epoch"] > 0] == without.rows
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
        data={"dataset": "digits", "n_per_class": 10},
        model={"name": "bn_mlp", "kwargs": {"widths": [16]}},
        epochs=1,
        eps=0.1,
        steps=2,
        progress=False,
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
    keys = ["epoch", "layer", "source", "split", "reference", "group", "metric"]
    assert fast[keys].equals(exact[keys])
    nc1_fast = fast.loc[fast["metric"] == "nc1", "value"].to_numpy()
    nc1_exact = exact.loc[exact["metric"] == "nc1", "value"].to_numpy()
    assert len(nc1_exact) == len(views(exact)) >= 5  # one layer: one nc1 per view
    assert {("perturbed", "train", "own"), ("pgd", "test", "clean")} <= views(exact)
    # Per column: the two trainings differ only by float rounding inside the TRADES attack.
    assert (abs(nc1_fast - nc1_exact) <= 1e-2 * abs(nc1_exact)).all()
    for metric, tol in (("net_accuracy", 1 / 100), ("ncc_accuracy", 1 / 100),
                        ("simplex_angle", 0.1)):
        a = fast.loc[fast["metric"] == metric, "value"].to_numpy(float)
        b = exact.loc[exact["metric"] == metric, "value"].to_numpy(float)
        assert (abs(a - b) <= tol + 1e-12).all(), metric  # 100 samples: one sample = 0.01


def test_track_subset_measures_k_per_class_on_train_and_test() -> None:
    """``track_subset=k``: the clean passes and the fresh attacks of the training and test sets
    measure a stratified subset of exactly k samples per class (the same every epoch); the
    training-time perturbations are measured in full. ``None`` (or k above the class sizes)
    measures the full sets."""
    k, classes = 3, 10
    data = load_dataset("digits", n_per_class=20)
    test = load_dataset("digits", split="test", n_train=100)
    cfg = tiny(mode="at", track_subset=k, track_fresh_attack=True, track_layers="all")
    torch.manual_seed(0)
    model = create_model("bn_mlp", dataset="digits", widths=[32, 32])
    trainer = Trainer(model, data, test, cfg)
    res = trainer.fit()
    tracker = trainer.tracker
    for dataset, index in ((data, tracker.train_index), (test, tracker.test_index)):
        assert len(set(index)) == len(index) == k * classes
        counts = torch.bincount(labels_of(dataset)[index], minlength=classes)
        assert counts.tolist() == [k] * classes
    for epoch in (1, 2):
        for layer in ("features.block1", "classifier:in"):
            by = by_view([r for r in res.rows if r["epoch"] == epoch], layer)
            expected = {  # view: (n_measured, n_reference)
                ("clean", "train", "own"): (k * classes, k * classes),
                ("clean", "train", "clean"): (k * classes, k * classes),
                ("pgd", "train", "own"): (k * classes, k * classes),
                ("pgd", "train", "clean"): (k * classes, k * classes),
                ("perturbed", "train", "own"): (200, 200),  # always in full
                ("perturbed", "train", "clean"): (200, k * classes),
                ("clean", "test", "clean"): (k * classes, k * classes),
                ("pgd", "test", "clean"): (k * classes, k * classes),
            }
            assert {v: (m["n_measured"], m["n_reference"]) for v, m in by.items()} == expected
    # exactly those samples were measured: accuracy and NC1 recomputed on the subset
    x, y = data.tensors
    xs, ys = x[tracker.train_index], y[tracker.train_index]
    h_sub, logits = _features(res.model, xs, "classifier:in")
    w, b = res.model.classifier.weight.detach(), res.model.classifier.bias.detach()
    last = res.final("clean")
    assert last["net_accuracy"] == pytest.approx((logits.argmax(1) == ys).double().mean().item())
    _close(last, nc_metrics(h_sub, ys, w, b))
    xt, yt = test.tensors
    _, logits_t = _features(res.model, xt[tracker.test_index], "classifier:in")
    acc_t = (logits_t.argmax(1) == yt[tracker.test_index]).double().mean().item()
    assert res.final("clean", "test")["net_accuracy"] == pytest.approx(acc_t)
    # None, or more per class than there are: the full sets
    for subset in (None, 50):
        rows = track(res.model, data, test, cfg.replace(track_subset=subset), epoch=2)
        by = by_view(rows)
        assert set(by) == {
            ("clean", "train", "own"),
            ("clean", "train", "clean"),
            ("pgd", "train", "own"),
            ("pgd", "train", "clean"),
            ("clean", "test", "clean"),
            ("pgd", "test", "clean"),
        }
        for (_source, split, _ref), m in by.items():
            assert m["n_measured"] == (200 if split == "train" else 100)
            assert m["n_reference"] == 200
    full = by_view(track(res.model, data, test, cfg.replace(track_subset=None), epoch=2))
    h_all, logits_all = _features(res.model, x, "classifier:in")
    assert full["clean", "train", "own"]["net_accuracy"] == pytest.approx(
        (logits_all.argmax(1) == y).double().mean().item()
    )
    _close(full["clean", "train", "own"], nc_metrics(h_all, y, w, b))


def test_track_test_false_measures_no_clean_test_view() -> None:
    data = load_dataset("digits", n_per_class=5)
    test = load_dataset("digits", split="test", n_train=50)
    torch.manual_seed(0)
    model = create_model("bn_mlp", dataset="digits", widths=[16])
    rows = track(model, data, test, tiny(track_test=False, track_test_attack=True))
    assert {(r["source"], r["split"]) for r in rows if r["split"] == "test"} == {("pgd", "test")}

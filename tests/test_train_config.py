"""TrainConfig validation, loss / schedule registries (no training here; milliseconds).

A TrainConfig is the training settings plus two sections, ``data`` (DataConfig) and ``model``
(ModelConfig); dicts are accepted for the sections."""

from __future__ import annotations

import math

import pytest
import torch

from ncscope.data import DatasetNotFoundError, UnknownNameError
from ncscope.data.config import DataConfig
from ncscope.models.config import ModelConfig
from ncscope.train import (
    LOSSES,
    SCHEDULES,
    TrainConfig,
    lr_at,
    make_loss,
    register_loss,
    register_schedule,
    trades_kl,
    train,
)


def _unknown(field: str, value: str) -> dict:
    """Config keyword arguments setting ``field`` (dotted for a section) to ``value``."""
    section, _, key = field.rpartition(".")
    return {section: {key: value}} if section else {field: value}


UNKNOWN_NAMES = [
    ("data.dataset", "cifar11", "digits"),
    ("model.name", "resnet9000", "bn_mlp"),
    ("mode", "madry", "trades"),
    ("loss", "hinge", "ce"),
    ("schedule", "warmup", "piecewise"),
    ("norm", "l1", "linf"),
    ("attack_mode", "test", "eval"),
]


@pytest.mark.parametrize(("field", "value", "listed"), UNKNOWN_NAMES)
def test_unknown_names_list_the_valid_ones(field: str, value: str, listed: str) -> None:
    for build in (lambda kw: TrainConfig(**kw), TrainConfig.from_dict):
        with pytest.raises(ValueError) as err:
            build(_unknown(field, value))
        msg = str(err.value)
        assert value in msg and listed in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (f, v)
        for f, v, _ in UNKNOWN_NAMES
    ],
)
def test_unknown_names_are_unknown_name_errors(field: str, value: str) -> None:
    with pytest.raises(ValueError) as err:
        TrainConfig(**_unknown(field, value))
    assert isinstance(err.value, UnknownNameError)  # and catchable as ValueError


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": -3}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"eps": -0.1}, "eps"),
        ({"eps": 1.5}, "eps"),
        ({"eps": math.nan}, "eps"),
        ({"mode": "at", "eps": 0.0}, "eps > 0"),
        ({"lr": 0.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"steps": 0}, "steps"),
        ({"alpha": 0.0}, "alpha"),
        ({"track_every": 0}, "track_every"),
        ({"track_epochs": [0]}, "track_epochs"),
        ({"epochs": 5, "keep_epochs": [6]}, "keep_epochs"),
        ({"threads": 0}, "threads"),
        ({"bn_quirk": True}, "trades"),
        ({"data": {"n_per_class": 3, "n_train": 30}}, "at most one"),
        ({"data": {"n_train": 0}}, "data.n_train must be a positive integer or null; got 0"),
        ({"data": {"n_per_class": -1}}, "data.n_per_class must be a positive integer"),
        ({"data": {"n_test": 2.5}}, "data.n_test: 2.5 does not match int"),
        ({"data": {"n_pc": 3}}, "unknown config key(s) data.n_pc; valid keys: data.dataset"),
        ({"model": {"width": 3}}, "unknown config key(s) model.width; valid keys: model.name"),
        ({"model": "bn_mlp"}, "DataConfig / ModelConfig"),
        ({"track_layers": []}, "track_layers"),
        ({"track_subset": 0}, "track_subset"),
        ({"track_subset": 2.0}, "track_subset"),
    ],
)
def test_out_of_range_values_are_rejected(changes: dict, needle: str) -> None:
    with pytest.raises((ValueError, TypeError)) as err:
        TrainConfig(**changes)
    assert needle in str(err.value)


def test_defaults_are_the_paper_recipe() -> None:
    cfg = TrainConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 5e-4, 128)
    assert (cfg.schedule, cfg.epochs, cfg.loss, cfg.trades_beta) == ("piecewise", 400, "ce", 6.0)
    assert cfg.eps == pytest.approx(8 / 255) and cfg.effective_alpha == pytest.approx(2 / 255)
    assert cfg.data == DataConfig() and cfg.data.dataset == "digits"
    assert cfg.model.name == "bn_mlp"  # digits' default model
    assert cfg.track_subset == 10  # stratified tracking subset, 10 per class (docs/benchmarks.md)
    # default steps of the threat-model table: l2 PGD eps * 15/128, TRADES l2 2 * eps / steps
    assert TrainConfig(mode="at", norm="l2", eps=0.5).effective_alpha == pytest.approx(
        0.5 * 15 / 128
    )
    assert TrainConfig(mode="trades", norm="l2", eps=0.5, steps=5).effective_alpha == (
        pytest.approx(2 * 0.5 / 5)
    )
    assert TrainConfig(mode="trades", eps=0.1).effective_alpha == pytest.approx(0.025)
    assert TrainConfig(mode="at", eps=0.1, alpha=0.03).effective_alpha == 0.03
    assert TrainConfig(mode="at").effective_attack_mode == "train"  # paper's code
    assert TrainConfig(mode="trades").effective_attack_mode == "eval"
    assert TrainConfig(mode="st").fresh_attack and not TrainConfig(mode="at").fresh_attack
    d = TrainConfig.digits_recipe("trades", bn_quirk=True)
    assert (d.lr, d.epochs, d.eps, d.model.name, d.bn_quirk) == (0.05, 300, 0.1, "bn_mlp", True)
    assert d.data.dataset == "digits" and d.effective_alpha == 0.025


def test_aliases_are_canonicalised() -> None:
    cfg = TrainConfig(mode="pgd_train_TRADES", model={"name": "MLP"}, loss="cross_entropy",
                      norm="l_inf")  # fmt: skip
    assert (cfg.mode, cfg.model.name, cfg.loss, cfg.norm) == ("trades", "bn_mlp", "ce", "linf")
    cfg = TrainConfig(data=DataConfig(dataset="Fashion-MNIST"), model=ModelConfig())
    assert (cfg.data.dataset, cfg.model.name) == ("fashion_mnist", "small_cnn")


def test_yaml_round_trip_and_unknown_keys(tmp_path) -> None:
    cfg = TrainConfig(mode="at", epochs=7, track_epochs=[3, 1], keep_epochs=[2], track_subset=5,
                      data={"dataset": "digits", "n_per_class": 10, "kwargs": {"split_seed": 1}},
                      model={"name": "bn_mlp", "kwargs": {"widths": [16, 8]}})  # fmt: skip
    assert cfg.track_epochs == [1, 3]
    assert isinstance(cfg.data, DataConfig) and isinstance(cfg.model, ModelConfig)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(path) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["data"]["n_per_class"] == 10
    assert cfg.to_dict()["model"]["kwargs"] == {"widths": [16, 8]}
    with pytest.raises(ValueError, match=r"unknown config key\(s\) epochz; valid keys"):
        TrainConfig.from_dict({"epochz": 3})
    # the old flat keys are gone: they are unknown, and the valid keys name the sections
    for old in ("dataset", "n_per_class", "data_seed", "model_kwargs", "data_root"):
        with pytest.raises(ValueError, match=rf"unknown config key\(s\) {old};.*\bdata\b"):
            TrainConfig.from_dict({old: 1})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) data.n_pc; valid keys: data"):
        TrainConfig.from_dict({"data": {"n_pc": 3}})
    assert cfg.replace(epochs=9).epochs == 9
    assert cfg.replace(epochs=9).data == cfg.data


def test_tracking_and_checkpoint_epochs() -> None:
    cfg = TrainConfig(epochs=10, track_every=4, checkpoint_every=3, keep_epochs=[5])
    assert [e for e in range(1, 11) if cfg.is_tracked(e)] == [4, 8, 10]
    assert [e for e in range(1, 11) if cfg.is_checkpointed(e)] == [3, 5, 6, 9, 10]
    listed = TrainConfig(epochs=10, track_epochs=[1, 2])
    assert [e for e in range(1, 11) if listed.is_tracked(e)] == [1, 2, 10]


def test_missing_data_directory_says_how_to_obtain_it(tmp_path) -> None:
    cfg = TrainConfig(data={"dataset": "fashion_mnist", "root": str(tmp_path / "nowhere")},
                      epochs=1)  # fmt: skip
    with pytest.raises(DatasetNotFoundError) as err:
        train(cfg)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert not (tmp_path / "nowhere").exists()


def test_piecewise_schedule_per_iteration() -> None:
    # E = 8 epochs, 4 batches: t = e + (i+1)/4; drops at t >= 2 (25 %) and t >= 3 (37.5 %)
    lrs = [lr_at("piecewise", e, i, 4, 8, 0.1) for e in range(8) for i in range(4)]
    assert lrs[:7] == [0.1] * 7  # t = 0.25 .. 1.75
    assert lrs[7] == pytest.approx(0.01)  # t = 2.0
    assert lrs[11] == pytest.approx(0.001)  # t = 3.0
    assert lrs[11:] == pytest.approx([0.001] * 21)
    assert lr_at("constant", 3, 0, 4, 8, 0.2) == 0.2
    assert lr_at("cosine", 7, 3, 4, 8, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_at("cosine", 3, 3, 4, 8, 0.1) == pytest.approx(0.05)


def test_registries_accept_new_entries() -> None:
    @register_loss("test_scaled_ce", overwrite=True)
    def scaled(scale: float = 1.0):
        return lambda logits, y: scale * torch.nn.functional.cross_entropy(logits, y)

    try:
        cfg = TrainConfig(loss="test_scaled_ce", loss_kwargs={"scale": 2.0})
        fn = make_loss(cfg.loss, **cfg.loss_kwargs)
        z, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
        assert fn(z, y) == pytest.approx(2 * torch.nn.functional.cross_entropy(z, y).item())
        with pytest.raises(ValueError, match="already registered"):
            register_loss("test_scaled_ce", scaled)
    finally:
        LOSSES.pop("test_scaled_ce", None)
    register_schedule("test_half", lambda t, e, lr: lr / 2, overwrite=True)
    try:
        assert lr_at(TrainConfig(schedule="test_half").schedule, 0, 0, 1, 1, 0.4) == 0.2
    finally:
        SCHEDULES.pop("test_half", None)


def test_trades_kl_matches_the_reference_formula() -> None:
    g = torch.Generator().manual_seed(0)
    adv, nat = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    ref = (
        torch.nn.KLDivLoss(reduction="sum")(
            torch.log_softmax(adv, dim=1), torch.softmax(nat, dim=1)
        )
        / 6
    )
    assert torch.allclose(trades_kl(adv, nat), ref)
    assert trades_kl(nat, nat).abs() < 1e-6

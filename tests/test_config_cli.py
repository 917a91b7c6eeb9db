"""YAML + dataclass configs with key=value overrides; shipped configs; CLI errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ncscope.cli import main
from ncscope.config import (
    ConfigError,
    from_dict,
    load_config,
    parse_override,
    resolve_config,
    shipped_configs,
    to_dict,
)
from ncscope.experiments.analyze import AnalyzeConfig
from ncscope.experiments.reproduce import study_config
from ncscope.experiments.studies import get_study
from ncscope.experiments.studies.su2024 import Su2024Config
from ncscope.train import TrainConfig


def command_config(name: str) -> object:
    """Load a shipped config with the command it is for (prefix train_ / analyze_ / a study)."""
    if name.startswith("train_"):
        return load_config(TrainConfig, resolve_config(name))
    if name.startswith("analyze_"):
        return load_config(AnalyzeConfig, resolve_config(name))
    return study_config(get_study("su2024"), name)


@dataclass
class Inner:
    width: int = 4
    rate: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    layers: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None


def test_yaml_overrides_and_nesting(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: y\ninner:\n  width: 8\n")
    cfg = load_config(Outer, f, ["inner.rate=2", "layers=[a, 'b*']", "limit=null"])
    assert cfg == Outer("y", ["a", "b*"], Inner(8, 2.0), None)
    assert to_dict(cfg)["inner"] == {"width": 8, "rate": 2.0}
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"nmae": "x"}, r"unknown config key\(s\) nmae; valid keys: name, layers, inner, limit"),
        ({"inner": {"widht": 1}}, r"inner\.widht; valid keys: inner\.width, inner\.rate"),
        ({"inner": {"width": "wide"}}, "inner.width: expected an integer"),
        ({"inner": {"width": 1.5}}, "expected an integer"),
        ({"layers": "a"}, "layers: expected a list"),
        ({"limit": True}, "limit"),
    ],
)
def test_bad_keys_and_types(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_bad_files_and_overrides(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["name"])


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads_with_its_command(name: str) -> None:
    cfg = command_config(name)
    if isinstance(cfg, Su2024Config):
        assert cfg.train.epochs >= 1 and cfg.runs
        if name.startswith(("cifar", "imagenette")):
            assert cfg.train.epochs == 400 and cfg.train.lr == 0.1
            assert cfg.train.eps == pytest.approx(8 / 255 if cfg.train.norm == "linf"
                                                  else 128 / 255)
            # the analysis keeps the paper's step through the threat-model table
            assert cfg.analyze.alpha is None
    else:
        assert isinstance(cfg, TrainConfig | AnalyzeConfig)


def test_train_config_from_cli_runs(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", "train_digits_at", "--set", "epochs=1",
                 "--set", "data.n_per_class=5", "--set", "track_layers=penultimate",
                 "--set", f"out_dir={out}", "--quiet"]) == 0
    assert (out / "history.csv").is_file() and (out / "model.pt").is_file()
    assert "run folder" in capsys.readouterr().out
    assert main(["configs"]) == 0
    assert "digits" in capsys.readouterr().out.split()


def test_shipped_configs_cover_the_paper_grid() -> None:
    names = set(shipped_configs())
    for ds in ("cifar10", "cifar100"):
        for model in ("vgg11_bn", "preactresnet18"):
            for norm in ("linf", "l2"):
                assert f"{ds}_{model}_{norm}" in names
    assert {"digits", "fashion_mnist", "imagenette_vgg11_bn_linf"} <= names


def test_study_config_validation_and_sections() -> None:
    with pytest.raises(ValueError, match="unknown runs"):
        Su2024Config(runs=["st", "mart"])
    with pytest.raises(ValueError, match="eps_strong"):
        Su2024Config(eps_strong=0)
    cfg = study_config(get_study("su2024"), "digits", ["train.epochs=7", "data.n_train=500"])
    assert cfg.train.epochs == 7 and cfg.data.n_train == 500
    run_cfg = cfg.train_config("trades_bnquirk", __import__("pathlib").Path("/tmp/x"))
    assert run_cfg.mode == "trades" and run_cfg.bn_quirk and run_cfg.epochs == 7
    assert run_cfg.data.n_train == 500 and run_cfg.model.name == "bn_mlp"
    with pytest.raises(ConfigError, match="valid keys"):
        study_config(get_study("su2024"), "digits", ["train.epoch=7"])


def test_cli_errors_are_one_line(capsys) -> None:
    assert main(["reproduce", "--set", "train.epochs=abc"]) == 2
    assert main(["reproduce", "--set", "nope=1"]) == 2
    assert main(["reproduce", "--config", "nonexistent"]) == 2
    assert main(["analyze"]) == 2
    assert main(["reproduce", "nostudy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("ncscope: error:") for line in err)
    assert "valid keys" in err[1] and "digits" in err[2] and "weights" in err[3]
    assert "su2024" in err[4]


def test_cli_analyze_weights(tmp_path, capsys) -> None:
    import torch

    from ncscope.models import create_model

    m = create_model("bn_mlp", dataset="digits", widths=[8])
    good = tmp_path / "m.pt"
    torch.save({"model": m.state_dict(), "epoch": 1}, good)
    out = tmp_path / "a.csv"
    args = ["analyze", "--set", "model.kwargs_unused=1"]
    assert main(args) == 2  # unknown key
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["analyze", "--set", f"weights=[{bad}]"]) == 2
    assert "not a readable weights file" in capsys.readouterr().err
    # Weights of another architecture: a clear mismatch error, nothing written.
    assert main(["analyze", "--set", f"weights=[{good}]", "--set", f"out={out}"]) == 2
    assert "does not fit the model" in capsys.readouterr().err and not out.exists()
    assert AnalyzeConfig().sources[0] == "clean"
    # The full threat model and model kwargs reach analyze: an l2 run of a custom-width model.
    assert main(["analyze", "--set", f"weights=[{good}]", "--set", "model.kwargs={widths: [8]}",
                 "--set", "norm=l2", "--set", "eps=0.5", "--set", "steps=2",
                 "--set", "sources=[clean, pgd]", "--set", "data.n_per_class=5",
                 "--set", f"out={out}", "--quiet"]) == 0
    import pandas as pd

    table = pd.read_csv(out)
    assert set(table.source) == {"clean", "pgd"} and (table.weights == str(good)).all()


def test_a_partial_section_keeps_the_configs_own_defaults(tmp_path) -> None:
    """``--set train.epochs=3`` (or ``--quick``) on a study without a YAML keeps the study's
    recipe for every other key of the section, not the section class's defaults."""
    recipe = get_study("zhou2022").config().train
    cfg = study_config(get_study("zhou2022"), None, ["train.epochs=3"])
    assert cfg.train.epochs == 3
    assert (cfg.train.lr, cfg.train.eps, cfg.train.track_subset) == (
        recipe.lr, recipe.eps, recipe.track_subset) == (0.05, 0.1, None)
    quick = study_config(get_study("yaras2022"), None, [], quick=True)
    assert quick.train.lr == get_study("yaras2022").config().train.lr
    path = tmp_path / "partial.yaml"
    path.write_text("train: {epochs: 7}\nlosses: [ce]\n")
    from_yaml = study_config(get_study("zhou2022"), str(path))
    assert (from_yaml.train.epochs, from_yaml.train.lr, from_yaml.losses) == (7, 0.05, ["ce"])

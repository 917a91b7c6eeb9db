"""YAML + dataclass configs with key=value overrides; shipped configs; CLI errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ncscope.cli import AnalyzeConfig, main, resolve_config, shipped_configs
from ncscope.config import ConfigError, from_dict, load_config, parse_override, to_dict
from ncscope.experiments.reproduce import ReproduceConfig


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
def test_every_shipped_config_loads(name: str) -> None:
    cfg = load_config(ReproduceConfig, resolve_config(name))
    assert cfg.epochs >= 1 and cfg.runs
    if name.startswith(("cifar", "imagenette")):
        assert cfg.epochs == 400 and cfg.lr == 0.1
        assert cfg.eps == pytest.approx(8 / 255 if cfg.norm == "linf" else 128 / 255)


def test_shipped_configs_cover_the_paper_grid() -> None:
    names = set(shipped_configs())
    for ds in ("cifar10", "cifar100"):
        for model in ("vgg11_bn", "preactresnet18"):
            for norm in ("linf", "l2"):
                assert f"{ds}_{model}_{norm}" in names
    assert {"digits", "fashion_mnist", "imagenette_vgg11_bn_linf"} <= names


def test_reproduce_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown runs"):
        ReproduceConfig(runs=["st", "mart"])
    with pytest.raises(ValueError, match="eps"):
        ReproduceConfig(eps=0)
    assert ReproduceConfig(norm="l2", eps=0.5).step_size(0.5) == pytest.approx(0.0625)


def test_cli_errors_are_one_line(capsys) -> None:
    assert main(["reproduce", "--set", "epochs=abc"]) == 2
    assert main(["reproduce", "--set", "nope=1"]) == 2
    assert main(["reproduce", "--config", "nonexistent"]) == 2
    assert main(["analyze"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("ncscope: error:") for line in err)
    assert "valid keys" in err[1] and "digits" in err[2] and "weights" in err[3]


def test_cli_analyze_weights(tmp_path, capsys) -> None:
    import torch

    from ncscope.models import create_model

    m = create_model("bn_mlp", dataset="digits", widths=[8])
    good = tmp_path / "m.pt"
    torch.save({"model": m.state_dict(), "epoch": 1}, good)
    out = tmp_path / "a.csv"
    args = ["analyze", "--set", "model_kwargs_unused=1"]
    assert main(args) == 2  # unknown key
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["analyze", "--set", f"weights=[{bad}]"]) == 2
    assert "not a readable weights file" in capsys.readouterr().err
    # Weights of another architecture: a clear mismatch error, nothing written.
    assert main(["analyze", "--set", f"weights=[{good}]", "--set", f"out={out}"]) == 2
    assert "does not fit the model" in capsys.readouterr().err and not out.exists()
    assert AnalyzeConfig().sources[0] == "clean"

"""The engine demo and the `layers` command run end to end on the embedded digits data."""

from __future__ import annotations

import pandas as pd

from ncscope.cli import main


def test_demo_writes_per_layer_table(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2", "--quiet"]) == 0
    df = pd.read_csv(tmp_path / "engine_demo.csv")
    assert set(df["source"]) == {"clean train", "gaussian sigma=0.1 train", "clean test"}
    assert list(df["layer"].unique())[-1] == "classifier:in"
    assert df["nc1"].gt(0).all() and df["ncc_accuracy"].between(0, 1).all()
    assert "engine_demo.csv" in capsys.readouterr().out


def test_layers_command_and_unknown_model(capsys) -> None:
    assert main(["layers", "bn_mlp"]) == 0
    out = capsys.readouterr().out
    assert "features.block1" in out and "[default tap]" in out
    assert main(["layers", "resnet999"]) == 2
    assert "valid names" in capsys.readouterr().err

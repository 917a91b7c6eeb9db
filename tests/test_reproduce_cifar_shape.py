"""The paper's CIFAR pipeline (VGG11-BN, 3×32×32, all 8 taps) by config, on synthetic tensors.

CIFAR cannot be downloaded here: the same config path runs on synthetic class-conditional images
of CIFAR's shape, so every layer (up to 64·16·16 = 16 384 flattened dimensions) goes through
training, tracking, analysis and the report.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ncscope.cli import main


@pytest.mark.slow
def test_cifar_config_on_synthetic_cifar_shaped_data(tmp_path) -> None:
    out = tmp_path / "cifar"
    code = main([
        "reproduce", "su2024", "--config", "cifar10_vgg11_bn_linf",
        "--set", "data.dataset=synthetic",
        "--set", "data.kwargs={shape: [3, 32, 32], size: 3, num_classes: 10}",
        "--set", "runs=[st, at]", "--set", "train.epochs=1", "--set", "train.steps=1",
        "--set", "train.batch_size=16", "--set", "workers=1", "--set", "threads=1",
        "--set", "train.device=cpu", "--set", "analyze.device=cpu",
        "--set", "points_per_class=1", "--set", "analyze.batch_size=32",
        "--set", "analyze.steps=1", "--set", "autoattack=off", "--out", str(out), "--quiet",
    ])
    assert code == 0
    out = out / "su2024"
    an = pd.read_csv(out / "analysis.csv")
    layers = list(dict.fromkeys(an[an.run == "st"].sort_values("depth").layer))
    assert layers[0] == "features.pool1" and layers[-1] == "classifier:in" and len(layers) == 9
    dims = an[(an.metric == "dim") & (an.run == "st")].groupby("layer").value.first()
    assert dims["features.pool1"] == 64 * 16 * 16 and dims["classifier:in"] == 512
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == [f"T{i}" for i in range(1, 10)]
    assert (out.parent / "report.html").is_file()

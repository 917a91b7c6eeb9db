"""ncscope.analyze on a user model built from plain torch modules, and on a built-in model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torch import nn

import ncscope
from _attack_helpers import plain_digits_mlp
from ncscope.attacks import PGD, RandomSign
from ncscope.data import load_dataset
from ncscope.experiments.analyze import LONG_COLUMNS, wide


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, object, object]:
    model, train = plain_digits_mlp()
    return model, train, load_dataset("digits", split="test", n_per_class=5)


def test_analyze_user_model_long_table(digits_model) -> None:
    model, train, test = digits_model
    df = ncscope.analyze(model, train, layers=["hidden", "pen", "classifier:in"],
                         test_data=test, eps=0.1, progress=False)
    assert list(df.columns)[-len(LONG_COLUMNS):] == list(LONG_COLUMNS)
    assert set(df["source"]) == {"clean", "pgd", "pgd_targeted", "gaussian", "random_sign"}
    w = wide(df)
    assert {"nc1", "nc4", "ncc_accuracy", "leap_pred", "simplex_angle"} <= set(w.columns)
    clean = w[(w.source == "clean") & (w.split == "train") & (w.reference == "own")]
    assert list(clean["layer"]) == ["hidden", "pen", "classifier:in"]
    # The classifier (W, b) is attached to the penultimate layer only.
    assert clean["nc3"].notna().tolist() == [False, False, True]
    # Untargeted PGD measured around the clean means: NCC accuracy cannot beat the clean one.
    pgd = w[(w.source == "pgd") & (w.split == "train") & (w.reference == "clean")]
    assert (pgd["ncc_accuracy"].to_numpy() <= clean["ncc_accuracy"].to_numpy() + 1e-9).all()
    # Targeted source: own view grouped by target, clean view both ways; per-class angles.
    tg = df[df.source == "pgd_targeted"]
    assert set(tg[tg.reference == "own"]["group"]) == {"target"}
    assert set(tg[tg.reference == "clean"]["group"]) == {"label", "target"}
    per_class = df[df["class"].notna()]
    assert set(per_class["metric"]) >= {"class_angle", "class_distance"}
    assert df.attrs["timings"]["attack:pgd"] > 0
    # The network's robust accuracy is reported on the test split.
    assert w[(w.source == "pgd") & (w.split == "test")]["net_accuracy"].notna().all()


def test_analyze_custom_sources_and_errors(digits_model) -> None:
    model, train, _ = digits_model
    df = ncscope.analyze(model, train, layers=["classifier:in"], progress=False,
                         sources={"clean": None, "pgd_l2": PGD(model, eps=1.0, alpha=0.25,
                                                               norm="l2"),
                                  "sign": RandomSign(0.05, seed=1)})
    assert set(df["source"]) == {"clean", "pgd_l2", "sign"}
    with pytest.raises(ValueError, match="unknown sources"):
        ncscope.analyze(model, train, sources=["clean", "cw"], progress=False)
    with pytest.raises(ValueError, match="no layer named"):
        ncscope.analyze(model, train, layers=["hiden"], progress=False)
    with pytest.raises(TypeError, match="data must be"):
        ncscope.analyze(model, [1, 2, 3], progress=False)


def test_default_layers_on_builtin_model_drop_duplicate_penultimate() -> None:
    from ncscope.models import create_model

    model = create_model("bn_mlp", dataset="digits", widths=(16, 8)).eval()
    train = load_dataset("digits", n_per_class=5)
    df = ncscope.analyze(model, train, sources=["clean"], progress=False)
    # block2's output is the classifier input: measured once, as "classifier:in".
    assert list(pd.unique(df["layer"])) == ["features.block1", "classifier:in"]


def test_analyze_fast_attacks_matches_exact() -> None:
    """``fast_attacks=True`` (BatchNorm folded for the PGD sources) gives the same table as the
    exact attacks on a trained BN-MLP, column by column: accuracies within one sample, NC1 and
    angles within 1e-3 relative (a flipped gradient sign may move a pixel by one step)."""
    from ncscope.train import TrainConfig, train

    res = train(TrainConfig(data={"dataset": "digits", "n_per_class": 30},
                            model={"kwargs": {"widths": [64, 32]}}, epochs=30, lr=0.05,
                            track_every=30, track_test_attack=False, progress=False))
    model = res.model.eval()
    data = load_dataset("digits", n_per_class=30)
    test = load_dataset("digits", split="test", n_per_class=10)
    kw = dict(sources=["clean", "pgd", "pgd_targeted"], eps=0.1, test_data=test,
              progress=False)
    exact = wide(ncscope.analyze(model, data, **kw))
    fast = wide(ncscope.analyze(model, data, fast_attacks=True, **kw))
    assert exact[["source", "split", "reference", "group"]].equals(
        fast[["source", "split", "reference", "group"]])
    assert (exact.net_accuracy[exact.split == "test"] > 0.8).any()  # a model that learned
    for col in ("net_accuracy", "ncc_accuracy", "leap_pred", "leap_true"):
        n = exact.n_measured.to_numpy(float)
        assert (abs(exact[col] - fast[col]).to_numpy(float) <= 1 / n + 1e-12).all(), col
    for col in ("nc1", "trace_ratio", "simplex_angle"):
        a, b = exact[col].to_numpy(float), fast[col].to_numpy(float)
        ok = np.isnan(a) & np.isnan(b) | (abs(a - b) <= 1e-3 * abs(a))
        assert ok.all(), col

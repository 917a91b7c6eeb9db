"""Results back and plotted: analyze carries its threat model as columns, load_run reads every
run kind back as typed tables, and ncscope.plot draws them from any model."""

from __future__ import annotations

import functools

import matplotlib
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import ncscope
from ncscope import plot
from ncscope.data import load_dataset
from ncscope.train import TrainConfig, train

matplotlib.use("Agg")


@functools.cache
def _model_and_data() -> tuple[nn.Module, object, object]:
    torch.manual_seed(0)
    data = load_dataset("digits", n_per_class=10)
    test = load_dataset("digits", split="test", n_per_class=4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.tensors
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), data, test


def test_analyze_carries_threat_model_columns_and_sweeps_concatenate() -> None:
    model, data, test = _model_and_data()
    frames = [ncscope.analyze(model, data, classifier="3", test_data=test, eps=eps,
                              steps=2, progress=False) for eps in (0.05, 0.1)]
    both = pd.concat(frames, ignore_index=True)
    assert list(both.columns[:4]) == ["eps", "norm", "alpha", "steps"]
    pgd = both[both.source == "pgd"]
    assert sorted(pgd.eps.unique()) == [0.05, 0.1]
    assert set(pgd.alpha.unique()) == {0.05 / 4, 0.1 / 4} and set(pgd.steps) == {2}
    assert both[both.source == "clean"].eps.isna().all()  # the clean data has no radius
    assert set(both[both.source == "gaussian"].eps.unique()) == {0.05, 0.1}  # its sigma
    # one pivot of both radii: the NC1 of PGD grows with the radius at the last layer
    w = ncscope.wide(both)
    last = w[(w.source == "pgd") & (w.split == "train") & (w.reference == "own")
             & (w.depth == w.depth.max())].sort_values("eps")
    assert last.nc1.is_monotonic_increasing


def test_load_run_reads_analyze_train_and_reproduce_runs(tmp_path) -> None:
    model, data, test = _model_and_data()
    csv = tmp_path / "a.csv"
    df = ncscope.analyze(model, data, classifier="3", eps=0.1, steps=2, progress=False)
    df.to_csv(csv, index=False)
    back = ncscope.load_run(csv)["table"]
    pd.testing.assert_frame_equal(back.reset_index(drop=True), df.reset_index(drop=True),
                                  check_exact=False, rtol=1e-12)
    run = tmp_path / "train"
    train(TrainConfig(data={"dataset": "digits", "n_per_class": 5}, model={"kwargs":
                      {"widths": [16]}}, epochs=2, lr=0.05, out_dir=str(run),
                      track_test_attack=False, progress=False))
    tables = ncscope.load_run(run)
    assert set(tables) == {"history", "timings", "config"}
    assert tables["history"]["depth"].dtype == "Int64" and len(tables["timings"]) == 2
    assert tables["config"]["epochs"] == 2
    with pytest.raises(FileNotFoundError, match="holds no ncscope run"):
        ncscope.load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ncscope.load_run(tmp_path / "nope")


def test_plots_from_any_model_return_figures(tmp_path) -> None:
    model, data, test = _model_and_data()
    df = ncscope.analyze(model, data, classifier="3", test_data=test, eps=0.1, steps=2,
                         progress=False)
    fig = plot.layerwise(df, "nc1")
    assert isinstance(fig, Figure)
    lines = fig.axes[0].get_lines()
    assert {ln.get_label() for ln in lines} == set(df.source)
    assert len(lines[0].get_xdata()) == df.layer.nunique()
    fig = plot.angles(df)
    assert len(fig.axes[0].patches) == 10 * 4  # classes × non-clean sources
    res = train(TrainConfig(data={"dataset": "digits", "n_per_class": 5},
                            model={"kwargs": {"widths": [16]}}, epochs=3, lr=0.05,
                            track_test_attack=False, progress=False))
    fig = plot.nc_vs_epoch(res.history, ["nc1", "nc4", "net_accuracy"])
    assert len(fig.axes) == 3 and len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    points = pd.DataFrame([dict(panel="p", kind="clean", label=0, x=0.0, y=0.0),
                           dict(panel="p", kind="mean", label=0, x=1.0, y=1.0),
                           dict(panel="p", kind="perturbed", label=0, x=2.0, y=2.0, x0=0.0,
                                y0=0.0)])
    assert isinstance(plot.leap_2d(points), Figure)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="long schema"):
        plot.layerwise(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="no rows"):
        plot.layerwise(df, "no_such_metric")

"""The one measurement sweep: values against an in-memory recomputation, the declared schema,
and the metric registry reaching every table with one registration."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import torch
from torch import nn

import ncscope
from ncscope.collapse import (
    METRICS,
    NCStats,
    Source,
    nc_metrics,
    register_metric,
    sweep,
    unregister_metric,
)
from ncscope.collapse import schema as schema_mod
from ncscope.collapse.choose import head_of
from ncscope.data import load_dataset


@functools.cache
def _trained() -> tuple[nn.Module, object, object]:
    torch.manual_seed(0)
    train = load_dataset("digits", n_per_class=15)
    test = load_dataset("digits", split="test", n_per_class=4)
    model = nn.Sequential()
    model.add_module("flat", nn.Flatten())
    model.add_module("hidden", nn.Sequential(nn.Linear(64, 24), nn.ReLU()))
    model.add_module("classifier", nn.Linear(24, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = train.tensors
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), train, test


def _shift(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A deterministic perturbation: brighten by a label-independent pattern."""
    return (x + 0.2 * torch.sin(torch.arange(x[0].numel()).view_as(x[0]))).clamp(0, 1)


def _targeted(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (x * 0.7).clamp(0, 1), (y + 1) % 10


def _features(model: nn.Module, x: torch.Tensor, batch: int = 37,
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features and logits of ``x``, computed in the sweep's batches (same float32 rounding)."""
    feats: dict[str, list[torch.Tensor]] = {}
    logits = []
    with ncscope.FeatureTaps(model, ["hidden", "classifier:in"]) as taps, torch.no_grad():
        for i in range(0, len(x), batch):
            logits.append(model(x[i:i + batch]))
            for k, v in taps.features.items():
                feats.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(logits)


def _get(df: pd.DataFrame, **keys: object) -> dict[str, float]:
    sel = df[df["class"].isna()]
    for k, v in keys.items():
        sel = sel[sel[k] == v]
    return dict(zip(sel.metric, sel.value, strict=True))


def test_sweep_matches_in_memory_recomputation() -> None:
    """Every view of the streamed, spooled, batch-by-batch sweep equals ``nc_metrics`` on the
    whole feature matrices in memory (own means, clean means, by target, test split)."""
    model, train, test = _trained()
    layers = ["hidden", "classifier:in"]
    df = sweep(model, train, [Source("clean"), Source("shift", _shift),
                              Source("tgt", _targeted, targeted=True)],
               layers=layers, num_classes=10, classifiers=head_of(model, layers),
               test_data=test, batch_size=37)
    x, y = train.tensors
    xt, yt = test.tensors
    clean_f, _ = _features(model, x)
    checks = 0
    for layer in layers:
        w, b = head_of(model, layers).get(layer, (None, None))
        kw = dict(weight=w, bias=b, num_classes=10)
        # clean, own means
        want = nc_metrics(clean_f[layer], y, **kw)
        got = _get(df, layer=layer, source="clean", split="train", reference="own")
        # shift around its own means and around the clean means
        fs, ls = _features(model, torch.cat([_shift(x[i:i + 37], None)
                                             for i in range(0, len(x), 37)]))
        want_own = nc_metrics(fs[layer], y, predictions=ls.argmax(1), **kw)
        want_clean = nc_metrics(fs[layer], y, ref_features=clean_f[layer], ref_labels=y,
                                predictions=ls.argmax(1), **kw)
        xt_t, tgt = _targeted(x, y)
        ft, lt = _features(model, xt_t)
        want_by_target = nc_metrics(ft[layer], tgt, ref_features=clean_f[layer], ref_labels=y,
                                    predictions=lt.argmax(1), targets=tgt, **kw)
        want_tgt_own = nc_metrics(ft[layer], tgt, predictions=lt.argmax(1), **kw)
        fte, lte = _features(model, xt)
        want_test = nc_metrics(fte[layer], yt, ref_features=clean_f[layer], ref_labels=y,
                               predictions=lte.argmax(1), **kw)
        pairs = [
            (want, got),
            (want_own, _get(df, layer=layer, source="shift", split="train", reference="own")),
            (want_clean, _get(df, layer=layer, source="shift", split="train",
                              reference="clean")),
            (want_by_target, _get(df, layer=layer, source="tgt", split="train",
                                  reference="clean", group="target")),
            (want_tgt_own, _get(df, layer=layer, source="tgt", split="train",
                                reference="own", group="target")),
            (want_test, _get(df, layer=layer, source="clean", split="test")),
        ]
        for expected, measured in pairs:
            for metric, value in measured.items():
                if metric == "loss" or expected.get(metric) is None:
                    continue
                assert value == pytest.approx(expected[metric], rel=1e-10, abs=1e-12), metric
                checks += 1
    assert checks > 200
    # Own views carry no simplex similarity (identically zero there); clean views do.
    own = _get(df, layer="hidden", source="shift", reference="own")
    assert "simplex_angle" not in own and "simplex_angle" in _get(
        df, layer="hidden", source="shift", reference="clean")


def test_sweep_loss_and_accuracy_from_logits() -> None:
    model, train, _ = _trained()
    df = sweep(model, train, None, layers=["classifier:in"], num_classes=10, batch_size=50)
    x, y = train.tensors
    with torch.no_grad():
        logits = model(x)
    got = _get(df, source="clean", reference="own")
    assert got["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-6)
    assert got["net_accuracy"] == pytest.approx(float((logits.argmax(1) == y).double().mean()))


def test_sweep_rows_follow_the_declared_schema() -> None:
    model, train, test = _trained()
    df = ncscope.analyze(model, train, test_data=test, eps=0.05, progress=False)
    # analyze: the threat-model context columns, then the measurement columns
    assert list(df.columns) == ["eps", "norm", "alpha", "steps", *schema_mod.NAMES]
    for col in schema_mod.COLUMNS:
        if col.values:
            assert set(df[col.name].dropna()) <= set(col.values)
    assert set(df["metric"]) <= set(METRICS)
    with pytest.raises(ValueError, match="not in the declared schema"):
        schema_mod.typed(df.assign(bogus=1))


def test_schema_doc_is_current() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
    assert schema_mod.markdown() in doc.read_text(), "regenerate docs/schema.md"


def test_registered_metric_reaches_every_table() -> None:
    """One registration: NCStats.compute, the sweep, analyze and the training history."""

    @register_metric("toy_within_per_dim", description="Tr Σ_W / d (test metric)",
                     citation="test")
    def toy(view):  # noqa: ANN001, ANN202
        return view.trace_within / view.reference.dim

    try:
        model, train, _ = _trained()
        x, y = train.tensors
        f, _ = _features(model, x)
        stats = NCStats(10).update(f["hidden"], y).update_measured(f["hidden"], y)
        res = stats.compute()
        assert res["toy_within_per_dim"] == pytest.approx(res["trace_within"] / 24)
        df = ncscope.analyze(model, train, sources=["clean", "gaussian"], eps=0.05,
                             progress=False)
        # 2 layers × (clean: own + clean views, gaussian: own + clean views)
        assert (df.metric == "toy_within_per_dim").sum() == 2 * 4
        from ncscope.train import TrainConfig
        from ncscope.train import train as train_fn

        cfg = TrainConfig(data={"dataset": "digits", "n_per_class": 10}, epochs=1, lr=0.05,
                          track_test=False, track_test_attack=False, progress=False)
        hist = train_fn(cfg).history
        assert "toy_within_per_dim" in set(hist["metric"])
    finally:
        unregister_metric("toy_within_per_dim")
    assert "toy_within_per_dim" not in METRICS
    with pytest.raises(ValueError, match="already registered"):
        register_metric("nc1", description="x", citation="x")(lambda v: 0.0)

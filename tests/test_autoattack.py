"""AutoAttack (Croce & Hein, ICML 2020) as a perturbation source and the robust-accuracy reference.

On a small MLP trained on digits, at ℓ∞ ε = 0.1: AutoAttack's robust accuracy is at most PGD-10's
and within 5 points of it, agrees with torchattacks 3.5.1's own ``AutoAttack``, and ``analyze``
measures NC on its adversarial features. The tests that run AutoAttack skip when the optional
``pyautoattack`` package is not installed; the su2024 accuracy-table rule does not need it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import ncscope
import ncscope.experiments.robust as robust_mod
from _attack_helpers import plain_digits_mlp
from ncscope.attacks import PGD, AttackSanityWarning, AutoAttackSource
from ncscope.data import load_dataset, stratified_indices
from ncscope.experiments.analyze import AnalyzeSettings, wide
from ncscope.experiments.robust import consistency_flag, robust_reference
from ncscope.experiments.studies.su2024.figures import _accuracy_table

EPS = 0.1
N_TEST = 300


@pytest.fixture(scope="module")
def aa_pkg():
    return pytest.importorskip(
        "pyautoattack", reason="AutoAttack needs the optional extra: pip install "
        "'ncscope[autoattack]'")


@pytest.fixture(scope="module")
def digits_model(aa_pkg):
    model, train = plain_digits_mlp()
    xt, yt = load_dataset("digits", split="test").tensors
    return model, train, (xt[:N_TEST], yt[:N_TEST])


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_autoattack_below_pgd_and_matches_torchattacks(digits_model) -> None:
    import torchattacks

    model, _, (x, y) = digits_model
    params = [p.detach().clone() for p in model.parameters()]
    rng = torch.random.get_rng_state()
    src = AutoAttackSource(model, EPS, seed=0)
    t0 = time.perf_counter()
    x_aa = src(x, y)
    t_aa = time.perf_counter() - t0
    rep = src.last_report
    # Inside the ball and the box, detached, same shape and dtype; model and global RNG intact.
    assert x_aa.shape == x.shape and x_aa.dtype == x.dtype and not x_aa.requires_grad
    assert float((x_aa - x).abs().max()) <= EPS + 1e-6
    assert float(x_aa.min()) >= 0.0 and float(x_aa.max()) <= 1.0
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters(), strict=True))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not model.training

    aa = _acc(model, x_aa, y)
    assert rep.robust_accuracy == pytest.approx(aa)
    assert rep.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert list(rep.robust_after) == rep.attacks
    assert rep.robust_after["square"] == pytest.approx(aa)
    assert rep.clean_accuracy == pytest.approx(_acc(model, x, y))
    assert rep.forwards > 0 and rep.backwards > 0 and rep.n_attacked == N_TEST
    json.dumps(src.settings())
    json.dumps(rep.to_dict())
    assert src.settings()["name"] == "AutoAttack"
    # A fixed seed gives the same images.
    assert torch.equal(src(x, y), x_aa)

    pgd = _acc(model, PGD(model, eps=EPS, seed=0)(x, y), y)
    t0 = time.perf_counter()
    ta = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10,
                                 seed=0)
    ta_acc = _acc(model, ta(x, y), y)
    t_ta = time.perf_counter() - t0
    print(f"\nrobust accuracy at l_inf eps={EPS} on {N_TEST} digits test images "
          f"(clean {rep.clean_accuracy:.4f}): PGD-10 {pgd:.4f}, AutoAttack (pyautoattack) "
          f"{aa:.4f} [{t_aa:.1f} s; after each: {rep.robust_after}], torchattacks AutoAttack "
          f"{ta_acc:.4f} [{t_ta:.1f} s]")
    assert aa <= pgd
    assert pgd - aa <= 0.05  # the report's gradient-masking threshold is not crossed
    assert abs(aa - ta_acc) <= 0.02


def test_autoattack_l2_n_ex_and_errors(digits_model) -> None:
    model, _, (x, y) = digits_model
    src = AutoAttackSource(model, 1.0, norm="l2", n_ex=50)
    out = src(x[:80], y[:80])
    assert torch.equal(out[50:], x[50:80])
    assert float((out - x[:80]).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5
    assert src.last_report.n_attacked == 50
    assert src.last_report.robust_accuracy == pytest.approx(_acc(model, out[:50], y[:50]))
    custom = AutoAttackSource(model, EPS, version="custom", attacks=["APGD_CE"], n_ex=40)
    custom(x[:40], y[:40])
    assert custom.last_report.attacks == ["apgd-ce"] and custom.settings()["attacks"] == [
        "apgd-ce"]
    # AutoAttack's runtime checks become sanity warnings: here, softmax outputs, not logits.
    probs = AutoAttackSource(nn.Sequential(model, nn.Softmax(dim=1)), EPS, version="custom",
                             attacks=["apgd-ce"], n_ex=20)
    with pytest.warns(AttackSanityWarning, match="probability distribution"):
        probs(x[:20], y[:20])
    assert any("logits" in w for w in probs.last_report.warnings)
    with pytest.raises(ValueError, match="version"):
        AutoAttackSource(model, EPS, version="fast")
    with pytest.raises(ValueError, match="custom"):
        AutoAttackSource(model, EPS, attacks=["apgd-ce"])
    with pytest.raises(ValueError, match="8/255"):
        AutoAttackSource(model, 8)
    with pytest.raises(TypeError, match="labels are required"):
        src(x[:4])


def test_autoattack_missing_package_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'ncscope\[autoattack\]'") as err:
        AutoAttackSource(nn.Linear(4, 2), EPS)
    assert "\n" not in str(err.value)


def test_analyze_autoattack_source(digits_model) -> None:
    model, train, (x, y) = digits_model
    assert "autoattack" not in AnalyzeSettings().sources  # opt-in
    AnalyzeSettings(sources=["clean", "autoattack"])
    df = ncscope.analyze(model, train, layers=["pen", "classifier:in"], sources=["clean",
                         "autoattack"], test_data=(x[:100], y[:100]), eps=EPS, progress=False)
    assert set(df.source) == {"clean", "autoattack"}
    aa = df[df.source == "autoattack"]
    assert set(aa.eps.dropna()) == {EPS} and set(aa.norm) == {"linf"}
    w = wide(df)
    own = w[(w.source == "autoattack") & (w.split == "train") & (w.reference == "own")]
    assert own["nc1"].notna().all() and list(own.layer) == ["pen", "classifier:in"]
    test = w[(w.source == "autoattack") & (w.split == "test")]
    clean = w[(w.source == "clean") & (w.split == "test")]
    assert (test.net_accuracy.to_numpy() < clean.net_accuracy.to_numpy()).all()
    assert df.attrs["sources"]["autoattack"]["name"] == "AutoAttack"


def _analysis(pgd: dict[str, float], aa: dict[str, float] | None) -> pd.DataFrame:
    rows = []
    for run, p in pgd.items():
        accs = {"clean": 0.9, "pgd": p}
        if aa is not None and run in aa:
            accs["autoattack"] = aa[run]
        for source, v in accs.items():
            for metric in ("net_accuracy", "ncc_accuracy"):
                rows.append(dict(run=run, eps_name="main", eps=EPS, layer="pen", depth=2,
                                 source=source, split="test", reference="clean", group="label",
                                 metric=metric, value=v))
    df = pd.DataFrame(rows)
    df["class"] = pd.array([pd.NA] * len(df), dtype="Int64")
    return df


def test_su2024_accuracy_table_autoattack_column_and_flags() -> None:
    plain = _accuracy_table(_analysis({"st": 0.1}, None))
    assert "AutoAttack test acc" not in plain and "AutoAttack check" not in plain
    t = _accuracy_table(_analysis({"st": 0.02, "at": 0.50, "trades": 0.50, "masked": 0.50,
                                   "none": 0.3},
                                  {"st": 0.0, "at": 0.47, "trades": 0.51, "masked": 0.44}))
    cols = list(t.columns)
    assert cols.index("AutoAttack test acc") == cols.index("PGD test acc") + 1
    flags = dict(zip(t.run, t["AutoAttack check"], strict=True))
    assert flags["st"] == flags["at"] == flags["none"] == ""
    assert "sanity failure" in flags["trades"]
    assert "gradient masking" in flags["masked"]
    assert np.isnan(t.set_index("run").loc["none", "AutoAttack test acc"])


@pytest.mark.parametrize(("pgd", "aa", "flag"), [
    (0.50, 0.47, ""), (0.50, 0.50, ""), (0.50, 0.51, "sanity failure"),
    (0.50, 0.44, "gradient masking"), (0.50, float("nan"), ""), (float("nan"), 0.4, ""),
])
def test_consistency_flag(pgd: float, aa: float, flag: str) -> None:
    got = consistency_flag(pgd, aa)
    assert (flag in got) if flag else got == ""


def test_robust_reference_pgd_on_the_same_stratified_images(monkeypatch) -> None:
    model, _ = plain_digits_mlp()
    test = load_dataset("digits", split="test")
    out = robust_reference(model, test, eps=EPS, n=100, seed=3, autoattack="off")
    idx = torch.as_tensor(stratified_indices(test.tensors[1].numpy(), 100, seed=3))
    x, y = test.tensors[0][idx], test.tensors[1][idx]
    pgd = PGD(model, eps=EPS, alpha=EPS / 4, steps=10, seed=3)
    assert out["n"] == 100 and np.bincount(y.numpy()).min() >= 9
    assert out["clean"] == pytest.approx(_acc(model, x, y), abs=1e-6)
    assert out["pgd"] == pytest.approx(_acc(model, pgd(x, y), y), abs=1e-6)
    assert np.isnan(out["autoattack"]) and out["note"] == "AutoAttack off"
    assert out["check"] == ""
    monkeypatch.setattr(robust_mod, "autoattack_installed", lambda: False)
    missing = robust_reference(model, test, eps=EPS, n=50, autoattack="auto")
    assert "pip install 'ncscope[autoattack]'" in missing["note"]
    with pytest.raises(ImportError, match="autoattack='on'") as err:
        robust_reference(model, test, eps=EPS, n=50, autoattack="on")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="autoattack"):
        robust_reference(model, test, eps=EPS, autoattack="maybe")


def test_robust_reference_autoattack_at_most_pgd(digits_model) -> None:
    model, _, (x, y) = digits_model
    out = robust_reference(model, (x, y), eps=EPS, n=None, autoattack="on")
    assert out["n"] == N_TEST
    assert out["autoattack"] <= out["pgd"] <= out["clean"]
    assert list(out["autoattack_after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert out["autoattack_after"]["square"] == out["autoattack"]

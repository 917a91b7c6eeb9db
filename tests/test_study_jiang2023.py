"""Study jiang2023: the quick profile end to end, and the claim rules G1–G5 on hand-made tables
(each where it holds, where it does not, and with a number missing)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ncscope.cli import main
from ncscope.experiments.studies.jiang2023 import Jiang2023Config
from ncscope.experiments.studies.jiang2023.claims import g1, g2, g3, g4, g5, judge


def test_quick_profile_end_to_end(tmp_path) -> None:
    code = main(["reproduce", "jiang2023", "--quick", "--out", str(tmp_path), "--quiet",
                 "--set", "data.n_per_class=20"])
    assert code == 0
    out = tmp_path / "jiang2023"
    codes = pd.read_csv(out / "codes.csv")
    assert [(int(k), int(d)) for k, d in zip(codes["K"], codes.d, strict=True)] == [
        (6, 2), (12, 3), (10, 3)]
    assert abs(codes.ufm_gnc2.iloc[0] - 0.5) < 5e-3
    assert (codes.softmax_margin >= codes.tammes_margin - 1e-9).all()
    nets = pd.read_csv(out / "networks.csv")
    assert list(nets.run) == ["st", "at"] and nets["clean gnc3"].notna().all()
    an = pd.read_csv(out / "analysis.csv")
    assert {"gnc1", "gnc2", "gnc3", "rho", "leap_pred_when_wrong"} <= set(an.metric)
    feats = pd.read_csv(out / "features.csv")
    assert list(feats.columns) == ["label", "h0", "h1", "h2"]
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["G1", "G2", "G3", "G4", "G5"]
    for fig in ("ufm_gnc2", "networks_gnc", "bottleneck_3d"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert "jiang2023" in (tmp_path / "report.html").read_text()


def _codes(ufm6=0.5, ufm30=0.21, soft30=0.2184, tam30=0.2184, soft10=0.60, tam10=0.59):
    return pd.DataFrame([
        {"K": 6, "d": 2, "ufm_gnc2": ufm6, "softmax_margin": 0.5, "tammes_margin": 0.5},
        {"K": 30, "d": 3, "ufm_gnc2": ufm30, "softmax_margin": soft30, "tammes_margin": tam30},
        {"K": 10, "d": 3, "network_reference": True, "softmax_margin": soft10,
         "tammes_margin": tam10},
    ])


@pytest.mark.parametrize(("ufm6", "holds"), [(0.5, True), (0.4951, True), (0.494, False),
                                             (0.506, False), (float("nan"), None)])
def test_g1_rule(ufm6: float, holds: bool | None) -> None:
    assert g1(_codes(ufm6=ufm6)).holds is holds


@pytest.mark.parametrize(("ufm30", "holds"), [(0.2184, True), (0.21, True), (0.2070, False),
                                              (float("nan"), None)])
def test_g2_rule(ufm30: float, holds: bool | None) -> None:
    c = g2(_codes(ufm30=ufm30))
    assert c.holds is holds
    assert "ufm_gnc2_10x3" not in c.numbers  # the network's reference code is not a UFM size


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"soft10": 0.59}, False), ({"soft10": 0.59005}, False),
    ({"soft10": 0.5902}, True),
])
def test_g3_rule(kwargs: dict, holds: bool) -> None:
    assert g3(_codes(**kwargs)).holds is holds


def _nets(gnc2=0.5, gnc3=0.05):
    return pd.DataFrame([{"run": "st", "mode": "st", "clean gnc1": 0.1, "clean gnc2": gnc2,
                          "clean gnc3": gnc3},
                         {"run": "at", "mode": "at", "clean gnc1": 0.2, "clean gnc2": 0.1,
                          "clean gnc3": 0.5}])


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"gnc2": 0.47}, False), ({"gnc3": 0.11}, False),
    ({"gnc2": float("nan")}, None),
])
def test_g4_rule(kwargs: dict, holds: bool | None) -> None:
    c = g4(_codes(), _nets(**kwargs))  # code margin 0.60: the bound is 0.48
    assert c.holds is holds
    assert c.numbers["code_margin"] == 0.60


def _analysis(leap_st=0.95):
    rows = []
    for run, leap in (("st", leap_st), ("at", 0.4)):
        for split, ref in (("test", "clean"), ("train", "own")):  # decoys: not the rule's view
            rows.append({"run": run, "source": "pgd", "split": split, "reference": ref,
                         "group": "label", "metric": "leap_pred_when_wrong", "value": 0.0,
                         "class": None})
        for metric, value in (("leap_pred_when_wrong", leap), ("net_accuracy", 0.3)):
            rows.append({"run": run, "source": "pgd", "split": "train", "reference": "clean",
                         "group": "label", "metric": metric, "value": value, "class": None})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("leap", "holds"), [(0.95, True), (0.9, True), (0.89, False)])
def test_g5_rule(leap: float, holds: bool) -> None:
    c = g5(_analysis(leap))
    assert c.holds is holds and c.numbers["at_leap_pred_when_wrong"] == 0.4


def test_judge_and_config_errors() -> None:
    assert [c.id for c in judge(_codes(), _nets(), _analysis())] == ["G1", "G2", "G3", "G4", "G5"]
    for bad, match in (({"sizes": [[6]]}, "sizes entry"), ({"sizes": [[1, 2]]}, "K >= 2"),
                       ({"modes": ["trades"]}, "modes"), ({"ufm_iterations": 0}, "ufm_iterations")):
        with pytest.raises((ValueError, TypeError), match=match) as err:
            Jiang2023Config(**bad)
        assert "\n" not in str(err.value)

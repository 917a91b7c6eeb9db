"""Study tran2021: the quick profile end to end, and the claim rules V1–V3, C1 on hand-made
tables (each where it holds, where it does not, and with a number missing)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ncscope.cli import main
from ncscope.data.segmentation import BACKGROUND, mini_m2nist
from ncscope.experiments.studies.tran2021 import Tran2021Config
from ncscope.experiments.studies.tran2021.claims import c1, judge, v1, v2, v3
from ncscope.models.segmentation import seg_net


def test_quick_profile_end_to_end(tmp_path) -> None:
    code = main(["reproduce", "tran2021", "--quick", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = tmp_path / "tran2021"
    sweep = pd.read_csv(out / "sweep.csv")
    assert set(sweep.rf) == {0.0, 0.5, 1.0}
    assert (sweep[sweep.rf == 1.0].lps == 0).all() and (sweep[sweep.rf == 0.0].lps > 0).all()
    assert set(sweep[sweep.rf == 0.5].heuristic) == {"area", "random"}
    assert sweep.violations.sum() == 0 and sweep.rv.between(0, 1).all()
    nets = pd.read_csv(out / "nets.csv")
    assert set(nets.net) == {"transposed", "dilated"} and set(nets.attack) == {"linf",
                                                                              "darkening"}
    radius = pd.read_csv(out / "radius.csv")
    assert set(radius.run) == {"st", "at", "trades"}
    assert (radius.logit_radius <= radius.pgd_radius).all()
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["V1", "V2", "V3", "C1"]
    for fig in ("rf_sweep", "nets", "radii"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert "tran2021" in (tmp_path / "report.html").read_text()


def test_mini_m2nist_masks_and_seed() -> None:
    a, b = mini_m2nist(6, seed=3), mini_m2nist(6, seed=3)
    assert a.x.shape == (6, 1, 16, 32) and a.masks.shape == (6, 16, 32)
    assert bool((a.x == b.x).all()) and bool((a.masks == b.masks).all())
    assert bool(((a.masks == BACKGROUND) == (a.x[:, 0] == 0)).all())
    digits = (a.masks != BACKGROUND).sum((1, 2))
    assert bool((digits > 0).all())
    net = seg_net("transposed")
    assert net(a.x).shape == (6, 11, 16, 32)
    assert seg_net("dilated")(a.x).shape == (6, 11, 16, 32)
    with pytest.raises(ValueError, match="canvas"):
        mini_m2nist(2, canvas=(8, 8), digits=(3, 3))


def _sweep(t0=1.0, t1=0.2, rv0=0.9, rv1=0.85, bad=0, samples=6000):
    rows = []
    for img in range(2):
        rows.append({"rf": 0.0, "heuristic": "any", "image": img, "seconds": t0, "lps": 100,
                     "rv": rv0, "violations": bad, "samples": samples})
        rows.append({"rf": 1.0, "heuristic": "any", "image": img, "seconds": t1, "lps": 0,
                     "rv": rv1, "violations": 0, "samples": samples})
    return pd.DataFrame(rows)


def _nets(rv_t=0.9, rv_d=0.8):
    return pd.DataFrame([{"net": n, "attack": a, "eps": 0.05, "rv": rv if a == "linf" else 0.1,
                          "rs": 1 - rv, "violations": 0, "samples": 10}
                         for n, rv in (("transposed", rv_t), ("dilated", rv_d))
                         for a in ("linf", "darkening")])


def _radius(at=0.05, st=0.02, pgd=0.1):
    rows = []
    for run, r in (("st", st), ("at", at), ("trades", at)):
        for k in range(3):
            rows.append({"run": run, "collapse_radius": r, "logit_radius": r / 2,
                         "pgd_radius": pgd if k else float("inf"), "violations": 0,
                         "samples": 10})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"bad": 1}, False), ({"samples": 2000}, False)])
def test_v1_rule(kwargs: dict, holds: bool) -> None:
    c = v1(_sweep(**kwargs), _nets(), _radius())
    assert c.holds is holds


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"t1": 0.34}, False), ({"t1": 0.33}, True), ({"rv1": 0.91}, False),
    ({"rv1": 0.9}, True), ({"t0": float("nan")}, None)])
def test_v2_rule(kwargs: dict, holds: bool | None) -> None:
    assert v2(_sweep(**kwargs)).holds is holds


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"rv_t": 0.8}, False), ({"rv_t": 0.7}, False)])
def test_v3_rule(kwargs: dict, holds: bool) -> None:
    c = v3(_nets(**kwargs))
    assert c.holds is holds and c.numbers["rv_dilated"] == 0.8


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"at": 0.02}, False), ({"pgd": 0.04}, False), ({"at": 0.1, "pgd": 0.1}, True),
])
def test_c1_rule(kwargs: dict, holds: bool) -> None:
    c = c1(_radius(**kwargs), 0.005)
    assert c.holds is holds


def test_judge_and_config_errors() -> None:
    assert [c.id for c in judge(_sweep(), _nets(), _radius(), 0.005)] == ["V1", "V2", "V3",
                                                                          "C1"]
    assert c1(pd.DataFrame(columns=["run", "collapse_radius", "logit_radius", "pgd_radius"]),
              0.005).holds is None
    for bad, match in (({"rfs": [1.5]}, "rfs"), ({"heuristics": ["best"]}, "heuristics"),
                       ({"modes": ["x"]}, "modes"), ({"images": 0}, "images"),
                       ({"tol": 0.5}, "tol"), ({"seg_channels": [4]}, "seg_channels")):
        with pytest.raises((ValueError, TypeError), match=match) as err:
            Tran2021Config(**bad)
        assert "\n" not in str(err.value)

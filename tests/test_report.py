"""Claims T1–T9 and the HTML report, on small synthetic run tables (no training).

The rules are pinned against the claims of Su et al. 2024:

* T1: ST penultimate clean NC1(last epoch) ≤ 0.1 × NC1(first epoch) and NC4 ≤ 0.01;
* T2: ST PGD NC1 ≥ 10 × clean NC1 (main ε, own means, last layer);
* T3: ST Gaussian and random-sign NC1 ≤ 3 × clean NC1;
* T4: ST strong ε: leap_pred_when_wrong ≥ 0.9, targeted NC1 by target ≤ 0.1 × untargeted NC1,
  targeted angle < untargeted angle;
* T5: AT training-time perturbed NC1 ≤ 5 × AT clean NC1 and AT angle < ST angle (history,
  last epoch; the fresh attack is reported only);
* T6: |NCC − network| robust test accuracy (AT) ≤ 3 points;
* T7: TRADES (both BN variants) clean NC1 ≥ 2 × AT's;
* T8: ST NCC robust test accuracy first layer > last, perturbed/clean NC1 ratio increasing;
* T9: AT clean NC1 last layer < first layer.

The baseline tables (``_report_fixtures.make_tables``) satisfy every rule; each variant
changes one number so that a rule provably flips, or drops a run so it is "not measured".
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import pandas as pd
import pytest

from _report_fixtures import (
    LAYERS,
    drop_runs,
    make_tables,
    set_metric,
    set_nc1,
    write_run_folder,
)
from ncscope.experiments.studies import Claim, claims_frame
from ncscope.experiments.studies.su2024.claims import judge_claims
from ncscope.report.build import build_report

IDS = [f"T{i}" for i in range(1, 10)]
FIGURES = ("nc_vs_epoch", "leap_2d", "layerwise_main", "class_angles_main")

Tables = tuple[pd.DataFrame, pd.DataFrame]


def _judge(tables: Tables) -> dict[str, Claim]:
    claims = judge_claims(*tables)
    assert [c.id for c in claims] == IDS
    return {c.id: c for c in claims}


def _set_history(h: pd.DataFrame, value: float, *, run: str = "st", source: str = "clean",
                 metric: str = "nc1", epoch: int = 4, reference: str = "own") -> pd.DataFrame:
    h = h.copy()
    m = ((h.run == run) & (h.source == source) & (h.metric == metric) & (h.epoch == epoch)
         & (h.reference == reference))
    assert m.sum() == 1
    h.loc[m, "value"] = value
    return h


# ---------------------------------------------------------------------------------------------
# Baseline: every rule holds, with the exact numbers it was judged on.


def test_baseline_all_claims_hold_with_their_numbers() -> None:
    claims = _judge(make_tables())
    for cid, c in claims.items():
        assert c.holds is True, (cid, c.numbers)
        assert c.verdict() == "holds"
        assert c.numbers and all(v is not None for v in c.numbers.values()), cid
        assert c.statement and c.rule
    n = {cid: c.numbers for cid, c in claims.items()}
    assert n["T1"] == pytest.approx({"nc1_first": 1.0, "nc1_last": 0.0625,
                                     "nc4_last": 0.0078125, "epoch_first": 1.0,
                                     "epoch_last": 4.0})
    assert n["T2"] == pytest.approx({"nc1_clean": 0.125, "nc1_pgd": 2.5, "ratio": 20.0})
    assert n["T3"]["ratio_gaussian"] == pytest.approx(1.5)
    assert n["T3"]["ratio_random_sign"] == pytest.approx(1.5)
    assert n["T4"] == pytest.approx({"leap_pred_when_wrong": 0.9375, "nc1_untargeted": 4.0,
                                     "nc1_targeted_by_target": 0.25,
                                     "angle_untargeted_deg": 90.0, "angle_targeted_deg": 20.0,
                                     "targeted_success": 0.875})
    assert n["T5"] == pytest.approx({"nc1_clean": 0.5, "nc1_perturbed": 0.75, "ratio": 1.5,
                                     "angle_at_deg": 12.0, "angle_st_deg": 62.0,
                                     "fresh_nc1_clean": 0.25, "fresh_nc1_pgd": 0.75,
                                     "fresh_ratio": 3.0, "fresh_angle_at_deg": 10.0,
                                     "fresh_angle_st_deg": 60.0})
    assert n["T6"] == pytest.approx({"ncc_robust_test_acc": 0.6875,
                                     "net_robust_test_acc": 0.703125, "gap_points": -1.5625})
    assert n["T7"] == pytest.approx({"nc1_at": 0.25, "nc1_trades": 1.0, "ratio_trades": 4.0,
                                     "nc1_trades_bnquirk": 1.25, "ratio_trades_bnquirk": 5.0})
    assert n["T8"] == pytest.approx({"ncc_robust_first": 0.75, "ncc_robust_last": 0.125,
                                     "ratio_layer1": 1.5, "ratio_layer2": 4.0,
                                     "ratio_layer3": 20.0})
    assert n["T9"] == pytest.approx({"nc1_first_layer": 1.0, "nc1_last_layer": 0.25})
    assert "CIFAR-scale" in claims["T7"].note  # the scale caveat travels with the claim


def test_claims_frame_and_dicts() -> None:
    claims = judge_claims(*make_tables())
    df = claims_frame(claims)
    assert list(df.id) == IDS
    assert set(df.verdict) == {"holds"}
    assert {"claim", "rule", "numbers", "verdict", "note"} <= set(df.columns)
    d = claims[1].to_dict()
    assert d["verdict"] == "holds" and d["numbers"]["ratio"] == pytest.approx(20.0)
    json.dumps([c.to_dict() for c in claims])  # JSON-friendly


# ---------------------------------------------------------------------------------------------
# One rule flips: (claim, expected holds, change). Every other claim must keep holding.

Change = Callable[[pd.DataFrame, pd.DataFrame], Tables]


def _a(f: Callable[[pd.DataFrame], pd.DataFrame]) -> Change:
    return lambda h, a: (h, f(a))


def _h(f: Callable[[pd.DataFrame], pd.DataFrame]) -> Change:
    return lambda h, a: (f(h), a)


VARIANTS: dict[str, tuple[str, bool, Change]] = {
    # T1: NC1 last ≤ 0.1 × first (first = 1) and NC4 ≤ 0.01.
    "T1 nc1 last = 0.1 x first (boundary)": ("T1", True, _h(lambda h: _set_history(h, 0.1))),
    "T1 nc1 last = 0.125 x first": ("T1", False, _h(lambda h: _set_history(h, 0.125))),
    "T1 nc4 = 0.01 (boundary)": ("T1", True,
                                 _h(lambda h: _set_history(h, 0.01, metric="nc4"))),
    "T1 nc4 = 0.0125": ("T1", False, _h(lambda h: _set_history(h, 0.0125, metric="nc4"))),
    "T1 reads clean, not perturbed": ("T1", True, _h(
        lambda h: _set_history(h, 1000.0, source="pgd"))),
    "T1 first epoch by epoch, not row order": ("T1", False, _h(
        lambda h: _set_history(h.iloc[::-1], 0.5, epoch=1))),
    # T2: PGD ≥ 10 × clean (clean = 0.125).
    # (the strong-ε PGD NC1, 32× clean, must not be read: main ε only)
    "T2 pgd = 5x clean": ("T2", False, _a(lambda a: set_nc1(a, 0.625, run="st", source="pgd"))),
    "T2 pgd = 9.5x clean": ("T2", False,
                            _a(lambda a: set_nc1(a, 1.1875, run="st", source="pgd"))),
    "T2 pgd = 10x clean (boundary)": ("T2", True,
                                      _a(lambda a: set_nc1(a, 1.25, run="st", source="pgd"))),
    "T2 pgd = 20x clean": ("T2", True, _a(lambda a: set_nc1(a, 2.5, run="st", source="pgd"))),
    # T3: noise ≤ 3 × clean.
    "T3 gaussian = 3x clean (boundary)": ("T3", True, _a(
        lambda a: set_nc1(a, 0.375, run="st", source="gaussian"))),
    "T3 gaussian = 3.5x clean": ("T3", False, _a(
        lambda a: set_nc1(a, 0.4375, run="st", source="gaussian"))),
    "T3 random sign = 4x clean": ("T3", False, _a(
        lambda a: set_nc1(a, 0.5, run="st", source="random_sign"))),
    # T4 (strong ε): leap ≥ 0.9, targeted ≤ 0.1 × untargeted (= 4), angle targeted < untargeted.
    "T4 leap = 0.9 (boundary)": ("T4", True, _a(lambda a: set_metric(
        a, 0.9, run="st", eps_name="strong", source="pgd", metric="leap_pred_when_wrong",
        reference="clean", group="label"))),
    "T4 leap = 0.875": ("T4", False, _a(lambda a: set_metric(
        a, 0.875, run="st", eps_name="strong", source="pgd", metric="leap_pred_when_wrong",
        reference="clean", group="label"))),
    "T4 targeted = 0.1x untargeted (boundary)": ("T4", True, _a(lambda a: set_nc1(
        a, 0.4, run="st", source="pgd_targeted", eps_name="strong"))),
    "T4 targeted = 0.125x untargeted": ("T4", False, _a(lambda a: set_nc1(
        a, 0.5, run="st", source="pgd_targeted", eps_name="strong"))),
    "T4 targeted angle = untargeted angle": ("T4", False, _a(lambda a: set_metric(
        a, 90.0, run="st", eps_name="strong", source="pgd_targeted", metric="simplex_angle",
        reference="clean", group="target"))),
    "T4 untargeted angle below targeted": ("T4", False, _a(lambda a: set_metric(
        a, 15.0, run="st", eps_name="strong", source="pgd", metric="simplex_angle",
        reference="clean", group="label"))),
    # T5 (history, last epoch): AT perturbed ≤ 5 × AT clean (= 0.5), AT angle < ST angle (= 62).
    "T5 AT perturbed = 5x clean (boundary)": ("T5", True, _h(
        lambda h: _set_history(h, 2.5, run="at", source="perturbed"))),
    "T5 AT perturbed = 6x clean": ("T5", False, _h(
        lambda h: _set_history(h, 3.0, run="at", source="perturbed"))),
    "T5 AT angle = ST angle": ("T5", False, _h(lambda h: _set_history(
        h, 62.0, run="at", source="perturbed", metric="simplex_angle", reference="clean"))),
    "T5 AT angle above ST angle": ("T5", False, _h(lambda h: _set_history(
        h, 70.0, run="at", source="perturbed", metric="simplex_angle", reference="clean"))),
    "T5 ignores the fresh attack": ("T5", True, _a(
        lambda a: set_nc1(a, 100.0, run="at", source="pgd"))),
    # T6: |NCC − net| ≤ 3 points on PGD test data (NCC = 0.6875).
    "T6 NCC 2.3 points above net": ("T6", True, _a(lambda a: set_metric(
        a, 0.6875 - 0.0234375, run="at", source="pgd", metric="net_accuracy", split="test",
        reference="clean"))),
    "T6 NCC 4.7 points above net": ("T6", False, _a(lambda a: set_metric(
        a, 0.6875 - 0.046875, run="at", source="pgd", metric="net_accuracy", split="test",
        reference="clean"))),
    "T6 NCC 4.7 points below net": ("T6", False, _a(lambda a: set_metric(
        a, 0.6875 + 0.046875, run="at", source="pgd", metric="net_accuracy", split="test",
        reference="clean"))),
    # T7: both TRADES ≥ 2 × AT clean (= 0.25).
    "T7 both TRADES = 2x AT (boundary)": ("T7", True, _a(lambda a: set_nc1(
        set_nc1(a, 0.5, run="trades", source="clean"), 0.5, run="trades_bnquirk",
        source="clean"))),
    "T7 TRADES = 1.5x AT": ("T7", False, _a(
        lambda a: set_nc1(a, 0.375, run="trades", source="clean"))),
    "T7 TRADES BN quirk = 1.5x AT": ("T7", False, _a(
        lambda a: set_nc1(a, 0.375, run="trades_bnquirk", source="clean"))),
    # T8: NCC robust first > last; ratios (1.5, 4, 20) increasing.
    "T8 NCC robust first = last": ("T8", False, _a(lambda a: set_metric(
        a, 0.125, run="st", source="pgd", metric="ncc_accuracy", split="test",
        reference="clean", layer=LAYERS[0]))),
    "T8 ratio not increasing": ("T8", False, _a(lambda a: set_nc1(
        a, [3.0, 1.0, 2.5], run="st", source="pgd"))),
    "T8 ratio flat in the middle": ("T8", False, _a(lambda a: set_nc1(
        a, [1.5, 0.75, 2.5], run="st", source="pgd"))),
    # T9: AT clean last < first.
    "T9 AT clean first = last": ("T9", False, _a(lambda a: set_nc1(
        a, [0.25, 0.5, 0.25], run="at", source="clean"))),
    "T9 AT clean grows with depth": ("T9", False, _a(lambda a: set_nc1(
        a, [0.125, 0.5, 0.25], run="at", source="clean"))),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rule_variant(name: str) -> None:
    cid, expected, change = VARIANTS[name]
    claims = _judge(change(*make_tables()))
    assert claims[cid].holds is expected, (name, claims[cid].numbers)
    others = {k: c.holds for k, c in claims.items() if k != cid}
    assert others == dict.fromkeys(others, True), name
    # the margin's sign agrees with the verdict (0 on a boundary: holds for ≤, not for <)
    m = claims[cid].margin
    assert m is not None and (m >= 0 if expected else m <= 0), (name, m)
    if "boundary" in name:
        assert m == pytest.approx(0.0, abs=1e-12), (name, m)


# ---------------------------------------------------------------------------------------------
# Missing runs → "not measured" (holds is None), never a verdict; numbers still listed.

MISSING = {
    ("st",): {"T1", "T2", "T3", "T4", "T5", "T8"},
    ("at",): {"T5", "T6", "T7", "T9"},
    ("trades",): {"T7"},
    ("trades_bnquirk",): {"T7"},
    ("at", "trades", "trades_bnquirk"): {"T5", "T6", "T7", "T9"},
    ("st", "at", "trades", "trades_bnquirk"): set(IDS),
}


@pytest.mark.parametrize("runs", list(MISSING), ids=["-".join(r) for r in MISSING])
def test_missing_run_is_not_measured(runs: tuple[str, ...]) -> None:
    base = _judge(make_tables())
    claims = _judge(drop_runs(*make_tables(), *runs))
    for cid, c in claims.items():
        if cid in MISSING[runs]:
            assert c.holds is None and c.verdict() == "not measured", (cid, c.numbers)
            assert any(v is None for v in c.numbers.values()), cid
        else:
            assert c.holds is True, cid
        assert c.numbers and set(c.numbers) <= set(base[cid].numbers), cid


def test_missing_strong_eps_is_not_measured() -> None:
    h, a = make_tables()
    claims = _judge((h, a[a.eps_name != "strong"]))
    assert claims["T4"].holds is None
    assert all(c.holds for k, c in claims.items() if k != "T4")


def test_single_layer_cannot_judge_layerwise_claims() -> None:
    h, a = make_tables()
    claims = _judge((h, a[a.layer == LAYERS[-1]]))
    assert claims["T8"].holds is None and claims["T9"].holds is None
    assert all(c.holds for k, c in claims.items() if k not in ("T8", "T9"))


def test_nan_value_is_not_measured() -> None:
    h, a = make_tables()
    a = set_nc1(a, float("nan"), run="st", source="gaussian")
    claims = _judge((h, a))
    assert claims["T3"].holds is None and claims["T3"].numbers["nc1_gaussian"] is None


def test_per_class_rows_are_ignored() -> None:
    h, a = make_tables()
    extra = a[a["class"].isna() & (a.metric == "nc1")].copy()
    extra["class"] = 0
    extra["value"] = 1e6
    a2 = pd.concat([extra, a], ignore_index=True)  # decoys first: an .iloc[0] would see them
    a2["class"] = a2["class"].astype("Int64")
    assert {c.id: c.numbers for c in judge_claims(h, a2)} == {
        c.id: c.numbers for c in judge_claims(h, a)}


def test_claims_from_csv_round_trip_match(tmp_path) -> None:
    h, a = make_tables()
    h.to_csv(tmp_path / "h.csv", index=False)
    a.to_csv(tmp_path / "a.csv", index=False)
    h2, a2 = pd.read_csv(tmp_path / "h.csv"), pd.read_csv(tmp_path / "a.csv")
    assert [c.to_dict() for c in judge_claims(h2, a2)] == [
        c.to_dict() for c in judge_claims(h, a)]


def test_t1_reads_penultimate_layer_whatever_the_row_order() -> None:
    h, a = make_tables()
    other = []
    for layer in ("features.block1", "features.block2"):
        o = h.copy()
        o["layer"] = layer
        o["value"] = 1.0  # no collapse at the earlier layers
        other.append(o)
    h3 = pd.concat([h, *other]).sort_values(["run", "epoch", "source", "layer"])
    c = _judge((h3, a))["T1"]
    assert c.numbers["nc1_last"] == pytest.approx(0.0625) and c.holds is True


def test_t7_one_variant_fails_other_missing_does_not_hold() -> None:
    h, a = drop_runs(*make_tables(), "trades_bnquirk")
    a = set_nc1(a, 0.375, run="trades", source="clean")
    assert _judge((h, a))["T7"].holds is False


# ---------------------------------------------------------------------------------------------
# build_report on a run folder written from these tables.


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple:
    run = write_run_folder(tmp_path_factory.mktemp("run") / "rq")
    out = build_report(run.parent)
    return run, out, out.read_text(encoding="utf-8")


def test_build_report_writes_report_figures_and_claims(built) -> None:
    run, out, _ = built
    assert out == run.parent / "report.html" and out.is_file()
    assert not list(run.glob("*.tmp"))
    for name in FIGURES:
        png, svg = run / "figures" / f"{name}.png", run / "figures" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 5000, name
        assert "<svg" in svg.read_text(encoding="utf-8")[:2000], name
    claims = json.loads((run / "claims.json").read_text())
    assert [c["id"] for c in claims] == IDS
    assert [c["verdict"] for c in claims] == ["holds"] * 9
    assert claims == [c.to_dict() for c in judge_claims(*make_tables())]


def test_report_html_is_self_contained(built) -> None:
    _, _, page = built
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""",
                         page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page, re.I)
    assert not re.search(r"@import|<link\b|<script[^>]+src", page, re.I)
    srcs = re.findall(r"<img\b[^>]*\bsrc\s*=\s*\"([^\"]*)\"", page)
    assert len(srcs) == len(FIGURES) == page.count("<img")
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<meta charset='utf-8'>" in page


def test_report_claims_table_is_first(built) -> None:
    _, _, page = built
    first_fig = min(page.index("<figure"), page.index("<img"))
    table = page[page.index("<table"): page.index("</table>")]
    assert page.index("<table") < first_fig
    rows = re.findall(r"<tr><td><a href='#su2024'>su2024</a></td><td><b>(T\d)</b></td>.*?"
                      r"<td class='(\w+)'><b>([^<]+)</b></td></tr>", table)
    assert [r[0] for r in rows] == IDS
    assert {(r[1], r[2]) for r in rows} == {("holds", "holds")}
    assert "ε = 0.1" in page and "bn_mlp" in page  # intro from summary.json
    for heading in ("Accuracies", "NC of the last layer", "<h3>Files</h3>"):
        assert page.index(heading) > first_fig


def test_build_report_not_measured_and_without_optional_files(tmp_path) -> None:
    h, a = drop_runs(*make_tables(), "trades", "trades_bnquirk")
    run = write_run_folder(tmp_path / "r", history=h, analysis=a, points=False, summary=False)
    page = build_report(run.parent).read_text(encoding="utf-8")
    claims = {c["id"]: c for c in json.loads((run / "claims.json").read_text())}
    assert claims["T7"]["verdict"] == "not measured" and claims["T7"]["holds"] is None
    assert "<td class='na'><b>not measured</b></td>" in page
    assert not (run / "figures" / "leap_2d.png").exists()
    assert page.count("<img") == len(FIGURES) - 1


@pytest.mark.parametrize("missing", [("history.csv",), ("analysis.csv",),
                                     ("history.csv", "analysis.csv")])
def test_build_report_missing_table_is_a_one_line_error(tmp_path, missing) -> None:
    run = write_run_folder(tmp_path / "r")
    for name in missing:
        (run / name).unlink()
    with pytest.raises(FileNotFoundError) as exc:
        build_report(run.parent)
    msg = str(exc.value)
    assert "\n" not in msg
    for name in ("history.csv", "analysis.csv"):
        assert (name in msg) == (name in missing), msg
    assert not (run.parent / "report.html").exists()


def test_build_report_missing_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no study results"):
        build_report(tmp_path / "nope")

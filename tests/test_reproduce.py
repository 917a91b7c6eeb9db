"""`ncscope reproduce --quick` end to end (CI profile): every output exists and parses."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from ncscope.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("reproduce")
    code = main(["reproduce", "--quick", "--out", str(root), "--quiet"])
    return code, root / "su2024"


def test_quick_run_writes_every_output(quick_run, capsys) -> None:
    code, out = quick_run
    assert code == 0
    for name in ("history.csv", "history.jsonl", "analysis.csv", "analysis_wide.csv",
                 "points.csv", "claims.json", "claims.csv", "summary.json", "study.json"):
        assert (out / name).is_file(), name
    assert (out.parent / "report.html").is_file()
    for fig in ("nc_vs_epoch", "layerwise_main", "class_angles_main", "leap_2d"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)


def test_tables_parse_with_expected_columns(quick_run) -> None:
    _, out = quick_run
    hist = pd.read_csv(out / "history.csv")
    from ncscope.collapse.schema import NAMES

    assert list(hist.columns) == ["run", "epoch", *NAMES]
    assert set(hist.run) == {"st", "at", "trades", "trades_bnquirk"}
    assert {"clean", "perturbed", "pgd", "training"} <= set(hist.source)
    assert set(hist[hist.run == "st"].source) == {"clean", "pgd", "training"}
    lines = (out / "history.jsonl").read_text().splitlines()
    assert len(lines) == len(hist) and json.loads(lines[0])["run"] in set(hist.run)
    an = pd.read_csv(out / "analysis.csv")
    assert {"run", "eps_name", "eps", "layer", "depth", "source", "split", "reference", "group",
            "metric", "value", "class"} <= set(an.columns)
    assert set(an.eps_name) == {"main", "strong"}
    assert {"clean", "pgd", "pgd_targeted", "gaussian", "random_sign"} <= set(an.source)
    wide = pd.read_csv(out / "analysis_wide.csv")
    assert {"nc1", "nc3", "nc4", "ncc_accuracy", "leap_pred", "simplex_angle"} <= set(wide.columns)
    pts = pd.read_csv(out / "points.csv")
    assert {"panel", "kind", "label", "x", "y"} <= set(pts.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings_s"]["total"] > 0
    robust = pd.read_csv(out / "robust_accuracy.csv")
    assert list(robust.run) == ["st", "at", "trades", "trades_bnquirk"]
    assert (robust.n == 40).all() and (robust.pgd <= robust.clean).all()
    if importlib.util.find_spec("pyautoattack") is not None:  # the extra is installed
        assert (robust.autoattack <= robust.pgd).all()  # AutoAttack is the stronger attack
    else:
        assert robust.autoattack.isna().all() and robust.note.str.contains("pip install").all()
    html = (out.parent / "report.html").read_text()
    assert "Robust accuracy: PGD vs AutoAttack" in html


def test_claims_table_has_t1_to_t9_with_numbers(quick_run) -> None:
    _, out = quick_run
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == [f"T{i}" for i in range(1, 10)]
    for c in claims:
        assert c["numbers"] and c["rule"] and c["verdict"] in ("holds", "does not hold")
        assert any(v is not None for v in c["numbers"].values())
    html = (out.parent / "report.html").read_text()
    assert html.index("T1") < html.index("<figure")
    assert "not evidence" in html  # --quick runs carry a banner


def test_report_command_rebuilds_and_errors(quick_run, tmp_path, capsys) -> None:
    _, out = quick_run
    assert main(["report", str(out.parent)]) == 0
    assert main(["report", str(tmp_path)]) == 2
    assert "no study results" in capsys.readouterr().err

"""Study ``yaras2022`` (Yaras et al., NeurIPS 2022): the quick profile end to end, the claims
Y1–Y4 recomputed from hand-made tables, the matched UFM comparison, config errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from ncscope.cli import main
from ncscope.experiments.studies.yaras2022.claims import Rules, judge_claims
from ncscope.experiments.studies.yaras2022.ufm_runs import paired_lambda, solve_regularized_gd
from ncscope.ufm import etf_solution, solve_oblique

NA = pd.NA


# ------------------------------------------------------------------ quick profile end to end
@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[int, object]:
    root = tmp_path_factory.mktemp("yaras")
    code = main(["reproduce", "yaras2022", "--quick", "--out", str(root), "--quiet"])
    return code, root


def test_quick_profile_writes_tables_figures_claims(quick) -> None:
    code, root = quick
    assert code == 0
    out = root / "yaras2022"
    for name in ("ufm_scales.csv", "ufm_scales_summary.csv", "ufm_compare.csv",
                 "ufm_compare_summary.csv", "history.csv", "final.csv", "summary.json",
                 "claims.json", "claims.csv", "study.json", "config.yaml"):
        assert (out / name).is_file(), name
    for fig in ("ufm_etf_vs_iteration", "ufm_compare", "nc1_vs_epoch"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)
    final = pd.read_csv(out / "final.csv")
    assert sorted(final.run) == ["linear_at", "linear_st", "normalized_at", "normalized_st"]
    assert set(final["head"]) == {"linear", "normalized"} and set(final["mode"]) == {"st", "at"}
    assert final["PGD test acc"].between(0, 1).all()
    compare = pd.read_csv(out / "ufm_compare_summary.csv")
    assert list(compare.solver) == ["rgd_armijo", "gd_armijo", "lbfgs"]
    # the paired λ gives the regularised minimiser the oblique logit scale (L-BFGS converges)
    assert compare["logit scale"].iloc[2] == pytest.approx(10.0, rel=1e-3)
    scales = pd.read_csv(out / "ufm_scales_summary.csv")
    assert list(scales.scale) == [1.0, 10.0, 30.0]
    html = (root / "report.html").read_text()
    assert "yaras2022" in html and "not evidence" in html


def test_quick_profile_claims_have_numbers(quick) -> None:
    _, root = quick
    claims = json.loads((root / "yaras2022" / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["Y1", "Y2", "Y3", "Y4"]
    for c in claims:
        assert c["rule"] and c["numbers"], c["id"]
        assert c["verdict"] in ("holds", "does not hold"), c
        assert c["margin"] is not None and math.isfinite(c["margin"])
        assert any(v is not None for v in c["numbers"].values())
    y1 = claims[0]
    assert set(y1["numbers"]) == {"final_etf_scale1", "final_etf_scale10", "final_etf_scale30"}


# ------------------------------------------------------------------ the matched UFM comparison
def test_paired_lambda_gives_the_oblique_logit_scale() -> None:
    for scale in (2.0, 10.0):
        lam = paired_lambda(scale, 5, 4)
        W, H, _, labels = etf_solution("ce", 5, 4, 6, lambda_w=lam, lambda_h=lam, bias=False)
        assert float(W.norm(dim=1)[labels].mul(H.norm(dim=1)).mean()) == pytest.approx(scale)


def test_regularized_gd_starts_at_the_oblique_start_and_descends() -> None:
    r = solve_regularized_gd(4, 3, 5, lam=1e-3, max_iter=30, seed=3)
    o = solve_oblique(4, 3, 5, scale=5.0, max_iter=0, seed=3)
    t0 = r.trajectory[r.trajectory.iteration == 0].set_index("metric").value
    o0 = o.trajectory[o.trajectory.iteration == 0].set_index("metric").value
    assert t0["nc1"] == pytest.approx(o0["nc1"]) and t0["etf_error_weights"] == pytest.approx(
        o0["etf_error_weights"])
    obj = r.wide().objective.to_numpy()
    assert (obj[1:] < obj[:-1]).all() and r.iterations == 30
    assert torch.isfinite(r.W).all() and r.b is None


# ------------------------------------------------------------------ claims from hand-made tables
def scales_table(errors: dict[float, float | None]) -> pd.DataFrame:
    return pd.DataFrame({"scale": list(errors), "final etf_error_weights": list(errors.values())})


def compare_table(rows: dict[float, tuple]) -> pd.DataFrame:
    """``{scale: (oblique iterations to NC1, regularised-GD iterations, GD iterations run)}``."""
    out = []
    for s, (obl, reg, ran) in rows.items():
        out += [{"scale": s, "solver": "rgd_armijo", "iterations to nc1": obl,
                 "iterations to etf": obl, "iterations": 100},
                {"scale": s, "solver": "gd_armijo", "iterations to nc1": reg,
                 "iterations to etf": NA, "iterations": ran},
                {"scale": s, "solver": "lbfgs", "iterations to nc1": 7,
                 "iterations to etf": 9, "iterations": 40}]
    cols = ["scale", "solver", "iterations to nc1", "iterations to etf", "iterations"]
    return pd.DataFrame(out, columns=cols).astype({"iterations to nc1": "Int64",
                                                   "iterations to etf": "Int64"})


def history_table(curves: dict[str, list[float]], epochs: list[int]) -> pd.DataFrame:
    rows = []
    for run, values in curves.items():
        for e, v in zip(epochs, values, strict=True):
            rows.append({"run": run, "epoch": e, "source": "clean", "split": "train",
                         "metric": "nc1", "reference": "own", "group": "label",
                         "class": float("nan"), "value": v})
            # a per-class row and a perturbed row that the rules must ignore
            rows.append({**rows[-1], "class": 0.0, "value": 1e-9})
            rows.append({**rows[-2], "source": "perturbed", "value": 1e-9})
    return pd.DataFrame(rows)


def final_table(pgd: dict[str, float | None]) -> pd.DataFrame:
    rows = []
    for run in ("linear_st", "normalized_st", "linear_at", "normalized_at"):
        head, mode = run.split("_")
        rows.append({"run": run, "mode": mode, "head": head, "clean test acc": 0.95,
                     "PGD test acc": pgd.get(run), "pgd simplex angle": 10.0,
                     "perturbed simplex angle": 5.0})
    return pd.DataFrame(rows)


EPOCHS = [1, 5, 10, 15, 20]
GOOD_SCALES = {1.0: 7e-8, 5.0: 1e-14, 20.0: 2e-9, 30.0: 1.5e-4}
GOOD_COMPARE = {5.0: (6, 9, 800), 10.0: (12, 16, 1000)}
GOOD_HISTORY = {"linear_st": [2.0, 1.0, 0.5, 0.3, 0.2], "normalized_st": [1.5, 0.6, 0.2, 0.1, 0.05],
                "linear_at": [3.0, 2.0, 1.5, 1.2, 1.0], "normalized_at": [3.0, 2.0, 1.5, 1.2, 1.1]}
GOOD_FINAL = {"linear_at": 0.60, "normalized_at": 0.58, "linear_st": 0.1, "normalized_st": 0.1}


def judge(scales=GOOD_SCALES, compare=GOOD_COMPARE, history=GOOD_HISTORY, final=GOOD_FINAL,
          rules: Rules | None = None) -> dict[str, object]:
    claims = judge_claims(scales_table(scales), compare_table(compare),
                          history_table(history, EPOCHS), final_table(final), rules)
    assert [c.id for c in claims] == ["Y1", "Y2", "Y3", "Y4"]
    return {c.id: c for c in claims}


def test_baseline_all_hold_with_numbers() -> None:
    c = judge()
    assert all(x.holds for x in c.values()), {k: (x.holds, x.numbers) for k, x in c.items()}
    assert all(x.margin is not None and x.margin >= 0 for x in c.values())
    assert c["Y1"].numbers["final_etf_scale30"] == 1.5e-4 and "30" in c["Y1"].note
    assert c["Y2"].numbers["oblique_nc1_iters_scale10"] == 12
    assert c["Y2"].numbers["regularized_gd_nc1_iters_scale10"] == 16
    assert c["Y2"].margin == pytest.approx((16 - 12) / 16)  # the tighter of the two scales
    # level = linear ST final NC1 0.2: linear reaches it at epoch 20, normalized at 10
    assert c["Y3"].numbers["level_st"] == 0.2
    assert (c["Y3"].numbers["epoch_linear_st"], c["Y3"].numbers["epoch_normalized_st"]) == (20,
                                                                                          10)
    assert c["Y3"].numbers["epoch_normalized_at"] is None  # 1.1 > the linear AT final 1.0
    assert c["Y4"].numbers["gap_points"] == pytest.approx(-2.0)


@pytest.mark.parametrize(("case", "kwargs", "claim", "holds"), [
    # Y1: an in-range scale above the threshold fails; a stall outside the range does not count
    ("y1 in-range stall", {"scales": {**GOOD_SCALES, 20.0: 2e-6}}, "Y1", False),
    ("y1 at the threshold", {"scales": {**GOOD_SCALES, 5.0: 1e-6}}, "Y1", True),
    ("y1 wider range", {"rules": Rules(reach_scales=[1, 30])}, "Y1", False),
    ("y1 missing value", {"scales": {**GOOD_SCALES, 5.0: None}}, "Y1", None),
    # Y2: strict, at every compared scale; never reaching counts as infinitely late
    ("y2 tie", {"compare": {**GOOD_COMPARE, 10.0: (16, 16, 1000)}}, "Y2", False),
    ("y2 one scale slower", {"compare": {**GOOD_COMPARE, 5.0: (10, 9, 800)}}, "Y2", False),
    ("y2 regularised never", {"compare": {10.0: (12, NA, 2000)}}, "Y2", True),
    ("y2 oblique never", {"compare": {10.0: (NA, 16, 2000)}}, "Y2", False),
    ("y2 no rows", {"compare": {}}, "Y2", None),
    # Y3: strictly fewer epochs; never reaching the level fails
    ("y3 same epoch", {"history": {**GOOD_HISTORY,
                                   "normalized_st": [1.5, 0.6, 0.3, 0.25, 0.2]}}, "Y3", False),
    ("y3 never", {"history": {**GOOD_HISTORY,
                              "normalized_st": [1.5, 0.6, 0.3, 0.25, 0.21]}}, "Y3", False),
    ("y3 fixed level", {"rules": Rules(nc1_level=0.65)}, "Y3", True),
    ("y3 fixed level same epoch", {"rules": Rules(nc1_level=1.0)}, "Y3", False),
    ("y3 missing run", {"history": {k: v for k, v in GOOD_HISTORY.items()
                                    if k != "normalized_st"}}, "Y3", None),
    # Y4: the tolerance is inclusive
    ("y4 within 3 points", {"final": {**GOOD_FINAL, "normalized_at": 0.571}}, "Y4", True),
    ("y4 just outside", {"final": {**GOOD_FINAL, "normalized_at": 0.569}}, "Y4", False),
    ("y4 better", {"final": {**GOOD_FINAL, "normalized_at": 0.70}}, "Y4", True),
    ("y4 zero tolerance", {"rules": Rules(robust_tolerance=0.0)}, "Y4", False),
    ("y4 missing", {"final": {**GOOD_FINAL, "normalized_at": None}}, "Y4", None),
])
def test_rule_variants(case: str, kwargs: dict, claim: str, holds: bool | None) -> None:
    c = judge(**kwargs)[claim]
    assert c.holds is holds, (case, c.numbers, c.margin)
    if holds is None:
        assert c.margin is None
    else:  # a strict rule's tie has margin 0 and does not hold
        assert c.margin >= 0 if holds else c.margin <= 0, (case, c.margin)


def test_y3_margin_when_never_reached_is_the_nc1_gap() -> None:
    c = judge(history={**GOOD_HISTORY, "normalized_st": [1.5, 0.6, 0.3, 0.25, 0.25]})["Y3"]
    assert c.holds is False and c.margin == pytest.approx((0.2 - 0.25) / 0.2)


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(("override", "match"), [
    ("ufm.scales=[]", "at least one scale"),
    ("ufm.scales=[0, 10]", "ufm.scales"),
    ("ufm.compare_scales=[10, 10]", "twice"),
    ("ufm.dim=3", "ufm.dim"),
    ("ufm.max_iter=0", "ufm.max_iter"),
    ("rules.reach_scales=[20, 1]", "reach_scales"),
    ("rules.reach_scales=[40, 50]", "Y1 would judge nothing"),
    ("rules.etf_threshold=0", "rules.etf_threshold"),
    ("rules.robust_tolerance=2", "rules.robust_tolerance"),
    ("model.head=normalized", "model.head must stay linear"),
    ("head_scale=0", "head_scale"),
    ("normalized_weight_decay=-1", "normalized_weight_decay"),
    ("ufm.scale=3", "valid keys"),
])
def test_config_errors_are_one_line(override: str, match: str, tmp_path, capsys) -> None:
    assert main(["reproduce", "yaras2022", "--set", override, "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "x").exists()


def test_set_keeps_the_digits_recipe() -> None:
    from ncscope.experiments.reproduce import study_config
    from ncscope.experiments.studies import get_study

    cfg = study_config(get_study("yaras2022"), None, ["train.epochs=7", "model.kwargs={}"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.eps, cfg.train.track_subset) == (
        7, 0.05, 0.1, None)
    assert cfg.model.name == "bn_mlp"
    runs = {r.name: r for r in cfg.grid()}
    assert runs["normalized_at"].model.head == "normalized"
    assert runs["normalized_at"].model.head_scale == 10.0 and runs["linear_st"].mode == "st"
    cfg = study_config(get_study("yaras2022"), None, ["normalized_weight_decay=0"])
    assert {r.name: r.changes.get("weight_decay") for r in cfg.grid()}["normalized_st"] == 0.0

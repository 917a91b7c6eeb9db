"""Study zhou2022: its quick profile end to end, and the claim rules Z1–Z3 on hand-made
tables (each rule where it holds, where it does not, and where a number is missing)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ncscope.cli import main
from ncscope.experiments.studies.zhou2022 import Zhou2022Config
from ncscope.experiments.studies.zhou2022.claims import judge, z1, z2, z3


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("zhou")
    code = main(["reproduce", "zhou2022", "--quick", "--out", str(root), "--quiet",
                 "--set", "losses=[ce, mse]", "--set", "data.n_per_class=20"])
    return code, root / "zhou2022"


def test_quick_profile_writes_tables_figures_claims(quick) -> None:
    code, out = quick
    assert code == 0
    ufm = pd.read_csv(out / "ufm_final.csv")
    assert list(ufm.loss) == ["ce", "mse"] and (ufm.nc1 < 1e-6).all()
    nets = pd.read_csv(out / "networks.csv")
    assert sorted(nets.run) == ["ce_at", "ce_st", "mse_at", "mse_st"]
    assert nets["clean test acc"].between(0, 1).all() and nets["PGD test acc"].notna().all()
    assert nets.loc[nets["mode"] == "at", "perturbed nc1"].notna().all()
    assert nets.loc[nets["mode"] == "st", "perturbed nc1"].isna().all()
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns[:4]) == ["loss", "mode", "run", "epoch"] or \
        {"run", "mode", "loss", "epoch"} <= set(hist.columns)
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["Z1", "Z2", "Z3"]
    assert all(c["verdict"] in ("holds", "does not hold") for c in claims)
    for name in ("ufm_nc", "networks_nc1"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    html = (out.parent / "report.html").read_text()
    assert "zhou2022" in html and "Z3" in html


def _ufm(nc1=1e-12, etf=1e-5, nc3=1e-6) -> pd.DataFrame:
    return pd.DataFrame([{"loss": loss, "nc1": nc1, "etf_error_weights": etf, "nc3": nc3}
                         for loss in ("ce", "ls", "fl", "mse")])


@pytest.mark.parametrize(("change", "holds"), [
    ({}, True), ({"nc1": 2e-6}, False), ({"etf": 2e-3}, False), ({"nc3": 2e-3}, False),
    ({"nc1": float("nan")}, None),
])
def test_z1_rule(change: dict, holds: bool | None) -> None:
    c = z1(_ufm(**change))
    assert c.holds is holds
    assert (c.margin is None) == (holds is None)
    assert c.numbers["mse_nc1"] == _ufm(**change).nc1.iloc[0] or holds is None


def _nets(accs=(0.97, 0.96, 0.97, 0.95), first=(10.0,) * 4, last=(0.5, 0.9, 0.2, 0.05),
          pert=(2.0, 3.0, 4.9, 1.0), clean_at=(1.0,) * 4) -> pd.DataFrame:
    rows = []
    for i, loss in enumerate(("ce", "ls", "fl", "mse")):
        rows.append({"run": f"{loss}_st", "mode": "st", "loss": loss, "clean test acc": accs[i],
                     "first nc1": first[i], "clean nc1": last[i], "perturbed nc1": None,
                     "pgd nc1": 50.0})
        rows.append({"run": f"{loss}_at", "mode": "at", "loss": loss, "clean test acc": 0.9,
                     "first nc1": 10.0, "clean nc1": clean_at[i], "perturbed nc1": pert[i],
                     "pgd nc1": 2.0, "perturbed simplex angle": 5.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("kwargs", "holds", "margin"), [
    ({}, True, 0.0),                                       # spread exactly 2 points
    ({"accs": (0.97, 0.96, 0.97, 0.949)}, False, None),    # spread 2.1 points
    ({"last": (0.5, 1.1, 0.2, 0.05)}, False, None),        # ls only 0.11 x its first NC1
    ({"last": (0.5, 0.9, 0.2, float("nan"))}, None, None),
])
def test_z2_rule(kwargs: dict, holds: bool | None, margin: float | None) -> None:
    c = z2(_nets(**kwargs))
    assert c.holds is holds
    if margin is not None:
        assert c.margin == pytest.approx(margin, abs=1e-9)
    assert c.numbers["acc_spread_points"] == pytest.approx(
        100 * (max(kwargs.get("accs", (0.97, 0.95))) - min(kwargs.get("accs", (0.97, 0.95)))))


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True), ({"pert": (2.0, 3.0, 5.1, 1.0)}, False),
    ({"clean_at": (1.0, 1.0, 1.0, 0.1)}, False), ({"pert": (2.0, None, 4.0, 1.0)}, None),
])
def test_z3_rule(kwargs: dict, holds: bool | None) -> None:
    c = z3(_nets(**kwargs))
    assert c.holds is holds
    assert c.numbers["ce_fresh_pgd_over_clean"] == 2.0
    if holds:
        assert c.margin == pytest.approx((5 - 4.9) / 5)


def test_judge_returns_z1_to_z3() -> None:
    assert [c.id for c in judge(_ufm(), _nets())] == ["Z1", "Z2", "Z3"]


@pytest.mark.parametrize(("changes", "match"), [
    ({"losses": []}, "losses is empty"),
    ({"losses": ["ce", "hinge2"]}, "unknown loss 'hinge2'"),
    ({"loss_kwargs": {"fl": {"gamma": 2}}, "losses": ["ce"]}, "not in losses"),
    ({"loss_kwargs": {"fl": {"gamma": -1}}}, "gamma must be >= 0"),
    ({"modes": ["st", "trades"]}, "modes"),
    ({"workers": 0}, "workers"),
])
def test_config_bad_input_is_one_line(changes: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as err:
        Zhou2022Config(**changes)
    assert "\n" not in str(err.value)


USER_LOSS = """
import torch.nn.functional as F


def sq_hinge(margin: float = 1.0):
    def fn(logits, targets):
        true = logits.gather(1, targets[:, None])
        viol = F.relu(margin + logits - true).scatter(1, targets[:, None], 0)
        return viol.pow(2).sum(1).mean()
    return fn
"""


def test_user_loss_trains_in_workers_and_appears_in_the_tables(tmp_path, monkeypatch) -> None:
    (tmp_path / "zhou_user_losses.py").write_text(USER_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    code = main(["reproduce", "zhou2022", "--quick", "--out", str(tmp_path / "out"), "--quiet",
                 "--set", "losses=[ce, 'zhou_user_losses:sq_hinge']", "--set", "modes=[st]",
                 "--set", "data.n_per_class=10", "--set", "ufm.max_iter=50"])
    assert code == 0
    nets = pd.read_csv(tmp_path / "out" / "zhou2022" / "networks.csv")
    assert set(nets.loss) == {"ce", "zhou_user_losses:sq_hinge"}
    assert set(nets.run) == {"ce_st", "zhou_user_losses_sq_hinge_st"}
    assert nets["clean test acc"].notna().all()
    ufm = pd.read_csv(tmp_path / "out" / "zhou2022" / "ufm_final.csv")
    assert "zhou_user_losses:sq_hinge" in set(ufm.loss)

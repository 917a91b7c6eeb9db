"""Study tsilivis2022: the quick profile end to end (kernel rows in the training history), and
the claim rules N1–N5 on hand-made tables (where they hold, where not, with numbers missing)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ncscope.cli import main
from ncscope.experiments.studies.tsilivis2022 import Tsilivis2022Config
from ncscope.experiments.studies.tsilivis2022.claims import n1, n2, n3, n4, n5
from ncscope.ntk import KERNEL_METRICS


def test_quick_profile_end_to_end(tmp_path) -> None:
    code = main(["reproduce", "tsilivis2022", "--quick", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = tmp_path / "tsilivis2022"
    conv = pd.read_csv(out / "kernel_convergence.csv")
    assert sorted(conv.width.unique()) == [16, 64] and (conv.rel_error > 0).all()
    tr = pd.read_csv(out / "transfer.csv")
    assert list(tr.model) == ["kernel", "mlp", "mlp"]
    assert (tr.kernel_pgd_acc <= tr.clean_acc + 1e-12).all()
    eig = pd.read_csv(out / "eigen_features.csv")
    assert len(eig) == 8 and eig.eigenvalue.is_monotonic_decreasing
    hist = pd.read_csv(out / "history.csv")
    kern = hist[hist.metric.isin(KERNEL_METRICS)]
    assert set(kern.metric) == set(KERNEL_METRICS) and set(kern.run) == {"st", "at"}
    assert set(kern.source) == {"clean", "pgd"} and kern.layer.isna().all()
    assert sorted(kern.epoch.unique()) == [0, 1, 2, 3]
    first = kern[(kern.epoch == 0) & (kern.metric == "ntk_dist_init")]
    assert first.value.isna().all()  # no earlier kernel at initialisation
    an = pd.read_csv(out / "analysis.csv")
    assert {"pgd", "kernel_pgd"} <= set(an.source)
    claims = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["N1", "N2", "N3", "N4", "N5"]
    for fig in ("ntk_transfer", "eigen_features", "kernel_dynamics"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert "tsilivis2022" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(("errors", "holds"), [([0.4, 0.2, 0.1], True), ([0.4, 0.2, 0.21], False),
                                                ([0.3], None)])
def test_n1_rule(errors, holds) -> None:
    conv = pd.DataFrame({"width": [32 * 4 ** i for i in range(len(errors))],
                         "rel_error": errors, "seed": 0})
    assert n1(conv).holds is holds


def _transfer(kernel_adv=0.7, transfer=0.6, white=0.3):
    return pd.DataFrame([
        {"model": "kernel", "width": None, "clean_acc": 0.95, "kernel_pgd_acc": kernel_adv,
         "whitebox_pgd_acc": kernel_adv},
        {"model": "mlp", "width": 64, "clean_acc": 0.9, "kernel_pgd_acc": 0.9,
         "whitebox_pgd_acc": 0.1},
        {"model": "mlp", "width": 4096, "clean_acc": 0.9, "kernel_pgd_acc": transfer,
         "whitebox_pgd_acc": white},
    ])


@pytest.mark.parametrize(("kw", "holds"), [({}, True), ({"transfer": 0.61}, False),
                                           ({"kernel_adv": 0.95}, False),
                                           ({"white": 0.9}, None)])
def test_n2_rule_reads_the_widest_net(kw, holds) -> None:
    assert n2(_transfer(**kw)).holds is holds


@pytest.mark.parametrize(("top", "holds"), [(0.5, True), (0.1, False)])
def test_n3_rule(top, holds) -> None:
    eig = pd.DataFrame({"index": range(10), "usefulness": 0.8,
                        "robustness": [top] * 5 + [0.2] * 5})
    assert n3(eig).holds is holds


def _history(st_dist=0.3, at_dist=0.2, st_mass=0.8, at_mass=0.9):
    rows = []
    for run, dist, mass in (("st", st_dist, st_mass), ("at", at_dist, at_mass)):
        for epoch in range(6):
            for metric, value in (("ntk_dist_init", None if epoch == 0 else dist * epoch),
                                  ("ntk_top_mass", mass if epoch == 5 else 0.5),
                                  ("ntk_class_alignment", 0.7)):
                for source in ("clean", "pgd"):
                    rows.append({"run": run, "epoch": epoch, "layer": None, "source": source,
                                 "metric": metric,
                                 "value": value if source == "clean" else 0.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("kw", "holds"), [({}, True), ({"at_dist": 0.31}, False),
                                           ({"at_mass": 0.7}, False)])
def test_n4_rule_uses_clean_probe_early_and_last(kw, holds) -> None:
    c = n4(_history(**kw))
    assert c.holds is holds
    assert c.numbers["st_early_dist_init"] == pytest.approx(0.3 * 2)  # mean of epochs 1..3


@pytest.mark.parametrize(("kernel", "holds"), [(0.95, True), (0.85, False), (None, None)])
def test_n5_rule(kernel, holds) -> None:
    rows = [{"source": "pgd", "split": "train", "reference": "clean", "group": "label",
             "metric": "leap_pred_when_wrong", "value": 0.99, "class": None}]
    if kernel is not None:
        rows.append({**rows[0], "source": "kernel_pgd", "value": kernel})
    assert n5(pd.DataFrame(rows)).holds is holds


@pytest.mark.parametrize(("key", "value", "match"), [
    ("kernel_widths", [], "kernel_widths"), ("lr_scale", 2.5, "lr_scale"),
    ("pair", [3, 3], "pair"), ("modes", ["trades"], "modes"), ("center", "yes", "center"),
])
def test_bad_config_is_one_line(key, value, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as err:
        Tsilivis2022Config(**{key: value})
    assert "\n" not in str(err.value)

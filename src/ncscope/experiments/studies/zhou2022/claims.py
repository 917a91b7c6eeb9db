"""The claims Z1–Z3 of study ``zhou2022``, judged from its tables.

* Z1 (Zhou et al. 2022, main result, §1.1: under the unconstrained feature model the only
  global minimisers with CE, LS, FL or MSE are collapsed) — on the solved UFM of every loss;
* Z2 (the paper's experiments: with enough capacity and training, every loss reaches collapse
  and largely the same test accuracy) — on the digits network under ST;
* Z3 (beyond the paper: the robust simplex of AT, Su et al. 2024 §5, with every loss) — on the
  digits network under AT, its training-time perturbations as in the main study's T5.

Inputs: ``ufm_final.csv`` (one row per loss, the last recorded NC metrics) and ``networks.csv``
(:func:`ncscope.experiments.studies.grid.final_table`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ncscope.experiments.studies.base import Claim, finite

#: Z1's collapse thresholds on the UFM solution.
UFM_NC1, UFM_ETF, UFM_NC3 = 1e-6, 1e-3, 1e-3
#: Z2: the spread of clean test accuracy over losses (fraction) and the NC1 reduction.
ACC_SPREAD, NC1_REDUCTION = 0.02, 0.1
#: Z3: perturbed NC1 at most this multiple of the clean NC1.
ROBUST_RATIO = 5.0



def _slack(value: float, bound: float) -> float:
    """Relative slack of ``value ≤ bound`` (≥ 0 when it holds)."""
    return (bound - value) / bound


def _judge(slacks: list[float | None]) -> tuple[bool | None, float | None]:
    if not slacks or any(s is None for s in slacks):
        return None, None
    margin = min(s for s in slacks if s is not None)
    return margin >= 0, margin


def z1(ufm: pd.DataFrame) -> Claim:
    """Every loss's UFM solution is collapsed."""
    numbers: dict[str, float | None] = {}
    slacks: list[float | None] = []
    for _, r in ufm.iterrows():
        for metric, bound in (("nc1", UFM_NC1), ("etf_error_weights", UFM_ETF),
                              ("nc3", UFM_NC3)):
            v = finite(r.get(metric))
            numbers[f"{r['loss']}_{metric}"] = v
            slacks.append(None if v is None else _slack(v, bound))
    holds, margin = _judge(slacks)
    return Claim("Z1", "Every loss's UFM solution is collapsed (CE, LS, FL, MSE)",
                 f"for every loss at the last iteration: NC1 ≤ {UFM_NC1:g}, ETF error of W ≤ "
                 f"{UFM_ETF:g}, NC3 ≤ {UFM_NC3:g}", numbers, holds, margin=margin)


def _mode(networks: pd.DataFrame, mode: str) -> pd.DataFrame:
    return networks[networks["mode"] == mode]


def z2(networks: pd.DataFrame) -> Claim:
    """Every loss collapses under ST and they reach the same clean test accuracy."""
    st = _mode(networks, "st")
    numbers: dict[str, float | None] = {}
    slacks: list[float | None] = []
    accs = []
    for _, r in st.iterrows():
        acc, first, last = (finite(r.get(k)) for k in ("clean test acc", "first nc1", "clean nc1"))
        ratio = last / first if acc is not None and first and last is not None else None
        numbers[f"{r['loss']}_test_acc"] = acc
        numbers[f"{r['loss']}_nc1_last_over_first"] = ratio
        slacks.append(None if ratio is None else _slack(ratio, NC1_REDUCTION))
        accs.append(acc)
    # accuracies are counts / n: round off float noise so that exactly 2 points is 2 points
    spread = round(max(accs) - min(accs), 12) if accs and None not in accs else None
    numbers["acc_spread_points"] = None if spread is None else 100 * spread
    slacks.append(None if spread is None else _slack(spread, ACC_SPREAD))
    holds, margin = _judge(slacks if len(st) >= 2 else [])
    return Claim("Z2", "Under ST every loss collapses and all reach the same clean test accuracy",
                 f"ST runs: max − min clean test accuracy ≤ {100 * ACC_SPREAD:g} points, and "
                 f"for every loss final NC1 ≤ {NC1_REDUCTION:g} × its first measured NC1 (clean "
                 "training features, penultimate layer)", numbers, holds, margin=margin)


def z3(networks: pd.DataFrame) -> Claim:
    """Under AT every loss keeps the aligned robust simplex."""
    at = _mode(networks, "at")
    numbers: dict[str, float | None] = {}
    slacks: list[float | None] = []
    for _, r in at.iterrows():
        clean, pert, fresh = (finite(r.get(k)) for k in ("clean nc1", "perturbed nc1", "pgd nc1"))
        ratio = pert / clean if pert is not None and clean else None
        numbers[f"{r['loss']}_perturbed_over_clean"] = ratio
        numbers[f"{r['loss']}_fresh_pgd_over_clean"] = (fresh / clean if fresh is not None
                                                        and clean else None)
        numbers[f"{r['loss']}_angle_deg"] = finite(r.get("perturbed simplex angle"))
        slacks.append(None if ratio is None else _slack(ratio, ROBUST_RATIO))
    holds, margin = _judge(slacks)
    return Claim("Z3", "Under AT every loss keeps the robust simplex (beyond the paper)",
                 f"AT runs, last epoch: NC1 of the training-time perturbed features (own means) "
                 f"≤ {ROBUST_RATIO:g} × NC1 of the clean ones, for every loss (the fresh "
                 "eval-mode PGD ratio and the clean-vs-perturbed simplex angle are reported)",
                 numbers, holds, margin=margin)


def judge(ufm: pd.DataFrame, networks: pd.DataFrame) -> list[Claim]:
    """Z1–Z3 from the two tables."""
    return [z1(ufm), z2(networks), z3(networks)]


def claims(folder: Path) -> list[Claim]:
    """Z1–Z3 judged from the tables in ``folder``."""
    missing = [n for n in ("ufm_final.csv", "networks.csv") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a zhou2022 run folder (missing "
                                f"{', '.join(missing)}); run `ncscope reproduce zhou2022` first")
    return judge(pd.read_csv(folder / "ufm_final.csv"), pd.read_csv(folder / "networks.csv"))

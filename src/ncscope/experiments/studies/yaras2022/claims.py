"""The claims Y1–Y4 of study ``yaras2022``, judged from the tables of a run folder.

Inputs (all written by the study's ``run``):

* ``ufm_scales_summary.csv`` — the oblique UFM over the scale sweep, one row per scale;
* ``ufm_compare_summary.csv`` — oblique vs regularised UFM, one row per (scale, solver);
* ``history.csv`` — per-epoch tracking of the four digits runs (``run, head, mode, epoch``);
* ``final.csv`` — :func:`ncscope.experiments.studies.grid.final_table` of those runs.

The thresholds and tolerances of the rules are the config's ``rules`` section
(:class:`Rules`). Each :class:`~ncscope.experiments.studies.base.Claim` carries its rule, the
numbers and ``holds`` (``None`` when a number the rule needs is missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ncscope.experiments.studies.base import Claim, finite
from ncscope.validation import check_real

__all__ = ["Rules", "first_epoch_at_most", "judge_claims", "nc1_by_epoch"]

_OWNER = "yaras2022"


@dataclass
class Rules:
    """Thresholds of the claims (YAML section ``rules``).

    Attributes:
        etf_threshold: Y1's "reaches the simplex ETF": ETF error of W at or below this.
        reach_scales: ``[low, high]``: Y1 needs every swept scale in this closed range to
            reach the ETF (scales outside it are reported, not judged).
        nc1_threshold / etf_compare_threshold: Y2's NC1 level (and the ETF level reported
            beside it) for "iterations to reach".
        nc1_level: Y3's NC1 level; ``None``: the final clean NC1 of the linear head's ST run
            (the level the linear head ends at; per mode for the AT numbers).
        robust_tolerance: Y4's slack: the normalized head's AT PGD test accuracy must be at
            least the linear head's minus this (a fraction; 0.03 = 3 points).
    """

    etf_threshold: float = 1e-6
    reach_scales: list[float] = field(default_factory=lambda: [1.0, 20.0])
    nc1_threshold: float = 1e-2
    etf_compare_threshold: float = 1e-2
    nc1_level: float | None = None
    robust_tolerance: float = 0.03

    def __post_init__(self) -> None:
        for name in ("etf_threshold", "nc1_threshold", "etf_compare_threshold"):
            setattr(self, name, check_real(_OWNER, f"rules.{name}", getattr(self, name), 0.0,
                                           strict_low=True))
        if self.nc1_level is not None:
            self.nc1_level = check_real(_OWNER, "rules.nc1_level", self.nc1_level, 0.0,
                                        strict_low=True)
        self.robust_tolerance = check_real(_OWNER, "rules.robust_tolerance",
                                           self.robust_tolerance, 0.0, 1.0)
        r = list(self.reach_scales)
        if len(r) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                  for v in r) or not 0 < r[0] <= r[1]:
            raise ValueError(f"{_OWNER}: rules.reach_scales must be [low, high] with "
                             f"0 < low <= high, got {self.reach_scales!r}")
        self.reach_scales = [float(r[0]), float(r[1])]



def _at_most(value: float, bound: float) -> float:
    """Relative slack of ``value ≤ bound``: ``(bound − value) / |bound|``."""
    return (bound - value) / abs(bound) if bound else -value


def _at_least(value: float, bound: float) -> float:
    """Relative slack of ``value ≥ bound``: ``(value − bound) / |bound|``."""
    return (value - bound) / abs(bound) if bound else value


def nc1_by_epoch(history: pd.DataFrame, run: str, source: str = "clean") -> pd.Series:
    """Clean-training NC1 (own means, label group, aggregate rows) of the penultimate layer of
    ``run`` by epoch (empty when absent)."""
    h = history
    sel = h[(h.run == run) & (h.source == source) & (h.split == "train") & (h.metric == "nc1")
            & (h.reference == "own") & (h.group == "label") & h["class"].isna()]
    return sel.set_index("epoch").value.astype(float).sort_index()


def first_epoch_at_most(series: pd.Series, level: float) -> int | None:
    """The first tracked epoch at which ``series`` is ``<= level`` (``None``: never)."""
    hit = series[series <= level]
    return None if hit.empty else int(hit.index[0])


def _y1(scales: pd.DataFrame, rules: Rules) -> Claim:
    lo, hi = rules.reach_scales
    nums: dict[str, float | None] = {}
    ordered = scales.sort_values("scale")
    for s, e in zip(ordered.scale, ordered["final etf_error_weights"], strict=True):
        nums[f"final_etf_scale{float(s):g}"] = finite(e)
    inside = scales[(scales.scale >= lo) & (scales.scale <= hi)]
    errs = [finite(v) for v in inside["final etf_error_weights"]]
    stalls = [key.removeprefix("final_etf_scale") for key, e in nums.items()
              if e is not None and e > rules.etf_threshold]
    c = Claim("Y1", "The oblique UFM reaches the simplex ETF over a range of scales",
              f"final ETF error of W ≤ {rules.etf_threshold:g} (Riemannian GD, Armijo) for "
              f"every swept scale in [{lo:g}, {hi:g}]; the final error of every swept scale "
              "is listed",
              nums,
              note=("not reached (stalls) at scale " + ", ".join(stalls)) if stalls
              else "reached at every swept scale")
    if len(errs) and all(e is not None for e in errs):
        c.holds = all(e <= rules.etf_threshold for e in errs)
        c.margin = min(_at_most(e, rules.etf_threshold) for e in errs)
    return c


def _iters(v: Any) -> float | None:
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) \
        else float(v)


def _y2(compare: pd.DataFrame, rules: Rules) -> Claim:
    nums: dict[str, float | None] = {}
    verdicts, margins = [], []
    for s in sorted(set(compare.scale)):
        rows = compare[compare.scale == s].set_index("solver")

        def get(solver: str, col: str, rows: pd.DataFrame = rows) -> float | None:
            return _iters(rows.at[solver, col]) if solver in rows.index else None

        obl, reg = get("rgd_armijo", "iterations to nc1"), get("gd_armijo", "iterations to nc1")
        nums[f"oblique_nc1_iters_scale{s:g}"] = obl
        nums[f"regularized_gd_nc1_iters_scale{s:g}"] = reg
        nums[f"regularized_lbfgs_nc1_iters_scale{s:g}"] = get("lbfgs", "iterations to nc1")
        nums[f"oblique_etf_iters_scale{s:g}"] = get("rgd_armijo", "iterations to etf")
        nums[f"regularized_gd_etf_iters_scale{s:g}"] = get("gd_armijo", "iterations to etf")
        if "rgd_armijo" not in rows.index or "gd_armijo" not in rows.index:
            continue
        budget = finite(rows.at["gd_armijo", "iterations"]) or 0.0
        if obl is None:  # the oblique run never got there: fails whatever the other did
            verdicts.append(False)
            margins.append(-1.0)
        elif reg is None:  # the regularised run never did: at least its whole run
            verdicts.append(True)
            margins.append(_at_most(obl, budget + 1))
        else:
            verdicts.append(obl < reg)
            margins.append(_at_most(obl, reg))
    c = Claim("Y2", "Normalized (oblique) UFM collapses in fewer iterations than the "
                    "regularised UFM",
              f"first iteration with NC1 ≤ {rules.nc1_threshold:g}: oblique (Riemannian GD) < "
              "regularised (GD) at every compared scale — same K, n, d, seed, start point, "
              "CE, no bias, same Armijo rule; λ paired so both minimisers have the same logit "
              "scale. L-BFGS on the regularised problem and iterations to ETF error ≤ "
              f"{rules.etf_compare_threshold:g} are reported, not judged", nums)
    if verdicts:
        c.holds = all(verdicts)
        c.margin = min(margins)
    return c


def _epochs(history: pd.DataFrame, final: pd.DataFrame, mode: str,
            level: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"level": level, "linear": None, "normalized": None,
                           "normalized_min": None, "linear_final": None}
    runs = {r.head: r.run for r in final[final["mode"] == mode].itertuples(index=False)}
    if "linear" not in runs or "normalized" not in runs:
        return out
    lin, nor = nc1_by_epoch(history, runs["linear"]), nc1_by_epoch(history, runs["normalized"])
    if lin.empty or nor.empty:
        return out
    out["linear_final"] = float(lin.iloc[-1])
    out["level"] = level = out["linear_final"] if level is None else level
    out["linear"] = first_epoch_at_most(lin, level)
    out["normalized"] = first_epoch_at_most(nor, level)
    out["normalized_min"] = float(nor.min())
    out["measured"] = True
    return out


def _y3(history: pd.DataFrame, final: pd.DataFrame, rules: Rules) -> Claim:
    st = _epochs(history, final, "st", rules.nc1_level)
    at = _epochs(history, final, "at", rules.nc1_level)
    level_text = (f"{rules.nc1_level:g}" if rules.nc1_level is not None
                  else "the linear head's final ST NC1")
    c = Claim("Y3", "The normalized-head network collapses in fewer epochs than the linear head",
              f"ST, digits BN-MLP: first tracked epoch with clean training NC1 (penultimate "
              f"features) ≤ {level_text}: normalized head < linear head (never reaching it "
              "fails); AT numbers (level: the linear head's final AT NC1 unless set) reported, "
              "not judged",
              {"level_st": st["level"], "epoch_linear_st": st["linear"],
               "epoch_normalized_st": st["normalized"], "nc1_final_linear_st": st["linear_final"],
               "nc1_min_normalized_st": st["normalized_min"],
               "level_at": at["level"], "epoch_linear_at": at["linear"],
               "epoch_normalized_at": at["normalized"],
               "nc1_final_linear_at": at["linear_final"],
               "nc1_min_normalized_at": at["normalized_min"]})
    if st.get("measured") and st["linear"] is not None:
        lin, nor = float(st["linear"]), st["normalized"]
        if nor is None:
            c.holds = False
            c.margin = _at_most(st["normalized_min"], st["level"])
        else:
            c.holds = nor < lin
            c.margin = _at_most(float(nor), lin)
    return c


def _y4(final: pd.DataFrame, rules: Rules) -> Claim:
    at = final[final["mode"] == "at"].set_index("head")

    def get(head: str, col: str) -> float | None:
        return finite(at.at[head, col]) if head in at.index and col in at.columns else None

    lin, nor = get("linear", "PGD test acc"), get("normalized", "PGD test acc")
    tol = rules.robust_tolerance
    c = Claim("Y4", "With AT, the normalized head keeps the linear head's robust accuracy",
              f"AT, digits: PGD test accuracy (fresh eval-mode PGD at the training ε) of the "
              f"normalized head ≥ the linear head's − {100 * tol:g} points; clean accuracy and "
              "the clean-vs-perturbed simplex angles (training-time and fresh-PGD "
              "perturbations) reported, not judged",
              {"pgd_acc_linear": lin, "pgd_acc_normalized": nor,
               "gap_points": None if lin is None or nor is None else 100 * (nor - lin),
               "clean_acc_linear": get("linear", "clean test acc"),
               "clean_acc_normalized": get("normalized", "clean test acc"),
               "perturbed_angle_linear_deg": get("linear", "perturbed simplex angle"),
               "perturbed_angle_normalized_deg": get("normalized", "perturbed simplex angle"),
               "pgd_angle_linear_deg": get("linear", "pgd simplex angle"),
               "pgd_angle_normalized_deg": get("normalized", "pgd simplex angle")},
              note="Beyond the paper (which studies clean training only).")
    if lin is not None and nor is not None:
        c.holds = nor >= lin - tol
        c.margin = _at_least(nor, lin - tol)
    return c


def judge_claims(scales: pd.DataFrame, compare: pd.DataFrame, history: pd.DataFrame,
                 final: pd.DataFrame, rules: Rules | None = None) -> list[Claim]:
    """Y1–Y4 from the four tables of a yaras2022 run (see the module docstring)."""
    rules = rules or Rules()
    return [_y1(scales, rules), _y2(compare, rules), _y3(history, final, rules),
            _y4(final, rules)]

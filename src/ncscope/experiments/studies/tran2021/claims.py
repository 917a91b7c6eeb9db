"""The claims V1–V3 and C1 of study ``tran2021``, judged from its tables.

* V1 (soundness of relaxed reachability, Tran et al., CAV 2021): no sampled input of a
  verified set leaves the computed output bounds, and no sampled input of a collapse-certified
  ball leaves the nearest-class-mean region;
* V2 (the paper's relaxation-factor experiments: the factor trades LPs for precision) — rF = 1
  against rF = 0;
* V3 (the paper's architecture comparison: transposed convolution + average pooling against
  dilated convolution) — reported either way;
* C1 (beyond the paper: the certified collapse radius) — AT against ST, and every certified
  radius below the empirical PGD radius of the same sample.

Inputs: ``sweep.csv``, ``nets.csv``, ``radius.csv`` (and ``summary.json`` for the tolerance).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ncscope.experiments.studies.base import Claim, finite, read_summary

V1_SAMPLES, V2_SPEEDUP = 10_000, 3.0



def v1(sweep: pd.DataFrame, nets: pd.DataFrame, radius: pd.DataFrame) -> Claim:
    """Zero violations over at least 10 000 sampled inputs."""
    parts = [t for t in (sweep, nets, radius) if len(t) and {"violations", "samples"} <= set(t)]
    samples = int(sum(t.samples.sum() for t in parts))
    bad = int(sum(t.violations.sum() for t in parts))
    c = Claim("V1", "Relaxed reachability is sound: sampled inputs stay inside the bounds",
              f"over ≥ {V1_SAMPLES} sampled inputs of the verified sets (network run on each; "
              "outputs within the output bounds, certified balls nearest to μ_y): 0 violations",
              {"samples": samples, "violations": bad})
    if parts:
        c.holds = bad == 0 and samples >= V1_SAMPLES
        c.margin = (samples - V1_SAMPLES) / V1_SAMPLES if bad == 0 else -bad / max(samples, 1)
    return c


def v2(sweep: pd.DataFrame) -> Claim:
    """rF = 1 is ≥ 3× faster than rF = 0 with RV no higher."""
    def at(rf: float) -> pd.DataFrame:
        return sweep[(sweep.rf - rf).abs() < 1e-12]
    s0, s1 = at(0.0), at(1.0)
    nums: dict[str, float | None] = {
        "seconds_rf0": finite(s0.seconds.mean()) if len(s0) else None,
        "seconds_rf1": finite(s1.seconds.mean()) if len(s1) else None,
        "lps_rf0": finite(s0.lps.mean()) if len(s0) else None,
        "lps_rf1": finite(s1.lps.mean()) if len(s1) else None,
        "rv_rf0": finite(s0.rv.mean()) if len(s0) else None,
        "rv_rf1": finite(s1.rv.mean()) if len(s1) else None,
    }
    c = Claim("V2", "rF = 1 (estimated bounds only) is much faster than rF = 0 (all LPs) and "
              "verifies no more pixels",
              f"mean seconds per image at rF = 0 ≥ {V2_SPEEDUP:g} × that at rF = 1, and mean "
              "RV at rF = 1 ≤ mean RV at rF = 0", nums)
    t0, t1, r0, r1 = (nums[k] for k in ("seconds_rf0", "seconds_rf1", "rv_rf0", "rv_rf1"))
    if None not in (t0, t1, r0, r1) and t1 > 0:  # type: ignore[operator]
        ratio = t0 / t1  # type: ignore[operator]
        nums["speedup"] = ratio
        s_t = (ratio - V2_SPEEDUP) / V2_SPEEDUP
        s_r = (r0 - r1) / max(r0, 1e-12)  # type: ignore[operator]
        c.margin = min(s_t, s_r)
        c.holds = ratio >= V2_SPEEDUP and r1 <= r0  # type: ignore[operator]
    return c


def v3(nets: pd.DataFrame) -> Claim:
    """The transposed-conv net verifies a larger fraction of pixels than the dilated one."""
    sel = nets[nets.attack == "linf"] if len(nets) else nets
    rv = sel.groupby("net").rv.mean() if len(sel) else pd.Series(dtype=float)
    rs = sel.groupby("net").rs.mean() if len(sel) else pd.Series(dtype=float)
    nums = {"rv_transposed": finite(rv.get("transposed")), "rv_dilated": finite(rv.get("dilated")),
            "rs_transposed": finite(rs.get("transposed")), "rs_dilated": finite(rs.get("dilated"))}
    eps = finite(sel.eps.iloc[0]) if len(sel) else None
    c = Claim("V3", "The transposed-conv + average-pool net is more verifiable than the "
              "dilated one", f"ℓ∞ ball ε = {eps} on the same pixels, same rF: mean RV "
              "(transposed) > mean RV (dilated)", nums)
    a, b = nums["rv_transposed"], nums["rv_dilated"]
    if a is not None and b is not None:
        c.holds = a > b
        c.margin = (a - b) / max(b, 1e-12)
    return c


def c1(radius: pd.DataFrame, tol: float) -> Claim:
    """AT's median certified collapse radius exceeds ST's; every certified radius is at most
    the PGD radius of the same sample."""
    med = radius.groupby("run").collapse_radius.median() if len(radius) else pd.Series(dtype=float)
    med_l = radius.groupby("run").logit_radius.median() if len(radius) else pd.Series(dtype=float)
    nums: dict[str, float | None] = {}
    for run in ("st", "at", "trades"):
        nums[f"{run}_median_collapse"] = finite(med.get(run))
        nums[f"{run}_median_logit"] = finite(med_l.get(run))
    c = Claim("C1", "AT enlarges the certified collapse radius; certified radii stay below "
              "the PGD radius (beyond the paper)",
              "median certified collapse radius AT > ST, and for every sample collapse and "
              "logit certified radius ≤ PGD radius", nums)
    st, at = nums["st_median_collapse"], nums["at_median_collapse"]
    if st is None or at is None or not len(radius):
        return c
    pgd = radius.pgd_radius.astype(float)
    cert = radius[["collapse_radius", "logit_radius"]].astype(float).max(axis=1)
    bounded = pgd.replace(float("inf"), float("nan"))
    over = int((cert > pgd).sum())
    nums["samples_over_pgd"] = over
    nums["samples"] = len(radius)
    gaps = ((bounded - cert) / bounded.clip(lower=tol)).dropna()
    s_order = (at - st) / max(st, tol)
    c.margin = min(s_order, float(gaps.min())) if len(gaps) else s_order
    c.holds = at > st and over == 0
    return c


def judge(sweep: pd.DataFrame, nets: pd.DataFrame, radius: pd.DataFrame, tol: float
          ) -> list[Claim]:
    """V1–V3 and C1 from the tables."""
    return [v1(sweep, nets, radius), v2(sweep), v3(nets), c1(radius, tol)]


def claims(folder: Path) -> list[Claim]:
    """V1–V3 and C1 judged from the tables in ``folder``."""
    names = ("sweep.csv", "nets.csv", "radius.csv")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a tran2021 run folder (missing "
                                f"{', '.join(missing)}); run `ncscope reproduce tran2021` first")
    tol = float(read_summary(folder).get("config", {}).get("tol", 0.005))
    return judge(*(pd.read_csv(folder / n) for n in names), tol)

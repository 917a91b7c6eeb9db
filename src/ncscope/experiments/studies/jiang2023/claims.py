"""The claims G1–G5 of study ``jiang2023``, judged from its tables.

* G1, G2 (Jiang et al. 2023: with K > d + 1 the spherical UFM's classifier converges to a
  softmax code, maximising the minimal one-vs-rest distance) — the hexagon at (6, 2), and the
  best code found at larger sizes;
* G3 (the paper's distinction between softmax codes and Tammes codes) — on the optimisers'
  values;
* G4 (generalized collapse of trained networks) — on the digits net with a 3-D bottleneck;
* G5 (beyond the paper: the main study's leap, Su et al. 2024 §4, at K > d + 1).

Inputs: ``codes.csv``, ``networks.csv`` and ``analysis.csv`` of the run folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ncscope.experiments.studies.base import Claim, finite

HEXAGON = 1 - math.cos(2 * math.pi / 6)  # = 0.5, the regular hexagon's one-vs-rest distance
G1_TOL, G2_TOL, G3_GAP = 0.01, 0.05, 1e-4
G4_GNC3, G4_FRACTION, G5_LEAP = 0.1, 0.8, 0.9



def _is_reference(codes: pd.DataFrame) -> pd.Series:
    """Rows of the network's reference code (not a UFM size)."""
    if "network_reference" not in codes:
        return pd.Series(False, index=codes.index)
    return codes["network_reference"].astype("boolean").fillna(False).astype(bool)


def _ufm_rows(codes: pd.DataFrame) -> pd.DataFrame:
    return codes[~_is_reference(codes)]


def _row(codes: pd.DataFrame, k: int, d: int) -> pd.Series | None:
    r = _ufm_rows(codes)
    r = r[(r["K"] == k) & (r.d == d)]
    return r.iloc[0] if len(r) else None


def g1(codes: pd.DataFrame) -> Claim:
    """At (6, 2) the UFM reaches the hexagon's margin 0.5 within 1 %."""
    r = _row(codes, 6, 2)
    g = None if r is None else finite(r.get("ufm_gnc2"))
    c = Claim("G1", "At K = 6, d = 2 the spherical UFM reaches the regular hexagon",
              f"|GNC2 − {HEXAGON:g}| ≤ {100 * G1_TOL:g} % of {HEXAGON:g} (1 − cos(2π/6))",
              {"ufm_gnc2": g, "hexagon": HEXAGON})
    if g is not None:
        err = abs(g - HEXAGON) / HEXAGON
        c.holds, c.margin = err <= G1_TOL, (G1_TOL - err) / G1_TOL
    return c


def g2(codes: pd.DataFrame) -> Claim:
    """At every larger size the UFM's GNC2 is within 5 % of the best code found."""
    nums: dict[str, float | None] = {}
    slacks = []
    for _, r in _ufm_rows(codes).iterrows():
        k, d = int(r.K), int(r.d)
        if (k, d) == (6, 2):
            continue
        g, soft, tam = (finite(r.get(x)) for x in ("ufm_gnc2", "softmax_margin", "tammes_margin"))
        best = max(v for v in (soft, tam, g) if v is not None) if g is not None else None
        nums[f"ufm_gnc2_{k}x{d}"], nums[f"best_code_{k}x{d}"] = g, best
        if g is None or not best:
            slacks.append(None)
            continue
        gap = (best - g) / best
        nums[f"gap_{k}x{d}"] = gap
        slacks.append((G2_TOL - gap) / G2_TOL)
    c = Claim("G2", "At larger K > d + 1 the spherical UFM finds a code as good as the best "
              "found", f"for every size other than (6, 2): GNC2 of the UFM ≥ (1 − {G2_TOL:g}) × "
              "the best min one-vs-rest distance of the softmax-code and Tammes optimisers",
              nums)
    if slacks and None not in slacks:
        c.margin = min(slacks)  # type: ignore[type-var]
        c.holds = c.margin >= 0
    return c


def g3(codes: pd.DataFrame) -> Claim:
    """Softmax codes and Tammes codes differ somewhere."""
    nums: dict[str, float | None] = {}
    diffs = []
    for _, r in codes.iterrows():
        soft, tam = finite(r.get("softmax_margin")), finite(r.get("tammes_margin"))
        key = f"{int(r.K)}x{int(r.d)}"
        nums[f"softmax_{key}"], nums[f"tammes_{key}"] = soft, tam
        if soft is not None and tam is not None:
            diffs.append(soft - tam)
    c = Claim("G3", "Softmax codes are not Tammes codes",
              f"at some (K, d): min one-vs-rest distance of the softmax code − that of the "
              f"Tammes (max-min angle) code > {G3_GAP:g}", nums)
    if diffs:
        best = max(diffs)
        nums["largest_difference"] = best
        c.holds, c.margin = best > G3_GAP, (best - G3_GAP) / G3_GAP
    return c


def g4(codes: pd.DataFrame, networks: pd.DataFrame) -> Claim:
    """The bottleneck ST net shows generalized collapse."""
    ref = codes[_is_reference(codes)]
    best = finite(ref.softmax_margin.max()) if len(ref) else None
    st = networks[networks["mode"] == "st"]
    gnc2 = finite(st["clean gnc2"].iloc[0]) if len(st) else None
    gnc3 = finite(st["clean gnc3"].iloc[0]) if len(st) else None
    gnc1 = finite(st["clean gnc1"].iloc[0]) if len(st) else None
    c = Claim("G4", "The trained bottleneck net (ST) shows generalized collapse",
              f"ST, last epoch, bottleneck features: GNC3 ≤ {G4_GNC3:g} and GNC2 ≥ "
              f"{G4_FRACTION:g} × the softmax code's min one-vs-rest distance at the same "
              "(K, d)", {"gnc1": gnc1, "gnc2": gnc2, "gnc3": gnc3, "code_margin": best})
    if None not in (gnc2, gnc3, best):
        s3 = (G4_GNC3 - gnc3) / G4_GNC3  # type: ignore[operator]
        s2 = (gnc2 - G4_FRACTION * best) / (G4_FRACTION * best)  # type: ignore[operator]
        c.margin = min(s2, s3)
        c.holds = c.margin >= 0
    return c


def g5(analysis: pd.DataFrame) -> Claim:
    """The leap of the main study at K > d + 1."""
    a = analysis[analysis["class"].isna()] if "class" in analysis else analysis
    nums: dict[str, float | None] = {}
    for run in ("st", "at"):
        sel = a[(a.run == run) & (a.source == "pgd") & (a.split == "train")
                & (a.reference == "clean") & (a.group == "label")]
        for metric in ("leap_pred_when_wrong", "net_accuracy", "gnc2"):
            s = sel[sel.metric == metric]
            nums[f"{run}_{metric}"] = finite(s.value.iloc[0]) if len(s) else None
    leap = nums.get("st_leap_pred_when_wrong")
    c = Claim("G5", "Perturbed points leap to other vertices at K > d + 1 (beyond the paper)",
              f"ST, untargeted PGD at the training ε: ≥ {100 * G5_LEAP:g} % of the misclassified "
              "perturbed bottleneck features nearest to the clean mean of the new prediction "
              "(AT reported)", nums)
    if leap is not None:
        c.holds, c.margin = leap >= G5_LEAP, (leap - G5_LEAP) / G5_LEAP
    return c


def judge(codes: pd.DataFrame, networks: pd.DataFrame, analysis: pd.DataFrame) -> list[Claim]:
    """G1–G5 from the three tables."""
    return [g1(codes), g2(codes), g3(codes), g4(codes, networks), g5(analysis)]


def claims(folder: Path) -> list[Claim]:
    """G1–G5 judged from the tables in ``folder``."""
    names = ("codes.csv", "networks.csv", "analysis.csv")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a jiang2023 run folder (missing "
                                f"{', '.join(missing)}); run `ncscope reproduce jiang2023` first")
    return judge(*(pd.read_csv(folder / n) for n in names))

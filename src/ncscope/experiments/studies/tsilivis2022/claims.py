"""The claims N1–N5 of study ``tsilivis2022``, judged from its tables.

* N1 (Jacot et al. 2018, Theorem 1; Tsilivis & Kempe 2022, §3): the empirical NTK at
  initialisation approaches the analytic one as the width grows;
* N2 (Tsilivis & Kempe 2022, §4.1): kernel attacks, built without any trained network, fool
  the kernel predictor and transfer to finite networks;
* N3 (§4.2): the eigen-features of the largest eigenvalues are the robust ones;
* N4 (§5): under adversarial training the empirical NTK moves less early on and concentrates
  in its top eigenspace;
* N5 (beyond the paper): the leap of Su et al. 2024, §4, under the transfer attack.

Inputs: ``kernel_convergence.csv``, ``transfer.csv``, ``eigen_features.csv``, ``history.csv``
and ``analysis.csv`` of the run folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ncscope.experiments.studies.base import Claim, finite

N2_SHARE = 0.5  # the widest net loses at least this share of the white-box drop
N3_TOP = 5
N4_EARLY = 3  # epochs 1..N4_EARLY are "early"
N5_SLACK = 0.1  # the kernel leap fraction may trail PGD's by at most this much



def n1(conv: pd.DataFrame) -> Claim:
    """Mean relative error decreases monotonically with width."""
    means = conv.groupby("width")["rel_error"].mean().sort_index()
    nums: dict[str, float | None] = {f"rel_error_w{int(w)}": float(e) for w, e in means.items()}
    c = Claim("N1", "The empirical NTK at initialisation converges to the analytic NTK with width",
              "the mean (over seeds) relative Frobenius error ‖Θ_emp − Θ‖/‖Θ‖ decreases "
              "strictly from each width to the next", nums)
    if len(means) >= 2:
        ratios = (means.to_numpy()[1:] / means.to_numpy()[:-1]).tolist()
        c.margin = min(1 - r for r in ratios)
        c.holds = bool(c.margin > 0)
    return c


def n2(transfer: pd.DataFrame) -> Claim:
    """Kernel PGD lowers the kernel's accuracy and transfers to the widest net."""
    kern = transfer[transfer.model == "kernel"]
    nets = transfer[transfer.model == "mlp"].sort_values("width")
    nums: dict[str, float | None] = {}
    if len(kern):
        k = kern.iloc[0]
        nums["kernel_clean"], nums["kernel_under_kernel_pgd"] = (finite(k.clean_acc),
                                                                 finite(k.kernel_pgd_acc))
    for r in nets.itertuples():
        w = int(r.width)
        nums[f"w{w}_clean"] = finite(r.clean_acc)
        nums[f"w{w}_whitebox"] = finite(r.whitebox_pgd_acc)
        nums[f"w{w}_transfer"] = finite(r.kernel_pgd_acc)
    c = Claim("N2", "Training-free kernel attacks fool the kernel predictor and transfer to "
              "finite networks", "kernel PGD lowers the kernel predictor's accuracy, and on the "
              f"widest net (clean − transfer) ≥ {N2_SHARE:g} × (clean − white-box PGD) at the "
              "same ε", nums)
    if len(kern) and len(nets):
        k, w = kern.iloc[0], nets.iloc[-1]
        own_drop = float(k.clean_acc - k.kernel_pgd_acc)
        white = float(w.clean_acc - w.whitebox_pgd_acc)
        moved = float(w.clean_acc - w.kernel_pgd_acc)
        nums["widest_transfer_share"] = moved / white if white > 0 else None
        if white > 0:
            c.margin = min(moved / (N2_SHARE * white) - 1,
                           own_drop / max(float(k.clean_acc), 1e-12))
            c.holds = bool(own_drop > 0 and moved >= N2_SHARE * white)
    return c


def n3(eig: pd.DataFrame) -> Claim:
    """Top eigen-features are more robust than the rest."""
    eig = eig.sort_values("index")
    top, rest = eig.robustness.iloc[:N3_TOP], eig.robustness.iloc[N3_TOP:]
    nums = {"robustness_top": finite(top.mean()), "robustness_rest": finite(rest.mean()),
            "usefulness_top": finite(eig.usefulness.iloc[:N3_TOP].mean()),
            "usefulness_rest": finite(eig.usefulness.iloc[N3_TOP:].mean()),
            "features": float(len(eig))}
    c = Claim("N3", "Robust features sit at the top of the NTK spectrum",
              f"mean robustness γ of the top {N3_TOP} eigen-features > mean γ of the others "
              "analysed", nums)
    a, b = nums["robustness_top"], nums["robustness_rest"]
    if a is not None and b is not None and len(rest):
        c.holds = bool(a > b)
        c.margin = (a - b) / max(a, 1e-12)
    return c


def _kernel_series(history: pd.DataFrame, run: str, metric: str) -> pd.Series:
    h = history[(history.run == run) & (history.metric == metric)
                & (history.source == "clean") & history.layer.isna()]
    return h.set_index("epoch")["value"].sort_index()


def n4(history: pd.DataFrame) -> Claim:
    """AT's kernel moves less early and ends with more top-K mass than ST's."""
    nums: dict[str, float | None] = {}
    early, final = {}, {}
    for run in ("st", "at"):
        d = _kernel_series(history, run, "ntk_dist_init")
        m = _kernel_series(history, run, "ntk_top_mass")
        e = d[(d.index >= 1) & (d.index <= N4_EARLY)]
        early[run] = finite(e.mean()) if len(e) else None
        final[run] = finite(m.iloc[-1]) if len(m) else None
        nums[f"{run}_early_dist_init"], nums[f"{run}_final_top_mass"] = early[run], final[run]
        a = _kernel_series(history, run, "ntk_class_alignment")
        nums[f"{run}_final_class_alignment"] = finite(a.iloc[-1]) if len(a) else None
    c = Claim("N4", "Under adversarial training the NTK moves less early and concentrates in "
              "its top eigenspace", f"clean probe: mean kernel distance to initialisation over "
              f"epochs 1–{N4_EARLY} smaller for AT than ST, and top-K spectral mass at the last "
              "epoch larger for AT than ST", nums)
    if None not in (*early.values(), *final.values()) and len(early) == 2:
        s1 = (early["st"] - early["at"]) / max(early["st"], 1e-12)  # type: ignore[operator]
        s2 = (final["at"] - final["st"]) / max(final["st"], 1e-12)  # type: ignore[operator]
        c.margin = min(s1, s2)
        c.holds = bool(s1 > 0 and s2 > 0)
    return c


def n5(analysis: pd.DataFrame) -> Claim:
    """Kernel-attack perturbations make ST features leap like white-box PGD."""
    a = analysis[analysis["class"].isna()] if "class" in analysis else analysis
    nums: dict[str, float | None] = {}
    for src in ("pgd", "kernel_pgd"):
        sel = a[(a.source == src) & (a.split == "train") & (a.reference == "clean")
                & (a.group == "label")]
        for metric in ("leap_pred_when_wrong", "net_accuracy"):
            s = sel[sel.metric == metric]
            nums[f"{src}_{metric}"] = finite(s.value.iloc[0]) if len(s) else None
    c = Claim("N5", "Transfer perturbations make features leap like white-box ones (beyond the "
              "paper)", "ST net, penultimate features of the training set: the fraction of "
              "misclassified kernel-PGD points nearest to the clean mean of their new "
              f"prediction ≥ that of white-box PGD − {N5_SLACK:g}", nums)
    k, p = nums.get("kernel_pgd_leap_pred_when_wrong"), nums.get("pgd_leap_pred_when_wrong")
    if k is not None and p is not None:
        c.holds = bool(k >= p - N5_SLACK)
        c.margin = (k - (p - N5_SLACK)) / max(p, 1e-12)
    return c


def claims(folder: Path) -> list[Claim]:
    """N1–N5 judged from the tables in ``folder``."""
    names = ("kernel_convergence.csv", "transfer.csv", "eigen_features.csv", "history.csv")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a tsilivis2022 run folder (missing "
                                f"{', '.join(missing)}); run `ncscope reproduce tsilivis2022` "
                                "first")
    conv, transfer, eig, history = (pd.read_csv(folder / n) for n in names)
    out = [n1(conv), n2(transfer), n3(eig), n4(history)]
    analysis = folder / "analysis.csv"
    out.append(n5(pd.read_csv(analysis)) if analysis.is_file() else
               Claim("N5", "Transfer perturbations make features leap like white-box ones",
                     "needs the ST run", {}))
    return out

"""Robust accuracy with its reference: PGD and AutoAttack side by side on the same images.

AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020, §4-5) is the field's reference for robust accuracy
(RobustBench reports it). Being the stronger evaluation, its robust accuracy must not exceed
PGD's on the same images; PGD above it by more than :data:`MASKING_GAP` suggests that PGD's
gradients are masked (PGD over-estimates robustness; trust AutoAttack's number).

:func:`robust_reference` measures one model; the study ``su2024`` calls it for every trained
model, so its report shows both numbers for each. AutoAttack needs the optional
``pyautoattack`` package (``pip install 'ncscope[autoattack]'``); without it the PGD column is
still measured and the AutoAttack column says why it is empty.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from ncscope.attacks import PGD, AutoAttackSource, autoattack_installed, threat_model
from ncscope.collapse.sweep import batches_of
from ncscope.data import stratified_indices
from ncscope.models.adapters import logits_of
from ncscope.validation import check_choice

__all__ = ["AUTOATTACK_MODES", "MASKING_GAP", "autoattack_installed", "consistency_flag",
           "robust_reference"]

#: ``auto``: AutoAttack when ``pyautoattack`` is installed; ``on``: required (error without
#: it); ``off``: PGD only.
AUTOATTACK_MODES = ("auto", "on", "off")
#: PGD's robust accuracy above AutoAttack's by more than this (fraction) flags the model.
MASKING_GAP = 0.05


def consistency_flag(pgd: float, aa: float) -> str:
    """The sanity rule of AutoAttack as the reference (Croce & Hein, ICML 2020): its robust
    accuracy is an upper bound that a stronger attack can only lower, so above PGD's it signals
    a broken evaluation, and far below PGD's (more than 5 points) it suggests that PGD's
    gradients are masked. Empty when both agree (or one is missing)."""
    if math.isnan(pgd) or math.isnan(aa):
        return ""
    if aa > pgd + 1e-12:
        return "AutoAttack > PGD (sanity failure)"
    if pgd - aa > MASKING_GAP:
        return "PGD - AutoAttack > 5 points (possible gradient masking)"
    return ""


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((logits_of(model(x)).argmax(1) == y).double().mean())


def robust_reference(
    model: nn.Module,
    data: Any,
    *,
    eps: float | None = None,
    norm: str = "linf",
    alpha: float | None = None,
    steps: int | None = None,
    restarts: int = 1,
    n: int | None = 200,
    seed: int = 0,
    autoattack: str = "auto",
    fast: bool = False,
) -> dict[str, Any]:
    """PGD and standard AutoAttack robust accuracy of ``model`` on the same test images.

    Args:
        model: any classifier on pixels in [0, 1] (put in eval mode here).
        data: the test data (anything :func:`ncscope.collapse.sweep.batches_of` reads).
        eps, norm, alpha, steps, restarts, fast: PGD's threat model (``None``: the
            threat-model table, :func:`ncscope.attacks.threat_model`); AutoAttack runs at the
            same ``eps`` and ``norm``.
        n: a class-stratified subset of ``n`` images (fixed by ``seed``; ``None``: all).
        autoattack: ``"auto"`` (when installed), ``"on"`` (required) or ``"off"``.

    Returns:
        ``eps, norm, n, clean, pgd, autoattack`` (accuracies; ``autoattack`` NaN when it did
        not run), ``autoattack_after`` (robust accuracy after each AutoAttack component),
        ``check`` (:func:`consistency_flag`), ``note`` (why AutoAttack did not run) and the
        seconds of each attack.
    """
    mode = check_choice("robust_reference", "autoattack", autoattack, AUTOATTACK_MODES)
    if mode == "on" and not autoattack_installed():
        raise ImportError("autoattack='on' needs the pyautoattack package: pip install "
                          "'ncscope[autoattack]' (or set autoattack to auto / off)")
    xs, ys = zip(*batches_of(data, 1024)(), strict=True)
    x, y = torch.cat(xs), torch.cat(ys).long()
    if n is not None and n < len(y):
        idx = torch.as_tensor(stratified_indices(y.numpy(), int(n), seed=seed), dtype=torch.long)
        x, y = x[idx], y[idx]
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    model.eval()
    tm = threat_model(norm, eps, alpha, steps, owner="robust_reference")
    out: dict[str, Any] = {"eps": tm.eps, "norm": tm.norm, "n": int(len(y)),
                           "clean": _accuracy(model, x, y)}
    t0 = time.perf_counter()
    pgd = PGD(model, eps=tm.eps, alpha=tm.alpha, steps=tm.steps, norm=tm.norm,
              restarts=restarts, seed=seed, fast=fast)
    out["pgd"] = _accuracy(model, pgd(x, y), y)
    out["pgd_seconds"] = time.perf_counter() - t0
    out.update(autoattack=float("nan"), autoattack_after={}, autoattack_seconds=float("nan"),
               note="")
    if mode == "off":
        out["note"] = "AutoAttack off"
    elif not autoattack_installed():
        out["note"] = "AutoAttack not installed: pip install 'ncscope[autoattack]'"
    else:
        t0 = time.perf_counter()
        aa = AutoAttackSource(model, tm.eps, norm=tm.norm, seed=seed + 4)
        out["autoattack"] = _accuracy(model, aa(x, y), y)
        report = aa.last_report
        out["autoattack_after"] = dict(report.robust_after) if report is not None else {}
        out["autoattack_seconds"] = time.perf_counter() - t0
    out["check"] = consistency_flag(out["pgd"], out["autoattack"])
    return out

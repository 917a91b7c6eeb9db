"""NTK eigen-features of a binary task: usefulness and robustness per kernel eigenvector
(Tsilivis & Kempe, NeurIPS 2022, §4.2; feature definitions of Ilyas et al., NeurIPS 2019, §2).

With Θ(X, X) = Σ_i λ_i v_i v_iᵀ and labels y ∈ {−1, +1}, the kernel predictor at τ = ∞ is the
sum of the eigen-features

    φ_i(x) = λ_i⁻¹ Θ(x, X) v_i (v_iᵀ y)

(at finite τ each carries the weight 1 − e^{−λ_i τ}, so the top ones are learned first). A
feature is ρ-useful when E 1{sign φ(x) = y} = ρ, and γ-robust when
E inf_{‖δ‖ ≤ ε} 1{sign φ(x + δ) = y} = γ; the infimum is estimated by an ℓ∞ PGD on each feature
alone (maximising −y·φ_i(x + δ)), so γ is an upper bound of the true robustness. Features are
attacked in one batch (every test point × every feature), so the cost is one kernel evaluation
of (m·F) × n per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor

from ncscope.validation import check_int, check_real

__all__ = ["eigen_features"]

KernelFn = Callable[[Tensor, Tensor], Tensor]


def _signed(y: Tensor) -> Tensor:
    vals = sorted({int(v) for v in y.tolist()})
    if vals == [-1, 1]:
        return y.to(torch.float64)
    if len(vals) != 2:
        raise ValueError(f"eigen_features: a binary task needs two label values, got {vals}; "
                         "select two classes (e.g. digits 3 and 8)")
    return torch.where(y == vals[1], 1.0, -1.0).to(torch.float64)


def eigen_features(
    kernel: KernelFn,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    eps: float,
    features: int | Sequence[int] = 50,
    steps: int = 10,
    alpha: float | None = None,
    rtol: float = 1e-12,
) -> pd.DataFrame:
    """Usefulness ρ and robustness γ of kernel eigen-features on a binary task.

    Args:
        kernel: ``kernel(a, b) -> (n_a, n_b)`` float64, differentiable in ``a``.
        train_x, train_y / test_x, test_y: inputs and binary labels (any two values; the larger
            one is +1) of the training and test sets (pixel space [0, 1]).
        eps: ℓ∞ radius of the robustness attack (pixel units).
        features: the first ``features`` eigen-directions (decreasing eigenvalue), or indices.
        steps, alpha: PGD steps and step size (``alpha=None``: 2.5·eps/steps).
        rtol: eigenvalues ≤ rtol·λ_max are skipped (their features are not defined).

    Returns:
        One row per feature: ``index`` (0 = largest eigenvalue), ``eigenvalue``,
        ``usefulness`` ρ (clean test accuracy of sign φ_i), ``robustness`` γ (accuracy under
        the per-feature PGD), ``train_usefulness`` and ``weight`` |v_iᵀ y| / λ_i.
    """
    eps = check_real("eigen_features", "eps", eps, 0.0, 1.0)
    steps = check_int("eigen_features", "steps", steps, 1)
    alpha = 2.5 * eps / steps if alpha is None else check_real(
        "eigen_features", "alpha", alpha, 0.0, strict_low=True)
    xtr = train_x.detach().to(torch.float64)
    xte = test_x.detach().to(torch.float64)
    ytr, yte = _signed(train_y), _signed(test_y)
    with torch.no_grad():
        gram = kernel(xtr, xtr)
    lam, vec = torch.linalg.eigh((gram + gram.T) / 2)
    order = torch.argsort(lam, descending=True)
    lam, vec = lam[order], vec[:, order]
    kept = int((lam > rtol * lam[0]).sum())
    idx = (list(range(min(int(features), kept))) if isinstance(features, int)
           else [int(i) for i in features])
    if not idx or max(idx) >= kept or min(idx) < 0:
        raise ValueError(f"eigen_features: feature indices must lie in [0, {kept - 1}] (the "
                         f"kernel has {kept} eigenvalues above rtol·λ_max)")
    sel = torch.as_tensor(idx)
    coef = vec[:, sel] * ((vec[:, sel].T @ ytr) / lam[sel])[None, :]  # (n, F): φ = Θ(x,X) coef
    f_count, m = len(idx), xte.shape[0]
    with torch.no_grad():
        clean = kernel(xte, xtr) @ coef  # (m, F)
        clean_tr = gram @ coef
    useful = (torch.sign(clean) == yte[:, None]).double().mean(0)
    useful_tr = (torch.sign(clean_tr) == ytr[:, None]).double().mean(0)
    # PGD on every feature at once: row (j, i) is test point i attacked against feature j.
    base = xte.repeat(f_count, *([1] * (xte.dim() - 1)))
    signs = yte.repeat(f_count)
    pick = torch.arange(f_count).repeat_interleave(m)
    x = base.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        phi = (kernel(x, xtr) * coef.T[pick]).sum(1)
        loss = (-signs * phi).sum()
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = x + alpha * torch.sign(grad)
            x = torch.min(torch.max(x, base - eps), base + eps).clamp(0.0, 1.0)
    with torch.no_grad():
        phi_adv = (kernel(x, xtr) * coef.T[pick]).sum(1).reshape(f_count, m)
    robust = ((torch.sign(phi_adv) == yte[None, :]) & (torch.sign(clean.T) == yte[None, :]))
    return pd.DataFrame({
        "index": idx,
        "eigenvalue": lam[sel].numpy(),
        "usefulness": useful.numpy(),
        "robustness": robust.double().mean(1).numpy(),
        "train_usefulness": useful_tr.numpy(),
        "weight": ((vec[:, sel].T @ ytr).abs() / lam[sel]).numpy(),
    })

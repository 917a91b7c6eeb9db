"""The measurements of study ``tsilivis2022``, one function per part (each returns a table).

(a) :func:`kernel_convergence` — analytic vs empirical NTK of NTK-parameterised MLPs of
    growing width at initialisation (Jacot et al. 2018, Theorem 1; Tsilivis & Kempe 2022, §3);
(b) :func:`transfer` — training-free kernel attacks and their transfer to finite networks
    trained by full-batch gradient descent for the same time (Tsilivis & Kempe 2022, §4.1);
(c) :func:`eigen_table` — eigen-features of a binary digit pair (§4.2);
(e) :func:`leap_sources` — the kernel attack as a sweep source on a trained network (the leap
    of Su et al. 2024, §4, under a transfer attack).

Part (d), the kernel dynamics of ST vs AT, is the trainer's ``track_ntk`` tracking.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ncscope.attacks import PGD
from ncscope.data import stratified_indices
from ncscope.ntk import (
    NTKMLP,
    Centered,
    KernelFGSM,
    KernelPGD,
    KernelPredictor,
    eigen_features,
    empirical_ntk,
    gd_time,
    relu_ntk,
)

KernelFn = Callable[[Tensor, Tensor], Tensor]


def tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    """Images and labels of an in-memory ncscope data set."""
    return dataset.images.float(), torch.as_tensor(dataset.targets).long()


def kernel_convergence(x: Tensor, widths: Sequence[int], seeds: int, depth: int) -> pd.DataFrame:
    """Relative Frobenius error ‖Θ_emp − Θ‖_F / ‖Θ‖_F at initialisation (scalar-output nets,
    float64), one row per width and seed, with the seconds the empirical kernel took."""
    exact = relu_ntk(x, depth=depth)
    rows = []
    for width in widths:
        for seed in range(seeds):
            net = NTKMLP(x[0].numel(), width, 1, depth=depth, seed=seed).double()
            t0 = time.perf_counter()
            emp = empirical_ntk(net, x.double(), mode="trace")
            rows.append({"width": width, "seed": seed,
                         "rel_error": float(torch.linalg.norm(emp - exact)
                                            / torch.linalg.norm(exact)),
                         "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def _gd_train(net: nn.Module, x: Tensor, y_onehot: Tensor, lr: float, steps: int) -> None:
    """Full-batch gradient descent on ½·mean ‖f(x) − y‖² (the kernel predictor's convention)."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * (net(x) - y_onehot).pow(2).sum(1).mean()
        loss.backward()
        opt.step()


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def _agreement(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """Share of inputs on which two models predict the same class."""
    with torch.no_grad():
        return float((a(x).argmax(1) == b(x).argmax(1)).double().mean())


def transfer(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, widths: Sequence[int],
             depth: int, eps: float, steps: int, gd_steps: int, lr_scale: float, seed: int,
             center: bool = True) -> tuple[pd.DataFrame, dict[str, float]]:
    """Kernel FGSM / PGD on the kernel predictor at the training time of the nets, applied to
    MLPs of each width trained by full-batch GD, next to white-box PGD on each net.

    The learning rate is ``lr_scale · n / λ_max(Θ(X, X))`` (stable for lr_scale < 2); the
    kernel time is τ = lr·gd_steps / n; ``center`` trains :class:`ncscope.ntk.Centered` nets
    (output at initialisation removed). Returns one row per model (the kernel predictor first)
    with clean, white-box and transfer accuracies, and the kernel's own numbers.
    """
    xtr, ytr = train
    xte, yte = test
    k = int(ytr.max()) + 1
    kern: KernelFn = functools.partial(relu_ntk, depth=depth)
    with torch.no_grad():
        lam_max = float(torch.linalg.eigvalsh(kern(xtr, xtr))[-1])
    n = xtr.shape[0]
    lr = lr_scale * n / lam_max
    tau = gd_time(lr, gd_steps, n)
    predictor = KernelPredictor(kern, xtr, ytr, time=tau, num_classes=k)
    attacks = {"kernel_fgsm": KernelFGSM(predictor, eps=eps, checks="off"),
               "kernel_pgd": KernelPGD(predictor, eps=eps, steps=steps, checks="off",
                                       seed=seed)}
    adv = {name: atk(xte, yte) for name, atk in attacks.items()}
    rows = [{"model": "kernel", "width": None, "clean_acc": _accuracy(predictor, xte, yte),
             "whitebox_pgd_acc": _accuracy(predictor, adv["kernel_pgd"], yte),
             **{f"{name}_acc": _accuracy(predictor, xa, yte) for name, xa in adv.items()},
             "train_seconds": 0.0}]
    y1 = nn.functional.one_hot(ytr, k).float()
    for width in widths:
        net: nn.Module = NTKMLP(xtr[0].numel(), width, k, depth=depth, seed=seed)
        if center:
            net = Centered(net)
        t0 = time.perf_counter()
        _gd_train(net, xtr, y1, lr, gd_steps)
        seconds = time.perf_counter() - t0
        net.eval()
        white = PGD(net, eps=eps, steps=steps, checks="off", seed=seed)(xte, yte)
        rows.append({"model": "mlp", "width": width, "centered": center,
                     "clean_acc": _accuracy(net, xte, yte),
                     "whitebox_pgd_acc": _accuracy(net, white, yte),
                     **{f"{name}_acc": _accuracy(net, xa, yte) for name, xa in adv.items()},
                     "agreement_with_kernel": _agreement(net, predictor, xte),
                     "train_seconds": seconds})
    return pd.DataFrame(rows), {"lr": lr, "tau": tau, "lambda_max": lam_max}


def binary_pair(data: tuple[Tensor, Tensor], pair: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The samples of the two classes ``pair`` with labels −1 (first) and +1 (second)."""
    x, y = data
    keep = (y == pair[0]) | (y == pair[1])
    return x[keep], torch.where(y[keep] == pair[1], 1, -1)


def eigen_table(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, pair: Sequence[int],
                depth: int, eps: float, features: int, steps: int) -> pd.DataFrame:
    """Usefulness and robustness of the top ``features`` eigen-features of the pair's kernel."""
    (xtr, ytr), (xte, yte) = binary_pair(train, pair), binary_pair(test, pair)
    return eigen_features(functools.partial(relu_ntk, depth=depth), xtr, ytr, xte, yte,
                          eps=eps, features=features, steps=steps)


def kernel_source(train: tuple[Tensor, Tensor], *, depth: int, eps: float, steps: int,
                  seed: int, n: int | None = None) -> KernelPGD:
    """A training-free kernel PGD at ``eps`` (the kernel predictor at τ = ∞ on ``n`` stratified
    training samples, all when ``None``), for use as a sweep source on any digits model."""
    x, y = train
    if n is not None and n < len(y):
        idx = torch.as_tensor(stratified_indices(y, n, seed=seed))
        x, y = x[idx], y[idx]
    predictor = KernelPredictor(functools.partial(relu_ntk, depth=depth), x, y,
                                num_classes=int(y.max()) + 1)
    return KernelPGD(predictor, eps=eps, steps=steps, checks="off", seed=seed)


def subset(data: tuple[Tensor, Tensor], n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """A stratified subset of ``n`` samples (all when ``None`` or larger than the set)."""
    x, y = data
    if n is None or n >= len(y):
        return x, y
    idx = torch.as_tensor(stratified_indices(y, n, seed=seed))
    return x[idx], y[idx]

"""Shared fixtures for the attack tests: tiny models with a normalisation module inside.

The digits model is trained once per process (a few seconds at most) on sklearn's bundled
``load_digits`` (8x8 grey images scaled to [0, 1]); no download anywhere.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

DIGITS_MEAN = 0.3
DIGITS_STD = 0.4


class Normalize(nn.Module):
    """``(x - mean) / std`` inside the model: attacks only ever see pixels in [0, 1]."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def bn_mlp(d_in: int = 64, hidden: int = 64, n_classes: int = 10, seed: int = 0,
           dropout: float = 0.0) -> nn.Sequential:
    """Normalize -> Flatten -> Linear -> BatchNorm1d -> ReLU [-> Dropout] -> Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        Normalize(DIGITS_MEAN, DIGITS_STD),
        nn.Flatten(),
        nn.Linear(d_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
    ]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, n_classes))
    return nn.Sequential(*layers)


@functools.cache
def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``(N, 1, 8, 8)`` float32 in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = torch.tensor(ds.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(ds.target, dtype=torch.long)
    return x, y


@functools.cache
def trained_digits_model() -> nn.Sequential:
    """BN-MLP trained on 1500 digits (full-batch Adam, ~1 s); returned in eval mode."""
    x, y = digits_data()
    model = bn_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randperm(1500, generator=gen)[:256]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ---- tiny models for property tests ------------------------------------------------------


@functools.cache
def tiny_mlp(d: int, n_classes: int = 3, seed: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """Normalize -> Flatten -> Linear(d, 8) -> BatchNorm1d -> ReLU [-> Dropout] -> Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(d, 8),
                               nn.BatchNorm1d(8), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(8, n_classes))
    model = nn.Sequential(*layers)
    with torch.no_grad():  # non-trivial running statistics
        model[3].running_mean.uniform_(-0.5, 0.5)
        model[3].running_var.uniform_(0.5, 2.0)
    return model.eval()


@functools.cache
def linear_model(d: int, n_classes: int = 3, seed: int = 0) -> nn.Sequential:
    """Normalize -> Flatten -> Linear(d, K): smooth, for monotonicity properties."""
    torch.manual_seed(seed)
    return nn.Sequential(Normalize(0.5, 0.5), nn.Flatten(), nn.Linear(d, n_classes)).eval()


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return -g


class ReverseGrad(nn.Module):
    """Identity whose backward flips the gradient: a caricature of gradient masking."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Reverse.apply(x)


class DetachInput(nn.Module):
    """Cuts the graph: every input gradient is zero (shattered gradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


class NoisyLogits(nn.Module):
    """Adds fresh noise at every call: a randomised model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.randn_like(x)


# ---- reference implementations of the paper's code (for agreement tests) ------------------


def rice_attack_pgd(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epsilon: float,
                    alpha: float, attack_iters: int, restarts: int, norm: str) -> torch.Tensor:
    """``attack_pgd`` of Rice et al. / robust_neural_collapse (train.py), verbatim logic;
    the normalisation is inside ``model``, lower/upper limits are 0/1. Returns ``X + delta``."""
    lower, upper = 0.0, 1.0
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    for _ in range(restarts):
        delta = torch.zeros_like(X)
        if norm == "l_inf":
            delta.uniform_(-epsilon, epsilon)
        else:
            delta.normal_()
            d_flat = delta.view(delta.size(0), -1)
            n = d_flat.norm(p=2, dim=1).view(delta.size(0), 1, 1, 1)
            r = torch.zeros_like(n).uniform_(0, 1)
            delta *= r / n * epsilon
        delta = torch.max(torch.min(delta, upper - X), lower - X)
        delta.requires_grad = True
        for _ in range(attack_iters):
            output = model(X + delta)
            loss = nn.functional.cross_entropy(output, y)
            (grad,) = torch.autograd.grad(loss, delta)
            d, g, x = delta, grad, X
            if norm == "l_inf":
                d = torch.clamp(d + alpha * torch.sign(g), min=-epsilon, max=epsilon)
            else:
                g_norm = torch.norm(g.view(g.shape[0], -1), dim=1).view(-1, 1, 1, 1)
                scaled_g = g / (g_norm + 1e-10)
                d = (d + scaled_g * alpha).view(d.size(0), -1).renorm(
                    p=2, dim=0, maxnorm=epsilon).view_as(d)
            d = torch.max(torch.min(d, upper - x), lower - x)
            delta.data = d.detach()
        with torch.no_grad():
            all_loss = nn.functional.cross_entropy(model(X + delta), y, reduction="none")
        sel = all_loss >= max_loss
        max_delta[sel] = delta.detach()[sel]
        max_loss = torch.max(max_loss, all_loss)
    return X + max_delta


def official_trades_linf(model: nn.Module, x_natural: torch.Tensor, step_size: float,
                         epsilon: float, perturb_steps: int) -> torch.Tensor:
    """The l_inf inner loop of the official TRADES ``trades_loss`` (Zhang et al. 2019)."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        loss_kl = criterion_kl(nn.functional.log_softmax(model(x_adv), dim=1),
                               nn.functional.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv


def official_trades_l2(model: nn.Module, x_natural: torch.Tensor, epsilon: float,
                       perturb_steps: int) -> torch.Tensor:
    """The l2 inner loop of the official TRADES ``trades_loss`` (Zhang et al. 2019): SGD with
    ``lr = epsilon / perturb_steps * 2`` on ``delta`` with normalised gradients, then clip to
    [0, 1] and ``renorm`` (CPU; the model in eval mode). Returns ``x_natural + delta``."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:  # (no parameter .grad on the shared test model)
        p.requires_grad_(False)
    try:
        return _official_trades_l2(model, x_natural, epsilon, perturb_steps)
    finally:
        for p, was in flags:
            p.requires_grad_(was)


def _official_trades_l2(model: nn.Module, x_natural: torch.Tensor, epsilon: float,
                        perturb_steps: int) -> torch.Tensor:
    criterion_kl = nn.KLDivLoss(reduction="sum")
    batch_size = len(x_natural)
    delta = 0.001 * torch.randn(x_natural.shape).detach()
    delta.requires_grad_(True)
    optimizer_delta = torch.optim.SGD([delta], lr=epsilon / perturb_steps * 2)
    for _ in range(perturb_steps):
        adv = x_natural + delta
        optimizer_delta.zero_grad()
        loss = (-1) * criterion_kl(nn.functional.log_softmax(model(adv), dim=1),
                                   nn.functional.softmax(model(x_natural), dim=1))
        loss.backward()
        grad_norms = delta.grad.view(batch_size, -1).norm(p=2, dim=1)
        delta.grad.div_(grad_norms.view(-1, *([1] * (x_natural.ndim - 1))))
        if (grad_norms == 0).any():
            delta.grad[grad_norms == 0] = torch.randn_like(delta.grad[grad_norms == 0])
        optimizer_delta.step()
        delta.data.add_(x_natural)
        delta.data.clamp_(0, 1).sub_(x_natural)
        delta.data.renorm_(p=2, dim=0, maxnorm=epsilon)
    return (x_natural + delta).detach()


def one_line_error(exc_type, fn, *match: str) -> str:
    """Call ``fn``; it must raise ``exc_type`` with a one-line message containing ``match``."""
    import pytest

    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for m in match:
        assert m in msg, msg
    return msg


@functools.cache
def plain_digits_mlp() -> tuple[nn.Module, object]:
    """A user-style ``nn.Sequential`` MLP (flat, hidden, pen, classifier) trained for 150 Adam
    steps on 200 digits images (20 per class); returns ``(model in eval mode, train set)``."""
    from ncscope.data import load_dataset

    torch.manual_seed(0)
    train = load_dataset("digits", n_per_class=20)
    model = nn.Sequential()
    model.add_module("flat", nn.Flatten())
    model.add_module("hidden", nn.Sequential(nn.Linear(64, 32), nn.ReLU()))
    model.add_module("pen", nn.Sequential(nn.Linear(32, 16), nn.ReLU()))
    model.add_module("classifier", nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = train.tensors
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), train

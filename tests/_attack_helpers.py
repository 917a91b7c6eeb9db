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

"""Input normalisation as a model layer.

ncscope models own their normalisation (Su et al. 2024: the official code normalises *inside*
``forward``): data stay pixels in [0, 1], attacks and ε are in pixel units, and
:class:`Normalize` is the first module of every built-in model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dimension 1), with ``mean`` / ``std`` stored as buffers.

    ``mean`` and ``std`` are scalars or one value per channel; a single value broadcasts over
    every channel. Works for ``(N, C, H, W)`` images and ``(N, C)`` inputs. The buffers are saved
    in the ``state_dict`` so a checkpoint carries its own normalisation.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: float | Sequence[float] | torch.Tensor,
        std: float | Sequence[float] | torch.Tensor,
    ) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).detach().clone().reshape(-1)
        s = torch.as_tensor(std, dtype=torch.float32).detach().clone().reshape(-1)
        if m.numel() == 0 or s.numel() == 0:
            raise ValueError("mean and std need at least one value")
        if m.numel() != s.numel() and 1 not in (m.numel(), s.numel()):
            raise ValueError(f"mean has {m.numel()} values but std has {s.numel()}")
        if bool((s <= 0).any()):
            raise ValueError(f"std must be positive, got {s.tolist()}")
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (channels on dimension 1)."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        """Show the statistics in ``repr(model)``."""
        fmt = lambda t: "(" + ", ".join(f"{v:.4g}" for v in t.tolist()) + ")"  # noqa: E731
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"

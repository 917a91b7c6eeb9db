"""Reachable sets of a chain network (Tran et al., CAV 2021): affine layers exactly,
each ReLU by the approx-star relaxation with relaxation factor ``rF`` (:mod:`.relu`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ncscope.verify.network import affine_step, chain
from ncscope.verify.relu import HEURISTICS, relu_step
from ncscope.verify.star import ImageStar, ReachStats

__all__ = ["Reach", "ReachOptions", "reach"]


@dataclass(frozen=True)
class ReachOptions:
    """Settings of relaxed reachability: relaxation factor ``rf`` ∈ [0, 1] (1: estimated
    bounds only, 0: every crossing neuron LP-optimised), the ``heuristic`` choosing which
    crossing neurons get LP bounds, and the ``seed`` of the ``"random"`` heuristic."""

    rf: float = 1.0
    heuristic: str = "area"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rf <= 1:
            raise ValueError(f"ReachOptions: rf={self.rf} must lie in [0, 1]")
        if self.heuristic not in HEURISTICS:
            raise ValueError(f"ReachOptions: heuristic={self.heuristic!r} is not known; use one "
                             f"of {', '.join(HEURISTICS)}")


@dataclass
class Reach:
    """The output star of a reachability run, its work (:class:`ReachStats`) and seconds."""

    star: ImageStar
    stats: ReachStats = field(default_factory=ReachStats)
    seconds: float = 0.0


def reach(layers: nn.Module | list[tuple[str, nn.Module]], star: ImageStar,
          options: ReachOptions | None = None) -> Reach:
    """Propagate the input set ``star`` through ``layers`` (a chain model, or the list from
    :func:`~ncscope.verify.network.chain`, e.g. cut before the classifier)."""
    opts = options or ReachOptions()
    if isinstance(layers, nn.Module):
        layers = chain(layers)
    rng = np.random.default_rng(opts.seed)
    stats = ReachStats()
    t0 = time.perf_counter()
    s = star
    with torch.no_grad():
        for _, module in layers:
            if isinstance(module, nn.ReLU):
                s = relu_step(s, opts.rf, opts.heuristic, rng, stats)
            else:
                s = affine_step(module, s)
    return Reach(s, stats, time.perf_counter() - t0)

"""The measurements of study ``tran2021``: the segmentation nets and their verification
sweep, and the certified collapse radius of the digits models.

Segmentation nets are trained with a short plain loop (Adam, pixel-wise cross-entropy): the
ncscope trainer trains classifiers — it finds a final ``nn.Linear`` and tracks Neural
Collapse of its input — and a segmentation net has neither.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ncscope.data.segmentation import SegmentationSet
from ncscope.verify import (
    ImageStar,
    ReachOptions,
    bisect_radius,
    chain,
    class_means,
    collapse_certified,
    darkened_pixels,
    darkening,
    linf_ball,
    logit_certified,
    penultimate_chain,
    pgd_radius,
    pixel_verdict,
    reach,
    soundness_violations,
)

__all__ = ["collapse_radii", "net_rows", "sweep_rows", "train_segmentation"]


def train_segmentation(net: nn.Module, data: SegmentationSet, epochs: int, lr: float,
                       seed: int, batch_size: int = 50) -> float:
    """Train ``net`` with pixel-wise cross-entropy (Adam, seeded batch order); seconds."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            b = perm[i:i + batch_size]
            loss = F.cross_entropy(net(data.x[b]), data.masks[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return time.perf_counter() - t0


def pixel_accuracy(net: nn.Module, data: SegmentationSet) -> dict[str, float]:
    """Pixel accuracy on every pixel and on digit (non-background) pixels."""
    with torch.no_grad():
        pred = net(data.x).argmax(1)
    fg = data.masks < data.num_classes - 1
    return {"pixel_acc": float((pred == data.masks).double().mean()),
            "digit_pixel_acc": float((pred[fg] == data.masks[fg]).double().mean())}


def _verify_set(layers: list, star: ImageStar, pred: np.ndarray, n_attacked: int,
                opts: ReachOptions, samples: int, seed: int) -> dict[str, Any]:
    r = reach(layers, star, opts)
    lo, hi = r.star.estimate_bounds()
    v = pixel_verdict(lo.reshape(r.star.shape), hi.reshape(r.star.shape), pred, n_attacked)
    bad, n = soundness_violations(layers, star, lo, hi, samples, seed=seed)
    return {"seconds": r.seconds, "lps": r.stats.lps, "crossing": sum(r.stats.crossing),
            "optimised": sum(r.stats.optimised), "rv": v.rv, "rs": v.rs, "riou": v.riou,
            **v.counts, "violations": bad, "samples": n}


def sweep_rows(net: nn.Module, images: torch.Tensor, cfg: Any, seed: int) -> list[dict]:
    """The relaxation-factor × heuristic sweep on the darkening set of each image (rF = 0 and
    rF = 1 do not depend on the heuristic and run once, labelled ``any``)."""
    layers = chain(net, images[:1])
    rows = []
    for i, x0 in enumerate(images):
        with torch.no_grad():
            pred = net(x0[None]).argmax(1)[0].numpy()
        star = darkening(x0, cfg.n_pixels, cfg.de, cfg.threshold)
        n_att = len(darkened_pixels(x0, cfg.n_pixels, cfg.threshold))
        for rf in cfg.rfs:
            heuristics = ["any"] if rf in (0, 1) else cfg.heuristics
            for h in heuristics:
                opts = ReachOptions(rf=rf, heuristic="area" if h == "any" else h, seed=seed)
                row = _verify_set(layers, star, pred, n_att, opts, cfg.samples, seed + i)
                rows.append({"image": i, "attack": "darkening", "rf": rf, "heuristic": h,
                             "attacked": n_att, **row})
    return rows


def net_rows(name: str, net: nn.Module, images: torch.Tensor, cfg: Any, seed: int
             ) -> list[dict]:
    """One net at equal attacks: the ℓ∞ ball of radius ``eps`` and the darkening set, both on
    the same ``n_pixels`` bright pixels of each image, at ``compare_rf``."""
    layers = chain(net, images[:1])
    opts = ReachOptions(rf=cfg.compare_rf, heuristic=cfg.heuristics[0], seed=seed)
    rows = []
    for i, x0 in enumerate(images):
        with torch.no_grad():
            pred = net(x0[None]).argmax(1)[0].numpy()
        idx = darkened_pixels(x0, cfg.n_pixels, cfg.threshold)
        for attack, star in (("linf", linf_ball(x0, cfg.eps, idx)),
                             ("darkening", darkening(x0, cfg.n_pixels, cfg.de, cfg.threshold))):
            row = _verify_set(layers, star, pred, len(idx), opts, cfg.samples, seed + i)
            rows.append({"net": name, "image": i, "attack": attack, "rf": cfg.compare_rf,
                         "eps": cfg.eps, "de": cfg.de, "attacked": len(idx), **row})
    return rows


def _ncc_violations(layers: list, x: torch.Tensor, y: int, eps: float, means: torch.Tensor,
                    n: int, seed: int) -> int:
    """Sampled inputs of the ball of radius ``eps`` whose features are *not* nearest to
    ``μ_y`` — a certified radius must give none."""
    if eps <= 0:
        return 0
    pts = linf_ball(x, eps).sample(n, np.random.default_rng(seed))
    with torch.no_grad():
        for _, module in layers:
            pts = module(pts)
    d2 = torch.cdist(pts.reshape(n, -1), means) ** 2
    others = torch.cat([d2[:, :y], d2[:, y + 1:]], dim=1)
    return int((others.min(1).values <= d2[:, y]).sum())


def collapse_radii(run: str, model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                   test: tuple[torch.Tensor, torch.Tensor], cfg: Any, seed: int
                   ) -> list[dict]:
    """Per test sample (the first ``radius_samples`` the model classifies correctly): the
    certified collapse radius, the certified logit radius and the PGD radius, plus a sampled
    check of the certified collapse ball."""
    model = model.eval()
    pen = penultimate_chain(model)
    full = chain(model, train[0][:4])
    means = class_means(pen, train[0], train[1], int(train[1].max()) + 1)
    opts = ReachOptions(rf=cfg.radius_rf, heuristic="area", seed=seed)
    x_all, y_all = test
    with torch.no_grad():
        ok = model(x_all).argmax(1) == y_all
    rows = []
    for i in torch.nonzero(ok).reshape(-1)[: cfg.radius_samples].tolist():
        x, y = x_all[i], int(y_all[i])
        t0 = time.perf_counter()
        r_col = bisect_radius(lambda e, x=x, y=y: collapse_certified(pen, x, y, e, means, opts),
                              cfg.eps_max, cfg.tol)
        r_log = bisect_radius(lambda e, x=x, y=y: logit_certified(full, x, y, e, opts),
                              cfg.eps_max, cfg.tol)
        r_pgd = pgd_radius(model, x, y, cfg.eps_max, cfg.tol, steps=cfg.pgd_steps, seed=seed)
        bad = _ncc_violations(pen, x, y, r_col, means, cfg.radius_check, seed + i)
        rows.append({"run": run, "index": i, "label": y, "collapse_radius": r_col,
                     "logit_radius": r_log, "pgd_radius": r_pgd,
                     "pgd_censored": bool(np.isinf(r_pgd)), "violations": bad,
                     "samples": cfg.radius_check if r_col > 0 else 0,
                     "seconds": time.perf_counter() - t0})
    return rows

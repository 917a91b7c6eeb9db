"""Slow dense float64 reference implementation of the NC metrics (test-only oracle).

Builds the explicit d×d Σ_W and Σ_B, a rank-r eigen pseudo-inverse of Σ_B, and per-sample
nearest-class-mean decisions with ``torch.cdist``: everything the fast engine avoids.
"""

from __future__ import annotations

import math

import torch


def dense_nc(h, y, k, weight=None, bias=None, ref_h=None, ref_y=None, rank=None):
    h = h.double()
    ref_h = h if ref_h is None else ref_h.double()
    ref_y = y if ref_y is None else ref_y
    means = torch.stack([ref_h[ref_y == c].mean(0) for c in range(k)])
    mu_g = ref_h.mean(0)
    mt = means - mu_g
    z = h - means[y]
    sw = z.T @ z / len(h)
    sb = mt.T @ mt / k
    evals, evecs = torch.linalg.eigh(sb)
    if rank is None:
        rank = min(k - 1, h.shape[1])
    lam, vec = evals[-rank:], evecs[:, -rank:]
    sb_pinv = vec @ torch.diag(1.0 / lam) @ vec.T
    nc1 = float(torch.trace(sw @ sb_pinv))
    norms = mt.norm(dim=1)
    unit = mt / norms[:, None]
    cos = unit @ unit.T + 1.0 / (k - 1)
    cos.fill_diagonal_(0)
    gram = mt @ mt.T
    etf = (torch.eye(k, dtype=torch.float64) - 1.0 / k) / math.sqrt(k - 1)
    nearest = torch.cdist(h, means).argmin(dim=1)
    var = torch.stack([(z[y == c] ** 2).sum(1).mean() for c in range(k)])
    iu = torch.triu_indices(k, k, 1)
    d2 = (means[iu[0]] - means[iu[1]]).pow(2).sum(1)
    cd = (var[iu[0]] + var[iu[1]]) / (2 * d2)
    out = {
        "nc1": nc1,
        "nc1_over_k": nc1 / k,
        "trace_ratio": float(torch.trace(sw) / torch.trace(sb)),
        "cdnv": float(cd.mean()),
        "equinorm_means": float(norms.std() / norms.mean()),
        "equiangular_means": float(cos.abs().sum() / (k * (k - 1))),
        "etf_error_means": float((gram / gram.norm() - etf).norm()),
        "ncc_accuracy": float((nearest == y).double().mean()),
    }
    if weight is not None:
        w = weight.double()
        logits = h @ w.T + (0 if bias is None else bias.double())
        pred = logits.argmax(1)
        wn = w.norm(dim=1)
        wu = w / wn[:, None]
        wc = wu @ wu.T + 1.0 / (k - 1)
        wc.fill_diagonal_(0)
        out.update(
            nc3=float((w.T / w.norm() - mt.T / mt.norm()).pow(2).sum()),
            nc4=float((nearest != pred).double().mean()),
            equinorm_weights=float(wn.std() / wn.mean()),
            equiangular_weights=float(wc.abs().sum() / (k * (k - 1))),
        )
    return out


def clustered(k, d, n_per_class, sigma, seed=0, dtype=torch.float32):
    """Class-structured Gaussian features: random unit-scale means plus σ noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g, dtype=torch.float64)
    means = means / means.norm(dim=1, keepdim=True) * 3.0 + 1.0
    y = torch.arange(k).repeat_interleave(n_per_class)
    h = means[y] + sigma * torch.randn(len(y), d, generator=g, dtype=torch.float64)
    return h.to(dtype), y

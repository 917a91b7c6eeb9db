"""One-vs-rest distances ρ_k of every class: ncscope's Wolfe solver against a generic QP solver.

``ρ_k = min_{λ ∈ Δ} ‖w_k − Σ_{j≠k} λ_j w_j‖`` for all K classes of a (K, d) matrix of unit rows
(default K = 1000, d = 64), two inputs:

* ``random``: Gaussian rows normalised to unit norm (seed 0);
* ``near-code``: a short Tammes ascent from that kind of start
  (``ncscope.ufm.tammes_code(K, d, restarts=1, max_iter=150, temperature=(10, 1e3))``): rows
  spread as a code would be, with many classes nearly tied and large active sets (harder).

Methods, same process, one thread (torch and, through threadpoolctl, numpy's BLAS):

* **ncscope**: :func:`ncscope.collapse.one_vs_rest` (Wolfe's minimum-norm-point algorithm with
  a dual-gap certificate), all K classes, median of ``--reps`` runs;
* **SLSQP**: ``scipy.optimize.minimize(method="SLSQP")`` per class on the K−1 simplex weights
  (precomputed Gram, analytic gradient, ``ftol=1e-16``), a generic formulation of the same QP.
  It takes tens of seconds per class at K = 1000, so it runs on ``--slsqp-classes`` evenly
  spaced classes and its all-class time is **extrapolated**: median seconds per class × K.

Reported: seconds, the ratio, and the agreement max |Δρ| on the classes both solved (with the
largest certified dual gap of ncscope).

Usage: ``.venv/bin/python benchmarks/bench_gnc.py [--K 1000] [--d 64] [--reps 3]
[--slsqp-classes 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import time

import numpy as np
import torch

from _machine import cpu_name
from ncscope.collapse import one_vs_rest
from ncscope.collapse.gnc import one_vs_rest_generic
from ncscope.ufm import min_angle, tammes_code


def inputs(K: int, d: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rand = torch.nn.functional.normalize(torch.randn(K, d, generator=g, dtype=torch.float64),
                                         dim=1)
    near = tammes_code(K, d, restarts=1, max_iter=150, temperature=(10.0, 1e3)).W
    return {"random": rand, "near-code": near}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--K", type=int, default=1000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--slsqp-classes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:  # numpy/scipy BLAS threads too (scikit-learn's threadpoolctl)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        print("(threadpoolctl missing: set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS yourself)")
    K, d = args.K, args.d
    print(f"# bench_gnc: rho_k of all K = {K} classes, d = {d}; {dt.date.today()}, "
          f"{cpu_name()}, torch {torch.__version__}, {args.threads} thread(s)")
    print()
    print("| input | min angle (deg) | ncscope s (all K) | max gap | mean iters | largest "
          "support | SLSQP s/class (n) | SLSQP s (all K, extrapolated) | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, W in inputs(K, d).items():
        times, res = [], None
        for _ in range(args.reps):
            t0 = time.perf_counter()
            res = one_vs_rest(W)
            times.append(time.perf_counter() - t0)
        assert res is not None
        ours = statistics.median(times)
        ks = np.linspace(0, K - 1, args.slsqp_classes).round().astype(int).tolist()
        w = W.numpy()
        per, diffs = [], []
        for k in ks:
            t0 = time.perf_counter()
            value = one_vs_rest_generic(w, k)
            per.append(time.perf_counter() - t0)
            diffs.append(abs(value - float(res.rho[k])))
        slsqp_total = statistics.median(per) * K
        print(f"| {name} | {math.degrees(min_angle(W)):.1f} | {ours:.2f} | "
              f"{float(res.gap.max()):.1e} | {float(res.iterations.double().mean()):.1f} | "
              f"{max(len(s) for s in res.support)} | {statistics.median(per):.1f} "
              f"({len(ks)}) | {slsqp_total:.0f} | {slsqp_total / ours:.0f}x | "
              f"{max(diffs):.1e} |", flush=True)
    print()
    print(f"ncscope: median of {args.reps}; SLSQP on classes {ks}")


if __name__ == "__main__":
    main()

"""Output bounds of a segmentation net on one input set: interval bound propagation against
relaxed ImageStar reachability (Tran et al., CAV 2021).

The transposed-conv + average-pool net of study ``tran2021`` (:mod:`ncscope.models.
segmentation`, channels 8/16) trained on mini-M2NIST as in the study (1000 canvases, 30 epochs,
seed 0), then on ``--images`` test canvases two sets on the same ``--pixels`` brightest-first
pixels: NNV's darkening set (``de``) and the ℓ∞ ball of radius ``--eps``. Methods, same process,
one thread:

* **IBP**: :func:`ncscope.verify.ibp` of the set's box (interval arithmetic, no LP);
* **approx-star rF = 1**: :func:`ncscope.verify.reach` with estimated bounds only (0 LPs);
* **approx-star rF = 0**: every crossing ReLU neuron's bounds LP-optimised (HiGHS).

The output bounds of both stars are their estimated bounds (the interval of the output star
over its predicate's box). Reported per set: median seconds per image, LPs per image and the
mean width of the output bounds (all K × H × W logits), each relative to IBP.

Usage: ``.venv/bin/python benchmarks/bench_verify.py [--images 5] [--pixels 30] [--de 0.1]
[--eps 0.05]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

import numpy as np
import torch

from _machine import cpu_name
from ncscope.data.segmentation import mini_m2nist
from ncscope.experiments.studies.tran2021.runs import train_segmentation
from ncscope.models.segmentation import seg_net
from ncscope.verify import (
    ReachOptions,
    box_of,
    chain,
    darkened_pixels,
    darkening,
    ibp,
    linf_ball,
    reach,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--pixels", type=int, default=30)
    ap.add_argument("--de", type=float, default=0.1)
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        print("(threadpoolctl missing: set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS yourself)")
    tr, te = mini_m2nist(1000, "train"), mini_m2nist(args.images, "test")
    torch.manual_seed(0)
    net = seg_net("transposed", channels=(8, 16), mean=float(tr.x.mean()),
                  std=float(tr.x.std()))
    train_segmentation(net, tr, 30, 0.01, 0)
    layers = chain(net, te.x[:1])
    print(f"# bench_verify: transposed-conv net, {args.images} mini-M2NIST test canvases, "
          f"{args.pixels} attacked pixels; {dt.date.today()}, {cpu_name()}, torch "
          f"{torch.__version__}, {args.threads} thread(s)")
    print()
    print("| set | method | s / image (median) | LPs / image | mean bound width | "
          "time vs IBP | width vs IBP |")
    print("|---|---|---|---|---|---|---|")
    for set_name in ("darkening", "linf"):
        res: dict[str, tuple[list[float], list[int], list[float]]] = {}
        for x0 in te.x:
            if set_name == "darkening":
                star = darkening(x0, args.pixels, args.de)
            else:
                star = linf_ball(x0, args.eps, darkened_pixels(x0, args.pixels, 150 / 255))
            t0 = time.perf_counter()
            lo_in, hi_in = box_of(star)
            lo, hi = ibp(layers, lo_in, hi_in)
            secs = time.perf_counter() - t0
            res.setdefault("IBP", ([], [], []))
            res["IBP"][0].append(secs)
            res["IBP"][1].append(0)
            res["IBP"][2].append(float((hi - lo).mean()))
            for name, rf in (("approx-star rF = 1", 1.0), ("approx-star rF = 0 (LP)", 0.0)):
                t0 = time.perf_counter()
                r = reach(layers, star, ReachOptions(rf=rf))
                lo_s, hi_s = r.star.estimate_bounds()
                secs = time.perf_counter() - t0
                res.setdefault(name, ([], [], []))
                res[name][0].append(secs)
                res[name][1].append(r.stats.lps)
                res[name][2].append(float(np.mean(hi_s - lo_s)))
        base_t = statistics.median(res["IBP"][0])
        base_w = float(np.mean(res["IBP"][2]))
        for name, (ts, lps, ws) in res.items():
            t, w = statistics.median(ts), float(np.mean(ws))
            print(f"| {set_name} | {name} | {t:.4f} | {np.mean(lps):.0f} | {w:.4g} | "
                  f"{t / base_t:.1f}x | {w / base_w:.3f} |", flush=True)


if __name__ == "__main__":
    main()

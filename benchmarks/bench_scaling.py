"""Scaling of the NC arithmetic and of the sweep: time and peak memory against N, d and K.

**NC arithmetic** (synthetic class-structured features ``h = μ_y + 0.5 ε``, generated batch by
batch from a seed into one reused buffer; generation is not timed): the exact float64
statistics of one layer -- pass 1 (:class:`ncscope.collapse.reference.ClassMeanSums`: class
sums and normalised-feature sums), freezing the reference (K×K Gram eigenpairs), pass 2
(:class:`ncscope.collapse.measure.Measurement` over the same batches: the K×K scatters, NCC,
per-class norms) and every registered metric -- against the **floor**, measured in the same
process on the same batches: one streaming pass that only sums features per class in float64
(``sums.index_add_(0, y, h.double())``), the least any exact class-mean statistic costs. The
axes: N (d = 512, K = 10), d (N = 2 000, K = 10) and K (N = 10 K, at least 10 samples per class
in the full run, d = 512).

**Sweep** (a small conv net, ``small_cnn`` at Fashion-MNIST shape 1×28×28, seeded synthetic
images, every default tap plus the penultimate features, sources clean + Gaussian noise; no
attack, so that the sweep's own cost is what scales): time and peak memory against N.

Each point runs in a fresh process (peak resident memory, read from ``ru_maxrss``, minus the
resident memory just before the timed work: "extra MB"); one thread. The growth exponent per
axis is the least-squares slope of log(time) against log(axis). ``--plot PATH`` writes the
figure (matplotlib PNG).

Usage::

    python benchmarks/bench_scaling.py --plot docs/scaling.png        # --quick sizes
    python benchmarks/bench_scaling.py --full --plot docs/scaling.png # N to 50k, K to 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

QUICK = {
    "N": [1000, 2000, 5000, 10000, 20000],
    "d": [512, 2048, 8192, 32768, 65536],
    "K": [10, 30, 100, 300],
    "sweep_N": [500, 1000, 2000, 4000],
}
FULL = {
    "N": [1000, 2000, 5000, 10000, 20000, 50000],
    "d": [512, 2048, 8192, 32768, 65536],
    "K": [10, 30, 100, 300, 1000],
    "sweep_N": [1000, 2000, 5000, 10000, 20000, 50000],
}
BATCH = 250


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _batches(n: int, k: int, d: int, seed: int = 0):
    """(features, labels) batches of class-structured features in one reused buffer."""
    import torch

    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g)
    buf = torch.empty(BATCH, d)
    for start in range(0, n, BATCH):
        y = torch.arange(start, min(n, start + BATCH)) % k
        h = buf[: len(y)]
        torch.randn(h.shape, generator=g, out=h)
        h.mul_(0.5).add_(means[y])
        yield h, y


def one_nc(n: int, d: int, k: int) -> dict[str, Any]:
    """One NC-arithmetic point (in this process): floor, NC time, extra MB."""
    import torch

    from ncscope.collapse.measure import Measurement
    from ncscope.collapse.reference import ClassMeanSums
    from ncscope.collapse.registry import compute_metrics

    torch.set_num_threads(1)
    for h, y in _batches(4 * 10, 10, 16):  # warm-up of the kernels on a tiny problem
        s = ClassMeanSums(10).update(h, y)
        compute_metrics(s.freeze(), Measurement(s.freeze()).update(h, y))
    base = _rss_mb()

    def floor() -> float:
        t = 0.0
        sums = torch.zeros(k, d, dtype=torch.float64)
        for h, y in _batches(n, k, d):
            t0 = time.perf_counter()
            sums.index_add_(0, y, h.double())
            t += time.perf_counter() - t0
        return t

    def nc() -> tuple[float, dict[str, Any]]:
        t = 0.0
        acc = ClassMeanSums(k)
        for h, y in _batches(n, k, d):
            t0 = time.perf_counter()
            acc.update(h, y)
            t += time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = acc.freeze()
        meas = Measurement(ref)
        t += time.perf_counter() - t0
        for h, y in _batches(n, k, d):
            t0 = time.perf_counter()
            meas.update(h, y)
            t += time.perf_counter() - t0
        t0 = time.perf_counter()
        out = compute_metrics(ref, meas)
        return t + time.perf_counter() - t0, out

    t_nc, metrics = nc()
    nc_mb = _peak_mb() - base  # the NC work alone (first), the input batch buffer included
    t_floor = floor()
    t_floor = min(t_floor, floor())  # the warmer of two floor passes, after the NC work
    t_nc = min(t_nc, nc()[0])
    assert math.isfinite(metrics["nc1"])
    return {"floor_s": t_floor, "nc_s": t_nc, "extra_mb": nc_mb}


def one_sweep(n: int) -> dict[str, Any]:
    """One sweep point on the small CNN (clean + Gaussian noise, all taps)."""
    import importlib

    import torch

    from ncscope.attacks import GaussianNoise
    from ncscope.models import create_model

    sweep = importlib.import_module("ncscope.collapse.sweep").sweep
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    layers = [*model.tap_layers, "classifier:in"]
    cls = {"classifier:in": (model.classifier.weight.detach(), model.classifier.bias.detach())}

    def factory(count: int):
        def gen():
            g = torch.Generator().manual_seed(1)
            for start in range(0, count, BATCH):
                b = min(BATCH, count - start)
                yield torch.rand(b, 1, 28, 28, generator=g), torch.arange(start, start + b) % 10
        return gen

    def run(count: int) -> Any:
        return sweep(model, factory(count), {"clean": None,
                                             "gaussian": GaussianNoise(model, 8 / 255, seed=3)},
                     layers=layers, num_classes=10, classifiers=cls, batch_size=BATCH)

    run(40)  # warm-up
    base = _rss_mb()
    t0 = time.perf_counter()
    df = run(n)
    t = time.perf_counter() - t0
    dims = 0
    with torch.no_grad():
        from ncscope.collapse import FeatureTaps

        with FeatureTaps(model, layers) as taps:
            model(torch.rand(1, 1, 28, 28))
            dims = sum(f.shape[1] for f in taps.features.values())
    return {"sweep_s": t, "extra_mb": _peak_mb() - base, "rows": len(df), "dims": dims}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one point in a fresh interpreter; return its JSON result."""
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return (sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
            / sum((a - mx) ** 2 for a in lx))


def main() -> None:
    """Run the grid, print the tables, fit the exponents, draw the figure."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="the full sizes (N to 50k, K to 1000)")
    ap.add_argument("--plot", default=None, help="write the figure to this PNG")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        spec = json.loads(args.one)
        kind = spec.pop("kind")
        print(json.dumps(one_nc(**spec) if kind == "nc" else one_sweep(**spec)))
        return
    import torch

    from _machine import cpu_name

    sizes = FULL if args.full else QUICK
    print(f"{dt.date.today()}, {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
          f"1 thread, {'full' if args.full else 'quick'} sizes; one fresh process per point\n")
    axes = {"N": lambda v: {"n": v, "d": 512, "k": 10},
            "d": lambda v: {"n": 2000, "d": v, "k": 10},
            "K": lambda v: {"n": (10 if args.full else 5) * max(v, 200), "d": 512, "k": v}}
    results: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    print("| axis | N | d | K | floor: index_add_ (s) | NC arithmetic (s) | NC / floor | "
          "NC extra MB |")
    print("|---|---|---|---|---|---|---|---|")
    for axis, make in axes.items():
        results[axis] = []
        for v in sizes[axis]:
            spec = make(v)
            r = child({"kind": "nc", **spec})
            results[axis].append((v, {**spec, **r}))
            print(f"| {axis} | {spec['n']} | {spec['d']} | {spec['k']} | {r['floor_s']:.3f} | "
                  f"{r['nc_s']:.3f} | {r['nc_s'] / r['floor_s']:.1f}x | {r['extra_mb']:.0f} |",
                  flush=True)
    sweep_rows = []
    print("\n| sweep on small_cnn: N | time (s) | s per 1k images | extra MB | rows |")
    print("|---|---|---|---|---|")
    for n in sizes["sweep_N"]:
        r = child({"kind": "sweep", "n": n})
        sweep_rows.append((n, r))
        print(f"| {n} | {r['sweep_s']:.2f} | {1000 * r['sweep_s'] / n:.2f} | "
              f"{r['extra_mb']:.0f} | {r['rows']} |", flush=True)
    print("\nGrowth exponents (least-squares slope of log time on log axis; O(N·d·K) predicts "
          "1 on each axis):\n")
    print("| axis | range | NC arithmetic | floor | NC / floor range |")
    print("|---|---|---|---|---|")
    for axis, pts in results.items():
        xs = [float(v) for v, _ in pts]
        nc = [r["nc_s"] for _, r in pts]
        fl = [r["floor_s"] for _, r in pts]
        # the K axis also grows N (samples per class); divide it out to isolate K
        if axis == "K":
            ns = [r["n"] for _, r in pts]
            nc = [t / n for t, n in zip(nc, ns, strict=True)]
            fl = [t / n for t, n in zip(fl, ns, strict=True)]
        ratios = [r["nc_s"] / r["floor_s"] for _, r in pts]
        print(f"| {axis}{' (per sample)' if axis == 'K' else ''} | {int(xs[0])}–{int(xs[-1])} | "
              f"{slope(xs, nc):.2f} | {slope(xs, fl):.2f} | {min(ratios):.1f}–"
              f"{max(ratios):.1f}x |")
    sx = [float(n) for n, _ in sweep_rows]
    print(f"| sweep N | {int(sx[0])}–{int(sx[-1])} | "
          f"{slope(sx, [r['sweep_s'] for _, r in sweep_rows]):.2f} | | |")
    if args.plot:
        plot(results, sweep_rows, args.plot)
        print(f"\nfigure: {args.plot}")


def plot(results: dict[str, list[tuple[int, dict[str, Any]]]],
         sweep_rows: list[tuple[int, dict[str, Any]]], path: str) -> None:
    """Four log-log panels: NC arithmetic and floor against N, d, K; the sweep against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 4, figsize=(16, 3.8))
    labels = {"N": "N (d = 512, K = 10)", "d": "d (N = 2 000, K = 10)",
              "K": "K (d = 512, N grows with K)"}
    for ax, (axis, pts) in zip(axs, results.items(), strict=False):
        xs = [v for v, _ in pts]
        ax.loglog(xs, [r["nc_s"] for _, r in pts], "o-", label="NC arithmetic (2 passes)")
        ax.loglog(xs, [r["floor_s"] for _, r in pts], "s--", label="floor: index_add_ pass")
        ax.set_xlabel(labels[axis])
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axs[3]
    ns = [n for n, _ in sweep_rows]
    ax.loglog(ns, [r["sweep_s"] for _, r in sweep_rows], "o-", label="sweep time (s)")
    ax.loglog(ns, [max(r["extra_mb"], 1) for _, r in sweep_rows], "s--",
              label="sweep extra MB")
    ax.set_xlabel("N (small_cnn, clean + noise, all taps)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("ncscope scaling, 1 thread (benchmarks/bench_scaling.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

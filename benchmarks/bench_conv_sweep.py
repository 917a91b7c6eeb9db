"""The all-layer sweep on conv nets against the attacks plus the forward passes it needs.

VGG11-BN and PreActResNet18 (the paper's models; Su, Zhang, Tsilivis, Kempe, TMLR 2024,
experimental setup) at CIFAR shape (3×32×32, K = 10), eval mode, seeded initialisation, on
seeded synthetic images (uniform pixels, balanced labels; the timing does not depend on what
the pixels show). Every default tap of the model plus the penultimate features, largest maps
included (VGG11-BN: 9 layers, 59 904 features per image in all, up to 16 384 per layer;
PreActResNet18: 7 layers, 197 120 in all, up to 65 536).

* **A** -- :func:`ncscope.collapse.sweep.sweep` with five sources: clean, untargeted PGD-10,
  targeted PGD-10 (next class), Gaussian noise (σ = 8/255) and uniform l_inf noise
  (ε = 8/255); all l_inf ε = 8/255, α = 2/255, each attack seeded.
* **B** -- the baseline: the same four perturbations of every batch (fresh, identically seeded
  objects) plus the forward passes two-pass NC statistics minimally need: each of the five
  views' batches forwarded twice (pass 1: class means; pass 2: scatter around them), under
  ``torch.no_grad``, raw model calls, no hooks, no statistics.

Goal A / B ≤ 1.3. A runs with light timers around its parts (monkey-patched around the
functions; a few hundred ``perf_counter`` calls), which give its split: attacks (the
:class:`Source.apply` calls), feature hooks (:meth:`FeatureTaps._keep`), NC arithmetic (pass-1
sums, freezing the references, pass-2 measurements, the metrics and the table), spooling (write
and read back of the perturbed batches) and the forwards (the rest). Order per repetition:
B, A, then A, B, ...; medians.

Usage::

    python benchmarks/bench_conv_sweep.py                      # --quick: N = 64, 1 repetition
    python benchmarks/bench_conv_sweep.py --n 128 --reps 3     # the full sizes
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from _machine import cpu_name
from ncscope.attacks import PGD, GaussianNoise, UniformLinf
from ncscope.collapse.measure import Measurement
from ncscope.collapse.reference import ClassMeanSums
from ncscope.collapse.spool import TensorSpool
from ncscope.collapse.taps import FeatureTaps
from ncscope.models import create_model

sweep_mod = importlib.import_module("ncscope.collapse.sweep")  # the module, not the function
EPS, ALPHA, K = 8 / 255, 2 / 255, 10
MODELS = ("vgg11_bn", "preactresnet18")


def make_sources(model: nn.Module, steps: int) -> dict[str, Any]:
    """The four perturbations (fresh objects, fixed seeds) plus the clean data."""
    return {
        "clean": None,
        "pgd": PGD(model, eps=EPS, alpha=ALPHA, steps=steps, seed=1),
        "pgd_targeted": PGD(model, eps=EPS, alpha=ALPHA, steps=steps, targeted=True, seed=2),
        "gaussian": GaussianNoise(model, EPS, seed=3),
        "uniform": UniformLinf(model, EPS, seed=4),
    }


def data(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded synthetic CIFAR-shaped images in [0, 1] and balanced labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % K


def batches(x: Tensor, y: Tensor, bs: int) -> list[tuple[Tensor, Tensor]]:
    """The measurement batches."""
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]


# ----------------------------------------------------------------------------- timers
class Timers:
    """Seconds spent in patched functions, by part."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, part: str, gen: bool = False) -> None:
        """Time ``owner.name`` as ``part`` (``gen``: a generator, timed while it yields)."""
        orig = getattr(owner, name)
        s = self.s

        if gen:
            @functools.wraps(orig)
            def timed_gen(*a: Any, **kw: Any) -> Iterator[Any]:
                it = orig(*a, **kw)
                while True:
                    t0 = time.perf_counter()
                    try:
                        item = next(it)
                    except StopIteration:
                        s[part] += time.perf_counter() - t0
                        return
                    s[part] += time.perf_counter() - t0
                    yield item
            new: Callable[..., Any] = timed_gen
        else:
            @functools.wraps(orig)
            def timed(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return orig(*a, **kw)
                finally:
                    s[part] += time.perf_counter() - t0
            new = timed
        self._undo.append((owner, name, orig))
        setattr(owner, name, new)

    def __enter__(self) -> Timers:
        self.wrap(sweep_mod.Source, "apply", "attacks")
        self.wrap(FeatureTaps, "_keep", "hooks")
        self.wrap(ClassMeanSums, "update", "NC pass 1")
        self.wrap(ClassMeanSums, "freeze", "NC freeze")
        self.wrap(Measurement, "update", "NC pass 2")
        self.wrap(sweep_mod, "_rows", "NC metrics + table")
        self.wrap(sweep_mod, "long_frame", "NC metrics + table")
        self.wrap(TensorSpool, "append", "spool")
        self.wrap(TensorSpool, "batches_with_targets", "spool", gen=True)
        self.wrap(TensorSpool, "delete", "spool")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()


# ----------------------------------------------------------------------------- A and B
def run_a(model: nn.Module, x: Tensor, y: Tensor, bs: int, steps: int,
          layers: list[str]) -> tuple[float, dict[str, float], int]:
    """The sweep; returns (seconds, split, rows)."""
    w, b = model.classifier.weight.detach(), model.classifier.bias.detach()
    with Timers() as tm:
        t0 = time.perf_counter()
        df = sweep_mod.sweep(model, (x, y), make_sources(model, steps), layers=layers,
                             num_classes=K, classifiers={"classifier:in": (w, b)},
                             batch_size=bs)
        total = time.perf_counter() - t0
    split = dict(tm.s)
    split["forwards (rest)"] = total - sum(split.values())
    return total, split, len(df)


def run_b(model: nn.Module, x: Tensor, y: Tensor, bs: int, steps: int) -> tuple[float, float]:
    """The four perturbations and the ten forward passes; returns (seconds, attack seconds)."""
    srcs = [s for s in make_sources(model, steps).values() if s is not None]
    t0 = time.perf_counter()
    views = []
    for xb, yb in batches(x, y, bs):
        views.append(xb)
        views.extend(s(xb, yb) for s in srcs)
    t_attack = time.perf_counter() - t0
    with torch.no_grad():
        for _ in range(2):
            for v in views:
                model(v)
    return time.perf_counter() - t0, t_attack


def bench(name: str, n: int, bs: int, steps: int, reps: int) -> dict[str, Any]:
    """Time A and B on one model."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, input_shape=(3, 32, 32)).eval()
    layers = [*model.tap_layers, "classifier:in"]
    x, y = data(n)
    xw, yw = data(2 * K, seed=9)  # warm-up: kernels, allocator, each attack's first-call checks
    run_b(model, xw, yw, bs, 1)
    run_a(model, xw, yw, bs, 1, layers)
    ta, tb, tba, splits = [], [], [], []
    rows = 0
    for r in range(reps):
        for which in (("b", "a") if r % 2 == 0 else ("a", "b")):
            if which == "a":
                t, split, rows = run_a(model, x, y, bs, steps, layers)
                ta.append(t)
                splits.append(split)
            else:
                t, t_att = run_b(model, x, y, bs, steps)
                tb.append(t)
                tba.append(t_att)
    split = {k: statistics.median(s.get(k, 0.0) for s in splits) for k in splits[0]}
    return {"a": statistics.median(ta), "b": statistics.median(tb),
            "b_attack": statistics.median(tba), "split": split, "layers": len(layers),
            "rows": rows}


def main() -> None:
    """Run both models and print the table and the split."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--n", type=int, default=64, help="images (quick default 64; full 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps (the paper's 10)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{dt.date.today()}, {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
          f"{args.threads} thread(s); N = {args.n}, batch {args.batch_size}, PGD-{args.steps} "
          f"l_inf 8/255; median of {args.reps}\n")
    res = {m: bench(m, args.n, args.batch_size, args.steps, args.reps) for m in args.models}
    print("| model | layers | A: sweep (s) | B: attacks + 10 forwards (s) | of B: attacks (s) "
          "| A/B | goal |")
    print("|---|---|---|---|---|---|---|")
    for m, r in res.items():
        ratio = r["a"] / r["b"]
        print(f"| {m} | {r['layers']} | {r['a']:.1f} | {r['b']:.1f} | {r['b_attack']:.1f} | "
              f"**{ratio:.3f}x** | {'met' if ratio <= 1.3 else 'not met'} (<= 1.3x) |")
    parts = list(next(iter(res.values()))["split"])
    print("\nSplit of A (shares of the sweep):\n")
    print("| model | " + " | ".join(parts) + " |")
    print("|---|" + "---|" * len(parts))
    for m, r in res.items():
        print(f"| {m} | " + " | ".join(f"{r['split'].get(p, 0.0) / r['a']:.1%}"
                                       for p in parts) + " |")


if __name__ == "__main__":
    main()

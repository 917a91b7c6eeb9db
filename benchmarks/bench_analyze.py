"""Overhead of ``ncscope.analyze`` over the work it cannot avoid.

One trained model (BN-MLP on digits, plain SGD, seeded, trained inside this script) and one
attack (PGD-10, l_inf, eps 0.1, alpha 0.025). In the same process, single-threaded:

* **A** -- ``ncscope.analyze(model, train, sources={"clean": None, "pgd": atk}, eps=0.1,
  progress=False)`` over all default layers (training split only);
* **B** -- the baseline "attack + the forward passes it needs": one PGD attack over the
  training set in batches of the same size, plus the forward passes the NC statistics minimally
  need -- two clean and two perturbed forwards over the training set (``torch.no_grad``, raw
  model calls, no hooks, no statistics).

Goal: A / B <= 1.3. Each of A and B runs once to warm up, then ``--reps`` times interleaved
(A B, B A, ...); the table reports the medians. With ``--profile`` (or automatically when the
ratio is above the goal) one extra ``analyze`` call runs under cProfile and the split of A's
time is printed: attack inside ``analyze`` (from ``df.attrs["timings"]``) vs the same attack
outside it, hooks, NC statistics, result table.

Usage: ``.venv/bin/python benchmarks/bench_analyze.py [--epochs 20] [--reps 3] [--profile]``
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import platform
import pstats
import statistics
import time

import torch
from torch import nn

import ncscope
from _machine import cpu_name
from ncscope.attacks import PGD
from ncscope.data import load_dataset, make_loader
from ncscope.models import create_model

EPS, ALPHA, STEPS = 0.1, 0.025, 10
BATCH = 256  # analyze's default batch_size; the baseline uses the same


def train_model(train, epochs: int, seed: int = 0) -> nn.Module:
    """Plain SGD (lr 0.05, momentum 0.9, wd 5e-4, batch 128), seeded."""
    torch.manual_seed(seed)
    model = create_model("bn_mlp", dataset="digits")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs):
        model.train()
        for x, y in make_loader(train, batch_size=128, seed=seed + epoch):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def make_attack(model: nn.Module) -> PGD:
    return PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, seed=0)


def run_a(model: nn.Module, train) -> tuple[float, dict]:
    atk = make_attack(model)
    t0 = time.perf_counter()
    df = ncscope.analyze(model, train, sources={"clean": None, "pgd": atk}, eps=EPS,
                         batch_size=BATCH, progress=False)
    return time.perf_counter() - t0, dict(df.attrs)


def run_b(model: nn.Module, train) -> tuple[float, float]:
    """(total, attack-only) seconds of the baseline."""
    atk = make_attack(model)
    x_all, y_all = train.tensors
    batches = [(x_all[i:i + BATCH], y_all[i:i + BATCH]) for i in range(0, len(y_all), BATCH)]
    t0 = time.perf_counter()
    adv = [atk(x, y) for x, y in batches]
    t_attack = time.perf_counter() - t0
    with torch.no_grad():
        for _ in range(2):
            for x, _y in batches:
                model(x)
            for xa in adv:
                model(xa)
    return time.perf_counter() - t0, t_attack


def profile_a(model: nn.Module, train, top: int = 25) -> str:
    prof = cProfile.Profile()
    prof.enable()
    run_a(model, train)
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="always print a cProfile of A")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    train = load_dataset("digits", split="train")
    t0 = time.perf_counter()
    model = train_model(train, args.epochs)
    t_train = time.perf_counter() - t0
    x_all, y_all = train.tensors
    with torch.no_grad():
        acc = (model(x_all).argmax(1) == y_all).float().mean().item()

    run_a(model, train)  # warm-up (kernels, allocator, the attack's first-call checks)
    run_b(model, train)
    a_times, b_times, b_attack, a_attack = [], [], [], []
    attrs: dict = {}
    for rep in range(args.reps):
        order = ("a", "b") if rep % 2 == 0 else ("b", "a")
        for which in order:
            if which == "a":
                t, attrs = run_a(model, train)
                a_times.append(t)
                a_attack.append(attrs["timings"]["attack:pgd"])
            else:
                t, ta = run_b(model, train)
                b_times.append(t)
                b_attack.append(ta)
    ta, tb = statistics.median(a_times), statistics.median(b_times)
    ratio = ta / tb
    layers = attrs["layers"]

    print(f"# bench_analyze: analyze vs attack + minimal forwards (model trained {args.epochs} "
          f"epochs in {t_train:.1f} s, train accuracy {100 * acc:.1f}%)\n")
    print("| date | machine | torch | threads | N | layers | A: analyze (s) | "
          "B: attack + 4 fwd (s) | A/B | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dt.date.today().isoformat()} | {cpu_name()} ({platform.machine()}) | "
          f"{torch.__version__} | {args.threads} | {len(y_all)} | {len(layers)}: "
          f"{', '.join(layers)} | {ta:.3f} | {tb:.3f} | {ratio:.2f}x | "
          f"{'ok' if ratio <= 1.3 else 'ABOVE'} (<= 1.3x) |")
    print(f"\nmedian of {args.reps} (A runs: {', '.join(f'{t:.3f}' for t in a_times)}; "
          f"B runs: {', '.join(f'{t:.3f}' for t in b_times)})")
    am, bm = statistics.median(a_attack), statistics.median(b_attack)
    print(f"attack time: inside analyze {am:.3f} s (hooks on), alone {bm:.3f} s; "
          f"rest of A {ta - am:.3f} s vs 4 forwards of B {tb - bm:.3f} s")
    if args.profile or ratio > 1.3:
        print("\n## cProfile of one analyze call\n")
        print(profile_a(model, train))


if __name__ == "__main__":
    main()

"""Empirical NTK through ``torch.func`` against a per-example ``autograd.grad`` loop, and the
analytic NTK on the whole digits training set.

1. **Empirical NTK** of the Fashion-MNIST-shaped small CNN (``ncscope.models`` ``small_cnn``,
   1 × 28 × 28, 10 classes, float64) on ``--n`` random images × 10 logits: the full
   (10n × 10n) kernel by :func:`ncscope.ntk.empirical_ntk` (``jacrev`` per image, one product)
   against the reference loop that takes one ``torch.autograd.grad`` per (image, logit),
   stacks the rows and forms J Jᵀ. Same process, one thread, median of ``--reps`` runs; the
   peak resident memory of each method is measured in a fresh child process (``VmHWM``
   after the call minus before it). Agreement: max |ΔK| / max |K| (float64, expected ≤ 1e-10).
2. **Analytic NTK** (:func:`ncscope.ntk.relu_ntk`, depth 2) of the 1 347 digits training
   images: the 1 347 × 1 347 kernel, and the kernel predictor at τ = ∞ (one eigendecomposition).

Usage: ``.venv/bin/python benchmarks/bench_ntk.py [--n 100] [--reps 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from _machine import cpu_name
from ncscope.data.config import DataConfig
from ncscope.models.config import ModelConfig
from ncscope.ntk import KernelPredictor, empirical_ntk, relu_ntk


def cnn() -> nn.Module:
    """The small CNN at Fashion-MNIST shape, float64, eval mode, fixed weights."""
    torch.manual_seed(0)
    return ModelConfig("small_cnn").build("fashion_mnist").double().eval()


def reference_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One ``autograd.grad`` per (image, logit): rows of J, then J Jᵀ."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i:i + 1])[0]
        for k in range(out.shape[0]):
            grads = torch.autograd.grad(out[k], params, retain_graph=k + 1 < out.shape[0])
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    j = torch.stack(rows)
    return j @ j.T


def ncscope_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`ncscope.ntk.empirical_ntk`, full mode (float64 model: float64 products)."""
    return empirical_ntk(model, x, mode="full", max_bytes=4 * 2**30)


METHODS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "torch.func (ncscope)": ncscope_ntk, "autograd.grad loop": reference_ntk}


def _peak_child(name: str, n: int, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    model = cnn()
    x = torch.rand(n, *_shape(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = _high_water_kib()
    METHODS[name](model, x)
    queue.put((_high_water_kib() - before) / 1024)


def _high_water_kib() -> int:
    """This process's peak resident memory (``VmHWM``; unlike ``ru_maxrss`` it is not
    inherited from the parent across ``exec``), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _shape() -> tuple[int, int, int]:
    return (1, 28, 28)


def peak_mib(name: str, n: int) -> float:
    """Peak resident memory added by one call of ``name``, in a fresh process (MiB)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_child, args=(name, n, q))
    p.start()
    value = q.get()
    p.join()
    return float(value)


def main() -> None:
    """Run both benchmarks and print Markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = cnn()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(args.n, *_shape(), generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    times: dict[str, float] = {}
    kernels: dict[str, torch.Tensor] = {}
    for name, fn in METHODS.items():
        runs = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            kernels[name] = fn(model, x)
            runs.append(time.perf_counter() - t0)
        times[name] = statistics.median(runs)
    ref = kernels["autograd.grad loop"]
    agree = float((kernels["torch.func (ncscope)"] - ref).abs().max() / ref.abs().max())
    print(f"## Empirical NTK, small CNN ({params} parameters), {args.n} images × 10 logits "
          f"({dt.date.today()}, {cpu_name()}, torch {torch.__version__}, 1 thread, median of "
          f"{args.reps})\n")
    print("| method | seconds | vs autograd loop | peak memory (MiB) |")
    print("|---|---|---|---|")
    base = times["autograd.grad loop"]
    for name in METHODS:
        print(f"| {name} | {times[name]:.2f} | {base / times[name]:.1f}× | "
              f"{peak_mib(name, args.n):.0f} |")
    print(f"\nAgreement: max |ΔK| / max |K| = {agree:.1e}\n")

    digits = DataConfig().load("train")
    xd = digits.images.double()
    t0 = time.perf_counter()
    k = relu_ntk(xd, depth=2)
    t_kernel = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = KernelPredictor(lambda a, b: relu_ntk(a, b, depth=2), xd, digits.targets)
    t_pred = time.perf_counter() - t0
    print(f"## Analytic NTK (depth 2) on the {xd.shape[0]} digits training images\n")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| kernel {tuple(k.shape)} | {t_kernel:.3f} |")
    print(f"| kernel predictor at τ = ∞ (kernel + eigendecomposition, rank {pred.rank}) | "
          f"{t_pred:.3f} |")


if __name__ == "__main__":
    main()

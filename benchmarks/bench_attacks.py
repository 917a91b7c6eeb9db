"""PGD-10 l_inf throughput: ncscope.attacks.PGD against torchattacks.PGD (same model, same batch).

Usage::

    .venv/bin/python benchmarks/bench_attacks.py [--threads 1] [--reps 15] [--quick]

Prints a markdown table (date, machine, torch version, threads and batch on top; per model
the img/s of each implementation and the ratios ncscope / torchattacks). For context it also
times the paper's own ``attack_pgd`` (robust_neural_collapse / Rice et al. 2020:
``loss.backward()``, so parameter gradients are formed too, and a final loss-selection
forward). All use the paper's setting (eps 8/255, alpha 2/255, 10 steps, uniform random
start). ncscope runs twice: with default options (exact: bit-identical to torchattacks) and
with ``fast=True`` (eval-mode BatchNorm folded into the preceding layer, channels-last inputs
for conv nets on CPU; see ``ncscope.attacks.fast``). ncscope's default sanity checks
(``checks="first"``: full checks on the first call, absorbed by the warm-up, then the free
zero-gradient check) are included. Timings interleave the implementations (rotating order) and
report the median of ``--reps`` calls each. Synthetic inputs only; nothing is downloaded.
torchattacks is a test-only dependency (``pip install --no-deps torchattacks==3.5.1``). On a
shared machine, expect +-10% run-to-run noise on each figure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ncscope.attacks import PGD
from ncscope.models import create_model

#: name -> (ncscope model name, data set whose shape/normalisation it takes)
MODELS: dict[str, tuple[str, str]] = {
    "bn_mlp": ("bn_mlp", "digits"),            # what `make demo` trains (1x8x8)
    "small_cnn": ("small_cnn", "cifar10"),     # small conv net at CIFAR shape (3x32x32)
    "vgg11_bn": ("vgg11_bn", "cifar10"),       # the paper's VGG11-BN (slow on CPU)
    "preactresnet18": ("preactresnet18", "cifar10"),  # the paper's PreActResNet18 (slower)
}


def build(name: str) -> tuple[nn.Module, tuple[int, ...], str]:
    """An ncscope model in eval mode with non-trivial BatchNorm statistics, its input shape
    and a label for the table."""
    arch, dataset = MODELS[name]
    torch.manual_seed(0)
    model = create_model(arch, 10, dataset=dataset)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    shape = tuple(model.input_shape)
    n = sum(p.numel() for p in model.parameters())
    return model.eval(), shape, f"{arch} ({'x'.join(map(str, shape))}, {n / 1e6:.2f}M params)"


def paper_attack_pgd(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epsilon: float = 8 / 255,
                     alpha: float = 2 / 255, attack_iters: int = 10) -> torch.Tensor:
    """The paper's l_inf ``attack_pgd`` (robust_neural_collapse, from Rice et al. 2020), one
    restart, as run by its ``eval.py``: ``loss.backward()`` (parameter gradients formed too)
    and a final loss-selection forward. Normalisation is inside ``model``."""
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
    delta = torch.max(torch.min(delta, 1 - X), 0 - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
        output = model(X + delta)
        loss = nn.functional.cross_entropy(output, y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-epsilon, max=epsilon)
        d = torch.max(torch.min(d, 1 - X), 0 - X)
        delta.data = d.data
        delta.grad.zero_()
    all_loss = nn.functional.cross_entropy(model(X + delta), y, reduction="none")
    max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
    return X + max_delta


def bench_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int,
              warmup: int) -> dict[str, float]:
    """img/s (median of ``reps`` interleaved calls) for each implementation."""
    import torchattacks

    impls: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "ncscope": PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True),
        "ncscope_fast": PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True,
                            fast=True),
        "torchattacks": torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10,
                                         random_start=True),
        "paper": lambda a, b: paper_attack_pgd(model, a, b),
    }
    for impl in impls.values():  # warm-up (absorbs ncscope's first-call full sanity checks)
        for _ in range(warmup):
            impl(x, y)
    times: dict[str, list[float]] = {k: [] for k in impls}
    names = list(impls)
    for i in range(reps):
        for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order
            t0 = time.perf_counter()
            impls[name](x, y)
            times[name].append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return {k: x.shape[0] / statistics.median(v) for k, v in times.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--models", default="bn_mlp,small_cnn",
                        help=f"comma-separated, from {', '.join(MODELS)} (the paper's two are "
                             "slow on CPU: 20-70 s per PGD-10 call at batch 128)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 reps, for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.reps
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    rows = []
    for name in names:
        model, shape, label = build(name)
        g = torch.Generator().manual_seed(1)
        x = torch.rand((args.batch, *shape), generator=g)
        y = torch.randint(0, 10, (args.batch,), generator=g)
        rows.append((label, bench_one(model, x, y, reps, args.warmup)))
    date = _dt.date.today().isoformat()
    print(f"{date}, {machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s), batch {args.batch}, PGD-10 l_inf, img/s (median of {reps})\n")
    print("| model | torchattacks | paper code | ncscope (exact) | ratio vs torchattacks "
          "| ncscope fast=True | ratio vs torchattacks | ratio vs paper |")
    print("|---|---|---|---|---|---|---|---|")
    def num(v: float) -> str:
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"

    for name, r in rows:
        a, f, b, c = r["ncscope"], r["ncscope_fast"], r["torchattacks"], r["paper"]
        print(f"| {name} | {num(b)} | {num(c)} | {num(a)} | {a / b:.2f}x | {num(f)} "
              f"| **{f / b:.2f}x** | {f / c:.2f}x |")


if __name__ == "__main__":
    main()

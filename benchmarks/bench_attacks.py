"""PGD-10 l_inf throughput: ncscope.attacks.PGD against torchattacks.PGD (same model, same batch).

Usage::

    .venv/bin/python benchmarks/bench_attacks.py [--threads 1] [--reps 15] [--quick]

Prints a markdown table (date, machine, torch version, threads, model, batch, img/s of each,
ratio ncscope / torchattacks). For context it also times the paper's own ``attack_pgd``
(robust_neural_collapse / Rice et al. 2020: ``loss.backward()``, so parameter gradients are
formed too, and a final loss-selection forward). All use the paper's setting (eps 8/255,
alpha 2/255, 10 steps, uniform random start) with default options; ncscope's default sanity
checks (``checks="first"``: full checks on the first call, absorbed by the warm-up, then the
free zero-gradient check) are included. Timings interleave the implementations (rotating
order) and report the median of ``--reps`` calls each. Synthetic inputs only; nothing is
downloaded. torchattacks is a test-only dependency (``pip install --no-deps
torchattacks==3.5.1``). On a shared machine, expect +-10% run-to-run noise on each figure.
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


class Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def digits_mlp() -> nn.Module:
    """The project's default scale: BN-MLP on 1x8x8 digits-sized inputs."""
    return nn.Sequential(
        Normalize([0.3], [0.4]), nn.Flatten(), nn.Linear(64, 256), nn.BatchNorm1d(256),
        nn.ReLU(), nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10),
    )


def small_cnn() -> nn.Module:
    """A small VGG-style CNN on 3x32x32 (CIFAR-sized) inputs."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.MaxPool2d(2)]

    return nn.Sequential(
        Normalize([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]),
        *block(3, 16), *block(16, 32), *block(32, 64),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "BN-MLP 64-256-256-10 (1x8x8)": (digits_mlp, (1, 8, 8)),
    "SmallCNN 16-32-64 (3x32x32)": (small_cnn, (3, 32, 32)),
}


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


def bench_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              reps: int) -> dict[str, float]:
    """img/s (median of ``reps`` interleaved calls) for each implementation."""
    import torchattacks

    impls: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "ncscope": PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True),
        "torchattacks": torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10,
                                         random_start=True),
        "paper": lambda a, b: paper_attack_pgd(model, a, b),
    }
    for impl in impls.values():  # warm-up (absorbs ncscope's first-call full sanity checks)
        for _ in range(2):
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
    parser.add_argument("--quick", action="store_true", help="3 reps, for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.reps
    torch.manual_seed(0)
    rows = []
    for name, (build, shape) in MODELS.items():
        model = build().eval()
        x = torch.rand((args.batch, *shape))
        y = torch.randint(0, 10, (args.batch,))
        rows.append((name, bench_one(model, x, y, reps)))
    date = _dt.date.today().isoformat()
    print("| date | machine | torch | threads | model | batch | ncscope img/s "
          "| torchattacks img/s | ratio vs torchattacks | paper code img/s | ratio vs paper |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        a, b, c = r["ncscope"], r["torchattacks"], r["paper"]
        print(f"| {date} | {machine()} | {torch.__version__} | {torch.get_num_threads()} "
              f"| {name} | {args.batch} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | {c:,.0f} "
              f"| {a / c:.2f}x |")


if __name__ == "__main__":
    main()

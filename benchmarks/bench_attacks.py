"""PGD-10 l_inf throughput: ncscope.attacks.PGD against torchattacks.PGD (same model, same batch).

Usage::

    .venv/bin/python benchmarks/bench_attacks.py [--threads 1] [--reps 15] [--quick]

Prints a markdown table (date, machine, torch version, threads, model, batch, img/s of each,
ratio ncscope / torchattacks). Both attacks use the paper's setting (eps 8/255, alpha 2/255,
10 steps, uniform random start) with default options; ncscope's default sanity checks
(``checks="first"``: full checks on the first call, absorbed by the warm-up, then the free
zero-gradient check) are included. Timings interleave the two libraries and report the median
of ``--reps`` calls each. Synthetic inputs only; nothing is downloaded. torchattacks is a
test-only dependency (``pip install --no-deps torchattacks==3.5.1``).
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


def bench_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int) -> tuple[float, float]:
    import torchattacks

    ours = PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    for _ in range(3):  # warm-up (also absorbs ncscope's first-call full sanity checks)
        ours(x, y)
        theirs(x, y)
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for i in range(reps):
        order = [(ours, t_ours), (theirs, t_theirs)]
        if i % 2:
            order.reverse()
        for atk, times in order:
            t0 = time.perf_counter()
            atk(x, y)
            times.append(time.perf_counter() - t0)
    batch = x.shape[0]
    return batch / statistics.median(t_ours), batch / statistics.median(t_theirs)


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
        ips_ours, ips_theirs = bench_one(model, x, y, reps)
        rows.append((name, ips_ours, ips_theirs))
    date = _dt.date.today().isoformat()
    print("| date | machine | torch | threads | model | batch | ncscope img/s "
          "| torchattacks img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {date} | {machine()} | {torch.__version__} | {torch.get_num_threads()} "
              f"| {name} | {args.batch} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()

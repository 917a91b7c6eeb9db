"""Wall time of one training epoch (ST / AT / TRADES) and of one tracking pass.

Usage::

    python benchmarks/bench_train_epoch.py                       # digits + Fashion-MNIST 5000
    python benchmarks/bench_train_epoch.py --datasets digits --threads 1 2
    python benchmarks/bench_train_epoch.py --channels-last --precision bf16

Each (data set, mode, threads) runs ``--epochs`` epochs (default 2; the first is a warm-up)
with PGD-10 l_inf at eps 0.1, alpha eps/4 (attack in train mode for AT, eval mode for TRADES),
batch 128, and prints the median ``train_s`` of the timed epochs plus the time of the tracking
pass after the last epoch (penultimate layer: clean train NC, the epoch's perturbed batches or,
for ST, a fresh PGD of the training set, clean + PGD test accuracy). Digits: BN-MLP on the
1347 training images; Fashion-MNIST: small_cnn on a stratified 5000-image subset (test: 1000).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ncscope.train import TrainConfig, train

SETUPS = {
    "digits": {"data": {"dataset": "digits"}, "model": {"name": "bn_mlp"}, "lr": 0.05},
    "fashion_mnist": {"data": {"dataset": "fashion_mnist", "n_train": 5000, "n_test": 1000},
                      "model": {"name": "small_cnn"}, "lr": 0.05},
}  # fmt: skip


def bench(dataset: str, mode: str, threads: int, epochs: int, precision: str = "fp32",
          channels_last: bool = False) -> dict[str, float]:
    """Train ``epochs`` epochs; return the median train time of the timed epochs and more."""
    cfg = TrainConfig.from_dict(
        {
            **SETUPS[dataset],
            "mode": mode,
            "epochs": epochs,
            "eps": 0.1,
            "alpha": 0.025,
            "steps": 10,
            "threads": threads,
            "progress": False,
            "checkpoint_every": 0,
            "precision": precision,
            "channels_last": channels_last,
        }
    )
    t0 = time.perf_counter()
    res = train(cfg)
    total = time.perf_counter() - t0
    timed = [t["train_s"] for t in res.timings[1:]] or [res.timings[0]["train_s"]]
    return {
        "epoch_s": statistics.median(timed),
        "first_epoch_s": res.timings[0]["train_s"],
        "track_s": res.timings[-1]["track_s"],
        "total_s": total,
        "n_train": len(cfg.data.load("train")),  # the training set (tracking reads a subset)
    }


def main() -> None:
    """Run the benchmark grid and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--modes", nargs="+", default=["st", "at", "trades"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (first = warm-up)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="TrainConfig.precision (bf16: autocast of the training passes)")
    parser.add_argument("--channels-last", action="store_true",
                        help="TrainConfig.channels_last (conv nets)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads")
    print("| data set | model | n | mode | threads | epoch (s) | first epoch (s) | tracking (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for ds in args.datasets:
        for mode in args.modes:
            for th in args.threads:
                r = bench(ds, mode, th, args.epochs, args.precision, args.channels_last)
                print(
                    f"| {ds} | {SETUPS[ds]['model']['name']} | {r['n_train']} | {mode} | {th} | "
                    f"{r['epoch_s']:.2f} | {r['first_epoch_s']:.2f} | {r['track_s']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

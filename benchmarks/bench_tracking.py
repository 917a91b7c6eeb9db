"""Per-epoch tracking cost against a training epoch, and the error of the tracking subset.

On the Fashion-MNIST preset of the su2024 study (small CNN, 5 000 training images, the full
10 000-image test set, ST with a fresh eval-mode PGD-10 at ε = 0.1 after the epoch), in one
process:

1. one ST training epoch (no tracking) — the baseline;
2. the tracker's measurement after that epoch for several ``track_subset`` values (samples per
   class of the stratified train/test tracking subsets; ``None`` = the full sets), with the
   tracking PGD exact or ``fast`` (BatchNorm folded);
3. the estimator's error: each subset's penultimate-layer numbers against the full sets'
   (NC1 relative error; NCC / network accuracy absolute), on the model after ``--epochs``.

Prints a Markdown table (ratios = tracking seconds / training-epoch seconds). Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_tracking.py [--epochs 3] [--subsets 10 20 50]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch

from ncscope.train import TrainConfig, Trainer
from ncscope.train.tracking import Tracker

METRICS = ("nc1", "ncc_accuracy", "net_accuracy")


def _view(rows: list[dict], source: str, split: str) -> dict[str, float]:
    ref = "own" if split == "train" else "clean"
    pen = max((r["depth"], r["layer"]) for r in rows if r["layer"])[1]
    return {r["metric"]: r["value"] for r in rows if r["layer"] == pen and r["source"] == source
            and r["split"] == split and r["reference"] == ref and r["group"] == "label"}


def main() -> None:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="training epochs before measuring")
    p.add_argument("--subsets", type=int, nargs="*", default=[10, 20, 50])
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = dict(data={"dataset": "fashion_mnist", "n_train": args.n_train},
                model={"name": "small_cnn"}, mode="st", lr=0.05, eps=0.1, steps=10,
                track_layers="all", progress=False, threads=args.threads)
    # Train with only the (cheap, clean) measurement of the last epoch; time every epoch.
    cfg = TrainConfig(epochs=args.epochs, track_epochs=[], **{
        **base, "track_test": False, "track_test_attack": False,
        "track_fresh_attack": False})
    train_set, test_set = cfg.data.load("train"), cfg.data.load("test")
    torch.manual_seed(0)
    trainer = Trainer(cfg.model.build(train_set.info), train_set, None, cfg)
    t0 = time.perf_counter()
    trainer.fit()
    epoch_s = min(t["train_s"] for t in trainer.timings)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s; "
          f"fastest epoch {epoch_s:.2f} s")

    results = {}
    for subset in [None, *args.subsets]:
        for fast in (False,) if subset is None else (False, True):
            tcfg = TrainConfig(epochs=args.epochs, track_subset=subset, fast_attacks=fast,
                               **base)
            tracker = Tracker(trainer.model, train_set, test_set, tcfg)
            t0 = time.perf_counter()
            rows = tracker.measure(args.epochs)
            secs = time.perf_counter() - t0
            results[(subset, fast)] = (secs, rows)
            print(f"subset={subset} fast={fast}: {secs:.2f} s", flush=True)

    full = results[(None, False)][1]
    print(f"\n{date.today()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}; ST epoch "
          f"{epoch_s:.2f} s on {args.n_train} images; test set {len(test_set)} images\n")
    print("| track_subset (per class) | tracking PGD | tracking s | × training epoch | "
          "NC1 rel. err (train, clean) | NC1 rel. err (train, PGD) | NCC acc err (test, PGD) "
          "| net acc err (test, PGD) |")
    print("|---|---|---|---|---|---|---|---|")
    for (subset, fast), (secs, rows) in results.items():
        errs = []
        for source, split, metric, rel in (("clean", "train", "nc1", True),
                                           ("pgd", "train", "nc1", True),
                                           ("pgd", "test", "ncc_accuracy", False),
                                           ("pgd", "test", "net_accuracy", False)):
            a, b = _view(rows, source, split)[metric], _view(full, source, split)[metric]
            errs.append(f"{abs(a - b) / abs(b):.1%}" if rel else f"{abs(a - b):.3f}")
        label = "full" if subset is None else str(subset)
        print(f"| {label} | {'fast' if fast else 'exact'} | {secs:.2f} | "
              f"{secs / epoch_s:.2f} | " + " | ".join(errs) + " |")


if __name__ == "__main__":
    main()

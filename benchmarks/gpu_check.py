"""GPU check: AT epochs, the all-layer sweep and CPU/GPU agreement of the NC metrics on CUDA.

On a CUDA machine (at most ~5 minutes at the default sizes), on seeded synthetic CIFAR-shaped
data (3×32×32, K = 10) and the paper's models, VGG11-BN and PreActResNet18 (Su, Zhang,
Tsilivis, Kempe, TMLR 2024, experimental setup):

1. one PGD-AT epoch per model (PGD-10 l_inf 8/255, attack in train mode, batch 128) in
   ``precision="fp32"`` and ``"bf16"`` (autocast of the training passes and the training
   attack), channels-last, through :class:`ncscope.train.Trainer`; prints images per second
   and checks the loss is finite;
2. the all-layer sweep (every default tap plus the penultimate features; clean, PGD-10,
   targeted PGD-10, Gaussian and uniform noise) on the device; prints images per second and
   checks that its NC accumulators live on the device in float64;
3. the NC metrics of the same features (three layers, clean data, copied to the host)
   computed on the device and on the CPU (both float64): the largest relative difference over
   every metric must be at most 1e-6.

Without CUDA it prints why and exits 0. ``--dry-run`` runs the same code path end to end on the
CPU at tiny sizes (the bf16 autocast path included), for tests. Exit status 1 when a check
fails.

Usage::

    python benchmarks/gpu_check.py              # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run    # anywhere, seconds
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from typing import Any

import torch
from torch import Tensor, nn

from ncscope.attacks import PGD, GaussianNoise, UniformLinf
from ncscope.collapse import FeatureTaps
from ncscope.collapse.measure import Measurement
from ncscope.collapse.reference import ClassMeanSums
from ncscope.collapse.registry import compute_metrics
from ncscope.models import create_model
from ncscope.train import Callback, TrainConfig, Trainer

sweep_mod = importlib.import_module("ncscope.collapse.sweep")
EPS = 8 / 255
MODELS = ("vgg11_bn", "preactresnet18")
SIZES = {  # classes, n_train, batch, steps, sweep_n, sweep batch
    "gpu": (10, 2048, 128, 10, 512, 256),
    "dry": (4, 4, 4, 1, 8, 8),
}
RTOL = 1e-6


def synthetic(n: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded CIFAR-shaped images in [0, 1] with a class-dependent brightness, balanced labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = (0.6 * torch.rand(n, 3, 32, 32, generator=g) + 0.3 * y[:, None, None, None] / k)
    return x.clamp(0, 1), y


def build(name: str, k: int, device: torch.device) -> nn.Module:
    """A seeded model with ``k`` classes on ``device``."""
    torch.manual_seed(0)
    return create_model(name, num_classes=k, input_shape=(3, 32, 32)).to(device)


class _Loss(Callback):
    """Keeps the epoch's running loss."""

    loss = math.nan

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any], rows: Any) -> None:
        """Record ``run_loss``."""
        self.loss = float(logs["run_loss"])


def sync(device: torch.device) -> None:
    """Wait for the device (timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def at_epoch(name: str, precision: str, device: torch.device, sizes: tuple[int, ...]
             ) -> dict[str, Any]:
    """One AT epoch; returns images per second and the epoch loss."""
    k, n, batch, steps = sizes[:4]
    x, y = synthetic(n, k, 0)
    cfg = TrainConfig.from_dict({
        "mode": "at", "epochs": 1, "batch_size": batch, "eps": EPS, "steps": steps,
        "lr": 0.05, "progress": False, "checkpoint_every": 0, "save_model": False,
        "track_test": False, "track_test_attack": False, "track_subset": 2,
        "device": device.type, "precision": precision, "channels_last": True,
    })
    cb = _Loss()
    trainer = Trainer(build(name, k, device), (x, y), None, cfg, callbacks=[cb])
    trainer.fit()
    t = trainer.timings[0]["train_s"]
    return {"img_s": n / t, "seconds": t, "loss": cb.loss}


def sources(model: nn.Module, steps: int) -> dict[str, Any]:
    """Clean, PGD, targeted PGD and two noise sources."""
    return {"clean": None,
            "pgd": PGD(model, eps=EPS, steps=steps, seed=1),
            "pgd_targeted": PGD(model, eps=EPS, steps=steps, targeted=True, seed=2),
            "gaussian": GaussianNoise(model, EPS, seed=3),
            "uniform": UniformLinf(model, EPS, seed=4)}


def run_sweep(name: str, device: torch.device, sizes: tuple[int, ...]) -> dict[str, Any]:
    """The all-layer sweep on the device; images per second and where its sums live."""
    k, steps, n, bs = sizes[0], sizes[3], sizes[4], sizes[5]
    model = build(name, k, device).eval()
    layers = [*model.tap_layers, "classifier:in"]
    x, y = synthetic(n, k, 1)
    seen: list[tuple[torch.device, torch.dtype]] = []
    orig = sweep_mod.ClassMeanSums.freeze

    def spy(self: ClassMeanSums, **kw: Any) -> Any:
        ref = orig(self, **kw)
        seen.append((ref.sums.device, ref.sums.dtype))
        return ref

    sweep_mod.ClassMeanSums.freeze = spy  # type: ignore[method-assign]
    try:
        sync(device)
        t0 = time.perf_counter()
        df = sweep_mod.sweep(model, (x, y), sources(model, steps), layers=layers, num_classes=k,
                             classifiers={"classifier:in": (model.classifier.weight.detach(),
                                                            model.classifier.bias.detach())},
                             batch_size=bs, device=device)
        sync(device)
        t = time.perf_counter() - t0
    finally:
        sweep_mod.ClassMeanSums.freeze = orig  # type: ignore[method-assign]
    on_device = all(d.type == device.type and dt == torch.float64 for d, dt in seen)
    return {"img_s": n / t, "seconds": t, "rows": len(df), "layers": len(layers),
            "sums_on_device_f64": on_device and bool(seen), "errors": df.attrs["errors"]}


def metrics_of(feats: dict[str, Tensor], y: Tensor, w: Tensor, b: Tensor, k: int,
               device: torch.device) -> dict[str, float]:
    """Every registered metric of each layer's features, computed on ``device`` (float64)."""
    out: dict[str, float] = {}
    for layer, h in feats.items():
        head = (w, b) if layer == "classifier:in" else (None, None)
        acc = ClassMeanSums(k, *head, device=device).update(h.to(device), y.to(device))
        ref = acc.freeze()
        meas = Measurement(ref).update(h.to(device), y.to(device))
        for key, v in compute_metrics(ref, meas).items():
            if isinstance(v, int | float) and math.isfinite(float(v)):
                out[f"{layer}/{key}"] = float(v)
    return out


def agreement(name: str, device: torch.device, k: int, n: int) -> tuple[float, str, int]:
    """Largest relative difference of the metrics on the device against the CPU."""
    model = build(name, k, device).eval()
    x, y = synthetic(n, k, 2)
    layers = [model.tap_layers[0], model.tap_layers[-1], "classifier:in"]
    with torch.no_grad(), FeatureTaps(model, layers) as taps:
        model(x.to(device))
        feats = {k: v.detach().cpu() for k, v in taps.features.items()}
    w, b = model.classifier.weight.detach().cpu(), model.classifier.bias.detach().cpu()
    on_dev = metrics_of(feats, y, w, b, k, device)
    on_cpu = metrics_of(feats, y, w, b, k, torch.device("cpu"))
    worst, where = 0.0, ""
    for k, v in on_cpu.items():
        rel = abs(on_dev[k] - v) / max(abs(v), 1e-300)
        if rel > worst:
            worst, where = rel, k
    return worst, where, len(on_cpu)


def main(argv: list[str] | None = None) -> int:
    """Run the checks; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="the same code path on the CPU at tiny sizes")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing to check "
              "(run with --dry-run for the same code path on the CPU at tiny sizes)")
        return 0
    device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    sizes = SIZES["dry" if args.dry_run else "gpu"]
    name = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(device)
    print(f"gpu_check on {name}, torch {torch.__version__}; K = {sizes[0]}; AT: {sizes[1]} "
          f"images, batch {sizes[2]}, PGD-{sizes[3]}; sweep: {sizes[4]} images")
    failures: list[str] = []
    t_start = time.perf_counter()
    print("\n| model | AT epoch fp32 img/s | AT epoch bf16 img/s | bf16 speed-up | "
          "sweep img/s | sweep layers | CPU/device max rel. diff of NC metrics |")
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models:
        fp32 = at_epoch(model_name, "fp32", device, sizes)
        bf16 = at_epoch(model_name, "bf16", device, sizes)
        for tag, r in (("fp32", fp32), ("bf16", bf16)):
            if not math.isfinite(r["loss"]):
                failures.append(f"{model_name} {tag}: AT epoch loss {r['loss']}")
        sw = run_sweep(model_name, device, sizes)
        if not sw["sums_on_device_f64"]:
            failures.append(f"{model_name}: sweep NC sums not float64 on {device.type}")
        if sw["errors"]:
            failures.append(f"{model_name}: sweep views failed: {sw['errors'][:2]}")
        worst, where, count = agreement(model_name, device, sizes[0], sizes[4])
        if not worst <= RTOL:
            failures.append(f"{model_name}: NC metric {where} differs by {worst:.1e} (> {RTOL})")
        print(f"| {model_name} | {fp32['img_s']:.1f} | {bf16['img_s']:.1f} | "
              f"{bf16['img_s'] / fp32['img_s']:.2f}x | {sw['img_s']:.1f} | {sw['layers']} | "
              f"{worst:.1e} ({count} metrics) |", flush=True)
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command-line interface: ``ncscope demo`` and ``ncscope layers MODEL``."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from ncscope.experiments.engine_demo import run_engine_demo

    df = run_engine_demo(
        args.out, epochs=args.epochs, sigma=args.sigma, seed=args.seed, progress=not args.quiet
    )
    cols = [
        "layer",
        "source",
        "dim",
        "nc1",
        "trace_ratio",
        "equiangular_means",
        "nc4",
        "ncc_accuracy",
        "net_accuracy",
        "simplex_angle",
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwrote {args.out}/engine_demo.csv ({df.attrs['seconds']:.1f} s)")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from ncscope.collapse import list_layers
    from ncscope.models import create_model, default_taps

    model = create_model(args.model, num_classes=args.num_classes)
    taps = set(default_taps(model))
    for name, kind in list_layers(model, with_types=True):
        print(f"{name:40s} {kind}{'   [default tap]' if name in taps else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``ncscope`` command."""
    p = argparse.ArgumentParser(prog="ncscope", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a BN-MLP on digits and print per-layer NC")
    d.add_argument("--out", default="runs/engine-demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--sigma", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_demo)
    la = sub.add_parser("layers", help="list the tap names of a registered model")
    la.add_argument("model")
    la.add_argument("--num-classes", type=int, default=10)
    la.set_defaults(func=_cmd_layers)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ncscope`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, FileNotFoundError, TypeError) as exc:
        print(f"ncscope: error: {exc}", file=sys.stderr)
        return 2

"""The ``ncscope`` command: ``reproduce``, ``train``, ``analyze``, ``report``, ``layers``, ``demo``.

Configs are YAML files mapped onto dataclasses; ``--set key=value`` (repeatable) overrides a
key; unknown keys or wrong types are errors listing the valid keys. Shipped configs live in
``ncscope/configs`` and can be named without a path (``--config cifar10_vgg11_bn_linf``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ncscope.config import ConfigError, load_config

CONFIG_PACKAGE = "ncscope.configs"


def shipped_configs() -> list[str]:
    """Names of the YAML configs shipped with ncscope."""
    return sorted(p.name[:-5] for p in resources.files(CONFIG_PACKAGE).iterdir()
                  if p.name.endswith(".yaml"))


def resolve_config(name: str | None) -> Path | None:
    """A config path, or the name of a shipped config (with or without ``.yaml``)."""
    if name is None:
        return None
    p = Path(name)
    if p.is_file():
        return p
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    shipped = resources.files(CONFIG_PACKAGE) / f"{stem}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(
        f"config {name!r} not found; give a YAML path or one of: {', '.join(shipped_configs())}"
    )


# ------------------------------------------------------------------------------ reproduce
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ncscope.experiments.reproduce import QUICK, ReproduceConfig, reproduce
    from ncscope.report.claims import claims_frame

    base = dict(QUICK) if args.quick else {}
    if args.quick:
        base["out_dir"] = "runs/reproduce-quick"
    cfg = load_config(ReproduceConfig, resolve_config(args.config), args.set, base=base)
    summary = reproduce(cfg)
    table = claims_frame(summary["claims"])[["id", "claim", "numbers", "verdict"]]
    print("\nClaims (computed from this run):")
    for row in table.itertuples(index=False):
        print(f"  {row.id}  {row.verdict:14s} {row.claim}\n      {row.numbers}")
    print(f"\nwall time {summary['timings_s']['total'] / 60:.1f} min; report: {summary['report']}")
    return 0


# ------------------------------------------------------------------------------ train
def _cmd_train(args: argparse.Namespace) -> int:
    from ncscope.train import TrainConfig, train

    cfg = load_config(TrainConfig, resolve_config(args.config), args.set)
    result = train(cfg)
    print(f"run folder: {result.run_dir}")
    return 0


# ------------------------------------------------------------------------------ analyze
@dataclass
class AnalyzeConfig:
    """Settings of ``ncscope analyze`` (one trained model, optionally several checkpoints)."""

    model: str = "bn_mlp"
    dataset: str = "digits"
    data_root: str | None = None
    n_train: int | None = None
    weights: list[str] = field(default_factory=list)
    eps: float = 0.1
    sources: list[str] = field(default_factory=lambda: ["clean", "pgd", "pgd_targeted",
                                                         "gaussian", "random_sign"])
    layers: list[str] | None = None
    reduce: str = "flatten"
    batch_size: int = 256
    seed: int = 0
    out: str = "runs/analysis.csv"
    device: str = "cpu"
    fast_attacks: bool = False


def _cmd_analyze(args: argparse.Namespace) -> int:
    import pandas as pd

    from ncscope.data import load_dataset
    from ncscope.experiments.analyze import analyze
    from ncscope.models import create_model, load_weights

    cfg = load_config(AnalyzeConfig, resolve_config(args.config), args.set)
    if not cfg.weights:
        raise ConfigError("give the trained weights: --set weights=[path.pt, ...]")
    train = load_dataset(cfg.dataset, cfg.data_root, split="train", n_train=cfg.n_train,
                         seed=cfg.seed)
    test = load_dataset(cfg.dataset, cfg.data_root, split="test")
    frames = []
    for path in cfg.weights:
        model = create_model(cfg.model, dataset=cfg.dataset).to(cfg.device)
        load_weights(model, path)
        df = analyze(model.eval(), train, layers=cfg.layers, sources=cfg.sources,
                     test_data=test, eps=cfg.eps, batch_size=cfg.batch_size, reduce=cfg.reduce,
                     seed=cfg.seed, device=cfg.device, fast_attacks=cfg.fast_attacks)
        df.insert(0, "weights", path)
        frames.append(df)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = pd.concat(frames, ignore_index=True)
    result.to_csv(out, index=False)
    print(f"wrote {len(result)} rows to {out}")
    return 0


# ------------------------------------------------------------------------------ report
def _cmd_report(args: argparse.Namespace) -> int:
    from ncscope.report.build import build_report

    print(f"report: {build_report(args.run_dir)}")
    return 0


# ------------------------------------------------------------------------------ layers / demo
def _cmd_layers(args: argparse.Namespace) -> int:
    from ncscope.collapse import list_layers
    from ncscope.models import create_model, default_taps

    model = create_model(args.model, num_classes=args.num_classes)
    taps = set(default_taps(model))
    for name, kind in list_layers(model, with_types=True):
        print(f"{name:40s} {kind}{'   [default tap]' if name in taps else ''}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from ncscope.experiments.engine_demo import run_engine_demo

    df = run_engine_demo(args.out, epochs=args.epochs, sigma=args.sigma, seed=args.seed,
                         progress=not args.quiet)
    cols = ["layer", "source", "dim", "nc1", "trace_ratio", "equiangular_means", "nc4",
            "ncc_accuracy", "net_accuracy", "simplex_angle"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwrote {args.out}/engine_demo.csv ({df.attrs['seconds']:.1f} s)")
    return 0


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file or shipped config name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``ncscope`` command."""
    p = argparse.ArgumentParser(prog="ncscope", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="the paper's experiments end to end (main job)")
    _config_args(r)
    r.add_argument("--quick", action="store_true", help="few epochs (CI profile)")
    r.set_defaults(func=_cmd_reproduce)
    t = sub.add_parser("train", help="train one model (ST / AT / TRADES) with NC tracking")
    _config_args(t)
    t.set_defaults(func=_cmd_train)
    a = sub.add_parser("analyze", help="all-layer NC of trained weights under attacks/noise")
    _config_args(a)
    a.set_defaults(func=_cmd_analyze)
    rp = sub.add_parser("report", help="rebuild figures, claims and report.html of a run")
    rp.add_argument("run_dir")
    rp.set_defaults(func=_cmd_report)
    la = sub.add_parser("layers", help="list the tap names of a registered model")
    la.add_argument("model")
    la.add_argument("--num-classes", type=int, default=10)
    la.set_defaults(func=_cmd_layers)
    d = sub.add_parser("demo", help="small engine demo: per-layer NC of a BN-MLP on digits")
    d.add_argument("--out", default="runs/engine-demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--sigma", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ncscope`` command; errors are one line on stderr, exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, FileNotFoundError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"ncscope: error: {msg}", file=sys.stderr)
        return 2

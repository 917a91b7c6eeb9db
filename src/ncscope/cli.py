"""The ``ncscope`` command: ``reproduce``, ``train``, ``analyze``, ``report``, ``configs``,
``layers``, ``demo``.

One config system: each command reads one dataclass (``reproduce``: the study's config,
``train``: :class:`~ncscope.train.TrainConfig`, ``analyze``:
:class:`~ncscope.experiments.analyze.AnalyzeConfig`) from YAML, with dotted ``--set
section.key=value`` overrides; unknown keys or wrong types are one-line errors listing the
valid keys. Shipped configs live in ``ncscope/configs`` and can be named without a path
(``--config cifar10_vgg11_bn_linf``; ``ncscope configs`` lists them); ``ncscope COMMAND
--help`` lists the command's keys with their defaults.

One run-folder policy (:mod:`ncscope.runs`) for ``train``, ``reproduce`` and ``analyze``:
everything is checked before anything is created, a fresh run refuses an output that exists
unless ``--overwrite`` (which moves the old one aside), ``--resume`` continues a checkpointed
run. Errors are one line on stderr with exit status 2; Ctrl-C is one line saying how to
resume, exit status 130. Progress goes to stderr (bars on a terminal, else lines), the
closing summary to stdout.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ncscope.config import keys_help, load_config, resolve_config, shipped_configs
from ncscope.runs import Interrupted, RunFolder, RunFolderError, atomic_write


# ------------------------------------------------------------------------------ reproduce
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ncscope.experiments.reproduce import reproduce
    from ncscope.experiments.studies import claims_frame
    from ncscope.report import build_report

    out = args.out or ("runs/reproduce-quick" if args.quick else "runs/reproduce")
    results = reproduce(args.studies, config=args.config, overrides=args.set, out_dir=out,
                        quick=args.quick, progress=not args.quiet, overwrite=args.overwrite,
                        resume=args.resume, seeds=args.seeds)
    report = build_report(out)
    if args.seeds > 1:
        _print_seeds(results, args.seeds, Path(out), args.quick)
        print(f"report: {report}")
        return 0
    for name, summary in results.items():
        table = claims_frame(summary["claims"])
        banner = "  [--quick profile: a smoke run, not evidence]" if args.quick else ""
        print(f"\nClaims of {name} (computed from this run):{banner}")
        for row in table.itertuples(index=False):
            print(f"  {row.id}  {row.verdict:14s} {row.claim}\n      {row.numbers}")
        counts = table.verdict.value_counts()
        print(f"\n{name}: {counts.get('holds', 0)} of {len(table)} claims hold, "
              f"{counts.get('does not hold', 0)} do not, {counts.get('not measured', 0)} not "
              f"measured; wall time {summary['timings_s']['total'] / 60:.1f} min; files in "
              f"{Path(out) / name}")
    print(f"report: {report}")
    return 0


def _print_seeds(results: dict, seeds: int, out: Path, quick: bool) -> None:
    """The claims of every study across its seeds: holds in k of N, margins, mean ± std."""
    from ncscope.experiments.studies import aggregate_claims

    studies = dict.fromkeys(key.rsplit("-seed", 1)[0] for key in results)
    for name in studies:
        table = aggregate_claims({s: results[f"{name}-seed{s}"]["claims"]
                                  for s in range(seeds)})
        table.to_csv(out / f"{name}-seeds.csv", index=False)
        banner = "  [--quick profile: a smoke run, not evidence]" if quick else ""
        print(f"\nClaims of {name} over {seeds} seeds:{banner}")
        for row in table.itertuples(index=False):
            margin = ("n/a" if row.margin_mean is None else
                      f"{row.margin_mean:+.3g} (min {row.margin_min:+.3g}, max "
                      f"{row.margin_max:+.3g})")
            print(f"  {row.id}  {row.verdict:22s} margin {margin}  {row.claim}\n"
                  f"      per seed: {row.per_seed}\n      {row.numbers}")
        print(f"\ntable: {out / f'{name}-seeds.csv'}")


# ------------------------------------------------------------------------------ train
def _cmd_train(args: argparse.Namespace) -> int:
    from ncscope.train import TrainConfig, train
    from ncscope.train.run_folder import EpochLog, require_checkpoint
    from ncscope.train.runtime import check_device, probe_sections

    flags = [*(["progress=false"] if args.quiet else []),
             *(["overwrite=true"] if args.overwrite else [])]
    cfg = load_config(TrainConfig, resolve_config(args.config), [*args.set, *flags])
    if args.resume and cfg.overwrite:
        raise RunFolderError("--resume and --overwrite (overwrite=true) exclude each other")
    if args.resume:
        require_checkpoint(cfg.out_dir)
    check_device(cfg.device)
    probe_sections(cfg.data, cfg.model)  # the model fits the data, before any folder exists
    t0 = time.perf_counter()
    lines = cfg.progress and not sys.stderr.isatty()  # else tqdm bars (on a terminal)
    result = train(cfg, resume=args.resume, callbacks=[EpochLog()] if lines else [])
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: rank 0 reports
        epochs = [t["epoch"] for t in result.timings]
        ran = f"epochs {epochs[0]}-{epochs[-1]} of {cfg.epochs}" if epochs else "no epoch left"
        print(f"trained {cfg.mode} on {cfg.data.dataset} ({cfg.model.name}): {ran} in "
              f"{time.perf_counter() - t0:.1f} s")
        where = (f"{result.run_dir} (config.yaml, history.csv, timings.jsonl, checkpoints/"
                 f"{', model.pt' if cfg.save_model else ''})" if result.run_dir
                 else "none (out_dir not set: nothing written)")
        print(f"run folder: {where}")
        if not result.history.empty:
            print(result.summary().tail(1).to_string(index=False))
    return 0


# ------------------------------------------------------------------------------ analyze
def _cmd_analyze(args: argparse.Namespace) -> int:
    import pandas as pd

    from ncscope.experiments.analyze import AnalyzeConfig
    from ncscope.models import load_weights
    from ncscope.train.runtime import check_device, probe_sections

    cfg = load_config(AnalyzeConfig, resolve_config(args.config), args.set)
    if not cfg.weights:
        raise ValueError("give the trained weights: --set weights=[path.pt, ...]")
    out = RunFolder(cfg.out, "out", folder=False)
    out.check(overwrite=args.overwrite)
    check_device(cfg.device)
    train_set, _ = probe_sections(cfg.data, cfg.model)  # the model fits the data
    test_set = cfg.data.load("test")
    info = getattr(train_set, "info", None) or cfg.data.dataset
    # every weights file loaded before any measurement
    models = [load_weights(cfg.model.build(info), path) for path in cfg.weights]
    frames, lines = [], not args.quiet
    for path, model in zip(cfg.weights, models, strict=True):
        t0 = time.perf_counter()
        df = cfg.measure(model.to(cfg.device).eval(), train_set, test_set,
                         classifier=cfg.model.classifier, progress=not args.quiet)
        df.insert(0, "weights", path)
        frames.append(df)
        if lines:
            print(f"analyze {path}: {_headline(df)}  {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
    table = pd.concat(frames, ignore_index=True)
    out.claim(overwrite=args.overwrite)
    atomic_write(out.path, lambda fh: fh.write(table.to_csv(index=False).encode()))
    aside = f" (the earlier file moved to {out.moved_to})" if out.moved_to else ""
    print(f"analysed {len(models)} model(s) under {', '.join(cfg.sources)} on "
          f"{cfg.data.dataset}: wrote {len(table)} rows to {out.path}{aside}")
    for path, df in zip(cfg.weights, frames, strict=True):
        print(f"  {path}: {_headline(df)}")
    return 0


def _headline(df: Any) -> str:
    """Network accuracy on the test split per source, at the last layer."""
    sel = df[(df["metric"] == "net_accuracy") & (df["split"] == "test")]
    if sel.empty:
        return f"{len(df)} rows"
    sel = sel[sel["depth"] == sel["depth"].max()].drop_duplicates("source")
    return "  ".join(f"{s} test acc {v:.3f}" for s, v in zip(sel["source"], sel["value"],
                                                               strict=True))


def _cmd_configs(args: argparse.Namespace) -> int:
    for name in shipped_configs():
        print(name)
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


# ------------------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """A parser whose ``--help`` ends with the command's config keys and their defaults."""

    keys: Callable[[], str] | None = None

    def format_help(self) -> str:
        text = super().format_help()
        if self.keys is not None:
            try:
                text += "\n" + self.keys() + "\n"
            except Exception as exc:  # noqa: BLE001 - help must never fail
                text += f"\n(config keys unavailable: {exc})\n"
        return text


def _train_keys() -> str:
    from ncscope.train import TrainConfig

    return keys_help(TrainConfig(), "TrainConfig defaults")


def _analyze_keys() -> str:
    from ncscope.experiments.analyze import AnalyzeConfig

    return keys_help(AnalyzeConfig(), "AnalyzeConfig defaults")


def _reproduce_keys() -> str:
    from ncscope.experiments.reproduce import study_config
    from ncscope.experiments.studies import DEFAULT_STUDY, get_study

    study = get_study(DEFAULT_STUDY)
    return keys_help(study_config(study), f"study {study.name}, config "
                     f"{study.default_config or 'defaults'}")


def _config_args(p: argparse.ArgumentParser, keys: Callable[[], str]) -> None:
    p.keys = keys  # type: ignore[attr-defined]
    p.add_argument("--config", help="YAML file or shipped config name (see `ncscope configs`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; dotted for sections (data.n_train=500) "
                        "(repeatable; the keys are listed below)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh when the output exists: the old run is moved aside to "
                        "<path>.old-<time> (nothing is deleted)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``ncscope`` command."""
    p = _Parser(prog="ncscope", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="run studies end to end and judge their claims "
                       "(main job; default study su2024)")
    r.add_argument("studies", nargs="*", metavar="STUDY", help="study names, or 'all'")
    _config_args(r, _reproduce_keys)
    r.add_argument("--quick", action="store_true", help="few epochs: a smoke run, not evidence")
    r.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat each study with seeds 0..N-1; claims say 'holds in k of N'")
    r.add_argument("--out", help="run folder (default runs/reproduce)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (same config): finished studies "
                        "are kept, trainings continue from their newest checkpoints")
    r.set_defaults(func=_cmd_reproduce)
    t = sub.add_parser("train", help="train one model (ST / AT / TRADES / registered modes) "
                       "with NC tracking; works under torchrun")
    _config_args(t, _train_keys)
    t.add_argument("--resume", action="store_true",
                   help="continue from out_dir's newest checkpoint (an error when it has none)")
    t.set_defaults(func=_cmd_train)
    a = sub.add_parser("analyze", help="all-layer NC of trained weights under attacks/noise")
    _config_args(a, _analyze_keys)
    a.set_defaults(func=_cmd_analyze, resume=False)
    c = sub.add_parser("configs", help="list the shipped configs")
    c.set_defaults(func=_cmd_configs)
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


def _rerun(argv: Sequence[str], *, resume: bool = False, overwrite: bool = False) -> str:
    """The command line ``argv`` again, with ``--resume`` or ``--overwrite`` instead of
    either."""
    out, skip = ["ncscope"], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("--resume", "--overwrite") or a.startswith("--set=overwrite="):
            continue
        if a == "--set" and i + 1 < len(argv) and argv[i + 1].startswith("overwrite="):
            skip = True
            continue
        out.append(a)
    out += ["--resume"] if resume else ["--overwrite"] if overwrite else []
    return shlex.join(out)


def _interrupted(argv: Sequence[str], command: str, exc: KeyboardInterrupt) -> str:
    """The one line of a Ctrl-C: how far the job got and the command that continues it."""
    detail = f" {exc.detail}" if isinstance(exc, Interrupted) else ""
    if command not in ("train", "reproduce"):
        return f"ncscope: interrupted{detail}"
    if isinstance(exc, Interrupted) and exc.resumable:
        return f"ncscope: interrupted{detail}; resume with: {_rerun(argv, resume=True)}"
    if isinstance(exc, Interrupted) and exc.leftover:
        return f"ncscope: interrupted{detail}; start over with: {_rerun(argv, overwrite=True)}"
    return f"ncscope: interrupted{detail}; start again with: {shlex.join(['ncscope', *argv])}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ncscope`` command; errors are one line on stderr, exit code 2;
    Ctrl-C is one line saying how to resume, exit code 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        print(_interrupted(argv, args.command, exc), file=sys.stderr, flush=True)
        return 130
    except (ValueError, KeyError, OSError, TypeError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        text = " ".join(str(msg).split()) or type(exc).__name__
        print(f"ncscope: error: {text}", file=sys.stderr)
        return 2

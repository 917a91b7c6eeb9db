"""``python -m ncscope.train CONFIG.yaml [key=value ...] [--resume]`` (also under torchrun).

Reads a :class:`~ncscope.train.TrainConfig` from YAML, applies ``key=value`` overrides (values
parsed as YAML: ``epochs=5``, ``mode=at``, ``track_layers=all``) and trains; ``--resume``
continues from the newest checkpoint in ``out_dir``. Prints the final penultimate-layer row
summary on rank 0.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from ncscope.train.config import TrainConfig
from ncscope.train.trainer import train


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ncscope.train", description=__doc__)
    parser.add_argument("config", help="YAML file with TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (YAML values)")
    parser.add_argument("--resume", action="store_true", help="continue from out_dir")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"override {item!r} is not key=value")
        data[key.strip()] = yaml.safe_load(value)
    try:
        cfg = TrainConfig.from_dict(data)
        result = train(cfg, resume=args.resume)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import os

    if int(os.environ.get("RANK", "0")) == 0 and not result.history.empty:
        print(result.summary().tail(1).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

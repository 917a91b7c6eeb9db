"""Read a run back: ``ncscope.load_run(path)`` gives the tables a command wrote as DataFrames.

* a training run folder (``ncscope train`` / :func:`ncscope.train.train` with ``out_dir``):
  ``{"history", "timings", "config"}``;
* a study folder (``<out>/<study>/``): ``{"history", "analysis", "points", "claims",
  "summary"}`` — whichever it holds;
* a ``ncscope reproduce`` folder: ``{study: <its study folder's tables>}``;
* an ``ncscope analyze`` CSV (or any long-schema CSV): ``{"table"}``.

Long-schema tables come back typed (:func:`ncscope.collapse.schema.typed`), so they plot with
:mod:`ncscope.plot` and concatenate with fresh ``analyze`` output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ncscope.collapse.schema import typed

__all__ = ["load_run"]


def _table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    try:
        return typed(df)
    except ValueError:  # not a long-schema table (e.g. points.csv, a wide table)
        return df


def _study(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("history", "analysis", "points"):
        if (folder / f"{name}.csv").is_file():
            out[name] = _table(folder / f"{name}.csv")
    if (folder / "claims.csv").is_file():
        out["claims"] = pd.read_csv(folder / "claims.csv")
    if (folder / "summary.json").is_file():
        out["summary"] = json.loads((folder / "summary.json").read_text())
    return out


def load_run(path: str | Path) -> dict[str, Any]:
    """The tables of the run at ``path`` (see the module docstring); a one-line error when
    ``path`` holds none."""
    p = Path(path)
    if p.is_file():
        return {"table": _table(p)}
    if not p.is_dir():
        raise FileNotFoundError(f"{p} does not exist; give a run folder or an analyze CSV")
    studies = sorted(m.parent for m in p.glob("*/study.json"))
    if studies:
        return {folder.name: _study(folder) for folder in studies}
    if (p / "study.json").is_file():
        return _study(p)
    if (p / "history.csv").is_file():
        out: dict[str, Any] = {"history": _table(p / "history.csv")}
        if (p / "timings.jsonl").is_file():
            out["timings"] = pd.read_json(p / "timings.jsonl", lines=True)
        if (p / "config.yaml").is_file():
            out["config"] = yaml.safe_load((p / "config.yaml").read_text())
        return out
    raise FileNotFoundError(f"{p} holds no ncscope run (no history.csv, study.json or "
                            "<study>/study.json)")

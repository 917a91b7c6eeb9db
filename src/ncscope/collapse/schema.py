"""The one declared table schema of every per-layer, per-source number ncscope measures.

Every measurement — :func:`ncscope.collapse.sweep`, the per-epoch training history,
:func:`ncscope.analyze`, every study of ``ncscope reproduce`` — is a *long* table: one row per
layer × source × view × metric (× class for per-class metrics). The columns and their meaning
are declared here once (and rendered into ``docs/schema.md``); :func:`long_frame` builds and
checks such a table. Callers add *context* columns (also declared here) in front.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Column:
    """One column of the schema: name, pandas dtype, meaning, allowed values (if closed)."""

    name: str
    dtype: str
    meaning: str
    values: tuple[str, ...] = ()


SPLITS = ("train", "test")
REFERENCES = ("own", "clean")
GROUPS = ("label", "target", "prediction")

#: The measurement columns, in order.
COLUMNS: tuple[Column, ...] = (
    Column("layer", "string", "tap name (module name, ':in' for a module's input)"),
    Column("depth", "Int64", "position of the layer among the measured taps (0 = first)"),
    Column("source", "string", "the measured data: 'clean', a perturbation source ('pgd', "
           "'pgd_targeted', 'gaussian', 'random_sign', ...) or 'perturbed' (the training-time "
           "adversarial batches of an AT/TRADES epoch)"),
    Column("split", "string", "data split the source was drawn from", SPLITS),
    Column("reference", "string", "whose class means the features are measured around: 'own' "
           "(the source's own means: its classical NC) or 'clean' (the clean training means)",
           REFERENCES),
    Column("group", "string", "labels grouping the samples into classes: the true 'label', the "
           "attack 'target', or the network's 'prediction'", GROUPS),
    Column("metric", "string", "a registered metric (ncscope.collapse.METRICS); in a training "
           "history, rows without a layer also carry the epoch's logs (source 'training': step, "
           "lr, run_loss, run_clean_acc, run_adv_acc) and the kernel dynamics of track_ntk "
           "(ntk_dist_init, ntk_dist_prev, ntk_top_mass, ntk_class_alignment, ntk_trace)"),
    Column("value", "float64", "the metric's value (missing when the view lacks what it needs)"),
    Column("class", "Int64", "class index for per-class metrics; missing otherwise"),
)
#: Context columns callers put in front (each only where it applies).
CONTEXT: tuple[Column, ...] = (
    Column("study", "string", "study name of `ncscope reproduce`"),
    Column("run", "string", "training run within a study (e.g. 'st', 'at', 'trades')"),
    Column("mode", "string", "training mode of the run ('st', 'at', 'trades')"),
    Column("loss", "string", "training loss of the run (a name of ncscope.losses: 'ce', 'ls', "
           "'fl', 'mse', ...)"),
    Column("head", "string", "classifier head of the run ('linear', 'normalized')"),
    Column("epoch", "Int64", "completed training epochs when measured (0 = initialisation)"),
    Column("eps_name", "string", "name of the threat-model radius ('main', 'strong')"),
    Column("eps", "float64", "perturbation radius (or noise scale) of the source, in pixel "
           "units; missing for the clean data"),
    Column("norm", "string", "threat-model norm ('linf', 'l2')"),
    Column("alpha", "float64", "attack step size in pixel units"),
    Column("steps", "Int64", "attack steps"),
    Column("weights", "string", "weights file the model was loaded from"),
)
NAMES = tuple(c.name for c in COLUMNS)
_BY_NAME = {c.name: c for c in COLUMNS + CONTEXT}


def long_frame(rows: Iterable[Mapping[str, Any]], context: Mapping[str, Any] | None = None,
               ) -> pd.DataFrame:
    """Rows (dicts with the measurement columns) as a schema-typed DataFrame.

    ``context`` adds constant context columns in front (e.g. ``{"epoch": 3}``). Unknown
    columns raise ValueError naming them; closed columns are checked against their values.
    """
    df = pd.DataFrame(list(rows), columns=list(NAMES))
    for name, value in (context or {}).items():
        if name not in _BY_NAME:
            raise ValueError(f"unknown context column {name!r}; declared: "
                             f"{', '.join(c.name for c in CONTEXT)}")
        df.insert(len([c for c in df.columns if c not in NAMES]), name, value)
    return typed(df)


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a long table's declared columns to their dtypes and check closed columns."""
    unknown = [c for c in df.columns if c not in _BY_NAME]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the declared schema "
                         "(ncscope.collapse.schema)")
    for name in df.columns:
        col = _BY_NAME[name]
        df[name] = df[name].astype(col.dtype)
        if col.values:
            bad = set(df[name].dropna().unique()) - set(col.values)
            if bad:
                raise ValueError(f"column {name!r} holds {sorted(bad)}; allowed: "
                                 f"{', '.join(col.values)}")
    return df


def wide(df: pd.DataFrame) -> pd.DataFrame:
    """Pivot a long table to one row per view (context columns, layer, source, split,
    reference, group) and one column per metric; per-class rows are dropped."""
    agg = df[df["class"].isna()] if "class" in df else df
    ctx = [c.name for c in CONTEXT if c.name in agg.columns]
    keys = [*ctx, "depth", "layer", "source", "split", "reference", "group"]
    out = (agg.groupby(keys + ["metric"], sort=False, dropna=False)["value"].first()
           .unstack("metric"))
    out.columns.name = None
    out = out.reset_index()
    return out.sort_values([*ctx, "source", "split", "reference", "group", "depth"],
                           kind="stable").reset_index(drop=True)


def markdown() -> str:
    """The schema as a Markdown table (the body of ``docs/schema.md``)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for c in COLUMNS + CONTEXT:
        allowed = f" One of {', '.join(f'`{v}`' for v in c.values)}." if c.values else ""
        lines.append(f"| `{c.name}` | {c.dtype} | {c.meaning}.{allowed} |")
    return "\n".join(lines)

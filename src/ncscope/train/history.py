"""Metric rows on disk: a tidy JSONL log appended as rows are measured, and a CSV snapshot.

Rows follow the declared long schema (:mod:`ncscope.collapse.schema`) with an ``epoch``
column in front (see :mod:`ncscope.train.tracking`). ``history.jsonl`` gets each epoch's rows
appended (flushed and fsynced) as soon as they are measured; ``history.csv`` is rewritten
atomically from all rows after each append. On resume both are rewritten from the checkpoint's
rows first, so a crash between measuring and checkpointing never leaves duplicate rows.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ncscope.collapse.schema import NAMES, typed
from ncscope.train.checkpoint import atomic_write_text

__all__ = ["HistoryWriter", "clean_value", "read_jsonl", "rows_to_frame"]

#: Columns of a history table, in this order: the ``epoch`` context and the schema columns.
COLUMNS = ("epoch", *NAMES)


def clean_value(v: Any) -> Any:
    """JSON-safe scalar: non-finite floats become ``None``; numpy/torch scalars become Python."""
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def rows_to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The history rows as a schema-typed DataFrame (columns :data:`COLUMNS`)."""
    return typed(pd.DataFrame(list(rows), columns=list(COLUMNS)))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines and a torn last line are skipped)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write
    return rows


class HistoryWriter:
    """Appends rows to ``run_dir/history.jsonl`` and keeps ``run_dir/history.csv`` current."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "history.jsonl"
        self.csv = self.run_dir / "history.csv"
        self.rows: list[dict[str, Any]] = []

    @staticmethod
    def _line(row: dict[str, Any]) -> str:
        return json.dumps(row, allow_nan=False) + "\n"

    def reset(self, rows: Iterable[dict[str, Any]] = ()) -> None:
        """Rewrite both files (atomically) with exactly ``rows``."""
        self.rows = list(rows)
        atomic_write_text(self.jsonl, "".join(self._line(r) for r in self.rows))
        self._write_csv()

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows to the JSONL (flush + fsync) and rewrite the CSV atomically."""
        new = list(rows)
        if not new:
            return
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write("".join(self._line(r) for r in new))
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.extend(new)
        self._write_csv()

    def _write_csv(self) -> None:
        buf = io.StringIO()
        rows_to_frame(self.rows).to_csv(buf, index=False)
        atomic_write_text(self.csv, buf.getvalue())

"""A self-contained HTML report (figures embedded as base64 PNG, no external resources)."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ncscope.experiments.studies.base import Claim

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;
margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}
td,th{border:1px solid #ccc;padding:4px 7px;vertical-align:top;text-align:left}
th{background:#f3f3f3}.holds{background:#dff3df}.fails{background:#f8dede}
.na{background:#eee}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}code{background:#f5f5f5;padding:0 3px}
.muted{color:#666;font-size:.9em}td:nth-child(4){white-space:nowrap;font-family:monospace;
font-size:.95em}
"""

# Marks the page once every image has decoded (checked by the headless-browser test).
_CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', ok + '/' + imgs.length);
});
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, fmt: str = "{:.4g}") -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if pd.isna(v) else fmt.format(v)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def claims_table(claims: list[Claim]) -> str:
    """HTML table of the claims with coloured verdicts."""
    rows = []
    for c in claims:
        cls = {True: "holds", False: "fails", None: "na"}[c.holds]
        nums = "<br>".join(
            f"{html.escape(k)} = {'n/a' if v is None else f'{v:.4g}'}"
            for k, v in c.numbers.items()
        )
        note = f"<br><span class='muted'>{html.escape(c.note)}</span>" if c.note else ""
        rows.append(
            f"<tr><td><b>{c.id}</b></td><td>{html.escape(c.statement)}{note}</td>"
            f"<td>{html.escape(c.rule)}</td><td>{nums}</td>"
            f"<td class='{cls}'><b>{c.verdict()}</b></td></tr>"
        )
    counts = {v: sum(c.verdict() == v for c in claims)
              for v in ("holds", "does not hold", "not measured")}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    return (f"<p><b>{len(claims)} claims: {summary}.</b></p>"
            "<table><tr><th>#</th><th>claim</th><th>rule</th><th>measured</th><th>verdict</th>"
            "</tr>" + "".join(rows) + "</table>")


@dataclass
class Section:
    """One study's part of the report."""

    name: str
    title: str
    paper: str
    intro: str
    claims: list[Claim]
    figures: list[tuple[Path, str]]
    tables: list[tuple[str, pd.DataFrame]]
    files: list[str]
    quick: bool = False


_QUICK_BANNER = ("<p class='fails'><b>--quick profile: a few epochs to check that everything "
                 "runs. These verdicts are not evidence.</b></p>")


def _index(sections: list[Section]) -> str:
    rows = []
    for sec in sections:
        for c in sec.claims:
            cls = {True: "holds", False: "fails", None: "na"}[c.holds]
            rows.append(f"<tr><td><a href='#{sec.name}'>{html.escape(sec.name)}</a></td>"
                        f"<td><b>{c.id}</b></td><td>{html.escape(c.statement)}</td>"
                        f"<td class='{cls}'><b>{c.verdict()}</b></td></tr>")
    return ("<table><tr><th>study</th><th>#</th><th>claim</th><th>verdict</th></tr>"
            + "".join(rows) + "</table>")


def write_report(out: Path, *, title: str, sections: list[Section],
                 across: list[tuple[str, pd.DataFrame]] = ()) -> Path:
    """Write ``out`` (HTML) atomically: the claims across seeds (``across``: ``(title, table)``
    of :func:`~ncscope.experiments.studies.aggregate_claims`), an index of every claim, then
    one section per study folder (claims, figures, tables and the study's files)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>",
        f"<script>{_CHECK_JS}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Every number below is computed from the tables in this folder; the verdicts are "
        "not written into the code.</p>",
    ]
    if any(s.quick for s in sections):
        parts.append(_QUICK_BANNER)
    for heading, table in across:
        parts.append(f"<h2>Claims of {html.escape(heading)}</h2>{_table(table)}")
    parts += ["<h2>Claims, judged from this run</h2>", _index(sections)]
    for sec in sections:
        parts.append(f"<h2 id='{html.escape(sec.name)}'>{html.escape(sec.name)}: "
                     f"{html.escape(sec.title)}</h2>")
        parts.append(f"<p class='muted'>{html.escape(sec.paper)}</p>")
        if sec.quick:
            parts.append(_QUICK_BANNER)
        parts.append(f"<p>{html.escape(sec.intro)}</p>")
        parts.append("<h3>Claims</h3>" + claims_table(sec.claims))
        parts.append("<h3>Figures</h3>")
        for path, caption in sec.figures:
            parts.append(f"<figure>{_img(path)}<figcaption>{html.escape(caption)}"
                         "</figcaption></figure>")
        for heading, df in sec.tables:
            parts.append(f"<h3>{html.escape(heading)}</h3>{_table(df)}")
        parts.append("<h3>Files</h3><ul>" + "".join(
            f"<li><code>{html.escape(f)}</code></li>" for f in sec.files) + "</ul>")
    parts.append("</body></html>")
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out

"""``ncscope reproduce [STUDY ...|all]``: run studies, judge their claims, write one report.

Each study (:mod:`ncscope.experiments.studies`) runs into ``<out>/<study>/`` from its config:
the shipped YAML it names (``default_config``), or ``--config``, with dotted ``--set``
overrides (``--set train.epochs=50``). Its claims are judged from the tables it wrote
(``claims.json`` / ``claims.csv``); :func:`ncscope.report.build_report` then writes
``<out>/report.html`` with an index of every claim and one section per study.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncscope.config import load_config, resolve_config
from ncscope.experiments.studies import DEFAULT_STUDY, STUDIES, Study, claims_frame, get_study


def select_studies(names: Sequence[str] | None) -> list[Study]:
    """``[]`` / ``None``: the default study; ``["all"]``: every registered study."""
    if not names:
        return [get_study(DEFAULT_STUDY)]
    if list(names) == ["all"]:
        return list(STUDIES.values())
    return [get_study(n) for n in names]


def study_config(study: Study, config: str | None = None, overrides: Sequence[str] = (),
                 quick: bool = False) -> Any:
    """Load a study's config: its shipped default (or ``config``), the ``--quick`` profile,
    then the dotted overrides."""
    path = resolve_config(config if config is not None else study.default_config)
    quick_items = [f"{k}={json.dumps(v)}" for k, v in study.quick.items()] if quick else []
    return load_config(study.config, path, [*quick_items, *overrides])


def reproduce(
    studies: Sequence[str] | None = None,
    *,
    config: str | None = None,
    overrides: Sequence[str] = (),
    out_dir: str | Path = "runs/reproduce",
    quick: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the chosen studies into ``out_dir``; return ``{study: summary}``.

    ``config`` and ``overrides`` apply to every chosen study (give one study when they are
    study-specific). Every config is loaded and checked before anything runs. The HTML report
    of the folder is :func:`ncscope.report.build_report` (``ncscope reproduce`` runs both).
    """
    chosen = select_studies(studies)
    configs = {s.name: study_config(s, config, overrides, quick) for s in chosen}
    out = Path(out_dir)
    results: dict[str, Any] = {}
    for study in chosen:
        folder = out / study.name
        summary = study.run(configs[study.name], folder, progress=progress)
        claims = study.claims(folder)
        (folder / "claims.json").write_text(json.dumps([c.to_dict() for c in claims],
                                                       indent=2))
        claims_frame(claims).to_csv(folder / "claims.csv", index=False)
        (folder / "study.json").write_text(json.dumps({"study": study.name, "quick": quick}))
        summary["claims"] = claims
        results[study.name] = summary
    return results

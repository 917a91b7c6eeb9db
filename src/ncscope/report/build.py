"""Build ``report.html`` of a ``ncscope reproduce`` folder: one section per study in it.

``ncscope report RUN_DIR`` regenerates every study's figures and claims from the tables in its
sub-folder (``<RUN_DIR>/<study>/``, marked by ``study.json``) and writes the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from ncscope.experiments.studies import aggregate_claims, claims_frame, get_study
from ncscope.report.html import Section, write_report


def study_folders(run_dir: Path) -> list[tuple[str, Path, bool, int | None]]:
    """``(study, folder, quick, seed)`` of every study run under ``run_dir``, in name order
    (``seed`` is set for the repetitions of ``ncscope reproduce --seeds N``)."""
    found = []
    for marker in sorted(run_dir.glob("*/study.json")):
        meta = json.loads(marker.read_text())
        found.append((meta["study"], marker.parent, bool(meta.get("quick", False)),
                      meta.get("seed")))
    return found


def build_report(run_dir: str | Path) -> Path:
    """Regenerate figures, claims (``claims.json``/``.csv``) and ``report.html``."""
    run = Path(run_dir)
    found = study_folders(run) if run.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"{run} holds no study results (no <study>/study.json); run `ncscope reproduce` "
            "first"
        )
    sections = []
    by_seed: dict[str, dict[int, list]] = {}
    for name, folder, quick, seed in found:
        study = get_study(name)
        claims = study.claims(folder)
        (folder / "claims.json").write_text(json.dumps([c.to_dict() for c in claims],
                                                       indent=2))
        claims_frame(claims).to_csv(folder / "claims.csv", index=False)
        figures = study.figures(folder)
        files = sorted(str(p.relative_to(run)) for p in folder.rglob("*") if p.is_file()
                       and p.suffix in (".csv", ".json", ".jsonl", ".png", ".svg"))
        if seed is not None:
            by_seed.setdefault(name, {})[int(seed)] = claims
        sections.append(Section(name=folder.name, title=study.title, paper=study.paper,
                                intro=study.describe(folder), claims=claims, figures=figures,
                                tables=study.tables(folder), files=files, quick=quick))
    across = [(f"{name} over {len(claims)} seeds", aggregate_claims(claims))
              for name, claims in by_seed.items() if len(claims) > 1]
    return write_report(run / "report.html", title="ncscope reproduce — Neural Collapse under "
                        "attack and adversarial training", sections=sections, across=across)

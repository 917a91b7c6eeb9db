"""``ncscope reproduce [STUDY ...|all]``: run studies, judge their claims, write one report.

Each study (:mod:`ncscope.experiments.studies`) runs into ``<out>/<study>/`` from its config:
the shipped YAML it names (``default_config``), or ``--config``, with dotted ``--set``
overrides (``--set train.epochs=50``). Its claims are judged from the tables it wrote
(``claims.json`` / ``claims.csv``); :func:`ncscope.report.build_report` then writes
``<out>/report.html`` with an index of every claim and one section per study.

The output folder follows the run-folder policy of :mod:`ncscope.runs`: every config is
loaded and checked (devices, the model on one batch of the data) and the folder is checked
before anything is created; a fresh run refuses a folder that holds anything unless
``overwrite`` (the old run is moved aside); ``resume`` continues an interrupted run in the
same folder (same config) -- finished studies are kept, unfinished ones continue their
trainings from the newest checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ncscope.config import load_config, resolve_config, to_dict
from ncscope.data.config import DataConfig
from ncscope.experiments.studies import DEFAULT_STUDY, STUDIES, Study, claims_frame, get_study
from ncscope.models.config import ModelConfig
from ncscope.runs import Interrupted, RunFolder, RunFolderError, atomic_write, check_output_path
from ncscope.train.runtime import check_device, probe_sections

#: Keys that may differ between an interrupted run and its resumption (not the numbers).
RESUME_FREE_KEYS = frozenset({"progress", "workers", "threads", "device"})


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


def preflight(cfg: Any) -> None:
    """The checks of a study config that need more than its dataclass: every ``device`` of
    its sections exists, and its ``model`` section fits its ``data`` section (one forward
    pass of two training samples). Creates nothing; draws no global random numbers."""
    for section in ("train", "analyze"):
        device = getattr(getattr(cfg, section, None), "device", None)
        if isinstance(device, str):
            check_device(device, f"{section}.device")
    data, model = getattr(cfg, "data", None), getattr(cfg, "model", None)
    if isinstance(data, DataConfig) and isinstance(model, ModelConfig):
        probe_sections(data, model)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _check_resumable(out: Path, chosen: list[Study], configs: dict[str, Any]) -> None:
    """``resume``: ``out`` holds an interrupted run of the chosen studies with the same config."""
    started = [s for s in chosen if (out / s.name / "config.yaml").is_file()]
    if not started:
        raise RunFolderError(
            f"--resume: --out {out} holds no interrupted run of "
            f"{', '.join(s.name for s in chosen)} (no <study>/config.yaml); run without --resume"
        )
    for study in started:
        saved = _flat(yaml.safe_load((out / study.name / "config.yaml").read_text()) or {})
        now = _flat(to_dict(configs[study.name]))
        diff = [k for k in sorted(set(saved) | set(now))
                if k.rsplit(".", 1)[-1] not in RESUME_FREE_KEYS and saved.get(k) != now.get(k)]
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:3])
            raise RunFolderError(
                f"--resume: the config of {study.name} differs from the interrupted run's "
                f"({detail}); resume with the same --config/--set/--quick"
            )


def reproduce(
    studies: Sequence[str] | None = None,
    *,
    config: str | None = None,
    overrides: Sequence[str] = (),
    out_dir: str | Path = "runs/reproduce",
    quick: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    seeds: int = 1,
) -> dict[str, Any]:
    """Run the chosen studies into ``out_dir``; return ``{study: summary}``.

    ``seeds > 1`` repeats each study with seeds ``0 .. seeds-1`` (the study's ``with_seed``)
    into ``<out>/<study>-seed<k>/`` and returns them as ``{"<study>-seed<k>": summary}``;
    :func:`ncscope.experiments.studies.aggregate_claims` gives "holds in k of N".

    ``config`` and ``overrides`` apply to every chosen study (give one study when they are
    study-specific). Every config is loaded and checked before anything runs. A fresh run
    refuses an ``out_dir`` that holds anything unless ``overwrite`` (moves it aside);
    ``resume`` continues an interrupted run of the same config in ``out_dir``. Ctrl-C raises
    :class:`ncscope.runs.Interrupted`. The HTML report of the folder is
    :func:`ncscope.report.build_report` (``ncscope reproduce`` runs both).
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be an integer >= 1; got {seeds!r}")
    if seeds > 1 and resume:
        raise RunFolderError("--resume continues one seed; run --seeds N without --resume")
    chosen = select_studies(studies)
    no_seed = [s.name for s in chosen if seeds > 1 and s.with_seed is None]
    if no_seed:
        raise ValueError(f"--seeds {seeds}: study {', '.join(no_seed)} runs with one seed only")
    configs = {s.name: study_config(s, config, overrides, quick) for s in chosen}
    for cfg in configs.values():
        preflight(cfg)
    out = RunFolder(out_dir, "--out")
    if resume:
        check_output_path(out.path, "--out")
        _check_resumable(out.path, chosen, configs)
    else:
        out.check(overwrite=overwrite, resume_hint="continue it with --resume")
        out.claim(overwrite=overwrite)
    results: dict[str, Any] = {}
    current = chosen[0].name
    try:
        for study in chosen:
            current = study.name
            if seeds == 1:
                results[study.name] = _run_study(study, configs[study.name],
                                                 out.path / study.name, quick=quick,
                                                 progress=progress, resume=resume)
                continue
            for seed in range(seeds):
                key = f"{study.name}-seed{seed}"
                current = key
                results[key] = _run_study(study, study.with_seed(configs[study.name], seed),
                                          out.path / key, quick=quick, progress=progress,
                                          resume=False, seed=seed)
    except BaseException as exc:
        if not resume:
            out.abandon([f"{s.name}/config.yaml" for s in chosen])
        if isinstance(exc, KeyboardInterrupt):
            done = ", ".join(results) or "none"
            what = exc.detail if isinstance(exc, Interrupted) else f"in study {current}"
            raise Interrupted(f"{what}; finished studies: {done}",
                              resumable=out.path.is_dir()) from None
        raise
    return results


def _run_study(study: Study, cfg: Any, folder: Path, *, quick: bool, progress: bool,
               resume: bool, seed: int | None = None) -> dict[str, Any]:
    """Run one study into ``folder`` (kept as it is when a resumed run had finished it)."""
    if resume and (folder / "study.json").is_file():
        summary_file = folder / "summary.json"
        summary = (json.loads(summary_file.read_text()) if summary_file.is_file()
                   else {"timings_s": {"total": 0.0}})
    else:
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False).encode()
        atomic_write(folder / "config.yaml", lambda fh: fh.write(text))
        summary = study.run(cfg, folder, progress=progress)
    claims = study.claims(folder)
    (folder / "claims.json").write_text(json.dumps([c.to_dict() for c in claims], indent=2))
    claims_frame(claims).to_csv(folder / "claims.csv", index=False)
    (folder / "study.json").write_text(json.dumps({"study": study.name, "quick": quick,
                                                   "seed": seed}))
    summary["claims"] = claims
    return summary

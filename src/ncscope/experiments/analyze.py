"""All-layer NC analysis of a trained model under perturbation sources (Su et al. 2024).

For every tapped layer and every perturbation source (clean, untargeted PGD, targeted PGD
towards (y+1) mod K, Gaussian noise, random-sign noise, or any :class:`~ncscope.attacks.Attack`)
:func:`analyze` measures on the *training* data

* ``reference="own"``: the source's NC1–NC4, NC2 geometry, CDNV … with its *own* class means —
  grouped by the true label, or by the target label for a targeted attack (the paper's "leap"
  view, Su et al. 2024, §4);
* ``reference="clean"``: the source's features around the *clean* training class means —
  nearest-clean-mean (NCC) accuracy, leap fractions (nearest clean mean = prediction / target /
  label) and the simplex similarity between clean and perturbed class means (Su et al. 2024, §5);

and on the *test* data (``split="test"``), around the clean training means: the network's clean
and robust accuracy and the NCC accuracy — the paper's "robust nearest-neighbour classifier".

Every number comes from the one measurement sweep (:func:`ncscope.collapse.sweep`): each attack
runs once per batch, all layers are read from that batch, and the perturbed inputs are spooled
to disk for the second pass (memory O(batch)).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ncscope.attacks import (
    PGD,
    Attack,
    AutoAttackSource,
    GaussianL2,
    GaussianNoise,
    RandomSign,
    default_alpha,
    threat_model,
)
from ncscope.collapse.choose import choose_layers, head_of
from ncscope.collapse.schema import NAMES as LONG_COLUMNS
from ncscope.collapse.schema import typed
from ncscope.collapse.schema import wide as schema_wide
from ncscope.collapse.sweep import batches_of, sweep
from ncscope.data.config import DataConfig
from ncscope.models import classifier_of, find_classifier, load_weights
from ncscope.models.adapters import OutputFn
from ncscope.models.config import ModelConfig

DEFAULT_SOURCES = ("clean", "pgd", "pgd_targeted", "gaussian", "random_sign")
#: Sources built by name only when asked for: ``autoattack`` (Croce & Hein, ICML 2020) needs the
#: optional ``pyautoattack`` package (``pip install 'ncscope[autoattack]'``) and costs far more
#: than PGD.
OPTIONAL_SOURCES = ("autoattack",)
__all__ = [
    "DEFAULT_SOURCES",
    "OPTIONAL_SOURCES",
    "LONG_COLUMNS",
    "AnalyzeConfig",
    "AnalyzeSettings",
    "analyze",
    "default_alpha",
    "default_sources",
    "run_analyze",
    "wide",
]


@dataclass
class AnalyzeSettings:
    """How a trained model is measured (the ``analyze`` section of a study, and the body of
    :class:`AnalyzeConfig`): the threat model of the default sources, the sources, layers and
    measurement options. ``eps``/``alpha``/``steps`` ``None``: the threat-model table of
    :mod:`ncscope.attacks` (e.g. ℓ∞ 8/255 with ``eps/4``; ℓ2 128/255 with 15/255)."""

    norm: str = "linf"
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None
    restarts: int = 1
    sources: list[str] = field(default_factory=lambda: list(DEFAULT_SOURCES))
    layers: list[str] | None = None
    reduce: str = "flatten"
    batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    fast_attacks: bool = False

    def __post_init__(self) -> None:
        valid = DEFAULT_SOURCES + OPTIONAL_SOURCES
        unknown = [s for s in self.sources if s not in valid]
        if unknown:
            raise ValueError(f"unknown sources {unknown}; valid names: {', '.join(valid)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1; got {self.restarts}")

    def measure(self, model: nn.Module, train: Any, test: Any = None, *,
                classifier: str | None = None, progress: bool = True) -> pd.DataFrame:
        """Run :func:`analyze` with these settings."""
        return analyze(model, train, layers=self.layers, sources=self.sources, test_data=test,
                       eps=self.eps, norm=self.norm, alpha=self.alpha, steps=self.steps,
                       restarts=self.restarts,
                       batch_size=self.batch_size, reduce=self.reduce, classifier=classifier,
                       device=self.device, seed=self.seed, progress=progress,
                       fast_attacks=self.fast_attacks)


@dataclass
class AnalyzeConfig(AnalyzeSettings):
    """Settings of ``ncscope analyze``: trained weights of a model on a data set, measured
    under the threat model (YAML keys; ``--set eps=0.1 --set model.kwargs.widths=[64,64]``)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    weights: list[str] = field(default_factory=list)
    out: str = "runs/analysis.csv"


def run_analyze(cfg: AnalyzeConfig, *, progress: bool = True) -> pd.DataFrame:
    """What ``ncscope analyze`` does: every weights file measured, one long table (with a
    ``weights`` column) written to ``cfg.out``; returns it."""
    if not cfg.weights:
        raise ValueError("give the trained weights: --set weights=[path.pt, ...]")
    train, test = cfg.data.load("train"), cfg.data.load("test")
    frames = []
    for path in cfg.weights:
        model = cfg.model.build(train.info).to(cfg.device)
        load_weights(model, path)
        df = cfg.measure(model.eval(), train, test, classifier=cfg.model.classifier,
                         progress=progress)
        df.insert(0, "weights", path)
        frames.append(df)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = pd.concat(frames, ignore_index=True)
    result.to_csv(out, index=False)
    return result


def default_sources(
    model: nn.Module, eps: float | None = None, *, steps: int | None = None,
    alpha: float | None = None, seed: int = 0, norm: str = "linf", input_dim: int | None = None,
    fast: bool = False, restarts: int = 1, autoattack: bool = False,
) -> dict[str, Attack | None]:
    """The paper's perturbation sources at radius ``eps`` (pixel units).

    ``None`` values come from the threat-model table (:func:`ncscope.attacks.threat_model`).
    ``pgd``: untargeted PGD-``steps``, step ``alpha`` (ℓ∞: ``eps/4``; ℓ2: ``eps·15/128``, the
    paper's 15/255 at 128/255), random start; ``pgd_targeted``: the same towards
    ``(y+1) mod K``; ``gaussian``: i.i.d. N(0, eps²) pixel noise (ℓ∞) or a Gaussian direction
    rescaled to ℓ2 norm ``eps`` (ℓ2);
    ``random_sign``: a random corner of the ℓ∞ ball (ℓ∞) or of the cube whose corners have ℓ2
    norm ``eps`` (ℓ2; needs ``input_dim``). ``clean`` is ``None`` (no attack). ``fast``: the
    PGD sources run with ``fast=True`` (:mod:`ncscope.attacks.fast`). ``autoattack=True`` adds
    ``autoattack``: standard AutoAttack at the same ``eps`` and ``norm``
    (:class:`~ncscope.attacks.AutoAttackSource`; needs ``pip install 'ncscope[autoattack]'``).
    """
    tm = threat_model(norm, eps, alpha, steps, owner="analyze")
    eps, norm = tm.eps, tm.norm
    pgd = {"eps": eps, "alpha": tm.alpha, "steps": tm.steps, "norm": norm, "fast": fast,
           "restarts": restarts}
    if norm == "linf":
        gaussian: Attack = GaussianNoise(eps, seed=seed + 2)
        sign: Attack | None = RandomSign(eps, seed=seed + 3)
    else:
        gaussian = GaussianL2(eps, seed=seed + 2)
        sign = RandomSign(eps / input_dim**0.5, seed=seed + 3) if input_dim else None
    out: dict[str, Attack | None] = {
        "clean": None,
        "pgd": PGD(model, **pgd, seed=seed),
        "pgd_targeted": PGD(model, **pgd, targeted=True, target_rule="next", seed=seed + 1),
        "gaussian": gaussian,
    }
    if sign is not None:
        out["random_sign"] = sign
    if autoattack:
        out["autoattack"] = AutoAttackSource(model, eps, norm=norm, seed=seed + 4)
    return out


def analyze(
    model: nn.Module,
    data: Any,
    layers: Sequence[str] | None = None,
    sources: Sequence[str] | Mapping[str, Attack | None] | None = None,
    *,
    test_data: Any = None,
    eps: float | None = None,
    norm: str = "linf",
    alpha: float | None = None,
    steps: int | None = None,
    restarts: int = 1,
    num_classes: int | None = None,
    batch_size: int = 256,
    reduce: str = "flatten",
    classifier: str | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    per_class: bool = True,
    progress: bool = True,
    fast_attacks: bool = False,
    spool_dir: str | None = None,
    output: OutputFn | None = None,
) -> pd.DataFrame:
    """Measure NC of every tapped layer under every perturbation source; return a long table.

    Args:
        model: any classifier taking pixels in [0, 1] (normalisation inside the model); its
            final ``nn.Linear`` is ``classifier`` or found by
            :func:`ncscope.models.find_classifier` (checked on a probe batch).
        data: training data: ``(images, labels)`` as tensors or numpy arrays, an
            ``ImageDataset`` / ``TensorDataset`` / map-style Dataset or a DataLoader.
        layers: layer specs (names / globs, ``":in"`` for inputs); default: the model's
            ``default_taps`` plus the penultimate features, repeats removed
            (:func:`ncscope.collapse.choose.choose_layers`).
        sources: names from :data:`DEFAULT_SOURCES` and :data:`OPTIONAL_SOURCES` (built by
            :func:`default_sources` at ``eps``; ``"autoattack"`` is opt-in) or a mapping
            ``name -> Attack`` (``None`` for clean; any callable ``x, y -> x'`` works); a
            targeted source is grouped by target in its own view.
        test_data: optional test split: clean/robust accuracy and NCC accuracy around the clean
            *training* means.
        eps, norm, alpha, steps, restarts: threat model of the default PGD sources (see
            :func:`default_sources`; pixel units; ``None``: the threat-model table).
        fast_attacks: build the default PGD sources with ``fast=True`` (BatchNorm folded into
            the preceding layer for the attack; same function, float rounding differs).
        output: reads the logits from the model's output, e.g. ``lambda out: out["scores"]``
            (default: :func:`ncscope.models.logits_of`).

    Returns:
        The long table of :func:`ncscope.collapse.sweep` (schema:
        :mod:`ncscope.collapse.schema`), one row per layer × source × view × metric (per-class
        angles/distances with a ``class``). ``df.attrs`` holds the settings and timings.
    """
    progress = progress and sys.stderr.isatty()  # bars only on a terminal
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    probe = next(iter(batches_of(data, 8)()))[0][:8].to(dev)
    classifier = find_classifier(model, classifier, probe, output=output)  # checks the input
    k = int(num_classes) if num_classes is not None else int(
        classifier_of(model, classifier).out_features)
    layers = (choose_layers(model, "all", probe, classifier) if layers is None
              else choose_layers(model, list(layers)))
    if sources is None:
        sources = DEFAULT_SOURCES
    if not isinstance(sources, Mapping):
        builders = default_sources(model, eps, steps=steps, alpha=alpha, seed=seed, norm=norm,
                                   input_dim=int(probe[0].numel()), fast=fast_attacks,
                                   restarts=restarts, autoattack="autoattack" in sources)
        unknown = [s for s in sources if s not in builders]
        if unknown:
            raise ValueError(
                f"unknown sources {unknown}; valid names: {', '.join(builders)} (or pass a "
                "mapping name -> Attack)"
            )
        sources = {s: builders[s] for s in sources}
    df = sweep(model, data, dict(sources), layers=layers, num_classes=k,
               classifiers=head_of(model, layers, classifier), test_data=test_data,
               batch_size=batch_size, reduce=reduce, device=dev, per_class=per_class,
               progress=progress, spool_dir=spool_dir, output=output)
    settings = {n: _settings(a) for n, a in sources.items()}
    df.attrs.update(sources=settings)
    return with_threat_columns(df, settings)


#: Attack settings carried as context columns by :func:`analyze` (one value per source).
THREAT_COLUMNS = ("eps", "norm", "alpha", "steps")


def with_threat_columns(df: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    """Put each source's ``eps``, ``norm``, ``alpha`` and ``steps`` (from its ``settings()``;
    missing for the clean data and for sources without them) in front of the long table, so
    that tables of several radii or threat models concatenate."""
    out = df.copy()
    for i, col in enumerate(THREAT_COLUMNS):
        values = {n: (s.get(col) if isinstance(s, dict) else None) for n, s in settings.items()}
        if col == "eps":  # noise sources name their radius sigma / radius
            for n, s in settings.items():
                if isinstance(s, dict) and values[n] is None:
                    values[n] = s.get("sigma", s.get("radius"))
        out.insert(i, col, out["source"].map(values))
    out = typed(out)
    out.attrs = dict(df.attrs)
    return out


def _settings(source: Any) -> Any:
    """JSON-friendly description of a source (an Attack's ``settings()``, else its repr)."""
    if source is None:
        return None
    settings = getattr(source, "settings", None)
    return settings() if callable(settings) else repr(source)


wide = schema_wide

"""All-layer NC analysis of a trained model under perturbation sources (Su et al. 2024).

For every tapped layer and every perturbation source (clean, untargeted PGD, targeted PGD
towards (y+1) mod K, Gaussian noise, random-sign noise, or any :class:`~ncscope.attacks.Attack`)
:func:`analyze` measures on the *training* data

* ``reference="own"``: the source's NC1–NC4, NC2 geometry, CDNV … with its *own* class means —
  grouped by the true label, or by the target label for a targeted attack (the paper's "leap"
  view, paper-brief §1.7);
* ``reference="clean"``: the source's features around the *clean* training class means —
  nearest-clean-mean (NCC) accuracy, leap fractions (nearest clean mean = prediction / target /
  label) and the simplex similarity between clean and perturbed class means (§1.6);

and on the *test* data (``split="test"``), around the clean training means: the network's clean
and robust accuracy and the NCC accuracy — the paper's "robust nearest-neighbour classifier".

Cost: each attack runs once per batch and all layers are read from that same perturbed batch
(forward hooks); perturbed inputs are cached (CPU memory) so the second NC pass is one forward
pass, not a second attack.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ncscope.attacks import PGD, Attack, GaussianL2, GaussianNoise, RandomSign
from ncscope.collapse import FeatureTaps, LayerNC
from ncscope.collapse.geometry import simplex_similarity
from ncscope.models import classifier_of, default_taps, penultimate_layer

DEFAULT_SOURCES = ("clean", "pgd", "pgd_targeted", "gaussian", "random_sign")
#: Columns of :func:`analyze`'s long table (plus ``class`` for per-class rows).
_SIMILARITY_PREFIXES = ("simplex_", "global_mean_")
LONG_COLUMNS = ("layer", "depth", "source", "split", "reference", "group", "metric", "value")


def default_alpha(eps: float, norm: str = "linf") -> float:
    """Default PGD step: ``eps/4`` for ℓ∞ (the paper's 2/255 at 8/255), ``eps/8`` for ℓ2
    (16/255 at 128/255, next to the paper's 15/255)."""
    return eps / 4 if norm == "linf" else eps / 8


def default_sources(
    model: nn.Module, eps: float, *, steps: int = 10, alpha: float | None = None, seed: int = 0,
    norm: str = "linf", input_dim: int | None = None, fast: bool = False,
) -> dict[str, Attack | None]:
    """The paper's perturbation sources at radius ``eps`` (pixel units).

    ``pgd``: untargeted PGD-``steps``, step ``alpha`` (default ``eps/4`` for ℓ∞, ``eps/8`` for
    ℓ2), random start; ``pgd_targeted``: the same towards ``(y+1) mod K``; ``gaussian``: i.i.d.
    N(0, eps²) pixel noise (ℓ∞) or a Gaussian direction rescaled to ℓ2 norm ``eps`` (ℓ2);
    ``random_sign``: a random corner of the ℓ∞ ball (ℓ∞) or of the cube whose corners have ℓ2
    norm ``eps`` (ℓ2; needs ``input_dim``). ``clean`` is ``None`` (no attack). ``fast``: the
    PGD sources run with ``fast=True`` (:mod:`ncscope.attacks.fast`).
    """
    a = alpha if alpha is not None else default_alpha(eps, norm)
    pgd = {"eps": eps, "alpha": a, "steps": steps, "norm": norm, "fast": fast}
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
    return out


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    elif hasattr(data, "tensors"):
        x, y = data.tensors[:2]
    else:
        raise TypeError(
            "data must be an ImageDataset / TensorDataset or an (images, labels) pair; got "
            f"{type(data).__name__}"
        )
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise TypeError("data must hold torch tensors (images, labels)")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"images and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
    return x, y.long()


def default_layers(model: nn.Module, probe: torch.Tensor,
                   classifier: str | None = None) -> list[str]:
    """The model's ``default_taps`` plus its penultimate features, with a tap dropped when its
    features equal the next one's on ``probe`` (e.g. an MLP's last block *is* the
    classifier input)."""
    try:
        taps = default_taps(model)
    except (AttributeError, ValueError):
        taps = []
    return _dedupe_layers(model, [*taps, penultimate_layer(model, classifier)], probe)


def _dedupe_layers(model: nn.Module, layers: list[str], probe: torch.Tensor) -> list[str]:
    """Drop a layer whose features equal the next one's on a probe batch (e.g. the last
    hidden block of an MLP *is* the penultimate layer)."""
    with FeatureTaps(model, layers) as taps, torch.no_grad():
        model(probe)
        feats = taps.features
    keep = []
    for i, name in enumerate(taps.names):
        nxt = taps.names[i + 1] if i + 1 < len(taps.names) else None
        if nxt is not None and feats[name].shape == feats[nxt].shape and torch.equal(
            feats[name], feats[nxt]
        ):
            continue
        keep.append(name)
    return keep


@dataclass
class _Source:
    name: str
    attack: Attack | None
    targeted: bool
    cache: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    own: LayerNC | None = None
    vs_clean: LayerNC | None = None
    vs_clean_by_target: LayerNC | None = None
    test: LayerNC | None = None
    seconds: float = 0.0


def analyze(
    model: nn.Module,
    data: Any,
    layers: Sequence[str] | None = None,
    sources: Sequence[str] | Mapping[str, Attack | None] | None = None,
    *,
    test_data: Any = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    alpha: float | None = None,
    steps: int = 10,
    num_classes: int | None = None,
    batch_size: int = 256,
    reduce: str = "flatten",
    classifier: str | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    per_class: bool = True,
    progress: bool = True,
    fast_attacks: bool = False,
) -> pd.DataFrame:
    """Measure NC of every tapped layer under every perturbation source; return a long table.

    Args:
        model: any classifier taking pixels in [0, 1] (normalisation inside the model) whose
            final ``nn.Linear`` is found by ``classifier`` (default: ``model.classifier_name``
            or ``"classifier"``).
        data: training data, an ``ImageDataset``/``TensorDataset`` or ``(images, labels)``.
        layers: layer specs (names / globs, ``":in"`` for inputs); default: the model's
            ``default_taps`` plus the penultimate features, duplicates removed.
        sources: names from :data:`DEFAULT_SOURCES` (built by :func:`default_sources` at
            ``eps``) or a mapping ``name -> Attack`` (``None`` for clean); a source whose attack
            is targeted is grouped by target in its ``own`` view.
        test_data: optional test split: clean/robust accuracy and NCC accuracy around the clean
            *training* means.
        eps, norm, alpha, steps: threat model of the default sources (see
            :func:`default_sources`; pixel units).
        fast_attacks: build the default PGD sources with ``fast=True`` (BatchNorm folded into
            the preceding layer for the attack; same function, float rounding differs).

    Returns:
        A DataFrame with columns ``layer, depth, source, split, reference, group, metric, value``
        (plus ``class`` for per-class angles/distances when ``per_class``), one row per
        layer × source × view × metric. ``df.attrs`` holds the settings and timings.
    """
    progress = progress and sys.stderr.isatty()  # bars only on a terminal
    x_all, y_all = _as_tensors(data)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    k = int(num_classes) if num_classes is not None else int(classifier_of(model, classifier)
                                                             .out_features)
    if int(y_all.max()) >= k or int(y_all.min()) < 0:
        raise ValueError(f"labels must lie in [0, {k}); got {int(y_all.min())}..{int(y_all.max())}")
    pen = penultimate_layer(model, classifier)
    if layers is None:
        layers = default_layers(model, x_all[:8].to(dev), classifier)
    layers = list(layers)
    head = classifier_of(model, classifier)
    clf = {pen: (head.weight.detach(), head.bias.detach() if head.bias is not None else None)}
    clf = {name: wb for name, wb in clf.items() if name in layers}

    if sources is None:
        sources = DEFAULT_SOURCES
    if not isinstance(sources, Mapping):
        builders = default_sources(model, eps, steps=steps, alpha=alpha, seed=seed, norm=norm,
                                   input_dim=int(x_all[0].numel()), fast=fast_attacks)
        unknown = [s for s in sources if s not in builders]
        if unknown:
            raise ValueError(
                f"unknown sources {unknown}; valid names: {', '.join(builders)} (or pass a "
                "mapping name -> Attack)"
            )
        sources = {s: builders[s] for s in sources}
    srcs = [
        _Source(name, atk, bool(getattr(atk, "targeted", False))) for name, atk in sources.items()
    ]

    def new() -> LayerNC:
        return LayerNC(k, layers, clf)

    timings: dict[str, float] = {}
    batches = [
        (x_all[i : i + batch_size], y_all[i : i + batch_size])
        for i in range(0, len(y_all), batch_size)
    ]
    clean_ref = new()
    t_start = time.perf_counter()
    try:
        with FeatureTaps(model, layers, reduce=reduce) as tap:

            def feats(x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
                with torch.no_grad():
                    pred = model(x).argmax(1)
                return tap.features, pred

            def attack(atk: Attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                with tap.paused():  # the attack's own passes capture no features
                    return atk(x, y)

            # Sweep 1: clean pass 1; every attack once per batch (cached); own pass 1.
            # The clean source's own view *is* the clean reference: measured once (sweep 2).
            for s in srcs:
                s.own = None if s.attack is None else new()
            for x, y in tqdm(batches, desc="analyze: attacks + pass 1", disable=not progress):
                x, y = x.to(dev), y.to(dev)
                f_clean, _ = feats(x)
                clean_ref.update(f_clean, y)
                for s in srcs:
                    t0 = time.perf_counter()
                    if s.attack is None:
                        continue
                    xs = attack(s.attack, x, y)
                    tgt = s.attack.last_report.targets if s.targeted else None
                    s.seconds += time.perf_counter() - t0
                    s.cache.append(xs.detach().cpu())
                    if tgt is not None:
                        s.targets.append(tgt.detach().cpu())
                    f, _ = feats(xs)
                    s.own.update(f, y if tgt is None else tgt)

            # Sweep 2: second passes from the cached inputs (one forward per source batch).
            for s in srcs:
                s.vs_clean = copy.deepcopy(clean_ref)
                if s.attack is None:
                    s.own = s.vs_clean
                if s.targeted:
                    s.vs_clean_by_target = copy.deepcopy(clean_ref)
            for b, (x, y) in enumerate(tqdm(batches, desc="analyze: pass 2",
                                            disable=not progress)):
                y = y.to(dev)
                for s in srcs:
                    f, pred = feats((x if s.attack is None else s.cache[b]).to(dev))
                    tgt = s.targets[b].to(dev) if s.targeted else None
                    if s.own is not s.vs_clean:
                        s.own.update_measured(f, y if tgt is None else tgt, predictions=pred)
                    s.vs_clean.update_measured(f, y, predictions=pred, targets=tgt)
                    if tgt is not None:
                        s.vs_clean_by_target.update_measured(f, tgt, predictions=pred,
                                                             targets=tgt)
            for s in srcs:
                s.cache.clear()

            # Sweep 3: test split around the clean training means (no caching needed).
            if test_data is not None:
                x_te, y_te = _as_tensors(test_data)
                for s in srcs:
                    s.test = copy.deepcopy(clean_ref)
                for i in tqdm(range(0, len(y_te), batch_size), desc="analyze: test",
                              disable=not progress):
                    x = x_te[i : i + batch_size].to(dev)
                    y = y_te[i : i + batch_size].to(dev)
                    for s in srcs:
                        t0 = time.perf_counter()
                        xs = x if s.attack is None else attack(s.attack, x, y)
                        s.seconds += time.perf_counter() - t0
                        tgt = s.attack.last_report.targets if s.targeted else None
                        f, pred = feats(xs)
                        s.test.update_measured(f, y, predictions=pred, targets=tgt)
    finally:
        model.train(was_training)
    timings["total"] = time.perf_counter() - t_start
    for s in srcs:
        timings[f"attack:{s.name}"] = s.seconds

    depth = {name: i for i, name in enumerate(layers)}
    rows: list[dict[str, Any]] = []

    def emit(stats: LayerNC | None, source: str, split: str, ref: str, group: str) -> None:
        if stats is None:
            return
        for layer, res in stats.compute().items():
            for metric, value in res.items():
                if ref == "own" and metric.startswith(_SIMILARITY_PREFIXES):
                    continue  # the own means compared with themselves: always 0
                rows.append(dict(layer=layer, depth=depth[layer], source=source, split=split,
                                 reference=ref, group=group, metric=metric, value=value))
            if per_class and ref == "clean" and split == "train":
                st = stats.stats[layer]
                present = (st.ref_count > 0) & (st.meas_count > 0)
                ids = present.nonzero().flatten()
                sim = simplex_similarity(st.class_means[ids], st.measured_means[ids])
                for j, c in enumerate(ids.tolist()):
                    for metric in ("angle", "distance", "angle_uncentred", "distance_uncentred"):
                        rows.append(dict(layer=layer, depth=depth[layer], source=source,
                                         split=split, reference=ref, group=group,
                                         metric=f"class_{metric}", value=float(sim[metric][j]),
                                         **{"class": c}))

    for s in srcs:
        own_group = "target" if s.targeted else "label"
        emit(s.own, s.name, "train", "own", own_group)
        emit(s.vs_clean, s.name, "train", "clean", "label")
        emit(s.vs_clean_by_target, s.name, "train", "clean", "target")
        emit(s.test, s.name, "test", "clean", "label")
    df = pd.DataFrame(rows)
    if "class" not in df:
        df["class"] = pd.NA
    df["class"] = df["class"].astype("Int64")
    df.attrs.update(
        layers=layers,
        sources={s.name: (None if s.attack is None else s.attack.settings()) for s in srcs},
        timings=timings,
        num_classes=k,
    )
    return df


def wide(df: pd.DataFrame) -> pd.DataFrame:
    """Pivot :func:`analyze`'s long table to one row per (layer, source, split, reference,
    group) with one column per metric (per-class rows are dropped)."""
    agg = df[df["class"].isna()] if "class" in df else df
    keys = ["depth", "layer", "source", "split", "reference", "group"]
    out = agg.groupby(keys + ["metric"], sort=False)["value"].first().unstack("metric")
    out.columns.name = None
    return out.reset_index().sort_values(keys[2:] + keys[:1]).reset_index(drop=True)

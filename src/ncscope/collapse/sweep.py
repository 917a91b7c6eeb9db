"""The one measurement sweep: NC of every tapped layer under every perturbation source.

:func:`sweep` is the only place in ncscope that runs the two NC passes over a model. The
per-epoch training tracker, :func:`ncscope.analyze`, the engine demo and every study call it,
and its rows follow the declared long schema (:mod:`ncscope.collapse.schema`).

**Sources** are plain callables ``x, y -> x'`` (any :class:`ncscope.attacks.Attack` is one; a
callable may also return ``(x', targets)``, and an ncscope targeted attack's targets are read
from ``last_report.targets``), ``None`` for the clean data, or *recorded* batches (e.g. the
adversarial batches of a training epoch) given as a :class:`Source` with ``recorded=``.

**Views** (the reference policy), for each source:

=========  ===========  ==========================  ==========================================
split      reference    group                       what
=========  ===========  ==========================  ==========================================
train      own          label (target if targeted,  the source's classical NC (its own means)
                        or ``own_group``)
train      clean        label                       around the clean training means: NCC, leap
                                                    fractions, simplex similarity
train      clean        target (targeted sources)   the paper's "leap" view of targeted attacks
test       clean        label                       test data around the clean training means:
                                                    clean / robust and NCC accuracy
=========  ===========  ==========================  ==========================================

**Cost**: each perturbation runs once per batch (feature hooks paused during it) and every
layer is read from that batch; the perturbed inputs are spooled to disk
(:class:`~ncscope.collapse.spool.TensorSpool`) so the second pass is one forward pass and memory
stays O(batch). The model is measured in eval mode under ``no_grad``; module modes are
restored afterwards. Under ``torch.distributed`` each rank sweeps its shard (give a batch
factory) and the accumulators are summed after each pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import ncscope.collapse.metric_defs  # noqa: F401 - registers the built-in metrics
from ncscope.collapse.measure import Measurement, all_reduce_tensors
from ncscope.collapse.reference import ClassMeanSums, Reference
from ncscope.collapse.registry import METRICS, compute_metrics
from ncscope.collapse.schema import long_frame
from ncscope.collapse.spool import TensorSpool
from ncscope.collapse.taps import FeatureTaps, Reduce
from ncscope.models.adapters import (
    OutputFn,
    adapt_output,
    as_images,
    as_labels,
    as_pair,
    collate_pairs,
    logits_of,
)

Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]
Perturb = Callable[[Tensor, Tensor], Any]
Classifiers = Mapping[str, tuple[Tensor, Tensor | None]]


@dataclass
class Source:
    """A perturbation source of the sweep.

    Attributes:
        name: the ``source`` column.
        perturb: ``x, y -> x'`` (or ``(x', targets)``); ``None`` with no ``recorded``: clean.
        recorded: a factory of ``(x', y)`` batches measured as they are (training split only;
            called twice, once per pass, and must give the same batches).
        splits: where to apply ``perturb`` (``"train"``, ``"test"``).
        targeted: group the own view by target and add the by-target clean view (default:
            the callable's ``targeted`` attribute).
        own_group: grouping of the own view: ``"label"``, ``"target"``, ``"prediction"``
            (default: ``"target"`` for targeted sources, else ``"label"``).
    """

    name: str
    perturb: Perturb | None = None
    recorded: Batches | None = None
    splits: tuple[str, ...] = ("train", "test")
    targeted: bool | None = None
    own_group: str | None = None
    seconds: float = field(default=0.0, repr=False)

    @property
    def clean(self) -> bool:
        """True for the clean data (no perturbation, nothing recorded)."""
        return self.perturb is None and self.recorded is None

    @property
    def is_targeted(self) -> bool:
        """Whether the source has attack targets."""
        if self.targeted is not None:
            return self.targeted
        return bool(getattr(self.perturb, "targeted", False))

    @property
    def group(self) -> str:
        """Grouping of the own view."""
        return self.own_group or ("target" if self.is_targeted else "label")

    def apply(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """Perturb one batch; return ``(x', targets or None)``."""
        t0 = time.perf_counter()
        out = self.perturb(x, y)  # type: ignore[misc]
        tgt = None
        if isinstance(out, tuple):
            out, tgt = out
        elif self.is_targeted:
            tgt = self.perturb.last_report.targets  # type: ignore[union-attr]
        self.seconds += time.perf_counter() - t0
        return out.detach(), (None if tgt is None else tgt.detach())


def as_sources(sources: Mapping[str, Perturb | None] | Sequence[Source] | None) -> list[Source]:
    """Normalise ``{name: callable | None}`` or a list of :class:`Source` (clean first)."""
    if sources is None:
        return [Source("clean")]
    out = ([Source(n, p) for n, p in sources.items()] if isinstance(sources, Mapping)
           else list(sources))
    for s in out:
        if not isinstance(s, Source):
            raise TypeError(f"sources must be Source objects or a mapping name -> callable; "
                            f"got {type(s).__name__}")
        if s.perturb is not None and not callable(s.perturb):
            raise TypeError(f"source {s.name!r}: perturbation must be callable (x, y) -> x'")
    return out


def batches_of(data: Any, batch_size: int) -> Batches:
    """A batch factory over ``data``: ``(images, labels)`` as tensors or numpy arrays (numpy
    images become float32), a TensorDataset / ImageDataset (has ``tensors``), any map-style
    Dataset of ``(x, y)`` items (read in order), a DataLoader, or a factory itself."""
    if callable(data) and not isinstance(data, torch.utils.data.Dataset):
        return data
    pair = as_pair(data)
    if pair is None and hasattr(data, "tensors"):
        pair = as_pair(tuple(data.tensors[:2]))
    if pair is not None:
        x, y = pair
        return lambda: ((x[i:i + batch_size], y[i:i + batch_size])
                        for i in range(0, len(y), batch_size))
    if isinstance(data, torch.utils.data.DataLoader):
        return lambda: (_pair(b) for b in data)
    if isinstance(data, torch.utils.data.Dataset):  # map-style, e.g. a lazily loading one
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                             collate_fn=collate_pairs)
        return lambda: iter(loader)
    raise TypeError("data must be (images, labels) as tensors or numpy arrays, a TensorDataset "
                    "/ ImageDataset / map-style Dataset, a DataLoader or a batch factory; got "
                    f"{type(data).__name__}")


def _pair(batch: Any) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, tuple | list) and len(batch) >= 2
            and isinstance(batch[0], Tensor | np.ndarray)):
        raise TypeError("data must yield (images, labels) batches; the DataLoader gave "
                        f"{type(batch).__name__}")
    return as_images(batch[0]), as_labels(batch[1])


class _Layers:
    """Per-layer pass-1 sums, frozen into references (all layers of one source)."""

    def __init__(self, k: int, layers: Sequence[str], classifiers: Classifiers) -> None:
        self.sums = {n: ClassMeanSums(k, *classifiers.get(n, (None, None))) for n in layers}
        self.refs: dict[str, Reference] = {}

    def update(self, feats: Mapping[str, Tensor], labels: Tensor) -> None:
        for n, s in self.sums.items():
            s.update(feats[n], labels)

    def freeze(self, **options: Any) -> dict[str, Reference]:
        for s in self.sums.values():
            all_reduce_tensors(s.tensors())
        self.refs = {n: s.freeze(**options) for n, s in self.sums.items()}
        return self.refs


@dataclass
class _View:
    source: str
    split: str
    reference: str
    group: str
    meas: dict[str, Measurement]

    def update(self, feats: Mapping[str, Tensor], labels: Tensor, **kw: Any) -> None:
        for n, m in self.meas.items():
            m.update(feats[n], labels, **kw)


def _grouping(group: str, y: Tensor, tgt: Tensor | None, logits: Tensor) -> Tensor:
    if group == "target":
        if tgt is None:
            raise ValueError("own_group='target' needs a targeted source")
        return tgt
    return logits.argmax(1) if group == "prediction" else y


def sweep(
    model: nn.Module,
    data: Any,
    sources: Mapping[str, Perturb | None] | Sequence[Source] | None = None,
    *,
    layers: Sequence[str],
    num_classes: int,
    classifiers: Classifiers | None = None,
    test_data: Any = None,
    batch_size: int = 256,
    reduce: Reduce = "flatten",
    device: torch.device | str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    per_class: bool = True,
    global_mean: str = "weighted",
    progress: bool = False,
    output: OutputFn | None = None,
) -> pd.DataFrame:
    """Measure NC of ``layers`` of ``model`` on ``data`` under ``sources``; return a long table.

    Args:
        model: any classifier taking pixels in [0, 1] (its output read by ``output``).
        data / test_data: training (reference) data and optional test data, in any form
            :func:`batches_of` accepts.
        sources: ``{name: callable | None}`` or :class:`Source` objects; the clean reference
            is always measured (a ``"clean"`` source is added when missing).
        layers: layer keys (see :class:`~ncscope.collapse.taps.FeatureTaps`).
        num_classes: K. ``classifiers``: ``{layer: (W, b)}`` of the linear head reading a
            layer (NC2 of W, NC3, predictions).
        reduce, batch_size, device, spool_dir: feature reduction, measurement batch size,
            device (default: the model's), folder of the perturbed-input spools.
        per_class: also emit per-class metrics (simplex angles) of the train/clean views.
        output: reads the logits from the model's output (default:
            :func:`ncscope.models.logits_of`: a tensor, ``(logits, ...)``, ``out["logits"]`` or
            ``out.logits``); installed for the attacks' passes too.

    Returns:
        A DataFrame in the long schema (``layer, depth, source, split, reference, group,
        metric, value, class``); ``df.attrs["timings"]`` holds seconds per source and total,
        ``df.attrs["errors"]`` one line per view that could not be computed (e.g. every
        reference mean equal).
    """
    srcs = as_sources(sources)
    if not any(s.clean for s in srcs):
        srcs.insert(0, Source("clean"))
    clean_name = next(s.name for s in srcs if s.clean)
    layers = list(layers)
    classifiers = dict(classifiers or {})
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    train_batches = batches_of(data, batch_size)
    test_batches = None if test_data is None else batches_of(test_data, batch_size)
    options = {"global_mean": global_mean}
    attackers = [s for s in srcs if s.perturb is not None and "train" in s.splits]
    recorded = [s for s in srcs if s.recorded is not None]
    t_start = time.perf_counter()
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    spools: dict[str, TensorSpool] = {}
    views: list[_View] = []
    try:
        with adapt_output(model, output), FeatureTaps(model, layers, reduce=reduce) as taps:

            def forward(x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
                with torch.no_grad():
                    logits = logits_of(model(x))
                return logits, taps.features

            def perturb(src: Source, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
                with taps.paused():  # the attack's own passes capture no features
                    return src.apply(x, y)

            def on_device(it: Iterable[Any]) -> Iterator[Any]:
                for item in it:
                    yield tuple(None if t is None else t.to(dev) for t in item)

            # Pass 1: clean sums, each perturbation once per batch (spooled), own sums.
            clean = _Layers(num_classes, layers, classifiers)
            own = {s.name: _Layers(num_classes, layers, classifiers) for s in attackers + recorded}
            for s in attackers:
                spools[s.name] = TensorSpool(spool_dir, f"sweep-{s.name}")
            for x, y in tqdm(on_device(train_batches()), desc="sweep: pass 1",
                             disable=not progress, leave=False):
                _, f = forward(x)
                clean.update(f, y)
                for s in attackers:
                    xs, tgt = perturb(s, x, y)
                    spools[s.name].append(xs, y, tgt)
                    logits, fs = forward(xs)
                    own[s.name].update(fs, _grouping(s.group, y, tgt, logits))
            for s in recorded:
                for xs, y in on_device(s.recorded()):  # type: ignore[misc]
                    logits, fs = forward(xs)
                    own[s.name].update(fs, _grouping(s.group, y, None, logits))
            clean_refs = clean.freeze(**options)
            for layers_of in own.values():
                layers_of.freeze(**options)

            def view(src: str, split: str, ref: str, group: str,
                     refs: dict[str, Reference]) -> _View:
                v = _View(src, split, ref, group, {n: Measurement(r) for n, r in refs.items()})
                views.append(v)
                return v

            # Pass 2: every train view from the clean data, the spools and the recordings.
            clean_view = view(clean_name, "train", "own", "label", clean_refs)
            for x, y in tqdm(on_device(train_batches()), desc="sweep: pass 2",
                             disable=not progress, leave=False):
                logits, f = forward(x)
                clean_view.update(f, y, logits=logits)
            for s in attackers + recorded:
                v_own = view(s.name, "train", "own", s.group, own[s.name].refs)
                v_clean = view(s.name, "train", "clean", "label", clean_refs)
                v_tgt = (view(s.name, "train", "clean", "target", clean_refs)
                         if s.is_targeted and s.perturb is not None else None)
                if s.perturb is not None:
                    replay = spools[s.name].batches_with_targets(batch_size, dev)
                else:
                    replay = ((xs, y, None) for xs, y in on_device(s.recorded()))  # type: ignore[misc]
                for xs, y, tgt in replay:
                    logits, fs = forward(xs)
                    v_own.update(fs, _grouping(s.group, y, tgt, logits), logits=logits)
                    v_clean.update(fs, y, targets=tgt, logits=logits)
                    if v_tgt is not None:
                        v_tgt.update(fs, tgt, targets=tgt, logits=logits)
                spool = spools.pop(s.name, None)
                if spool is not None:
                    spool.delete()

            # Test split around the clean training means.
            if test_batches is not None:
                tested = [s for s in srcs if "test" in s.splits and (s.clean or s.perturb
                                                                      is not None)]
                test_views = [view(s.name, "test", "clean", "label", clean_refs) for s in tested]
                for x, y in tqdm(on_device(test_batches()), desc="sweep: test",
                                 disable=not progress, leave=False):
                    for s, v in zip(tested, test_views, strict=True):
                        xs, tgt = (x, None) if s.clean else perturb(s, x, y)
                        logits, f = forward(xs)
                        v.update(f, y, targets=tgt, logits=logits)
    finally:
        for spool in spools.values():
            spool.delete()
        for m, was in modes:
            m.training = was
    for v in views:
        for m in v.meas.values():
            m.all_reduce()
    errors: list[str] = []
    rows = _rows(views, layers, per_class, clean_name, errors)
    df = long_frame(rows)
    df.attrs["errors"] = errors
    df.attrs["timings"] = {"total": time.perf_counter() - t_start,
                           **{f"attack:{s.name}": s.seconds for s in srcs if not s.clean}}
    df.attrs["layers"] = layers
    df.attrs["num_classes"] = num_classes
    return df


def _rows(views: list[_View], layers: list[str], per_class: bool, clean_name: str,
          errors: list[str]) -> list[dict[str, Any]]:
    """Rows of every view, grouped by source (first appearance), train before test, own
    before clean. The clean source's own view is also reported as its view around the clean
    means (same numbers, computed once)."""
    depth = {n: i for i, n in enumerate(layers)}
    expanded = [(v, v.reference) for v in views]
    expanded += [(v, "clean") for v in views
                 if v.source == clean_name and v.split == "train" and v.reference == "own"]
    order = {"own": 0, "clean": 1}
    expanded.sort(key=lambda vr: (vr[0].split == "test", order[vr[1]]))
    rank: dict[str, int] = {}
    for v, _ in expanded:
        rank.setdefault(v.source, len(rank))
    expanded.sort(key=lambda vr: rank[vr[0].source])  # stable: keeps the order above
    computed: dict[tuple[int, str], dict[str, Any] | str] = {}
    out: list[dict[str, Any]] = []
    for v, ref in expanded:
        for layer, m in v.meas.items():
            key = (id(v), layer)
            if key not in computed:
                try:
                    computed[key] = compute_metrics(m.reference, m)
                except ValueError as exc:  # e.g. a degenerate reference: the view has no rows
                    computed[key] = str(exc).splitlines()[0]
            res = computed[key]
            if isinstance(res, str):
                errors.append(f"{v.source}/{v.split}/{ref}/{v.group} at {layer}: {res}")
                continue
            base = dict(layer=layer, depth=depth[layer], source=v.source, split=v.split,
                        reference=ref, group=v.group)
            own = ref == "own"
            out += [{**base, "metric": k, "value": val} for k, val in res.items()
                    if not (own and METRICS[k].cross_reference)]
            if per_class and not own and v.split == "train":
                for k, per in compute_metrics(m.reference, m, per_class=True).items():
                    out += [{**base, "metric": k, "value": val, "class": c}
                            for c, val in per.items()]
    return out

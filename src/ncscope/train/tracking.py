"""Per-epoch measurements: accuracy, loss and Neural-Collapse metrics on several data sources.

Protocol (paper-brief §3.5; Su et al. 2024). After a tracked epoch the model is put in **eval
mode** and, under ``no_grad``, measured on:

=====================  ================  ===============================================
``source``             ``reference``     what
=====================  ================  ===============================================
``train_clean``        ``train_clean``   classical NC of the clean training features
``train_perturbed``    ``train_perturbed`` AT/TRADES: the perturbed batches generated during
                                         the epoch (the paper's "robust" NC: own means)
``train_perturbed``    ``train_clean``   the same measured around the clean class means
                                         (simplex similarity, NCC with clean means)
``train_pgd``          ``train_pgd``     fresh eval-mode PGD of the training set (ST default)
``train_pgd``          ``train_clean``   the same around the clean class means
``test_clean``         ``train_clean``   test features around the clean training means
``test_pgd``           ``train_clean``   eval-mode PGD test data (robust accuracy, NCC
                                         robust accuracy with clean training means)
=====================  ================  ===============================================

``reference`` names the data whose class means the NC statistics are measured around
(:class:`ncscope.collapse.NCStats` pass 1); ``source`` is the measured data (pass 2). Every row
carries the network's cross-entropy ``loss`` and ``accuracy`` on ``source``, the sample count
``n`` and every key of :meth:`NCStats.compute` (``nc1``, ``nc1_over_k``, ``equinorm_means``,
``equiangular_means``, ``nc3``, ``nc4``, ``ncc_accuracy``, ``simplex_angle`` [degrees], ...).
In a row measured around *another* reference (``reference != source``) the geometry of the
means (``equinorm_means``, ``equiangular_means``, ``etf_error_means``, ``nc3``) describes the
reference simplex; what describes the measured data there is ``nc1`` (scatter around the
reference means), ``ncc_accuracy``, ``nc4``, the ``leap_*`` keys and the simplex similarity
(``simplex_angle``, ``simplex_distance``, ``global_mean_*``: measured vs reference means).
Rows with ``reference == source`` are the paper's NC of that data (its own means).

Streaming: every pass runs batch by batch into the NC accumulators; perturbed images are never
held in memory — the training-time ones come from a :class:`~ncscope.train.spool.TensorSpool`
written during the epoch, and a fresh attack is spooled the same way, because NC needs two
passes (class means first). Under ``torch.distributed`` each rank measures its shard and the
accumulators are summed with ``all_reduce`` after each pass.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ncscope.attacks import PGD
from ncscope.collapse import FeatureTaps, LayerNC
from ncscope.models import classifier_of, default_taps, penultimate_layer
from ncscope.train.config import TrainConfig
from ncscope.train.distributed import (
    DistInfo,
    all_reduce_sum,
    current_dist,
    derive_seed,
    shard_indices,
)
from ncscope.train.history import clean_value
from ncscope.collapse.spool import TensorSpool

__all__ = [
    "SOURCES",
    "Tracker",
    "fetch_batch",
    "num_classes_of",
    "resolve_track_layers",
    "track",
]

#: Measured sources, in row order.
SOURCES: tuple[str, ...] = ("train_clean", "train_perturbed", "train_pgd", "test_clean", "test_pgd")
# Purposes of derived attack seeds (distinct random streams).
PURPOSE_TRAIN_ATTACK = 1
PURPOSE_FRESH_ATTACK = 2
PURPOSE_TEST_ATTACK = 3


def fetch_batch(dataset: Dataset, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Images and labels of ``indices``: one tensor index for in-memory data sets (anything
    with a batch ``__getitem__``, e.g. :class:`ncscope.data.ImageDataset`), else item by item."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if hasattr(dataset, "images") and hasattr(dataset, "targets"):
        x, y = dataset[idx]  # type: ignore[index]
        return x, y
    items = [dataset[int(i)] for i in idx]
    xs = torch.stack([torch.as_tensor(it[0]) for it in items])
    ys = torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
    return xs, ys


def num_classes_of(model: nn.Module, dataset: Dataset | None = None) -> int:
    """Number of classes: the data set's ``info.num_classes``, else the classifier's rows."""
    info = getattr(dataset, "info", None)
    if info is not None and getattr(info, "num_classes", None):
        return int(info.num_classes)
    return int(classifier_of(model).weight.shape[0])


def resolve_track_layers(
    model: nn.Module, spec: str | Sequence[str], example: Tensor | None = None
) -> list[str]:
    """Layer keys to measure.

    ``"penultimate"``: ``[penultimate_layer(model)]`` (``"classifier:in"``). ``"all"``: the
    model's :func:`~ncscope.models.default_taps` followed by the penultimate features; a tap
    whose output *is* the penultimate feature (e.g. the BN-MLP's last block) is dropped, which
    is checked on ``example`` (a small input batch) by one eval-mode forward. A list: those
    layer specs (module names / globs, ``":in"`` suffix), in model order.
    """
    if isinstance(spec, str) and spec == "penultimate":
        return [penultimate_layer(model)]
    if isinstance(spec, str) and spec == "all":
        pen = penultimate_layer(model)
        taps = [t for t in default_taps(model) if t != pen]
        if example is not None and taps:
            modes = [(m, m.training) for m in model.modules()]
            try:
                model.eval()
                with torch.no_grad(), FeatureTaps(model, [*taps, pen]) as ft:
                    model(example)
                    feats = ft.features
            finally:
                for m, was in modes:
                    m.training = was
            taps = [
                t
                for t in taps
                if not (feats[t].shape == feats[pen].shape and torch.equal(feats[t], feats[pen]))
            ]
        return [*taps, pen]
    specs = [spec] if isinstance(spec, str) else list(spec)
    return FeatureTaps(model, specs).names


class _Acc:
    """Cross-entropy sum, correct count and sample count of one source (float64)."""

    def __init__(self, device: torch.device) -> None:
        self.t = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, logits: Tensor, y: Tensor) -> None:
        ce = F.cross_entropy(logits.float(), y, reduction="sum")
        self.t[0] += ce.double()
        self.t[1] += (logits.argmax(dim=1) == y).sum()
        self.t[2] += y.numel()

    def reduce(self, info: DistInfo) -> dict[str, Any]:
        all_reduce_sum(self.t, info)
        loss, correct, n = (float(v) for v in self.t.tolist())
        return {
            "loss": loss / n if n else None,
            "accuracy": correct / n if n else None,
            "n": int(n),
        }


class Tracker:
    """Measures a model after an epoch (see the module docstring for the sources and rows).

    Args:
        model: the (unwrapped) model; measured in eval mode, its modes restored afterwards.
        train_data / test_data: data sets (``test_data`` may be ``None``).
        config: a :class:`TrainConfig` (tracking, attack and seed settings are read from it).
        device: where to run (default: the model's device).
        dist: the process group description (default: single process).
        spool_dir: folder for the scratch file of the fresh attack.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        test_data: Dataset | None = None,
        config: TrainConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dist: DistInfo | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model
        self.train_data = train_data
        self.test_data = test_data
        self.config = config if config is not None else TrainConfig()
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.dist = dist if dist is not None else DistInfo()
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.num_classes = num_classes_of(model, train_data)
        example, _ = fetch_batch(train_data, [0, min(1, len(train_data) - 1)])  # type: ignore[arg-type]
        self.layers = resolve_track_layers(model, self.config.track_layers, example.to(self.device))
        self.penultimate = penultimate_layer(model)
        self.batch_size = self.config.eval_batch_size or self.config.batch_size

    # ------------------------------------------------------------------ helpers
    def _batches(self, data: Dataset) -> Iterator[tuple[Tensor, Tensor]]:
        idx = shard_indices(len(data), self.dist)  # type: ignore[arg-type]
        for i in range(0, len(idx), self.batch_size):
            x, y = fetch_batch(data, idx[i : i + self.batch_size])
            yield x.to(self.device), y.to(self.device)

    def _new_stats(self) -> LayerNC:
        clf = {}
        if self.penultimate in self.layers:
            head = classifier_of(self.model)
            bias = head.bias.detach() if head.bias is not None else None
            clf[self.penultimate] = (head.weight.detach(), bias)
        return LayerNC(self.num_classes, self.layers, clf)

    def _forward(self, taps: FeatureTaps, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad(), taps:
            logits = self.model(x)
            return logits, taps.features

    def _attack(self, epoch: int, purpose: int) -> PGD:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.config.seed, epoch, self.dist.rank, purpose))
        return PGD(
            self.model,
            **self.config.eval_attack,
            random_start=self.config.random_start,
            restarts=self.config.restarts,
            model_mode="eval",
            generator=gen,
            checks="off",
            fast=self.config.fast_attacks,
        )

    def _rows(
        self,
        base: dict[str, Any],
        source: str,
        reference: str,
        stats: LayerNC,
        acc: dict[str, Any],
    ) -> list[dict[str, Any]]:
        try:
            results = stats.compute()
            error = None
        except ValueError as exc:  # e.g. a degenerate reference (all class means equal)
            results = {layer: {} for layer in self.layers}
            error = str(exc).splitlines()[0]
        rows = []
        for layer in self.layers:
            row = {**base, "source": source, "reference": reference, "layer": layer, **acc}
            row.update({k: clean_value(v) for k, v in results[layer].items()})
            if error is not None:
                row["nc_error"] = error
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ measurement
    def measure(
        self,
        epoch: int,
        *,
        perturbed: TensorSpool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Measure every enabled source after (1-based) ``epoch``; returns the rows.

        ``perturbed``: this rank's spool of training-time perturbed batches (AT/TRADES), or
        ``None``. ``extra``: epoch-level columns copied into every row (step, lr, running
        training loss/accuracy). Every rank must call this with the same arguments' kinds
        (the accumulators are all-reduced); every rank gets the same rows.
        """
        cfg = self.config
        model = self.model
        base = {"epoch": int(epoch), **(extra or {})}
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        rows: list[dict[str, Any]] = []
        taps = FeatureTaps(model, self.layers)
        try:
            # train_clean: pass 1 (class means), then pass 2 around them
            clean = self._new_stats()
            acc = _Acc(self.device)
            for x, y in self._batches(self.train_data):
                logits, feats = self._forward(taps, x)
                clean.update(feats, y)
                acc.add(logits, y)
            clean.all_reduce()
            template = copy.deepcopy(clean)  # reference pass only: reused around clean means
            for x, y in self._batches(self.train_data):
                logits, feats = self._forward(taps, x)
                clean.update_measured(feats, y, predictions=logits.argmax(dim=1))
            clean.all_reduce()
            rows += self._rows(base, "train_clean", "train_clean", clean, acc.reduce(self.dist))

            if perturbed is not None:
                rows += self._two_pass(
                    base,
                    "train_perturbed",
                    template,
                    lambda: perturbed.batches(self.batch_size, self.device),
                    None,
                )
            if cfg.fresh_attack:
                attack = self._attack(epoch, PURPOSE_FRESH_ATTACK)
                with TensorSpool(self.spool_dir, f"rank{self.dist.rank}-train_pgd") as spool:
                    rows += self._two_pass(
                        base,
                        "train_pgd",
                        template,
                        lambda: spool.batches(self.batch_size, self.device),
                        (self._batches(self.train_data), attack, spool),
                    )
            if self.test_data is not None and cfg.track_test:
                rows += self._around_clean(
                    base, "test_clean", template, self._batches(self.test_data), None
                )
            if self.test_data is not None and cfg.track_test_attack:
                attack = self._attack(epoch, PURPOSE_TEST_ATTACK)
                rows += self._around_clean(
                    base, "test_pgd", template, self._batches(self.test_data), attack
                )
        finally:
            taps.close()
            for m, was in modes:
                m.training = was
        return rows

    def _around_clean(
        self,
        base: dict[str, Any],
        source: str,
        template: LayerNC,
        batches: Iterator[tuple[Tensor, Tensor]],
        attack: PGD | None,
    ) -> list[dict[str, Any]]:
        taps = FeatureTaps(self.model, self.layers)
        stats = copy.deepcopy(template)
        acc = _Acc(self.device)
        for x, y in batches:
            if attack is not None:
                x = attack(x, y)
            logits, feats = self._forward(taps, x)
            stats.update_measured(feats, y, predictions=logits.argmax(dim=1))
            acc.add(logits, y)
        stats.all_reduce()
        return self._rows(base, source, "train_clean", stats, acc.reduce(self.dist))

    def _two_pass(
        self,
        base: dict[str, Any],
        source: str,
        template: LayerNC,
        replay: Any,
        generate: tuple[Iterator[tuple[Tensor, Tensor]], PGD, TensorSpool] | None,
    ) -> list[dict[str, Any]]:
        """Own-means NC (pass 1 then pass 2 over the spool) and NC around the clean means
        (measured during pass 1). With ``generate`` the spool is filled by attacking the
        batches first, measuring pass 1 on the fly."""
        taps = FeatureTaps(self.model, self.layers)
        own = self._new_stats()
        vs_clean = copy.deepcopy(template)
        acc = _Acc(self.device)

        def first_pass() -> Iterator[tuple[Tensor, Tensor]]:
            if generate is None:
                yield from replay()
                return
            batches, attack, spool = generate
            for x, y in batches:
                x_adv = attack(x, y)
                spool.append(x_adv, y)
                yield x_adv, y

        for x, y in first_pass():
            logits, feats = self._forward(taps, x)
            own.update(feats, y)
            vs_clean.update_measured(feats, y, predictions=logits.argmax(dim=1))
            acc.add(logits, y)
        own.all_reduce()
        for x, y in replay():
            logits, feats = self._forward(taps, x)
            own.update_measured(feats, y, predictions=logits.argmax(dim=1))
        own.all_reduce()
        vs_clean.all_reduce()
        summary = acc.reduce(self.dist)
        return self._rows(base, source, source, own, summary) + self._rows(
            base, source, "train_clean", vs_clean, summary
        )


def track(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None = None,
    config: TrainConfig | None = None,
    *,
    epoch: int = 0,
    perturbed: TensorSpool | None = None,
    extra: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Measure ``model`` once, as the trainer does after a tracked epoch; returns the rows.

    Reusable outside training (e.g. on saved checkpoints, the paper's ST protocol): the
    config supplies ``track_layers``, ``track_fresh_attack`` (``None`` = on for ST),
    ``track_test`` / ``track_test_attack``, the attack settings (``eval_eps`` ... or the
    training ones) and ``seed``; ``epoch`` is only a label and a seed component. Run in the
    current ``torch.distributed`` group if one is initialised.
    """
    dev = torch.device(device) if device is not None else None
    info = current_dist()
    tracker = Tracker(
        model, train_data, test_data, config, device=dev, dist=info, spool_dir=spool_dir
    )
    return tracker.measure(epoch, perturbed=perturbed, extra=extra)

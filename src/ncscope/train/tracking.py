"""Per-epoch measurements: NC of the training model on several sources, through the one sweep.

After a tracked epoch the model is measured by :func:`ncscope.collapse.sweep` (eval mode,
``no_grad``) and the rows follow the declared long schema (:mod:`ncscope.collapse.schema`) with
an ``epoch`` column in front. Sources (Su et al. 2024, §3 protocol):

=================  =======================================================================
``source``         what
=================  =======================================================================
``clean``          the clean training (sub)set — its own NC (``reference="own"``) and the
                   reference every other view is measured around; on ``split="test"`` the
                   test set around the clean training means (test and NCC accuracy)
``perturbed``      AT/TRADES: the perturbed batches generated *during* the epoch (the
                   paper's "robust" NC; spooled to disk, measured with the final weights)
``pgd``            a fresh eval-mode PGD of the training (sub)set (ST default); on
                   ``split="test"`` the PGD test data (robust and NCC robust accuracy)
``training``       the epoch's running statistics (``step``, ``lr``, ``run_loss``,
                   ``run_clean_acc``, ``run_adv_acc``; no layer)
=================  =======================================================================

Kernel dynamics (``TrainConfig.track_ntk``; Tsilivis & Kempe 2022, §5): the empirical NTK of
a fixed stratified probe batch (``track_ntk`` samples per class, fixed by ``data.seed``) after
each tracked epoch, on the clean probe (source ``clean``) and on its fresh tracking PGD
(source ``pgd``): rows without a layer whose metrics are
:data:`ncscope.ntk.KERNEL_METRICS` (:class:`ncscope.ntk.KernelProbe`). The distance to the
initial kernel needs the epoch-0 measurement (``track_init=True``); after a resume the
distances count from the first epoch measured in that process.

Tracking subset: ``TrainConfig.track_subset`` (samples per class, stratified, fixed by
``data.seed``) bounds the cost of the clean passes and of the fresh attacks on the training and
test sets; ``None`` measures the full sets. The training-time perturbations of AT/TRADES are
always measured in full (they cost no attack). Under ``torch.distributed`` each rank measures
its shard and the sweep sums the accumulators after each pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ncscope.attacks import PGD
from ncscope.collapse import Source, sweep
from ncscope.collapse.choose import LAYER_CHOICES, choose_layers, head_of
from ncscope.collapse.spool import TensorSpool
from ncscope.data import stratified_indices
from ncscope.models import as_dataset, classifier_of, find_classifier
from ncscope.models.adapters import as_images, as_labels, collate_pairs
from ncscope.ntk import KernelProbe
from ncscope.train.config import TrainConfig
from ncscope.train.distributed import DistInfo, current_dist, derive_seed, shard_indices
from ncscope.train.history import clean_value

__all__ = [
    "LAYER_CHOICES",
    "SOURCES",
    "Tracker",
    "fetch_batch",
    "num_classes_of",
    "resolve_track_layers",
    "track",
]

#: Measured sources, in row order.
SOURCES: tuple[str, ...] = ("clean", "perturbed", "pgd", "training")
#: Epoch-level columns the trainer passes as ``extra`` (rows of source ``training``).
EPOCH_LOGS = ("step", "lr", "run_loss", "run_clean_acc", "run_adv_acc")
# Purposes of derived attack seeds (distinct random streams).
PURPOSE_TRAIN_ATTACK = 1
PURPOSE_FRESH_ATTACK = 2
PURPOSE_TEST_ATTACK = 3
PURPOSE_KERNEL_ATTACK = 4


def fetch_batch(dataset: Dataset, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Images and labels of ``indices``: one tensor index for in-memory data sets (an
    :class:`ncscope.data.ImageDataset`, a ``TensorDataset``), else item by item (numpy images
    become float32)."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if hasattr(dataset, "images") and hasattr(dataset, "targets"):
        x, y = dataset[idx]  # type: ignore[index]
        return x, y
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple | list) and len(tensors) >= 2:
        return as_images(tensors[0][idx]), as_labels(tensors[1][idx])
    return collate_pairs([dataset[int(i)] for i in idx])


def labels_of(dataset: Dataset) -> Tensor:
    """All labels of a data set (``targets`` or the ``tensors`` of a TensorDataset when it has
    them, else item by item)."""
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets).long()  # type: ignore[attr-defined]
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple | list) and len(tensors) >= 2:
        return as_labels(tensors[1])
    return as_labels([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def num_classes_of(model: nn.Module, dataset: Dataset | None = None,
                   classifier: str | None = None) -> int:
    """Number of classes: the data set's ``info.num_classes``, else the rows of the classifier
    (``classifier``: its name, :func:`ncscope.models.find_classifier`)."""
    info = getattr(dataset, "info", None)
    if info is not None and getattr(info, "num_classes", None):
        return int(info.num_classes)
    return int(classifier_of(model, classifier).weight.shape[0])


def resolve_track_layers(
    model: nn.Module, spec: str | Sequence[str], example: Tensor | None = None,
    classifier: str | None = None,
) -> list[str]:
    """Layer keys to measure (:func:`ncscope.collapse.choose.choose_layers`): ``"penultimate"``,
    ``"all"`` (default taps + penultimate, repeats dropped on ``example``) or layer specs."""
    return choose_layers(model, spec, example, classifier)


def tracking_indices(dataset: Dataset, per_class: int | None, seed: int) -> list[int]:
    """The stratified tracking subset: ``per_class`` × K samples (all when ``None`` or when the
    set is smaller), class proportions kept, fixed by ``seed``."""
    n = len(dataset)  # type: ignore[arg-type]
    if per_class is None:
        return list(range(n))
    y = labels_of(dataset)
    k = int(y.max()) + 1 if len(y) else 1
    size = min(n, per_class * k)
    return [int(i) for i in stratified_indices(y, size, seed=seed)] if size < n else list(range(n))


class Tracker:
    """Measures a model after an epoch (see the module docstring for the sources and rows).

    Args:
        model: the (unwrapped) model; measured in eval mode, its modes restored afterwards.
        train_data / test_data: data sets (``test_data`` may be ``None``): any map-style data
            set of ``(x, y)``, or ``(X, y)`` as tensors or numpy arrays
            (:func:`ncscope.models.as_dataset`).
        config: a :class:`TrainConfig` (tracking, attack and seed settings are read from it).
        device: where to run (default: the model's device).
        dist: the process group description (default: single process).
        spool_dir: folder for the scratch files of the fresh attack.
        classifier: name of the final ``nn.Linear`` (default: ``config.model.classifier``, else
            found on a probe batch by :func:`ncscope.models.find_classifier`).
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
        classifier: str | None = None,
    ) -> None:
        self.model = model
        self.train_data = as_dataset(train_data)
        self.test_data = None if test_data is None else as_dataset(test_data)
        self.config = config if config is not None else TrainConfig()
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.dist = dist if dist is not None else DistInfo()
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        train_data = self.train_data
        example, _ = fetch_batch(train_data, [0, min(1, len(train_data) - 1)])  # type: ignore[arg-type]
        example = example.to(self.device)
        section = getattr(self.config, "model", None)
        named = classifier or getattr(section, "classifier", None)
        self.classifier = find_classifier(model, named, example)
        self.num_classes = num_classes_of(model, train_data, self.classifier)
        self.layers = resolve_track_layers(model, self.config.track_layers, example,
                                           self.classifier)
        self.batch_size = self.config.eval_batch_size or self.config.batch_size
        subset = getattr(self.config, "track_subset", None)
        data = getattr(self.config, "data", None)
        seed = data.seed if data is not None else 0
        self.train_index = tracking_indices(train_data, subset, seed)
        self.test_index = (None if test_data is None
                           else tracking_indices(test_data, subset, seed + 1))
        self.kernel_probes: dict[str, KernelProbe] = {}
        per_class = getattr(self.config, "track_ntk", None)
        if per_class is not None:
            x, y = fetch_batch(train_data, tracking_indices(train_data, per_class, seed + 2))
            for view in ("clean", "pgd"):
                self.kernel_probes[view] = KernelProbe(
                    x.to(self.device), y.to(self.device),
                    mode=getattr(self.config, "track_ntk_mode", "trace"))

    def _batches(self, data: Dataset, index: list[int]) -> Iterator[tuple[Tensor, Tensor]]:
        mine = [index[i] for i in shard_indices(len(index), self.dist)]
        for i in range(0, len(mine), self.batch_size):
            yield fetch_batch(data, mine[i : i + self.batch_size])

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

    def sources(self, epoch: int, perturbed: TensorSpool | None = None) -> list[Source]:
        """The sweep sources of a tracked ``epoch`` (see the module docstring)."""
        cfg = self.config
        test = self.test_data is not None
        out = [Source("clean", splits=("train", "test") if test and cfg.track_test
                      else ("train",))]
        if perturbed is not None:
            out.append(Source("perturbed", recorded=lambda: perturbed.batches(self.batch_size)))
        if cfg.fresh_attack:
            out.append(Source("pgd", self._attack(epoch, PURPOSE_FRESH_ATTACK), splits=("train",)))
        if test and cfg.track_test_attack:
            out.append(Source("pgd", self._attack(epoch, PURPOSE_TEST_ATTACK), splits=("test",)))
        return out

    def measure(
        self,
        epoch: int,
        *,
        perturbed: TensorSpool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Measure every enabled source after (1-based) ``epoch``; returns the rows.

        ``perturbed``: this rank's spool of training-time perturbed batches (AT/TRADES), or
        ``None``. ``extra``: the epoch's running statistics (step, lr, running training
        loss/accuracy), emitted as rows of source ``training``. Every rank must call this with
        the same arguments' kinds (the accumulators are all-reduced); every rank gets the same
        rows.
        """
        test = self.test_data is not None and (self.config.track_test
                                               or self.config.track_test_attack)
        df = sweep(
            self.model,
            lambda: self._batches(self.train_data, self.train_index),
            self.sources(epoch, perturbed),
            layers=self.layers,
            num_classes=self.num_classes,
            classifiers=head_of(self.model, self.layers, self.classifier),
            test_data=(lambda: self._batches(self.test_data, self.test_index)) if test else None,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            device=self.device,
            spool_dir=self.spool_dir,
            per_class=False,
        )
        rows = [{"epoch": int(epoch), **{k: clean_value(v) for k, v in r.items()}}
                for r in df.to_dict(orient="records")]
        for r in rows:
            r["class"] = None
        rows.extend(self.kernel_rows(epoch))
        for name in EPOCH_LOGS:
            if extra and name in extra:
                rows.append({"epoch": int(epoch), "layer": None, "depth": None,
                             "source": "training", "split": "train", "reference": None,
                             "group": None, "metric": name, "value": clean_value(extra[name]),
                             "class": None})
        return rows


    def kernel_rows(self, epoch: int) -> list[dict[str, Any]]:
        """Kernel-dynamics rows of ``epoch`` (empty unless ``track_ntk`` is set; see the module
        docstring); every rank computes the same probe kernels."""
        if not self.kernel_probes:
            return []
        clean = self.kernel_probes["clean"]
        attack = self._attack(epoch, PURPOSE_KERNEL_ATTACK)
        views = {"clean": clean.x, "pgd": attack(clean.x, clean.labels)}
        rows = []
        for view, x in views.items():
            for metric, value in self.kernel_probes[view].measure(self.model, x).items():
                rows.append({"epoch": int(epoch), "layer": None, "depth": None, "source": view,
                             "split": "train", "reference": None, "group": "label",
                             "metric": metric, "value": value, "class": None})
        return rows


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
    config supplies ``track_layers``, ``track_subset``, ``track_fresh_attack`` (``None`` = on
    for ST), ``track_test`` / ``track_test_attack``, the attack settings (``eval_eps`` ... or
    the training ones) and ``seed``; ``epoch`` is only a label and a seed component. Run in
    the current ``torch.distributed`` group if one is initialised.
    """
    dev = torch.device(device) if device is not None else None
    info = current_dist()
    tracker = Tracker(
        model, train_data, test_data, config, device=dev, dist=info, spool_dir=spool_dir
    )
    return tracker.measure(epoch, perturbed=perturbed, extra=extra)

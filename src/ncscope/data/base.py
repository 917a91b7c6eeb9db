"""Core data types shared by every ncscope dataset: :class:`DatasetInfo`, the in-memory
:class:`ImageDataset`, balanced / stratified subsetting and a seeded :func:`make_loader`.

Conventions (Su et al. 2024, experimental setup): images are float32 pixels in ``[0, 1]`` with shape
``(N, C, H, W)``; labels are int64 in ``0..C-1``; there is **no augmentation** (the paper keeps
"exactly the training data" for Neural Collapse, as Papyan et al. 2020 did). Normalisation is
*not* applied to the data: models own it (:class:`ncscope.models.Normalize`), so attacks work
in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageDataset",
    "UnknownNameError",
    "balanced_indices",
    "make_loader",
    "stratified_indices",
]


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a data set's files are missing; the message says how to obtain them."""


class UnknownNameError(KeyError, ValueError):
    """Unknown registry name (data set or model); the message lists the valid names.

    Subclasses both ``KeyError`` (registry lookup) and ``ValueError`` (bad argument value).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set.

    Attributes:
        name: registry name (e.g. ``"cifar10"``).
        num_classes: number of classes ``C``.
        input_shape: ``(C_in, H, W)`` of one image as returned by the loader.
        mean, std: per-channel normalisation statistics (pixel units, one value per channel),
            used by :class:`ncscope.models.Normalize` inside the model.
        classes: optional class names, index = label.
        default_model: name of the ncscope model usually paired with this data set.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = field(default=None, compare=False)
    default_model: str | None = None

    def __post_init__(self) -> None:
        c = self.input_shape[0]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(
                f"{self.name}: mean/std need {c} values (one per channel), "
                f"got {len(self.mean)}/{len(self.std)}"
            )


def _as_index(index: Any) -> Any:
    if isinstance(index, (list, tuple, np.ndarray)):
        return torch.as_tensor(np.asarray(index), dtype=torch.long)
    return index


class ImageDataset(Dataset):
    """In-memory image data set: ``images`` float32 ``(N, C, H, W)`` in [0, 1], ``targets`` int64.

    Behaves like :class:`torch.utils.data.TensorDataset` (``ds[i] -> (x, y)``, ``ds.tensors``),
    and additionally accepts a list / array / tensor of indices, returning a whole batch at once
    (used by :func:`make_loader` for fast batching). ``info`` holds the :class:`DatasetInfo`.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        targets: torch.Tensor | np.ndarray,
        info: DatasetInfo,
        split: str = "train",
    ) -> None:
        images = torch.as_tensor(images, dtype=torch.float32)
        targets = torch.as_tensor(targets, dtype=torch.long)
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if targets.shape != (images.shape[0],):
            raise ValueError(
                f"targets must have shape ({images.shape[0]},), got {tuple(targets.shape)}"
            )
        self.images = images.contiguous()
        self.targets = targets.contiguous()
        self.info = info
        self.split = split

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, targets)``, as in :class:`torch.utils.data.TensorDataset`."""
        return self.images, self.targets

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        index = _as_index(index)
        return self.images[index], self.targets[index]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """A new :class:`ImageDataset` holding only ``indices`` (in the given order)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageDataset(self.images[idx], self.targets[idx], self.info, self.split)

    def class_counts(self) -> torch.Tensor:
        """Number of examples per class (length ``info.num_classes``)."""
        return torch.bincount(self.targets, minlength=self.info.num_classes)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.info.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={tuple(self.images.shape[1:])})"
        )


def _to_numpy_labels(targets: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        return targets.detach().cpu().numpy().astype(np.int64)
    return np.asarray(targets, dtype=np.int64)


def balanced_indices(
    targets: torch.Tensor | np.ndarray | Sequence[int], n_per_class: int, seed: int = 0
) -> np.ndarray:
    """Indices of a class-balanced subset with exactly ``n_per_class`` examples of each class.

    Deterministic in ``seed`` (numpy ``default_rng``); the returned indices are sorted, so the
    subset keeps the original order. Raises ``ValueError`` when a class has fewer examples.
    """
    y = _to_numpy_labels(targets)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < n_per_class:
            raise ValueError(
                f"class {int(c)} has only {len(idx)} examples, fewer than n_per_class={n_per_class}"
            )
        chosen.append(rng.permutation(idx)[:n_per_class])
    return np.sort(np.concatenate(chosen))


def stratified_indices(
    targets: torch.Tensor | np.ndarray | Sequence[int], n: int, seed: int = 0
) -> np.ndarray:
    """Indices of a stratified subset of size ``n`` (class proportions kept).

    Per-class quotas are ``n * N_c / N`` rounded by the largest-remainder method (ties go to the
    lower class index), so a balanced data set gives a balanced subset whenever ``C`` divides
    ``n``. Deterministic in ``seed``; indices are sorted.
    """
    y = _to_numpy_labels(targets)
    total = len(y)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be in [1, {total}], got {n}")
    classes, counts = np.unique(y, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    remainder = exact - quota
    order = sorted(range(len(classes)), key=lambda k: (-remainder[k], k))
    for k in order[: n - int(quota.sum())]:
        quota[k] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _batch_convert(batch: Any) -> Any:
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int = 128,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` with a deterministic, seeded order.

    The shuffling order comes from a ``torch.Generator`` seeded with ``seed``: two loaders made
    with the same arguments yield identical batch sequences, epoch after epoch. For an in-memory
    :class:`ImageDataset` batches are gathered with one tensor index per batch (no per-item
    collate), which is much faster for small images. Batch size 128 and ``shuffle=True`` are the
    paper's training settings (Su et al. 2024, experimental setup).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if isinstance(dataset, ImageDataset):
        base: RandomSampler | SequentialSampler
        if shuffle:
            base = RandomSampler(dataset, generator=generator)
        else:
            base = SequentialSampler(dataset)
        sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=sampler,
            collate_fn=_batch_convert,
            num_workers=num_workers,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=num_workers,
    )

"""Data-set registry: :data:`DATASETS`, :func:`load_dataset`, :func:`get_dataset_info`.

Every loader returns images as float32 pixels in [0, 1], shape ``(N, C, H, W)``, int64 labels,
no augmentation (Su et al. 2024); the data set's :class:`DatasetInfo` (with the per-data-set
normalisation statistics that models apply internally) is attached as ``dataset.info``.

Where files live: an explicit ``root`` wins; otherwise ``$NCSCOPE_DATA_DIR/<dataset dir>`` when
that environment variable is set; Fashion-MNIST falls back to Debian's
``/usr/share/datasets/fashion-mnist``. Nothing is downloaded unless ``download=True`` (which
needs torchvision). A missing directory raises :class:`DatasetNotFoundError` whose one-line
message says how to obtain the data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ncscope.data.base import (
    DatasetInfo,
    DatasetNotFoundError,
    UnknownNameError,
    balanced_indices,
    stratified_indices,
)
from ncscope.data.builtin import BUILTIN
from ncscope.data.spec import DatasetSpec

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DatasetSpec",
    "available_datasets",
    "get_dataset_info",
    "load_dataset",
    "register_dataset",
]

DATA_DIR_ENV = "NCSCOPE_DATA_DIR"

#: Registered data sets (the built-ins first; :func:`register_dataset` adds more).
DATASETS: dict[str, DatasetSpec] = dict(BUILTIN)

_ALIASES = {
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "imagenette2_160": "imagenette",
    "imagenette_160": "imagenette",
    "sklearn_digits": "digits",
}

_SPLIT_ALIASES = {"val": "test", "valid": "test", "validation": "test"}


def available_datasets() -> list[str]:
    """Sorted names accepted by :func:`load_dataset` (aliases such as ``fmnist`` not listed)."""
    return sorted(DATASETS)


def register_dataset(name: str, spec: DatasetSpec, *, overwrite: bool = False) -> None:
    """Add a user data set to :data:`DATASETS` (``loader(root, split, download, **options)``)."""
    key = _canonical(name)
    if key in DATASETS and not overwrite:
        raise ValueError(f"data set {key!r} is already registered (pass overwrite=True)")
    DATASETS[key] = spec


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def _spec(name: str) -> tuple[str, DatasetSpec]:
    key = _canonical(name)
    if key not in DATASETS:
        raise UnknownNameError(
            f"unknown data set {name!r}; valid names: {', '.join(available_datasets())}"
        )
    return key, DATASETS[key]


def get_dataset_info(name: str) -> DatasetInfo:
    """The static :class:`DatasetInfo` of a registered data set (no files are read).

    For ``"synthetic"`` this is the info of the default generator arguments.
    """
    return _spec(name)[1].info


def _resolve_root(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> Path | None:
    if not spec.needs_root:
        return None
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        candidate = Path(env).expanduser() / spec.env_subdir
        if candidate.exists() or spec.default_root is None:
            return candidate
    return spec.default_root


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    n_per_class: int | None = None,
    n_train: int | None = None,
    download: bool = False,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load one split of a registered data set as float32 [0, 1] images and int64 labels.

    Args:
        name: a name from :func:`available_datasets` (case-insensitive; ``-`` = ``_``).
        root: folder holding the files (see the module docstring for defaults).
        split: ``"train"`` or ``"test"`` (``"val"`` is an alias of ``"test"``; SVHN also has
            ``"extra"``).
        n_per_class: keep exactly this many examples of every class (balanced subset).
        n_train: keep a stratified subset of this size (class proportions kept; balanced for a
            balanced data set). Applies to whichever split is loaded; ``n_per_class`` and
            ``n_train`` are mutually exclusive.
        download: opt in to downloading missing files with torchvision.
        seed: seed of the (deterministic) subset choice; the data themselves do not depend on it.
        **options: loader-specific options -- digits: ``split_seed``; synthetic:
            ``num_classes, shape, size, noise, data_seed``; imagenette: ``crop, in_memory``.

    Returns:
        an :class:`ImageDataset` (in memory) or, for ImageNette unless ``in_memory=True``, a
        lazily loading :class:`ImageFolderDataset`; either has ``.targets``, ``.info`` and
        ``.subset()``.
    """
    key, spec = _spec(name)
    split = _SPLIT_ALIASES.get(split, split)
    if split not in spec.splits:
        raise ValueError(f"{key}: unknown split {split!r}; valid splits: {', '.join(spec.splits)}")
    if n_per_class is not None and n_train is not None:
        raise ValueError("pass at most one of n_per_class and n_train")
    if download and spec.needs_root and root is None and not os.environ.get(DATA_DIR_ENV):
        raise DatasetNotFoundError(
            f"{key}: download=True needs root=<folder to download into> (or ${DATA_DIR_ENV})"
        )
    ds = spec.loader(_resolve_root(spec, root), split, download, **options)
    if n_per_class is not None:
        ds = ds.subset(balanced_indices(ds.targets, n_per_class, seed))  # type: ignore[attr-defined]
    elif n_train is not None:
        ds = ds.subset(stratified_indices(ds.targets, n_train, seed))  # type: ignore[attr-defined]
    return ds

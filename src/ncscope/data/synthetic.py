"""Seeded class-conditional synthetic images, for tests and quick experiments (no files).

Class ``k`` has a fixed mean image ``m_k`` drawn uniformly from ``[0.2, 0.8]`` per pixel (from
``data_seed``); an example is ``clip(m_k + noise * N(0, 1), 0, 1)``. Train and test are drawn
from independent streams of the same generator family, so the two splits share class means but
never share examples. Any image shape ``(C, H, W)`` and any number of classes.
"""

from __future__ import annotations

import numpy as np

from ncscope.data.base import DatasetInfo, ImageDataset

__all__ = ["make_synthetic"]

_SPLIT_STREAM = {"train": 1, "test": 2}


def _draw(
    num_classes: int, shape: tuple[int, int, int], size: int, noise: float, seed: int, split: str
) -> tuple[np.ndarray, np.ndarray]:
    means = np.random.default_rng([seed, 0]).uniform(0.2, 0.8, size=(num_classes, *shape))
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    y = np.repeat(np.arange(num_classes, dtype=np.int64), size)
    x = means[y] + noise * rng.standard_normal((len(y), *shape))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y


def make_synthetic(
    num_classes: int = 10,
    shape: tuple[int, int, int] = (1, 8, 8),
    size: int = 50,
    noise: float = 0.15,
    data_seed: int = 0,
    split: str = "train",
) -> ImageDataset:
    """Generate a balanced synthetic split with ``size`` examples per class.

    The :class:`DatasetInfo` (name ``"synthetic"``) carries the per-channel mean / std of the
    *train* split generated with the same arguments, so train and test share statistics.
    """
    if split not in _SPLIT_STREAM:
        raise ValueError(f"synthetic split must be 'train' or 'test', got {split!r}")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    if num_classes < 2 or size < 1:
        raise ValueError("synthetic data needs num_classes >= 2 and size >= 1")
    x_train, y_train = _draw(num_classes, shape, size, noise, data_seed, "train")
    mean = tuple(float(v) for v in x_train.mean(axis=(0, 2, 3)))
    std = tuple(float(max(v, 1e-6)) for v in x_train.std(axis=(0, 2, 3)))
    info = DatasetInfo(
        name="synthetic",
        num_classes=num_classes,
        input_shape=shape,
        mean=mean,
        std=std,
        default_model="bn_mlp",
    )
    if split == "train":
        return ImageDataset(x_train, y_train, info, split)
    x, y = _draw(num_classes, shape, size, noise, data_seed, split)
    return ImageDataset(x, y, info, split)

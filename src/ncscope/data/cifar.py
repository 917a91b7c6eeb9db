"""CIFAR-10 / CIFAR-100 from the official "python version" pickle batches.

Layouts: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``; each batch is a pickled dict with ``b"data"``
(N x 3072 uint8, channel-major 3x32x32) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
(CIFAR-100). ``root`` may be the extracted folder itself or its parent.
Normalisation statistics are the paper's (Su et al. 2024, experimental setup).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ncscope.data.base import DatasetInfo

__all__ = ["CIFAR10_INFO", "CIFAR100_INFO", "find_cifar_dir", "read_cifar"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    num_classes=10,
    input_shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2471, 0.2435, 0.2616),
    classes=CIFAR10_CLASSES,
    default_model="vgg11_bn",
)

CIFAR100_INFO = DatasetInfo(
    name="cifar100",
    num_classes=100,
    input_shape=(3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    default_model="vgg11_bn",
)

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}


def find_cifar_dir(root: Path, name: str) -> Path | None:
    """The folder holding the pickle batches of ``name`` (``root`` or ``root/<standard dir>``)."""
    folder, train, _ = _LAYOUT[name]
    for base in (root, root / folder):
        if all((base / f).is_file() for f in train):
            return base
    return None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def _class_names(base: Path, name: str) -> tuple[str, ...] | None:
    if name == "cifar10":
        meta_file, key = "batches.meta", b"label_names"
    else:
        meta_file, key = "meta", b"fine_label_names"
    if not (base / meta_file).is_file():
        return None
    names = _unpickle(base / meta_file).get(key)
    if names is None:
        return None
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_cifar(base: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Read a CIFAR split: float32 images ``(N, 3, 32, 32)`` in [0, 1], int64 labels, names."""
    _, train_files, test_files = _LAYOUT[name]
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    xs, ys = [], []
    for fname in train_files if split == "train" else test_files:
        batch = _unpickle(base / fname)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    x = np.concatenate(xs).astype(np.float32) / 255.0
    return x, np.concatenate(ys), _class_names(base, name)

"""SVHN (cropped digits) from the official MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``
(and optionally ``extra_32x32.mat``), read with ``scipy.io.loadmat``.

The files hold ``X`` of shape (32, 32, 3, N) uint8 and ``y`` of shape (N, 1) with labels 1..10,
where 10 stands for the digit 0; labels are mapped to 0..9 (``10 -> 0``) as torchvision does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncscope.data.base import DatasetInfo

__all__ = ["SVHN_INFO", "read_svhn"]

# Standard SVHN train-split statistics (as commonly used with torchvision's SVHN).
SVHN_INFO = DatasetInfo(
    name="svhn",
    num_classes=10,
    input_shape=(3, 32, 32),
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    classes=tuple(str(i) for i in range(10)),
    default_model="vgg11_bn",
)


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one SVHN ``.mat`` file: float32 ``(N, 3, 32, 32)`` in [0, 1] and int64 labels 0..9."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    x = np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1).astype(np.float32) / 255.0
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    y = np.where(y == 10, 0, y)
    return np.ascontiguousarray(x), y

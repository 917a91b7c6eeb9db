"""IDX reader (the MNIST / Fashion-MNIST file format) and the two IDX-based data sets.

IDX layout (LeCun et al.): 2 zero bytes, one type byte (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), one byte ``ndim``, then ``ndim`` big-endian uint32
dimensions, then the data in big-endian C order. Files may be gzip-compressed (``.gz``).

Fashion-MNIST is read by default from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); MNIST from a user directory.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "find_idx_pair",
    "load_idx_split",
    "read_idx",
]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``) into a numpy array of its stored shape.

    Raises ``ValueError`` for a malformed header or a size mismatch.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX payload has {len(data) - header} bytes, "
            f"expected {count * dtype.itemsize} for shape {shape}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


_PREFIX = {"train": "train", "test": "t10k"}


def find_idx_pair(
    root: Path, split: str, subdirs: tuple[str, ...] = ()
) -> tuple[Path, Path] | None:
    """Locate ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``.

    ``prefix`` is ``train`` or ``t10k``; ``root`` and ``root/<subdir>`` for each of ``subdirs``
    (e.g. torchvision's ``MNIST/raw``) are searched. Returns ``None`` when not found.
    """
    prefix = _PREFIX[split]
    for base in (root, *(root / s for s in subdirs)):
        found = []
        for kind, nd in (("images", 3), ("labels", 1)):
            stem = f"{prefix}-{kind}-idx{nd}-ubyte"
            hit = next((base / n for n in (stem + ".gz", stem) if (base / n).is_file()), None)
            found.append(hit)
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def load_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load an IDX image/label pair as float32 ``(N, 1, H, W)`` in [0, 1] and int64 labels."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected a 3-d IDX image array, got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels "
            f"for {images.shape[0]} images"
        )
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    return x[:, None, :, :], labels.astype(np.int64)

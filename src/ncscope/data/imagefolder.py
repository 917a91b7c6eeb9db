"""ImageNette-160 (and any ImageFolder tree) as a lazily loading data set.

Layout (torchvision ``ImageFolder`` convention): ``root/train/<class>/*.JPEG`` and
``root/val/<class>/*.JPEG``; classes are the sorted sub-folder names, label = index. Each image is
converted to RGB, centre-cropped to ``crop x crop`` (default 160, the paper's
``CenterCrop(160)``; smaller images are zero-padded symmetrically as torchvision does) and
turned into a float32 tensor in [0, 1] -- no resizing, no augmentation
(Su et al. 2024, Appendix F). PIL is imported lazily (it comes with matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ncscope.data.base import DatasetInfo, ImageDataset

__all__ = ["IMAGENETTE_INFO", "IMG_EXTENSIONS", "ImageFolderDataset", "center_crop_array"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")

IMAGENETTE_CLASSES = (
    "tench", "English springer", "cassette player", "chain saw", "church",
    "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
)  # fmt: skip

IMAGENETTE_INFO = DatasetInfo(
    name="imagenette",
    num_classes=10,
    input_shape=(3, 160, 160),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    classes=IMAGENETTE_CLASSES,
    default_model="vgg11_bn_imagenette",
)


def center_crop_array(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an ``(H, W, C)`` array to ``size x size`` like torchvision's ``CenterCrop``.

    Smaller sides are first zero-padded (left/top get ``(size - s) // 2``), then the crop offset is
    ``round((s - size) / 2)``.
    """
    h, w = img.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        h, w = img.shape[:2]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img[top : top + size, left : left + size]


def _load_image(path: Path, crop: int) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - PIL ships with matplotlib
        raise ImportError(
            "reading image folders needs Pillow: pip install pillow (it comes with matplotlib)"
        ) from exc
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    arr = center_crop_array(arr, crop)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def scan_image_folder(split_dir: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """List ``(files, labels, class_folder_names)`` of an ImageFolder split, sorted by name."""
    classes = tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir()))
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        for f in sorted((split_dir / cls).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS:
                files.append(f)
                labels.append(label)
    return files, labels, classes


class ImageFolderDataset(Dataset):
    """Lazily loading image-folder data set (ImageNette-160 by default).

    ``ds[i] -> (x, y)`` with ``x`` float32 ``(3, crop, crop)`` in [0, 1]; a list / array / tensor
    of indices returns a stacked batch. ``targets`` (int64), ``files``, ``classes`` and ``info``
    are available without reading any image; :meth:`to_memory` loads everything into an
    :class:`ImageDataset`.
    """

    def __init__(
        self,
        files: Sequence[Path],
        targets: Sequence[int] | torch.Tensor,
        info: DatasetInfo,
        split: str = "train",
        crop: int = 160,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64), dtype=torch.long)
        if len(self.files) != len(self.targets):
            raise ValueError("files and targets differ in length")
        self.info = info
        self.split = split
        self.crop = int(crop)
        self.classes = tuple(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, (list, tuple, np.ndarray, torch.Tensor)):
            idx = [int(i) for i in np.asarray(index).reshape(-1)]
            xs = [_load_image(self.files[i], self.crop) for i in idx]
            return torch.stack(xs), self.targets[idx]
        return _load_image(self.files[index], self.crop), self.targets[index]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageFolderDataset:
        """A new lazily loading data set holding only ``indices`` (in the given order)."""
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        return ImageFolderDataset(
            [self.files[i] for i in idx],
            self.targets[idx],
            self.info,
            self.split,
            self.crop,
            self.classes,
        )

    def class_counts(self) -> torch.Tensor:
        """Number of examples per class (length ``info.num_classes``)."""
        return torch.bincount(self.targets, minlength=self.info.num_classes)

    def to_memory(self) -> ImageDataset:
        """Read every image now and return an in-memory :class:`ImageDataset`."""
        if len(self) == 0:
            images = torch.zeros((0, *self.info.input_shape))
        else:
            images = torch.stack([_load_image(f, self.crop) for f in self.files])
        return ImageDataset(images, self.targets, self.info, self.split)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset({self.info.name!r}, split={self.split!r}, n={len(self)}, "
            f"crop={self.crop})"
        )

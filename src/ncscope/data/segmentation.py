"""Mini-M2NIST: a small semantic-segmentation data set built from scikit-learn's 8×8 digits.

M2NIST (the multi-digit MNIST segmentation set of the NNV segmentation experiments, Tran et
al., CAV 2021) places several MNIST digits on one canvas and labels every pixel with its
digit's class or background. Here, at CPU scale: 2–3 digits of the embedded digits data set
(each 8×8, pixels in [0, 1]) are placed in non-overlapping boxes on a ``16 × 32`` canvas (by
default); a pixel gets the class of the digit whose intensity there is > 0 and the background
class 10 otherwise. Digits of the ``train`` canvases come from the digits train split, those
of ``test`` canvases from its test split. Seeded: the same arguments give the same set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ncscope.data.digits import load_digits_dataset

__all__ = ["BACKGROUND", "SegmentationSet", "mini_m2nist"]

#: Class of background pixels (the ten digit classes are 0-9).
BACKGROUND = 10


@dataclass
class SegmentationSet:
    """Images ``x`` ``(N, 1, H, W)`` in [0, 1] (float32) and masks ``(N, H, W)`` (int64)."""

    x: torch.Tensor
    masks: torch.Tensor
    num_classes: int = 11

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _boxes(rng: np.random.Generator, count: int, h: int, w: int, size: int
           ) -> list[tuple[int, int]]:
    """``count`` top-left corners of non-overlapping ``size × size`` boxes (rejection)."""
    for _ in range(1000):
        out: list[tuple[int, int]] = []
        for _ in range(200):
            r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            if all(abs(r - r2) >= size or abs(c - c2) >= size for r2, c2 in out):
                out.append((r, c))
                if len(out) == count:
                    return out
    raise ValueError(f"mini_m2nist: {count} digit boxes of {size}x{size} do not fit on a "
                     f"{h}x{w} canvas; enlarge canvas or lower digits")


def mini_m2nist(n: int, split: str = "train", seed: int = 0, canvas: tuple[int, int] = (16, 32),
                digits: tuple[int, int] = (2, 3)) -> SegmentationSet:
    """``n`` canvases with ``digits[0]``..``digits[1]`` digits each (see the module doc)."""
    if n < 1:
        raise ValueError(f"mini_m2nist: n={n} must be >= 1")
    if split not in ("train", "test"):
        raise ValueError(f"mini_m2nist: split={split!r} must be 'train' or 'test'")
    h, w = canvas
    if h < 8 or w < 8:
        raise ValueError(f"mini_m2nist: canvas={canvas} must be at least 8x8")
    if not 1 <= digits[0] <= digits[1]:
        raise ValueError(f"mini_m2nist: digits={digits} must be (low, high) with 1 <= low <= "
                         "high")
    src = load_digits_dataset(split)
    images, labels = src.tensors
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    x = np.zeros((n, 1, h, w), dtype=np.float32)
    masks = np.full((n, h, w), BACKGROUND, dtype=np.int64)
    for i in range(n):
        count = int(rng.integers(digits[0], digits[1] + 1))
        for r, c in _boxes(rng, count, h, w, 8):
            k = int(rng.integers(0, len(labels)))
            img = images[k, 0].numpy()
            x[i, 0, r:r + 8, c:c + 8] = img
            masks[i, r:r + 8, c:c + 8][img > 0] = int(labels[k])
    return SegmentationSet(torch.from_numpy(x), torch.from_numpy(masks))

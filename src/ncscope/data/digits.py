"""scikit-learn's bundled 8x8 handwritten digits: the embedded default data set (no download).

1797 images, 10 classes, pixels 0..16 scaled to [0, 1] by ``pixel / 16``; shape ``(N, 1, 8, 8)``.
Fixed stratified split: ``sklearn.model_selection.train_test_split(test_size=450,
stratify=y, random_state=0)`` -> **1347 train / 450 test** (the split size of the reference
CPU experiment, the su2024 study's digits recipe); train class counts 131..137, test 43..46.
"""

from __future__ import annotations

import numpy as np

from ncscope.data.base import DatasetInfo, ImageDataset

__all__ = ["DIGITS_INFO", "DIGITS_SPLIT_SEED", "DIGITS_TEST_SIZE", "load_digits_dataset"]

DIGITS_TEST_SIZE = 450
DIGITS_SPLIT_SEED = 0

# Per-channel statistics of the 1347-image train split (pixel/16), population std.
DIGITS_INFO = DatasetInfo(
    name="digits",
    num_classes=10,
    input_shape=(1, 8, 8),
    mean=(0.3052247,),
    std=(0.3760056,),
    classes=tuple(str(i) for i in range(10)),
    default_model="bn_mlp",
)


def load_digits_dataset(split: str = "train", split_seed: int = DIGITS_SPLIT_SEED) -> ImageDataset:
    """Load the train or test split of scikit-learn's digits as an :class:`ImageDataset`.

    ``split_seed`` is the ``random_state`` of the stratified split (default 0, the documented
    1347/450 split); indices are sorted so each split keeps the original order.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=y, random_state=split_seed
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return ImageDataset(x[idx], y[idx], DIGITS_INFO, split)

"""Data sets for ncscope (Su et al. 2024): pixels in [0, 1], no augmentation;
models normalise.

Built in: ``digits`` (scikit-learn, embedded default, 1347/450 stratified split),
``fashion_mnist`` (Debian ``dataset-fashion-mnist`` IDX files), ``mnist`` (IDX),
``cifar10`` / ``cifar100`` (python pickle batches), ``svhn`` (``.mat``), ``imagenette``
(ImageFolder, CenterCrop 160, lazy) and ``synthetic`` (seeded class-conditional images).
This package imports nothing else from ncscope.
"""

from ncscope.data.base import (
    DatasetInfo,
    DatasetNotFoundError,
    ImageDataset,
    UnknownNameError,
    balanced_indices,
    make_loader,
    stratified_indices,
)
from ncscope.data.builtin import FASHION_MNIST_INFO, MNIST_INFO
from ncscope.data.cifar import CIFAR10_INFO, CIFAR100_INFO
from ncscope.data.digits import DIGITS_INFO, load_digits_dataset
from ncscope.data.idx import read_idx
from ncscope.data.imagefolder import IMAGENETTE_INFO, ImageFolderDataset
from ncscope.data.registry import (
    DATA_DIR_ENV,
    DATASETS,
    available_datasets,
    get_dataset_info,
    load_dataset,
    register_dataset,
)
from ncscope.data.spec import DatasetSpec
from ncscope.data.svhn import SVHN_INFO
from ncscope.data.synthetic import make_synthetic

__all__ = [
    "CIFAR100_INFO",
    "CIFAR10_INFO",
    "DATASETS",
    "DATA_DIR_ENV",
    "DIGITS_INFO",
    "FASHION_MNIST_INFO",
    "IMAGENETTE_INFO",
    "MNIST_INFO",
    "SVHN_INFO",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSpec",
    "ImageDataset",
    "ImageFolderDataset",
    "UnknownNameError",
    "available_datasets",
    "balanced_indices",
    "get_dataset_info",
    "load_dataset",
    "load_digits_dataset",
    "make_loader",
    "make_synthetic",
    "read_idx",
    "register_dataset",
    "stratified_indices",
]

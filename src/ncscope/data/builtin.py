"""The built-in data sets: digits (embedded), synthetic, Fashion-MNIST, MNIST, CIFAR-10/100,
SVHN and ImageNette-160 — their infos, loaders and how to obtain their files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ncscope.data.base import DatasetInfo, DatasetNotFoundError, ImageDataset
from ncscope.data.cifar import CIFAR10_INFO, CIFAR100_INFO, find_cifar_dir, read_cifar
from ncscope.data.digits import DIGITS_INFO, load_digits_dataset
from ncscope.data.idx import FASHION_MNIST_SYSTEM_DIR, find_idx_pair, load_idx_split
from ncscope.data.imagefolder import IMAGENETTE_INFO, ImageFolderDataset, scan_image_folder
from ncscope.data.spec import DatasetSpec, Loader
from ncscope.data.svhn import SVHN_INFO, read_svhn
from ncscope.data.synthetic import make_synthetic

__all__ = ["BUILTIN", "FASHION_MNIST_INFO", "MNIST_INFO"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

FASHION_MNIST_INFO = DatasetInfo(
    name="fashion_mnist",
    num_classes=10,
    input_shape=(1, 28, 28),
    # statistics of the full 60 000-image train split (pixel/255), population std
    mean=(0.2860406,),
    std=(0.3530242,),
    classes=FASHION_MNIST_CLASSES,
    default_model="small_cnn",
)

MNIST_INFO = DatasetInfo(
    name="mnist",
    num_classes=10,
    input_shape=(1, 28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    classes=tuple(str(i) for i in range(10)),
    default_model="small_cnn",
)

def _missing(name: str, where: Path | None, how: str) -> DatasetNotFoundError:
    place = f"no data found in {where}" if where is not None else "no root directory given"
    return DatasetNotFoundError(f"{name}: {place}; {how}")


_TV_HINT = (
    "download=True needs torchvision (pip install torchvision, or pip install 'ncscope[vision]')"
)


def _download(name: str, root: Path, split: str) -> None:
    """Fetch ``name`` into ``root`` with torchvision (explicit opt-in only)."""
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DatasetNotFoundError(
            f"{name}: {_TV_HINT}; otherwise {BUILTIN[name].how_to_obtain}"
        ) from exc
    root.mkdir(parents=True, exist_ok=True)
    train = split == "train"
    if name == "mnist":
        tvd.MNIST(str(root), train=train, download=True)
    elif name == "fashion_mnist":
        tvd.FashionMNIST(str(root), train=train, download=True)
    elif name == "cifar10":
        tvd.CIFAR10(str(root), train=train, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(str(root), train=train, download=True)
    elif name == "svhn":
        tvd.SVHN(str(root), split=split, download=True)
    elif name == "imagenette":
        tvd.Imagenette(str(root), split="train" if train else "val", size="160px", download=True)
    else:  # pragma: no cover - guarded by the registry
        raise DatasetNotFoundError(f"{name}: no download available")


def _idx_loader(name: str, info: DatasetInfo, subdir: str) -> Loader:
    def load(root: Path | None, split: str, download: bool, **options: Any) -> ImageDataset:
        _no_options(name, options)
        how = BUILTIN[name].how_to_obtain
        if root is None:
            raise _missing(name, None, how)
        subdirs = (f"{subdir}/raw", "raw")
        pair = find_idx_pair(root, split, subdirs)
        if pair is None and download:
            _download(name, root, split)
            pair = find_idx_pair(root, split, subdirs)
        if pair is None:
            raise _missing(name, root, how)
        x, y = load_idx_split(*pair)
        return ImageDataset(x, y, info, split)

    return load


def _cifar_loader(name: str, info: DatasetInfo) -> Loader:
    def load(root: Path | None, split: str, download: bool, **options: Any) -> ImageDataset:
        _no_options(name, options)
        how = BUILTIN[name].how_to_obtain
        if root is None:
            raise _missing(name, None, how)
        base = find_cifar_dir(root, name)
        if base is None and download:
            _download(name, root, split)
            base = find_cifar_dir(root, name)
        if base is None:
            raise _missing(name, root, how)
        x, y, classes = read_cifar(base, name, split)
        if classes is not None and info.classes is None:
            from dataclasses import replace

            return ImageDataset(x, y, replace(info, classes=classes), split)
        return ImageDataset(x, y, info, split)

    return load


def _load_svhn(root: Path | None, split: str, download: bool, **options: Any) -> ImageDataset:
    _no_options("svhn", options)
    how = BUILTIN["svhn"].how_to_obtain
    if root is None:
        raise _missing("svhn", None, how)
    path = root / f"{split}_32x32.mat"
    if not path.is_file() and download:
        _download("svhn", root, split)
    if not path.is_file():
        raise _missing("svhn", root, how)
    x, y = read_svhn(path)
    return ImageDataset(x, y, SVHN_INFO, split)


def _load_imagenette(
    root: Path | None, split: str, download: bool, *, crop: int = 160, in_memory: bool = False
) -> ImageDataset | ImageFolderDataset:
    how = BUILTIN["imagenette"].how_to_obtain
    if root is None:
        raise _missing("imagenette", None, how)
    folder = "train" if split == "train" else "val"
    base = root
    if not (base / folder).is_dir() and (root / "imagenette2-160" / folder).is_dir():
        base = root / "imagenette2-160"
    if not (base / folder).is_dir() and download:
        _download("imagenette", root, split)
        base = root / "imagenette2-160"
    if not (base / folder).is_dir():
        raise _missing("imagenette", root / folder, how)
    files, labels, class_dirs = scan_image_folder(base / folder)
    if not files:
        raise _missing("imagenette", base / folder, how)
    info = IMAGENETTE_INFO
    if len(class_dirs) != info.num_classes or crop != 160:
        from dataclasses import replace

        info = replace(
            info,
            num_classes=len(class_dirs),
            input_shape=(3, crop, crop),
            classes=class_dirs if len(class_dirs) != 10 else info.classes,
        )
    ds = ImageFolderDataset(files, labels, info, split, crop=crop, classes=class_dirs)
    return ds.to_memory() if in_memory else ds


def _load_digits(root: Path | None, split: str, download: bool, **options: Any) -> ImageDataset:
    return load_digits_dataset(split, **options)


def _load_synthetic(root: Path | None, split: str, download: bool, **options: Any) -> ImageDataset:
    return make_synthetic(split=split, **options)


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise TypeError(f"{name}: unexpected options {sorted(options)}")


#: The data sets ncscope ships, copied into the registry at import.
BUILTIN: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        DIGITS_INFO, _load_digits, how_to_obtain="bundled with scikit-learn", needs_root=False
    ),
    "synthetic": DatasetSpec(
        make_synthetic().info,
        _load_synthetic,
        how_to_obtain="generated in memory",
        needs_root=False,
    ),
    "fashion_mnist": DatasetSpec(
        FASHION_MNIST_INFO,
        _idx_loader("fashion_mnist", FASHION_MNIST_INFO, "FashionMNIST"),
        how_to_obtain=(
            "install Debian's package with `apt-get install dataset-fashion-mnist` (files go to "
            f"{FASHION_MNIST_SYSTEM_DIR}) or pass root=<folder with train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz>"
        ),
        env_subdir="fashion-mnist",
        default_root=FASHION_MNIST_SYSTEM_DIR,
    ),
    "mnist": DatasetSpec(
        MNIST_INFO,
        _idx_loader("mnist", MNIST_INFO, "MNIST"),
        how_to_obtain=(
            "pass root=<folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz> (the MNIST IDX files), "
            "or download=True with torchvision installed"
        ),
        env_subdir="mnist",
    ),
    "cifar10": DatasetSpec(
        CIFAR10_INFO,
        _cifar_loader("cifar10", CIFAR10_INFO),
        how_to_obtain=(
            "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and pass "
            "root=<folder containing cifar-10-batches-py>, or download=True with torchvision "
            "installed"
        ),
        env_subdir="cifar10",
    ),
    "cifar100": DatasetSpec(
        CIFAR100_INFO,
        _cifar_loader("cifar100", CIFAR100_INFO),
        how_to_obtain=(
            "extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and pass "
            "root=<folder containing cifar-100-python>, or download=True with torchvision "
            "installed"
        ),
        env_subdir="cifar100",
    ),
    "svhn": DatasetSpec(
        SVHN_INFO,
        _load_svhn,
        splits=("train", "test", "extra"),
        how_to_obtain=(
            "put train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
            "in root, or download=True with torchvision installed"
        ),
        env_subdir="svhn",
    ),
    "imagenette": DatasetSpec(
        IMAGENETTE_INFO,
        _load_imagenette,
        how_to_obtain=(
            "extract https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz and pass "
            "root=<imagenette2-160 folder with train/ and val/>, or download=True with "
            "torchvision installed"
        ),
        env_subdir="imagenette2-160",
    ),
}

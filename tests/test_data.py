"""Tests of ncscope.data: every loader path on tiny synthetic files of the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ncscope.data import (
    CIFAR10_INFO,
    DIGITS_INFO,
    FASHION_MNIST_INFO,
    DatasetInfo,
    DatasetNotFoundError,
    ImageDataset,
    ImageFolderDataset,
    UnknownNameError,
    available_datasets,
    balanced_indices,
    get_dataset_info,
    load_dataset,
    make_loader,
    make_synthetic,
    read_idx,
    stratified_indices,
)
from ncscope.data.imagefolder import center_crop_array

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- file writers
def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    """Write an IDX file independently of ncscope's reader (uint8 or big-endian int32)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload = header + arr.tobytes()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_like(root: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", y, gz)


def write_cifar(root: Path, name: str, n_per_batch: int = 20) -> np.ndarray:
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        key, n_cls = b"labels", 10
    else:
        folder = root / "cifar-100-python"
        files = ["train", "test"]
        key, n_cls = b"fine_labels", 100
    folder.mkdir(parents=True)
    first = None
    for f in files:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(n_per_batch) % n_cls]
        if first is None:
            first = data
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": data, key: labels}, fh)
    if name == "cifar10":
        names = [n.encode() for n in CIFAR10_INFO.classes]
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({b"label_names": names}, fh)
    return first


def write_svhn(root: Path, n: int = 12) -> np.ndarray:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # labels 1..10, 10 = digit 0
    savemat(str(root / "train_32x32.mat"), {"X": x, "y": y})
    savemat(str(root / "test_32x32.mat"), {"X": x[..., :6], "y": y[:6]})
    return x


def write_imagefolder(root: Path, classes=("b_cls", "a_cls", "c_cls"), per_class: int = 2) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    sizes = [(160, 213), (240, 160), (150, 170)]  # (H, W); last one needs padding
    for split in ("train", "val"):
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[(k + i) % len(sizes)]
                arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                ext = ".JPEG" if i % 2 == 0 else ".png"
                img = Image.fromarray(arr)
                if k == 0 and i == 1:
                    img = img.convert("L")  # grayscale files exist in ImageNette
                img.save(d / f"img{i}{ext}")
            (d / "notes.txt").write_text("not an image")


# ----------------------------------------------------------------------------- digits
def test_digits_split_sizes_and_stats():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    assert len(train) == 1347 and len(test) == 450
    assert train.images.shape == (1347, 1, 8, 8) and train.images.dtype == torch.float32
    assert train.targets.dtype == torch.int64
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    assert float(train.images.max()) == 1.0  # 16/16
    counts_tr, counts_te = train.class_counts(), test.class_counts()
    assert int(counts_tr.min()) >= 131 and int(counts_te.min()) >= 43  # stratified
    # disjoint and jointly the whole of sklearn's digits
    from sklearn.datasets import load_digits

    all_x = torch.as_tensor(load_digits().images / 16.0, dtype=torch.float32)
    assert len(train) + len(test) == all_x.shape[0]
    # stored normalisation constants are the train-split statistics
    assert abs(float(train.images.mean()) - DIGITS_INFO.mean[0]) < 1e-5
    assert abs(float(train.images.std(unbiased=False)) - DIGITS_INFO.std[0]) < 1e-5
    assert train.info is DIGITS_INFO and train.info.default_model == "bn_mlp"


def test_digits_deterministic_and_disjoint():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    test = load_dataset("digits", split="test")
    rows_a = {tuple(r) for r in a.images.reshape(len(a), -1).numpy().round(4).tolist()}
    rows_t = [tuple(r) for r in test.images.reshape(len(test), -1).numpy().round(4).tolist()]
    # sklearn digits contain a few exact duplicate images; nearly all test rows are unseen
    assert sum(r in rows_a for r in rows_t) <= 5


def test_n_per_class_balance_and_determinism():
    ds = load_dataset("digits", n_per_class=20, seed=3)
    assert len(ds) == 200 and ds.class_counts().tolist() == [20] * 10
    again = load_dataset("digits", n_per_class=20, seed=3)
    other = load_dataset("digits", n_per_class=20, seed=4)
    assert torch.equal(ds.images, again.images)
    assert not torch.equal(ds.images, other.images)
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        load_dataset("digits", split="test", n_per_class=200)
    with pytest.raises(ValueError, match="at most one"):
        load_dataset("digits", n_per_class=5, n_train=50)


def test_n_train_stratified():
    ds = load_dataset("digits", n_train=100, seed=0)
    assert len(ds) == 100 and ds.class_counts().tolist() == [10] * 10
    idx = stratified_indices(np.array([0] * 70 + [1] * 30), 10, seed=0)
    assert len(idx) == 10 and np.bincount(np.array([0] * 70 + [1] * 30)[idx]).tolist() == [7, 3]
    idx = stratified_indices(np.array([0] * 5 + [1] * 5 + [2] * 5), 4, seed=0)
    assert sorted(np.bincount(np.array([0] * 5 + [1] * 5 + [2] * 5)[idx]).tolist()) == [1, 1, 2]
    with pytest.raises(ValueError):
        stratified_indices(np.zeros(5, dtype=int), 6)
    b = balanced_indices(torch.tensor([0, 1, 0, 1, 0, 1]), 2, seed=0)
    assert np.all(np.diff(b) > 0) and len(b) == 4


# ----------------------------------------------------------------------------- loader
def test_make_loader_deterministic_and_complete():
    ds = load_dataset("digits", split="test")
    batches1 = [y for _, y in make_loader(ds, batch_size=64, seed=7)]
    batches2 = [y for _, y in make_loader(ds, batch_size=64, seed=7)]
    batches3 = [y for _, y in make_loader(ds, batch_size=64, seed=8)]
    assert all(torch.equal(a, b) for a, b in zip(batches1, batches2, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(batches1, batches3, strict=True))
    assert len(batches1) == 8 and sum(len(b) for b in batches1) == 450
    assert sorted(torch.cat(batches1).tolist()) == sorted(ds.targets.tolist())
    x, y = next(iter(make_loader(ds, batch_size=32, shuffle=False)))
    assert torch.equal(x, ds.images[:32]) and torch.equal(y, ds.targets[:32])
    dl = make_loader(ds, batch_size=64, drop_last=True)
    assert all(len(y) == 64 for _, y in dl) and len(dl) == 7
    # a second epoch of the same loader gives a different (but seeded) order
    loader = make_loader(ds, batch_size=450, seed=1)
    e1, e2 = (next(iter(loader))[1] for _ in range(2))
    assert not torch.equal(e1, e2)


def test_make_loader_generic_dataset():
    ds = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
    a = [y.tolist() for _, y in make_loader(ds, batch_size=4, seed=2)]
    b = [y.tolist() for _, y in make_loader(ds, batch_size=4, seed=2)]
    assert a == b and sorted(sum(a, [])) == list(range(10))


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_seeds_and_range():
    ds = load_dataset("synthetic", num_classes=3, shape=(3, 5, 7), size=10, data_seed=1)
    assert ds.images.shape == (30, 3, 5, 7) and ds.info.num_classes == 3
    assert ds.info.input_shape == (3, 5, 7) and len(ds.info.mean) == 3
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    same = make_synthetic(num_classes=3, shape=(3, 5, 7), size=10, data_seed=1)
    other = make_synthetic(num_classes=3, shape=(3, 5, 7), size=10, data_seed=2)
    test = make_synthetic(num_classes=3, shape=(3, 5, 7), size=10, data_seed=1, split="test")
    assert torch.equal(ds.images, same.images)
    assert not torch.equal(ds.images, other.images)
    assert not torch.equal(ds.images, test.images) and test.info == ds.info
    # class-conditional: class means are far apart relative to the noise
    m = torch.stack([ds.images[ds.targets == k].mean(0) for k in range(3)]).flatten(1)
    assert float(torch.cdist(m, m)[0, 1]) > 1.0


# ----------------------------------------------------------------------------- IDX / MNIST
def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx.gz", arr)
    out = read_idx(tmp_path / "a.idx.gz")
    assert out.shape == (2, 3, 4) and out.tolist() == arr.tolist()
    write_idx(tmp_path / "b.idx", np.array([1, 2, 250], dtype=np.uint8), gz=False)
    assert read_idx(tmp_path / "b.idx").tolist() == [1, 2, 250]
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="payload"):
        read_idx(tmp_path / "short.idx")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    write_mnist_like(tmp_path, gz=gz)
    train = load_dataset("mnist", tmp_path)
    test = load_dataset("mnist", tmp_path, split="test")
    assert train.images.shape == (40, 1, 28, 28) and test.images.shape == (20, 1, 28, 28)
    assert train.targets.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert float(train.images.max()) <= 1.0 and train.info.mean == (0.1307,)
    assert len(load_dataset("mnist", tmp_path, n_per_class=2)) == 20


def test_mnist_torchvision_layout(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    assert len(load_dataset("mnist", tmp_path)) == 40


def test_fashion_mnist_from_custom_root(tmp_path):
    write_mnist_like(tmp_path)
    ds = load_dataset("fashion-mnist", tmp_path, n_train=20)
    assert ds.info is FASHION_MNIST_INFO and len(ds) == 20
    assert ds.class_counts().tolist() == [2] * 10


@pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)",
)
def test_fashion_mnist_system_files():
    train = load_dataset("fashion_mnist", n_train=5000, seed=0)
    assert train.images.shape == (5000, 1, 28, 28)
    assert train.class_counts().tolist() == [500] * 10
    again = load_dataset("fashion_mnist", n_train=5000, seed=0)
    assert torch.equal(train.targets, again.targets) and torch.equal(train.images, again.images)
    test = load_dataset("fashion_mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.class_counts().tolist() == [1000] * 10
    full = load_dataset("fashion_mnist")
    assert len(full) == 60000
    assert abs(float(full.images.mean()) - FASHION_MNIST_INFO.mean[0]) < 1e-4
    assert abs(float(full.images.std()) - FASHION_MNIST_INFO.std[0]) < 1e-4


# ----------------------------------------------------------------------------- CIFAR / SVHN
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickle_batches(tmp_path, name):
    first = write_cifar(tmp_path, name)
    train = load_dataset(name, tmp_path)
    n_train = 100 if name == "cifar10" else 20
    assert train.images.shape == (n_train, 3, 32, 32)
    assert len(load_dataset(name, tmp_path, split="test")) == 20
    # channel-major layout: first 1024 bytes are the red plane
    assert np.allclose(train.images[0].numpy(), first[0].reshape(3, 32, 32) / 255.0)
    assert train.info.num_classes == (10 if name == "cifar10" else 100)
    # root may also be the extracted folder itself
    inner = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    assert len(load_dataset(name, tmp_path / inner)) == n_train


def test_cifar10_info_values():
    info = get_dataset_info("cifar10")
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2471, 0.2435, 0.2616)
    assert get_dataset_info("CIFAR-100").mean == (0.5071, 0.4865, 0.4409)
    assert get_dataset_info("imagenette").std == (0.5, 0.5, 0.5)


def test_svhn_mat(tmp_path):
    x = write_svhn(tmp_path)
    train = load_dataset("svhn", tmp_path)
    assert train.images.shape == (12, 3, 32, 32)
    assert train.targets.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # 10 -> 0
    assert np.allclose(train.images[3].numpy(), x[..., 3].transpose(2, 0, 1) / 255.0)
    assert len(load_dataset("svhn", tmp_path, split="test")) == 6


# ----------------------------------------------------------------------------- ImageNette
def test_center_crop_matches_torchvision_convention():
    img = np.arange(5 * 7).reshape(5, 7, 1)
    out = center_crop_array(img, 3)
    assert out[:, :, 0].tolist() == img[1:4, 2:5, 0].tolist()
    small = center_crop_array(np.ones((2, 3, 1)), 4)
    assert small.shape == (4, 4, 1) and small.sum() == 6
    assert small[1:3, 0:3, 0].sum() == 6  # pad top 1, left 0


def test_imagenette_imagefolder(tmp_path):
    write_imagefolder(tmp_path)
    ds = load_dataset("imagenette", tmp_path)
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 6
    assert ds.classes == ("a_cls", "b_cls", "c_cls")  # sorted folder names
    assert ds.targets.tolist() == [0, 0, 1, 1, 2, 2]
    x, y = ds[0]
    assert x.shape == (3, 160, 160) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    xb, yb = ds[[0, 3, 5]]
    assert xb.shape == (3, 3, 160, 160) and yb.tolist() == [0, 1, 2]
    assert ds.info.num_classes == 3  # taken from the folder tree
    val = load_dataset("imagenette", tmp_path, split="val")
    assert len(val) == 6 and val.split == "test"
    mem = load_dataset("imagenette", tmp_path, in_memory=True, n_per_class=1)
    assert isinstance(mem, ImageDataset) and mem.images.shape == (3, 3, 160, 160)
    batch = next(iter(make_loader(ds, batch_size=4, shuffle=False)))
    assert batch[0].shape == (4, 3, 160, 160)


def test_imagenette_parent_folder_accepted(tmp_path):
    write_imagefolder(tmp_path / "imagenette2-160", per_class=1)
    assert len(load_dataset("imagenette", tmp_path)) == 3


def test_imagenette_crop_option(tmp_path):
    write_imagefolder(tmp_path, per_class=1)
    ds = load_dataset("imagenette", tmp_path, crop=64)
    assert ds[0][0].shape == (3, 64, 64) and ds.info.input_shape == (3, 64, 64)


# ----------------------------------------------------------------------------- errors
def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("imagenet21k")
    msg = str(err.value)
    for name in available_datasets():
        assert name in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert {"digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "imagenette",
            "synthetic"} <= set(available_datasets())  # fmt: skip


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("cifar10", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar-100-python.tar.gz"),
        ("svhn", "train_32x32.mat"),
        ("mnist", "train-images-idx3-ubyte.gz"),
        ("imagenette", "imagenette2-160"),
        ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ],
)
def test_missing_directory_says_how_to_obtain(tmp_path, name, hint):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path / "nowhere")
    msg = str(err.value)
    assert hint in msg and "\n" not in msg and str(tmp_path / "nowhere") in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_root_without_default(monkeypatch):
    monkeypatch.delenv("NCSCOPE_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="no root directory given"):
        load_dataset("cifar10")


def test_data_dir_env(tmp_path, monkeypatch):
    write_svhn(tmp_path / "svhn")
    monkeypatch.setenv("NCSCOPE_DATA_DIR", str(tmp_path))
    assert len(load_dataset("svhn")) == 12


def test_download_without_torchvision_is_clear(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchvision installed: download=True would try the network")
    with pytest.raises(DatasetNotFoundError, match="pip install torchvision"):
        load_dataset("cifar10", tmp_path / "dl", download=True)
    with pytest.raises(DatasetNotFoundError, match="needs root"):
        load_dataset("cifar10", download=True)


def test_bad_split_and_options():
    with pytest.raises(ValueError, match="valid splits"):
        load_dataset("digits", split="extra")
    with pytest.raises(TypeError):
        load_dataset("mnist", "/nonexistent", bogus=1)


def test_dataset_info_validation():
    with pytest.raises(ValueError, match="one per channel"):
        DatasetInfo("x", 2, (3, 4, 4), (0.5,), (0.5,))

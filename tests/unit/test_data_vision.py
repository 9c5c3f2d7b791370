"""CIFAR-10 and MNIST loaders (unlearnkit.data.vision): real shared copies and synthetic layouts; no network."""

from __future__ import annotations

import gzip
import io
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit import shared_path
from unlearnkit.config.schema import DataConfig
from unlearnkit.data import load_data, stratified_subset
from unlearnkit.data.vision import CIFAR10_CLASSES, read_idx
from unlearnkit.errors import DataError

SHARED = shared_path()
CIFAR_ROOT = SHARED / "cifar10"
MNIST_ROOT = SHARED / "mnist"
# reference statistics written out here (not imported) so that a wrong constant in the loader fails the tests
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # from mnist/SOURCE.md

needs_cifar = pytest.mark.skipif(
    not (CIFAR_ROOT / "cifar10-jpg-train.zip").is_file(), reason=f"shared CIFAR-10 zips not found under {CIFAR_ROOT}"
)
needs_mnist = pytest.mark.skipif(
    not (MNIST_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"shared MNIST files not found under {MNIST_ROOT}",
)


def cifar(root, **kw) -> DataConfig:
    return DataConfig(name="cifar10", root=str(root), **kw)


def mnist(root, **kw) -> DataConfig:
    return DataConfig(name="mnist", root=None if root is None else str(root), **kw)


def load_quiet(cfg: DataConfig):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_data(cfg)


@pytest.fixture
def no_torchvision(monkeypatch):
    """Make ``import torchvision`` fail even where torchvision is installed."""
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)


# ================================================== CIFAR-10: real shared zips ======================================
@pytest.fixture(scope="module")
def cifar_raw():
    return load_data(cifar(CIFAR_ROOT, train_subset=200, test_subset=100, normalize=False))


@pytest.fixture(scope="module")
def cifar_norm():
    return load_data(cifar(CIFAR_ROOT, train_subset=200, test_subset=100))


@needs_cifar
def test_cifar_shapes_dtypes_balance(cifar_norm):
    d = cifar_norm
    assert d.name == "cifar10" and d.num_classes == 10
    assert d.class_names == CIFAR10_CLASSES == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    )
    assert len(d.train) == 200 and len(d.test) == 100
    assert d.train.source.x.shape == (200, 3, 32, 32) and d.train.source.x.dtype == torch.float32
    assert d.test.source.x.shape == (100, 3, 32, 32) and d.test.source.x.dtype == torch.float32
    assert d.train.input_shape == (3, 32, 32)
    assert d.train.source is not d.test.source
    assert np.bincount(d.train.labels, minlength=10).tolist() == [20] * 10
    assert np.bincount(d.test.labels, minlength=10).tolist() == [10] * 10
    x, y, ids = d.train.batch(np.arange(5))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.int64 and ids.dtype == torch.int64
    assert any("JPEG" in n for n in d.notes)


@needs_cifar
def test_cifar_ids_in_range_and_class_major(cifar_raw):
    tr, te = cifar_raw.train, cifar_raw.test
    assert tr.ids.min() >= 0 and tr.ids.max() < 50_000 and len(np.unique(tr.ids)) == 200
    assert te.ids.min() >= 0 and te.ids.max() < 10_000 and len(np.unique(te.ids)) == 100
    # sorted entry names are class-major with 5000 (train) / 1000 (test) images per class
    assert (tr.labels == tr.ids // 5000).all()
    assert (te.labels == te.ids // 1000).all()
    assert (tr.source.y.numpy() == tr.labels).all()
    # documented seeds: stratified_subset of the split's labels with split_seed (train) and split_seed + 1 (test)
    assert np.array_equal(tr.ids, stratified_subset(np.repeat(np.arange(10), 5000), 200, 0))
    assert np.array_equal(te.ids, stratified_subset(np.repeat(np.arange(10), 1000), 100, 1))


@needs_cifar
def test_cifar_ids_stable_across_loads_and_subsets(cifar_raw):
    again = load_data(cifar(CIFAR_ROOT, train_subset=200, test_subset=100, normalize=False))
    assert np.array_equal(again.train.ids, cifar_raw.train.ids)
    assert np.array_equal(again.test.ids, cifar_raw.test.ids)
    assert torch.equal(again.train.source.x, cifar_raw.train.source.x)
    other = load_data(cifar(CIFAR_ROOT, train_subset=100, test_subset=1000, split_seed=7, normalize=False))
    assert not set(other.train.ids) >= set(cifar_raw.train.ids[:100])  # another seed draws other images
    common, ia, ib = np.intersect1d(cifar_raw.test.ids, other.test.ids, return_indices=True)
    assert len(common) >= 3  # 100 and 1000 of 10,000: ~10 shared ids; the same id is the same image
    assert torch.equal(cifar_raw.test.source.x[ia], other.test.source.x[ib])
    assert (cifar_raw.test.labels[ia] == other.test.labels[ib]).all()


@needs_cifar
def test_cifar_labels_and_pixels_match_independent_decode(cifar_raw):
    from PIL import Image

    for split, sset in (("train", cifar_raw.train), ("test", cifar_raw.test)):
        zname = f"cifar10-jpg-{split}.zip"
        with zipfile.ZipFile(CIFAR_ROOT / zname) as zf:
            names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
            assert len(names) == (50_000 if split == "train" else 10_000)
            for row in (0, len(sset) // 2, len(sset) - 1):
                name = names[int(sset.ids[row])]
                folder = name.split("/")[1]
                assert sset.labels[row] == CIFAR10_CLASSES.index(folder)
                ref = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"), dtype=np.float32) / 255.0
                got = sset.source.x[sset.positions[row]].permute(1, 2, 0).numpy()
                np.testing.assert_allclose(got, ref, atol=1e-6)


@needs_cifar
def test_cifar_normalisation(cifar_raw, cifar_norm):
    raw, norm = cifar_raw.train.source.x, cifar_norm.train.source.x
    assert np.array_equal(cifar_raw.train.ids, cifar_norm.train.ids)
    assert raw.min() >= 0 and raw.max() <= 1 and raw.max() > 0.9  # pixel / 255
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm, (raw - mean) / std, atol=1e-5, rtol=1e-5)
    ch_mean, ch_std = norm.mean(dim=(0, 2, 3)), norm.std(dim=(0, 2, 3))
    assert ch_mean.abs().max() < 0.1, ch_mean
    assert ((ch_std > 0.9) & (ch_std < 1.1)).all(), ch_std
    # raw channel means of 200 images lie close to the reference statistics
    assert (raw.mean(dim=(0, 2, 3)) - torch.tensor(CIFAR10_MEAN)).abs().max() < 0.03


# ================================================== CIFAR-10: synthetic zips ========================================
def _jpeg(rgb: tuple[int, int, int], size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _colour(cls: int, k: int) -> tuple[int, int, int]:
    return (20 * cls + 10, 60 * k + 20, 128)


def make_cifar_zips(root: Path, per_class=(2, 1), classes=CIFAR10_CLASSES, size=32) -> Path:
    """Zips with ``per_class`` images per class (train, test), written in shuffled order, plus non-image entries."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        entries = [
            (f"{split}/{c}/{k:04d}.jpg", _jpeg(_colour(ci, k), size)) for ci, c in enumerate(classes) for k in range(n)
        ]
        order = rng.permutation(len(entries))
        with zipfile.ZipFile(root / f"cifar10-jpg-{split}.zip", "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{split}/", b"")
            zf.writestr(f"{split}/README.txt", b"not an image")
            for i in order:
                zf.writestr(*entries[i])
    return root


def test_cifar_synthetic_ordering_and_ids(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(3, 2))
    d = load_data(cifar(root, normalize=False))
    assert len(d.train) == 30 and len(d.test) == 20
    assert d.train.ids.tolist() == list(range(30)) and d.test.ids.tolist() == list(range(20))
    for sset, n in ((d.train, 3), (d.test, 2)):
        # id order = sorted entry names: class-major, then file number
        assert (sset.labels == sset.ids // n).all()
        x = sset.source.x.numpy() * 255
        r, g, b = x[:, 0].mean(axis=(1, 2)), x[:, 1].mean(axis=(1, 2)), x[:, 2].mean(axis=(1, 2))
        np.testing.assert_allclose(r, 20 * sset.labels + 10, atol=3)
        np.testing.assert_allclose(g, 60 * (sset.ids % n) + 20, atol=3)
        np.testing.assert_allclose(b, 128, atol=3)


def test_cifar_synthetic_subset_keeps_ids(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(3, 2))
    full = load_data(cifar(root, normalize=False))
    sub = load_data(cifar(root, train_subset=10, test_subset=10, normalize=False))
    assert np.bincount(sub.train.labels, minlength=10).tolist() == [1] * 10
    assert np.bincount(sub.test.labels, minlength=10).tolist() == [1] * 10
    for s, f in ((sub.train, full.train), (sub.test, full.test)):
        assert np.all(np.diff(s.ids) > 0)
        assert torch.equal(s.source.x, f.source.x[torch.from_numpy(s.ids)])
        assert (s.labels == f.labels[s.ids]).all()
    again = load_data(cifar(root, train_subset=10, test_subset=10, normalize=False))
    assert np.array_equal(again.train.ids, sub.train.ids) and np.array_equal(again.test.ids, sub.test.ids)


def test_cifar_synthetic_normalised_values(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1))
    raw = load_data(cifar(root, normalize=False)).train.source.x
    norm = load_data(cifar(root)).train.source.x
    for c in range(3):
        torch.testing.assert_close(norm[:, c], (raw[:, c] - CIFAR10_MEAN[c]) / CIFAR10_STD[c])


def test_cifar_subset_too_large(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1))
    with pytest.raises(DataError, match="train_subset=20"):
        load_data(cifar(root, train_subset=20))


def test_cifar_wrong_class_folders(tmp_path):
    classes = ("cat", "dog")
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1), classes=classes)
    with pytest.raises(DataError, match="class folders.*'cat', 'dog'"):
        load_data(cifar(root))


def test_cifar_wrong_image_size(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1), size=28)
    with pytest.raises(DataError, match="28x28.*32x32"):
        load_data(cifar(root))


def test_cifar_corrupt_zip_and_jpeg(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1))
    (root / "cifar10-jpg-test.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="cannot be opened as a zip"):
        load_data(cifar(root))
    root2 = make_cifar_zips(tmp_path / "c10b", per_class=(1, 1))
    with zipfile.ZipFile(root2 / "cifar10-jpg-train.zip", "a") as zf:
        zf.writestr("train/airplane/0009.jpg", b"\xff\xd8garbage")
    with pytest.raises(DataError, match="train/airplane/0009.jpg"):
        load_data(cifar(root2))


def _assert_cifar_layout_text(msg: str) -> None:
    for text in ("cifar10-jpg-train.zip", "cifar10-jpg-test.zip", "cifar-10-batches-py", "download: true"):
        assert text in msg, (text, msg)


def test_cifar_missing_root(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(cifar(tmp_path / "nope"))
    assert "does not exist" in str(err.value)
    _assert_cifar_layout_text(str(err.value))
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="cifar10"))
    assert "data.root is not set" in str(err.value)
    _assert_cifar_layout_text(str(err.value))


def test_cifar_empty_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(cifar(tmp_path))
    assert "no CIFAR-10 files" in str(err.value)
    _assert_cifar_layout_text(str(err.value))


def test_cifar_one_zip_missing(tmp_path):
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1))
    (root / "cifar10-jpg-test.zip").unlink()
    with pytest.raises(DataError, match="'cifar10-jpg-test.zip' is missing"):
        load_data(cifar(root))


def test_cifar_torchvision_layout_without_torchvision(tmp_path, no_torchvision):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match=r"pip install unlearnkit\[vision\]"):
        load_data(cifar(tmp_path))


def test_cifar_download_without_torchvision(tmp_path, no_torchvision):
    root = make_cifar_zips(tmp_path / "c10", per_class=(1, 1))  # download=True goes to torchvision regardless
    with pytest.raises(DataError, match=r"pip install unlearnkit\[vision\]"):
        load_data(cifar(root, download=True))


# ================================================== MNIST: real shared copy (t10k only) =============================
def _read_gz_idx(path: Path) -> np.ndarray:  # the recipe from mnist/SOURCE.md, independent of the loader
    data = gzip.open(path, "rb").read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


@pytest.fixture(scope="module")
def mnist_shared():
    with pytest.warns(UserWarning, match="t10k") as rec:
        d = load_data(mnist(MNIST_ROOT, normalize=False))
    return d, rec


@needs_mnist
def test_mnist_shared_test_only_split(mnist_shared):
    d, rec = mnist_shared
    assert len(rec) == 1
    assert "train-images-idx3-ubyte" in str(rec[0].message)
    assert len(d.notes) == 1 and "t10k" in d.notes[0] and "test_fraction" in d.notes[0]
    assert len(d.test) == 2500 and len(d.train) == 7500  # default test_fraction 0.25 of 10,000
    assert d.train.source.x.shape == (7500, 1, 28, 28) and d.train.source.x.dtype == torch.float32
    assert d.test.source.x.shape == (2500, 1, 28, 28)
    assert d.class_names == tuple(str(i) for i in range(10)) and d.num_classes == 10
    ids = np.concatenate([d.train.ids, d.test.ids])
    assert np.array_equal(np.sort(ids), np.arange(10_000))  # disjoint, together the whole t10k file
    labels = np.concatenate([d.train.labels, d.test.labels])
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    # stratified: every class holds out a quarter (±1)
    assert np.all(np.abs(np.bincount(d.test.labels, minlength=10) - np.array(MNIST_TEST_COUNTS) * 0.25) <= 1)


@needs_mnist
def test_mnist_shared_pixels_and_first_is_seven(mnist_shared):
    d, _ = mnist_shared
    images = _read_gz_idx(MNIST_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    labels = _read_gz_idx(MNIST_ROOT / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz")
    where = {int(i): (s, r) for s in (d.train, d.test) for r, i in enumerate(s.ids)}
    sset, row = where[0]
    assert sset.labels[row] == 7  # test[0] of the t10k file is a 7
    for t10k_id in (0, 1, 4321, 9999):
        sset, row = where[t10k_id]
        assert sset.labels[row] == labels[t10k_id]
        got = sset.source.x[sset.positions[row], 0].numpy() * 255
        np.testing.assert_allclose(got, images[t10k_id], atol=1e-3)


@needs_mnist
def test_mnist_shared_fraction_seed_and_normalisation():
    d = load_quiet(mnist(MNIST_ROOT, test_fraction=0.1, train_subset=500, test_subset=100))
    assert len(d.train) == 500 and len(d.test) == 100
    assert np.bincount(d.train.labels, minlength=10).min() >= 40
    full = load_quiet(mnist(MNIST_ROOT, test_fraction=0.1, normalize=False))
    assert len(full.test) == 1000 and len(full.train) == 9000
    assert set(d.train.ids) <= set(full.train.ids) and set(d.test.ids) <= set(full.test.ids)
    pos = {int(i): r for r, i in enumerate(full.train.ids)}
    raw = full.train.source.x[[pos[int(i)] for i in d.train.ids]]
    torch.testing.assert_close(d.train.source.x, (raw - MNIST_MEAN[0]) / MNIST_STD[0])
    other = load_quiet(mnist(MNIST_ROOT, test_fraction=0.1, split_seed=3, normalize=False))
    assert not np.array_equal(other.test.ids, full.test.ids)


# ================================================== MNIST: synthetic IDX files ======================================
def write_idx(path: Path, arr: np.ndarray, magic: bytes | None = None) -> Path:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = magic if magic is not None else bytes([0, 0, 8, arr.ndim])
    data = head + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def synthetic_mnist(folder: Path, n_train: int | None = 50, n_test: int = 20, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        if n is None:
            continue
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        rng.shuffle(y)
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", y)
        out[split] = (x, y)
    return out


def test_read_idx_roundtrip_gz_and_plain(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        got = read_idx(write_idx(tmp_path / name, arr), 3)
        assert got.dtype == np.uint8 and np.array_equal(got, arr)
    with pytest.raises(DataError, match="2 dimension"):
        read_idx(tmp_path / "a-idx3-ubyte", 2)


def test_mnist_full_four_file_layout(tmp_path):
    arrays = synthetic_mnist(tmp_path / "MNIST" / "raw", n_train=50, n_test=20, gz=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_data(mnist(tmp_path, normalize=False))
    assert d.notes == ()
    assert d.train.ids.tolist() == list(range(50)) and d.test.ids.tolist() == list(range(20))
    for sset, key in ((d.train, "train"), (d.test, "t10k")):
        x, y = arrays[key]
        assert sset.labels.tolist() == y.tolist()
        assert sset.source.x.shape == (len(y), 1, 28, 28) and sset.source.x.dtype == torch.float32
        np.testing.assert_allclose(sset.source.x[:, 0].numpy() * 255, x, atol=1e-3)
    d2 = load_data(mnist(tmp_path, train_subset=10, test_subset=10))
    assert np.bincount(d2.train.labels, minlength=10).tolist() == [1] * 10
    x, y = arrays["train"]
    assert (d2.train.labels == y[d2.train.ids]).all()
    assert np.array_equal(d2.train.ids, stratified_subset(y.astype(np.int64), 10, 0))
    assert np.array_equal(d2.test.ids, stratified_subset(arrays["t10k"][1].astype(np.int64), 10, 1))
    expect = (x[d2.train.ids].astype(np.float32) / 255 - MNIST_MEAN[0]) / MNIST_STD[0]
    np.testing.assert_allclose(d2.train.source.x[:, 0].numpy(), expect, atol=1e-5)


def test_mnist_plain_files_directly_in_root(tmp_path):
    arrays = synthetic_mnist(tmp_path, n_train=None, n_test=40, gz=False)
    with pytest.warns(UserWarning, match="not found"):
        d = load_data(mnist(tmp_path, test_fraction=0.25, normalize=False))
    assert len(d.test) == 10 and len(d.train) == 30
    assert np.bincount(d.test.labels, minlength=10).tolist() == [1] * 10
    x, y = arrays["t10k"]
    assert np.array_equal(np.sort(np.concatenate([d.train.ids, d.test.ids])), np.arange(40))
    assert (d.train.labels == y[d.train.ids]).all() and (d.test.labels == y[d.test.ids]).all()
    np.testing.assert_allclose(d.test.source.x[:, 0].numpy() * 255, x[d.test.ids], atol=1e-3)


def test_mnist_mixed_gz_and_plain_full_layout(tmp_path):
    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    y_tr = np.arange(30, dtype=np.uint8) % 10
    x_te = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    y_te = np.arange(10, dtype=np.uint8)[::-1].copy()
    write_idx(tmp_path / "train-images-idx3-ubyte", x_tr)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y_tr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x_te)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y_te)
    d = load_data(mnist(tmp_path, normalize=False))
    assert len(d.train) == 30 and len(d.test) == 10 and d.notes == ()
    assert d.test.labels.tolist() == list(range(9, -1, -1))
    np.testing.assert_allclose(d.train.source.x[:, 0].numpy() * 255, x_tr, atol=1e-3)


def test_mnist_prefers_folder_with_test_images(tmp_path):
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    arrays = synthetic_mnist(tmp_path, n_train=None, n_test=20)
    d = load_quiet(mnist(tmp_path, normalize=False))
    assert len(d.train) + len(d.test) == 20
    assert (d.test.labels == arrays["t10k"][1][d.test.ids]).all()


# ================================================== MNIST: errors ==================================================
def _assert_mnist_layout_text(msg: str) -> None:
    for text in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "MNIST/raw",
        "download: true",
    ):
        assert text in msg, (text, msg)


def test_mnist_missing_root_and_unset_root(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(mnist(tmp_path / "nope"))
    assert "does not exist" in str(err.value)
    _assert_mnist_layout_text(str(err.value))
    with pytest.raises(DataError) as err:
        load_data(mnist(None))
    assert "data.root is not set" in str(err.value)
    _assert_mnist_layout_text(str(err.value))


def test_mnist_empty_folder(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        load_data(mnist(tmp_path))
    assert "no MNIST files" in str(err.value)
    _assert_mnist_layout_text(str(err.value))


def test_mnist_only_train_files(tmp_path):
    synthetic_mnist(tmp_path, n_train=20, n_test=20)
    for p in tmp_path.glob("t10k-*"):
        p.unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte.*required") as err:
        load_data(mnist(tmp_path))
    _assert_mnist_layout_text(str(err.value))


@pytest.mark.parametrize("magic", [b"\x12\x34\x56\x78", b"\x00\x00\x08\x01", b"\x00\x00\x0d\x03"])
def test_mnist_malformed_magic(tmp_path, magic):
    synthetic_mnist(tmp_path, n_train=None, n_test=20)
    x = np.zeros((20, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, magic=magic)
    with pytest.raises(DataError) as err:
        load_quiet(mnist(tmp_path))
    msg = str(err.value)
    assert f"magic number {magic.hex()}" in msg and "expected 00000803" in msg
    _assert_mnist_layout_text(msg)


def test_mnist_truncated_and_corrupt_files(tmp_path):
    synthetic_mnist(tmp_path, n_train=None, n_test=20, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="implies"):
        load_quiet(mnist(tmp_path))
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="magic number 3 bytes"):
        load_quiet(mnist(tmp_path))
    path.unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read"):
        load_quiet(mnist(tmp_path))


def test_mnist_images_labels_length_mismatch(tmp_path):
    synthetic_mnist(tmp_path, n_train=None, n_test=20)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(15, dtype=np.uint8) % 10)
    with pytest.raises(DataError, match="20 test images but 15 test labels"):
        load_quiet(mnist(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="digits 0-9, found 12"):
        load_quiet(mnist(tmp_path))


def test_mnist_subset_too_large(tmp_path):
    synthetic_mnist(tmp_path, n_train=20, n_test=20)
    with pytest.raises(DataError, match="test_subset=30"):
        load_data(mnist(tmp_path, test_subset=30))


def test_mnist_download_without_torchvision(tmp_path, no_torchvision):
    with pytest.raises(DataError, match=r"pip install unlearnkit\[vision\]"):
        load_data(mnist(tmp_path, download=True))

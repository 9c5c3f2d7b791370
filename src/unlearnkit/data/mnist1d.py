"""MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439): the official frozen pickle.

The data set is 5,000 one-dimensional signals of length 40 in 10 classes (4,000 train / 1,000 test), made from ten
hand-designed templates by padding, shearing, translating, scaling and adding correlated noise
(github.com/greydanus/mnist1d, Apache-2.0). The copy in ``shared/data/mnist1d`` is the repository's
``mnist1d_data.pkl`` (commit 7878d96; sha256 e952576…aa5), which ``pip install mnist1d`` regenerates exactly.

The file is a pickle. Unpickling can run code, so it is read with a restricted unpickler that admits only the three
numpy globals an array dict needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``); any
other object in the file is a :class:`~unlearnkit.errors.DataError`, never executed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnkit.config.schema import DataConfig
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource, stratified_subset
from unlearnkit.errors import DataError
from unlearnkit.registry import DATASETS

MNIST1D_FILE = "mnist1d_data.pkl"
#: sha256 of the official pickle (greydanus/mnist1d @ 7878d96082abd200c546a07a4101fa90b30fdf7e)
MNIST1D_SHA256 = "e95257676e9fb04568e46dda007da22cc8664ccba1451456afde55d7f6dd6aa5"
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}
_LAYOUT = (f"Expected '{MNIST1D_FILE}' (the official pickle of github.com/greydanus/mnist1d: a dict with x (4000, 40), "
           "y (4000,), x_test (1000, 40), y_test (1000,)) in data.root, or data.root pointing at that file; a copy is "
           "in shared/data/mnist1d, and `pip install mnist1d` regenerates it offline "
           "(mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())).")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays only (any other global is refused, never imported)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DataError(f"mnist1d: the pickle asks for {module}.{name}, which a data file of arrays never needs; "
                            f"refusing to load it. {_LAYOUT}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy ≥ 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def read_mnist1d(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the MNIST-1D pickle at ``path`` (a file, or a folder holding ``mnist1d_data.pkl``).

    Returns:
        ``{"x": float64 (n, 40), "y": int64 (n,), "x_test": float64 (m, 40), "y_test": int64 (m,), "sha256": ...}``.

    Raises:
        DataError: no file, an unreadable or foreign pickle, or arrays of the wrong shapes.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / MNIST1D_FILE
    if not p.is_file():
        raise DataError(f"mnist1d: '{p}' does not exist. {_LAYOUT}")
    raw = p.read_bytes()
    try:
        d = _ArrayUnpickler(io.BytesIO(raw)).load()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any corrupt pickle
        raise DataError(f"mnist1d: cannot read '{p}' ({type(err).__name__}: {err}). {_LAYOUT}") from err
    if not isinstance(d, dict) or not {"x", "y", "x_test", "y_test"} <= set(d):
        raise DataError(f"mnist1d: '{p}' is not the MNIST-1D dict (keys x, y, x_test, y_test). {_LAYOUT}")
    out = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        x, y = out[xk], out[yk]
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"mnist1d: {xk} {x.shape} and {yk} {y.shape} must be (n, L) and (n,). {_LAYOUT}")
        if not np.isfinite(x).all():
            raise DataError(f"mnist1d: {xk} holds NaN or inf values")
        out[yk] = y.astype(np.int64)
    out["sha256"] = hashlib.sha256(raw).hexdigest()  # type: ignore[assignment]
    return out


@DATASETS.register("mnist1d")
def load_mnist1d(cfg: DataConfig) -> LoadedData:
    """MNIST-1D: 1-D signals of length 40, 10 classes, 4,000 train / 1,000 test (the official split).

    ``cfg.root``: the folder holding ``mnist1d_data.pkl`` (e.g. ``shared/data/mnist1d``) or the file itself.
    Inputs: float32 (n, 40) — the signals as published (already ≈ zero mean, unit variance); with
    ``cfg.normalize`` each position is standardised with train statistics (+1e-3 in the std). Labels int64 0–9.
    Sample ids: the row in ``x`` (train, 0–3,999) and in ``x_test`` (test, 0–999); separate namespaces.
    ``train_subset`` / ``test_subset``: class-stratified subsets seeded by ``split_seed`` / ``split_seed + 1``
    (ids never depend on subsetting). A file whose sha256 is not the official one is loaded with a note.

    Raises:
        DataError: root unset or missing, a foreign pickle, a subset larger than the set.
    """
    if cfg.root is None:
        raise DataError(f"mnist1d: data.root is not set. {_LAYOUT}")
    if cfg.download:
        raise DataError("mnist1d: download is not supported; the file is small and offline: " + _LAYOUT)
    d = read_mnist1d(cfg.root)
    notes: tuple[str, ...] = ()
    if d["sha256"] != MNIST1D_SHA256:
        notes = (f"mnist1d: the file's sha256 ({str(d['sha256'])[:12]}…) is not the official pickle's "
                 f"({MNIST1D_SHA256[:12]}…)",)
    x, y, xt, yt = (d[k] for k in ("x", "y", "x_test", "y_test"))
    if cfg.normalize:
        mu = x.mean(axis=0, keepdims=True)
        sd = x.std(axis=0, keepdims=True) + 1e-3
        x, xt = (x - mu) / sd, (xt - mu) / sd
    sets = {}
    for split, xs, ys, n_sub, seed in (("train", x, y, cfg.train_subset, cfg.split_seed),
                                       ("test", xt, yt, cfg.test_subset, cfg.split_seed + 1)):
        if n_sub is None:
            pos = np.arange(len(ys), dtype=np.int64)
        else:
            try:
                pos = stratified_subset(ys, n_sub, seed).astype(np.int64)
            except DataError as err:
                raise DataError(f"mnist1d: data.{split}_subset={n_sub} is too large: {err}") from err
        src = TensorSource(torch.from_numpy(np.ascontiguousarray(xs[pos], dtype=np.float32)),
                           torch.from_numpy(ys[pos].copy()))
        sets[split] = SampleSet(src, np.arange(len(pos)), pos, ys[pos], 10, split)
    return LoadedData("mnist1d", sets["train"], sets["test"], 10, tuple(str(i) for i in range(10)), notes=notes)


__all__ = ["MNIST1D_SHA256", "load_mnist1d", "read_mnist1d"]

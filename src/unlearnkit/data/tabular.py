"""scikit-learn's bundled 8×8 digits: the built-in default data set (no download, no files)."""

from __future__ import annotations

import numpy as np
import torch

from unlearnkit.config.schema import DataConfig
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource, stratified_subset
from unlearnkit.registry import DATASETS


@DATASETS.register("digits")
def load_digits_data(cfg: DataConfig) -> LoadedData:
    """sklearn ``load_digits``: 1,797 grey 8×8 images of the digits 0–9 (UCI optdigits test part; BSD-3-Clause).

    Split: a fixed, stratified train/test split with ``cfg.test_fraction`` (default 25 %) held out, seeded by
    ``cfg.split_seed`` (default 0), so the same config always gives the same split.
    Inputs: float32 (n, 1, 8, 8) in [0, 1] (pixel / 16), standardised per pixel with train statistics when
    ``cfg.normalize``. Sample ids: the row index in ``load_digits()`` (0–1796); test ids likewise.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32).reshape(-1, 1, 8, 8) / 16.0
    y = bunch.target.astype(np.int64)
    n = len(y)
    n_test = int(round(cfg.test_fraction * n))
    test_pos = stratified_subset(y, n_test, cfg.split_seed)
    train_mask = np.ones(n, dtype=bool)
    train_mask[test_pos] = False
    train_pos = np.flatnonzero(train_mask)
    if cfg.normalize:
        mu = x[train_pos].mean(axis=0, keepdims=True)
        sd = x[train_pos].std(axis=0, keepdims=True) + 1e-3
        x = (x - mu) / sd
    if cfg.train_subset is not None:
        train_pos = train_pos[stratified_subset(y[train_pos], cfg.train_subset, cfg.split_seed + 1)]
    if cfg.test_subset is not None:
        test_pos = test_pos[stratified_subset(y[test_pos], cfg.test_subset, cfg.split_seed + 2)]
    src = TensorSource(torch.from_numpy(x), torch.from_numpy(y))
    train = SampleSet(src, train_pos, train_pos, y[train_pos], 10, "train")
    test = SampleSet(src, test_pos, test_pos, y[test_pos], 10, "test")
    return LoadedData("digits", train, test, 10, tuple(str(i) for i in range(10)))

"""Helpers shared by test modules (import as ``from testkit import ...``; conftest.py holds only fixtures).

A module name of its own: several test folders have a conftest.py, so ``from conftest import`` would resolve to
whichever was imported last.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unlearnkit.data.base import LoadedData, SampleSet, TensorSource


def make_blobs(n_per_class: int = 40, n_classes: int = 3, dim: int = 8, seed: int = 0,
               centre: float = 3.0) -> LoadedData:
    """Gaussian blobs: class c centred at centre·e_c; 75 % train, 25 % test (every 4th sample), ids 0..n−1."""
    g = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(n_classes):
        mean = np.zeros(dim, dtype=np.float32)
        mean[c % dim] = centre
        xs.append(mean + g.normal(size=(n_per_class, dim)).astype(np.float32))
        ys.append(np.full(n_per_class, c))
    x = torch.from_numpy(np.concatenate(xs))
    y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    n = len(y)
    test_pos = np.arange(0, n, 4)
    train_pos = np.setdiff1d(np.arange(n), test_pos)
    src = TensorSource(x, y)
    train = SampleSet(src, train_pos, train_pos, y.numpy()[train_pos], n_classes, "train")
    test = SampleSet(src, test_pos, test_pos, y.numpy()[test_pos], n_classes, "test")
    return LoadedData("blobs", train, test, n_classes, tuple(map(str, range(n_classes))))


def tiny_model(seed: int = 0, dim: int = 8, n_classes: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, n_classes))


def shared_data_dir():
    """The read-only data folder ``shared/data`` (README of the data sets there), or None where it is absent.

    Looked up, in order: ``$UNLEARNKIT_SHARED_DATA``; ``shared/data`` beside the checkout (``<checkout>/../shared/data``,
    the layout of CI and of the main working copy); then beside each folder above it (a git worktree kept under a
    sub-folder of the workspace). Never a fixed absolute path: the checkout may live anywhere.
    """
    import os
    from pathlib import Path

    env = os.environ.get("UNLEARNKIT_SHARED_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    checkout = Path(__file__).resolve().parents[1]
    for base in checkout.parents:
        p = base / "shared" / "data"
        if p.is_dir():
            return p
    return None


def shared_path(*parts: str):
    """``shared_data_dir() / parts`` (a Path that does not exist when the shared data are absent)."""
    from pathlib import Path

    root = shared_data_dir()
    return (root if root is not None else Path("shared-data-not-found")).joinpath(*parts)


def text_problem(v: str) -> str | None:
    """A NUL byte or a lone surrogate: no config string may hold one (written independently of config/limits.py)."""
    if "\x00" in v:
        return "NUL"
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "surrogate"
    return None

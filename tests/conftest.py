"""Shared fixtures: a tiny synthetic classification task and model (seconds on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import EngineConfig, ScenarioConfig
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource
from unlearnkit.data.scenarios import Task, build_task
from unlearnkit.engine.loop import Engine


def make_blobs(n_per_class: int = 40, n_classes: int = 3, dim: int = 8, seed: int = 0) -> LoadedData:
    """Gaussian blobs: class c centred at 3·e_c; 75 % train, 25 % test (every 4th sample), ids 0..n−1."""
    g = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(n_classes):
        centre = np.zeros(dim, dtype=np.float32)
        centre[c % dim] = 3.0
        xs.append(centre + g.normal(size=(n_per_class, dim)).astype(np.float32))
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


@pytest.fixture
def blobs() -> LoadedData:
    return make_blobs()


@pytest.fixture
def tiny_task(blobs: LoadedData) -> Task:
    return build_task(blobs, ScenarioConfig(kind="random", fraction=0.1, seed=0))


@pytest.fixture
def engine() -> Engine:
    return Engine(EngineConfig(device="cpu", progress=False, deterministic=True))


@pytest.fixture
def trained_model(tiny_task: Task, engine: Engine) -> nn.Module:
    from unlearnkit.config.schema import TrainConfig

    model = tiny_model(0)
    engine.fit(model, tiny_task.train, TrainConfig(epochs=15, batch_size=16, lr=0.05, scheduler="none"), seed=0)
    return model

"""Shared fixtures: a tiny synthetic classification task and model (seconds on CPU)."""

from __future__ import annotations

import pytest
from torch import nn

from unlearnkit.config.schema import EngineConfig, ScenarioConfig
from testkit import make_blobs, tiny_model
from unlearnkit.data.base import LoadedData
from unlearnkit.data.scenarios import Task, build_task
from unlearnkit.engine.loop import Engine


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

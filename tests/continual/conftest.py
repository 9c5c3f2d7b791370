"""Fixtures of the continual tests: digits and a single-thread engine."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.config.schema import DataConfig, EngineConfig
from unlearnkit.data import load_data
from unlearnkit.engine.loop import Engine


@pytest.fixture(scope="session")
def digits():
    return load_data(DataConfig(name="digits"))


@pytest.fixture(scope="session")
def engine():
    torch.set_num_threads(1)
    return Engine(EngineConfig(progress=False, threads=1))

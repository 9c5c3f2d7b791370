"""Fixtures shared by the recsys method tests: a one-thread engine and a small synthetic user-deletion task."""

from __future__ import annotations

import pytest

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.recsys import RecsysScenarioConfig, RecsysSplitConfig, SyntheticConfig, build_recsys_task, \
    generate_synthetic
from unlearnkit.engine.loop import Engine


@pytest.fixture(scope="module")
def engine():
    return Engine(EngineConfig(progress=False, threads=1))


@pytest.fixture(scope="module")
def task():
    """80 users × 60 items, ~12 interactions each; 10 % of the users deleted (seed 0)."""
    d = generate_synthetic(SyntheticConfig(n_users=80, n_items=60, mean_interactions=12, dim=4, seed=0))
    return build_recsys_task(d, RecsysSplitConfig(), RecsysScenarioConfig(kind="users", fraction=0.1, seed=0))

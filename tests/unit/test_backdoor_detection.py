"""The backdoor_detection metric (Expose Before You Defend): it flags the planted target label on a backdoored model,
does not flag a model trained without the poisons, and refuses a scenario without a planted backdoor."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.config.schema import DataConfig, ModelSpec, TrainConfig
from unlearnkit.data.corrective import MANIPULATION_KEY, corrective_task, poison
from unlearnkit.data.scenarios import load_data
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.base import EvalContext
from unlearnkit.models import build_model

TARGET = 7


@pytest.fixture(scope="module")
def manip():
    """digits with 5 % BadNets poisons (2×2 corner trigger → 7)."""
    return poison(load_data(DataConfig(name="digits")), fraction=0.05, target=TARGET, trigger_size=2, seed=0)


def _fit(engine, train, seed=0):
    model = build_model(ModelSpec(name="cnn", params={"channels": [16, 32]}), (1, 8, 8), 10, seed=seed)
    engine.fit(model, train, TrainConfig(epochs=20, batch_size=32, lr=0.05, scheduler="none"), seed=seed)
    return model


def _read(model, manip, engine, **params):
    metric = METRICS.build("backdoor_detection", params)
    ctx = EvalContext(model, None, engine, references={MANIPULATION_KEY: manip})
    return metric.compute(ctx)


def test_the_planted_target_is_detected_on_the_backdoored_model_only(manip, engine):
    backdoored = _fit(engine, manip.data.train)
    out = _read(backdoored, manip, engine)
    assert out.values["backdoor_detected"] == 100.0
    assert out.values["backdoor_exposure_share"] > 50.0
    hist = out.per_sample["backdoor_histogram"]
    assert hist.shape == (10,) and abs(hist.sum() - 1.0) < 1e-6 and int(np.argmax(hist)) == TARGET
    assert out.values["backdoor_exposure_share"] == pytest.approx(100.0 * hist[TARGET])
    # the oracle of the corrective scenario: every poison removed before training
    clean = _fit(engine, corrective_task(manip, 1.0, seed=0).retain)
    out = _read(clean, manip, engine)
    assert out.values["backdoor_detected"] == 0.0
    assert out.values["backdoor_exposure_share"] < 50.0


def test_backdoor_detection_refuses_a_scenario_without_a_planted_backdoor(engine):
    model = build_model(ModelSpec(name="cnn", params={"channels": [4, 8]}), (1, 8, 8), 10, seed=0)
    with pytest.raises(ConfigError, match="corrective"):
        _read(model, None, engine, defense_size=10)

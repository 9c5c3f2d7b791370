"""Conformance suite: every registered method, on a tiny task, in seconds.

Checks: config round-trip and typo rejection; runs and returns a finite model of the same architecture;
deterministic under a seed (bit-identical weights); the forget ids are honoured (the recorded training ids never
include ids outside D, retrain never sees D_f, and a different forget set gives a different model); typed errors for
an empty forget set, a missing retain set and an unknown parameter.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import ScenarioConfig, TrainConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods import METHODS, UnlearnContext

ALL = METHODS.names()
CTX = UnlearnContext(seed=0, train_recipe=TrainConfig(epochs=2, batch_size=16, lr=0.05, scheduler="none"))


def build(name: str):
    entry = METHODS.entry(name)
    return METHODS.build(name, dict(entry.obj.smoke_params))


def run(name, model, task, engine, ctx=CTX):
    return build(name).unlearn(copy.deepcopy(model), task.forget, task.retain, engine, ctx)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ALL)
def test_config_round_trip_and_typo(name):
    entry = METHODS.entry(name)
    assert entry.config is not None, f"{name} must register a config class"
    cfg = entry.config()
    again = entry.config.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        METHODS.validate_config(name, {"definitely_not_a_field": 1})
    with pytest.raises(Exception):  # frozen
        cfg.__setattr__(next(iter(entry.config.model_fields)), None)
    assert entry.obj.source, f"{name} must name its source (paper, arXiv id)"
    assert entry.obj.__doc__ and len(entry.obj.__doc__) > 80, f"{name} needs a docstring with update rule and source"


@pytest.mark.parametrize("name", ALL)
def test_runs_finite_and_deterministic(name, trained_model, tiny_task, engine):
    a = run(name, trained_model, tiny_task, engine)
    b = run(name, trained_model, tiny_task, engine)
    sa, sb = state(a.model), state(b.model)
    assert sa.keys() == state(trained_model).keys()
    for k in sa:
        assert torch.isfinite(sa[k].float()).all(), f"{name}: {k} not finite"
        assert torch.equal(sa[k], sb[k]), f"{name}: not deterministic under a fixed seed ({k})"
    assert a.seconds > 0
    out = a.model(tiny_task.test.batch(np.arange(4))[0])
    assert out.shape == (4, tiny_task.num_classes)


@pytest.mark.parametrize("name", ALL)
def test_forget_ids_honoured(name, trained_model, tiny_task, blobs, engine):
    res = run(name, trained_model, tiny_task, engine)
    if res.seen_ids is not None:
        assert set(res.seen_ids.tolist()) <= set(tiny_task.train.ids.tolist())
        if METHODS.get(name).kind == "exact":
            assert not set(res.seen_ids.tolist()) & set(tiny_task.forget.ids.tolist())
    other = build_task(blobs, ScenarioConfig(kind="random", fraction=0.1, seed=1))
    assert not np.array_equal(np.sort(other.forget.ids), np.sort(tiny_task.forget.ids))
    res2 = run(name, trained_model, other, engine)
    differs = any(not torch.equal(v, state(res2.model)[k]) for k, v in state(res.model).items())
    assert differs, f"{name}: the result does not depend on which samples are forgotten"


@pytest.mark.parametrize("name", ALL)
def test_typed_errors(name, trained_model, tiny_task, engine):
    method = build(name)
    empty = tiny_task.forget.take(np.zeros(0, dtype=np.int64))
    with pytest.raises(MethodError, match="forget set is empty"):
        method.unlearn(copy.deepcopy(trained_model), empty, tiny_task.retain, engine, CTX)
    if METHODS.get(name).needs_retain:
        no_retain = tiny_task.retain.take(np.zeros(0, dtype=np.int64))
        with pytest.raises(MethodError, match="retain"):
            method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, no_retain, engine, CTX)
    with pytest.raises(MethodError, match="share"):
        method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.train, engine, CTX)

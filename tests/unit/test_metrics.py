"""Metric contract: EvalContext splits and caching, eval mode, documented keys, typed errors (unlearnkit.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import METRICS, EvalContext, Metric


class _Counting(nn.Module):
    """Linear model that counts forward passes and records the training flag of each."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)
        self.calls = 0
        self.modes: list[bool] = []

    def forward(self, x):
        self.calls += 1
        self.modes.append(self.training)
        return self.lin(self.drop(x))


def test_eval_context_maps_splits_and_caches_predictions(tiny_task, engine):
    m = _Counting()
    ctx = EvalContext(m, tiny_task, engine)
    f = ctx.predictions("forget")
    assert f.ids.tolist() == tiny_task.forget.ids.tolist()
    calls = m.calls
    assert ctx.predictions("forget") is f and m.calls == calls  # cached, not recomputed
    assert ctx.predictions("retain").ids.tolist() == tiny_task.retain.ids.tolist()
    assert ctx.predictions("test").ids.tolist() == tiny_task.test.ids.tolist()
    assert ctx.predictions("test_all").ids.tolist() == tiny_task.test.ids.tolist()
    assert set(ctx.computed) == {"forget", "retain", "test", "test_all"}
    with pytest.raises(ConfigError, match="unknown split 'holdout'"):
        ctx.predictions("holdout")
    with pytest.raises(ConfigError, match="does not exist in scenario 'random'"):
        ctx.predictions("test_forgotten")


def test_class_scenario_splits(blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    ctx = EvalContext(_Counting(), task, engine)
    assert set(ctx.predictions("test").labels.tolist()) == {0, 2}
    assert set(ctx.predictions("test_forgotten").labels.tolist()) == {1}
    assert len(ctx.predictions("test_all").labels) == len(task.test)


def test_c21_metrics_evaluate_in_eval_mode_and_restore_the_flag(tiny_task, engine):
    m = _Counting()
    m.train()
    v1 = METRICS.build("accuracy").compute(EvalContext(m, tiny_task, engine)).values
    v2 = METRICS.build("accuracy").compute(EvalContext(m, tiny_task, engine)).values
    assert not any(m.modes) and m.training is True
    assert v1 == v2  # dropout 0.5 would make train-mode scores random


def test_metrics_on_a_trained_model_are_consistent(tiny_task, engine, trained_model):
    ctx = EvalContext(trained_model, tiny_task, engine)
    acc = METRICS.build("accuracy").compute(ctx).values
    mia = METRICS.build("mia_efficacy").compute(ctx).values
    assert acc["unlearn_acc"] == 100.0 - acc["forget_acc"]
    for v in (*acc.values(), *mia.values()):
        assert 0.0 <= v <= 100.0
    assert acc["retain_acc"] > 80.0  # the blobs are learnable
    # per-split ground truth recomputed by hand from the logits
    f = engine.predict(trained_model, tiny_task.forget)
    assert acc["forget_acc"] == 100.0 * int((f.logits.argmax(1) == f.labels).sum()) / len(f.labels)


def test_every_metric_documents_its_keys_and_source():
    for name, entry in METRICS.items():
        assert issubclass(entry.obj, Metric), name
        assert entry.obj.keys and all(isinstance(d, str) and d for d in entry.obj.keys.values()), name
        assert entry.obj.source, name


def test_mia_config_validation():
    with pytest.raises(ConfigError, match="Allowed keys: member_sampling, C"):
        METRICS.build("mia_efficacy", {"c": 1.0})
    with pytest.raises(ConfigError):
        METRICS.build("mia_efficacy", {"C": 0})
    assert METRICS.build("mia_efficacy", {"C": 1.5}).config.C == 1.5


def test_metric_output_per_sample_arrays_align_with_forget_set(tiny_task, engine, trained_model):
    out = METRICS.build("mia_efficacy").compute(EvalContext(trained_model, tiny_task, engine))
    n = len(tiny_task.forget)
    assert out.per_sample["forget_confidence"].shape == (n,)
    assert set(np.unique(out.per_sample["forget_mia_member_pred"])) <= {0, 1}
    eff = 100.0 * (1 - out.per_sample["forget_mia_member_pred"].mean())
    assert out.values["mia_efficacy"] == pytest.approx(eff)
    probs = torch.softmax(engine.predict(trained_model, tiny_task.forget).logits.double(), 1)
    want = probs[torch.arange(n), torch.from_numpy(tiny_task.forget.labels)].numpy()
    assert out.per_sample["forget_confidence"] == pytest.approx(want, abs=1e-6)

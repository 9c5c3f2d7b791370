"""The relearning attack (metric ``relearn``): curve arithmetic, no side effects, same attack for θ_u and θ_r, and a
model that only hides D_f relearns it faster than the oracle."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import ScenarioConfig, TrainConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics import METRICS, EvalContext
from unlearnkit.metrics.relearn import RelearnConfig, RelearnCurve, relearn_curve, split_relearn

from testkit import make_blobs, tiny_model

RECIPE = TrainConfig(epochs=15, batch_size=16, lr=0.05, scheduler="none")


def test_curve_auc_is_the_trapezoid_mean():
    c = RelearnCurve(np.array([0, 1, 2, 5]), np.array([0.0, 50.0, 100.0, 100.0]))
    # (0+50)/2·1 + (50+100)/2·1 + (100+100)/2·3 = 400, over 5 steps
    assert c.auc == pytest.approx(80.0)
    assert RelearnCurve(np.array([0]), np.array([42.0])).auc == 42.0


def test_attack_leaves_the_model_untouched_and_starts_at_its_accuracy(tiny_task, engine, trained_model):
    before = copy.deepcopy(trained_model.state_dict())
    heldout = tiny_task.forget.take(np.arange(3, len(tiny_task.forget)))
    cu = relearn_curve(trained_model, tiny_task.forget.take(np.arange(3)), heldout, engine,
                       RelearnConfig().recipe(), steps=7, eval_at=(2, 5, 9), seed=0)
    assert cu.steps.tolist() == [0, 2, 5]  # 9 > steps is dropped; 0 always
    assert cu.accuracy[0] == engine.predict(trained_model, heldout).accuracy()
    for k, v in trained_model.state_dict().items():
        assert torch.equal(v, before[k])


def test_oracle_attacked_identically_gives_zero_gap(tiny_task, engine, trained_model):
    ctx = EvalContext(trained_model, tiny_task, engine, seed=3, references={"oracle_model": trained_model})
    out = METRICS.build("relearn", {"steps": 6, "eval_at": [1, 3, 6], "fraction": 0.4}).compute(ctx)
    assert out.values["relearn_auc_gap"] == 0.0  # same model, same relearn set, same batches: same curve
    assert out.values["relearn_n_relearn"] + out.values["relearn_n_heldout"] == len(tiny_task.forget)
    assert np.array_equal(out.per_sample["curve"], out.per_sample["oracle_curve"])
    assert set(out.per_sample["relearn_ids"]) <= set(tiny_task.forget.ids.tolist())


def test_hidden_knowledge_comes_back_faster_than_for_the_oracle(engine):
    """'Unlearning' class 0 by pushing its logit bias to −20 hides it; a few steps on 10 % of it undo that, while
    the oracle (never trained on class 0) has to learn it."""
    data = make_blobs(n_per_class=60)
    task = build_task(data, ScenarioConfig(kind="class", classes=[0]))
    original = tiny_model(0)
    engine.fit(original, task.train, RECIPE, seed=0)
    hidden = copy.deepcopy(original)
    with torch.no_grad():
        hidden[2].bias[0] -= 20.0
    oracle = tiny_model(1)
    engine.fit(oracle, task.retain, RECIPE, seed=0)
    cfg = {"steps": 10, "eval_at": [1, 2, 3, 5, 10], "lr": 0.05}
    out = METRICS.build("relearn", cfg).compute(
        EvalContext(hidden, task, engine, references={"oracle_model": oracle}))
    v = out.values
    assert v["relearn_forget_acc@0"] == 0.0 and v["relearn_oracle_forget_acc@0"] == 0.0
    assert v["relearn_forget_acc@10"] > 90.0
    assert v["relearn_auc_gap"] > 10.0  # measured 18 pp (blobs are easy to learn, even for the oracle)


def test_split_and_config_errors(tiny_task, engine, trained_model):
    ctx = EvalContext(trained_model, tiny_task, engine, seed=0, references={})
    relearn, heldout = split_relearn(ctx, RelearnConfig(count=2))
    assert len(relearn) == 2 and len(heldout) == len(tiny_task.forget) - 2
    assert not set(relearn.ids) & set(heldout.ids)
    with pytest.raises(DataError, match="between 1"):
        split_relearn(ctx, RelearnConfig(count=len(tiny_task.forget)))
    with pytest.raises(DataError, match="class scenario"):
        split_relearn(ctx, RelearnConfig(source="test_forgotten"))
    with pytest.raises(ConfigError, match="oracle"):
        METRICS.build("relearn").compute(ctx)
    with pytest.raises(ConfigError):
        METRICS.build("relearn", {"fraction": 0.1, "count": 3})

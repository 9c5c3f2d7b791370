"""CF-k: only the last k layers train (from θ_o, no re-initialisation); the front stays bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext

CTX = UnlearnContext(seed=0)


@pytest.fixture
def bn_trained(tiny_task, engine) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                          nn.ReLU(), nn.Linear(16, 3))
    engine.fit(model, tiny_task.train, TrainConfig(epochs=5, batch_size=16, lr=0.05, scheduler="none"), seed=0)
    return model


@pytest.mark.parametrize("k,unit,trained,frozen", [
    (1, "weight_layer", {"6"}, {"0", "1", "3", "4"}),
    (2, "weight_layer", {"3", "4", "6"}, {"0", "1"}),
    (2, "module", {"4", "6"}, {"0", "1", "3"}),
])
def test_front_bit_identical_last_k_trained(bn_trained, tiny_task, engine, k, unit, trained, frozen):
    # batch 27: 81 retain samples split evenly (a 1-sample batch breaks BatchNorm in train mode)
    cfg = {"k": k, "layer_unit": unit, "use_original_recipe": False, "epochs": 2, "batch_size": 27, "lr": 0.05}
    res = METHODS.build("cf_k", cfg).unlearn(copy.deepcopy(bn_trained), tiny_task.forget, tiny_task.retain, engine,
                                             CTX)
    assert set(res.notes["layers"]) == trained
    got, orig = res.model.state_dict(), bn_trained.state_dict()
    for key in got:
        module = key.split(".")[0]
        if module in frozen:  # parameters and BatchNorm running statistics
            assert torch.equal(got[key], orig[key]), f"frozen {key} changed"
        elif key.endswith(("weight", "bias")):
            assert bool((got[key] != orig[key]).all()), f"trained {key}: some entries did not move"
    assert all(p.requires_grad for p in res.model.parameters())


def test_cf_k_starts_from_theta_o_not_a_reinit(bn_trained, tiny_task, engine):
    """Fine-tuning with a vanishing lr leaves θ_o in place (EU-k would have re-initialised the head)."""
    cfg = {"k": 1, "use_original_recipe": False, "epochs": 1, "lr": 1e-30, "momentum": 0.0, "weight_decay": 0.0}
    res = METHODS.build("cf_k", cfg).unlearn(copy.deepcopy(bn_trained), tiny_task.forget, tiny_task.retain, engine,
                                             CTX)
    torch.testing.assert_close(res.model[6].weight, bn_trained[6].weight, rtol=1e-6, atol=1e-20)
    assert engine.predict(res.model, tiny_task.test).accuracy() == engine.predict(bn_trained, tiny_task.test).accuracy()


def test_k_larger_than_the_model(bn_trained, tiny_task, engine):
    with pytest.raises(MethodError, match="only 3"):
        METHODS.build("cf_k", {"k": 4, "use_original_recipe": False, "epochs": 1}).unlearn(
            copy.deepcopy(bn_trained), tiny_task.forget, tiny_task.retain, engine, CTX)

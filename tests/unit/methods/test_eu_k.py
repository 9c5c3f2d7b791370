"""EU-k and the shared "last k layers" helpers: layer selection, seeded re-initialisation, a bit-identical front."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.engine.loop import num_train_batches
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.methods.classifier.eu_k import reinitialise
from unlearnkit.models.parts import forward_order, last_k_modules


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                         nn.ReLU(), nn.Linear(16, 3))


@pytest.fixture
def bn_trained(tiny_task, engine) -> nn.Module:
    model = bn_model()
    engine.fit(model, tiny_task.train, TrainConfig(epochs=5, batch_size=16, lr=0.05, scheduler="none"), seed=0)
    return model


def names(mods):
    return [n for n, _ in mods]


def test_last_k_counts_weight_layers_with_their_batchnorm():
    order = forward_order(bn_model(), torch.randn(2, 8))
    assert names(order) == ["0", "1", "3", "4", "6"]
    assert names(last_k_modules(order, 1)) == ["6"]
    assert names(last_k_modules(order, 2)) == ["3", "4", "6"]
    assert names(last_k_modules(order, 3)) == ["0", "1", "3", "4", "6"]
    assert names(last_k_modules(order, 2, "module")) == ["4", "6"]
    with pytest.raises(MethodError, match="only 3 convolution/linear layers"):
        last_k_modules(order, 4)


def test_layers_follow_forward_not_definition_order():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)  # defined first, called last
            self.body = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    order = forward_order(Net(), torch.randn(2, 8))
    assert names(order) == ["body", "head"]
    assert names(last_k_modules(order, 1)) == ["head"]


def test_reinitialise_is_seeded_and_refuses_modules_without_reset():
    a, b = nn.Linear(5, 5), nn.Linear(5, 5)
    reinitialise([("a", a)], 123)
    reinitialise([("b", b)], 123)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

    with pytest.raises(MethodError, match="reset_parameters"):
        reinitialise([("scale", Scale())], 0)


def test_eu_k_reinitialises_last_k_and_freezes_the_rest(bn_trained, tiny_task, engine):
    """lr = 1e-30: the trained layers end at their seeded re-initialisation (up to ~1e-30 steps)."""
    theta_o = copy.deepcopy(bn_trained)
    cfg = {"k": 2, "use_original_recipe": False, "epochs": 1, "lr": 1e-30, "momentum": 0.0, "weight_decay": 0.0}
    res = METHODS.build("eu_k", cfg).unlearn(copy.deepcopy(bn_trained), tiny_task.forget, tiny_task.retain, engine,
                                             UnlearnContext(seed=0))
    assert res.notes["layers"] == ["3", "4", "6"] and res.notes["reinit_seed"] == derive_seed(0, "eu_k-init")
    # independent re-initialisation: same seed, same modules, same (forward) order
    expected = copy.deepcopy(theta_o)
    torch.manual_seed(derive_seed(0, "eu_k-init"))
    for i in (3, 4, 6):
        expected[i].reset_parameters()
    got, exp, orig = res.model.state_dict(), expected.state_dict(), theta_o.state_dict()
    for key in ("3.weight", "3.bias", "4.weight", "4.bias", "6.weight", "6.bias"):
        torch.testing.assert_close(got[key], exp[key], rtol=1e-6, atol=1e-20, msg=key)  # zeros move by ~1e-32
        assert not torch.equal(got[key], orig[key]) or key.startswith("4."), key  # BN affine resets to 1 / 0
    assert not torch.equal(got["6.weight"], orig["6.weight"])
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                "1.num_batches_tracked"):
        assert torch.equal(got[key], orig[key]), f"frozen {key} changed"
    assert all(p.requires_grad for p in res.model.parameters())  # requires_grad restored


def test_eu_k_trains_and_uses_the_original_recipe(bn_trained, tiny_task, engine):
    recipe = TrainConfig(epochs=2, batch_size=16, lr=0.05, scheduler="none")
    ctx = UnlearnContext(seed=0, train_recipe=recipe)
    res = METHODS.build("eu_k", {"k": 1}).unlearn(copy.deepcopy(bn_trained), tiny_task.forget, tiny_task.retain,
                                                  engine, ctx)
    assert res.steps == 2 * num_train_batches(len(tiny_task.retain), 16)  # 81 = 5×16 + 1: tail batch merged
    own = METHODS.build("eu_k", {"k": 1, "use_original_recipe": False, "epochs": 1, "batch_size": 32}).unlearn(
        copy.deepcopy(bn_trained), tiny_task.forget, tiny_task.retain, engine, ctx)
    assert own.steps == math.ceil(len(tiny_task.retain) / 32)
    # retrained head: still a working classifier on the test set (>> 1/3 chance)
    assert engine.predict(res.model, tiny_task.test).accuracy() > 80
    assert set(res.seen_ids.tolist()) == set(tiny_task.retain.ids.tolist())

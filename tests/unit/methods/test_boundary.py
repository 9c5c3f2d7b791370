"""Boundary Shrink (FGSM neighbour labels) and Boundary Expanding (shadow neuron added, trained, pruned)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.boundary_expanding import prune_head, widen_head
from unlearnkit.methods.classifier.boundary_shrink import fgsm, nearest_wrong_labels


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fgsm_matches_closed_form_gradient_of_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    p = _softmax(x.numpy() @ w.T + b)
    grad = (p - np.eye(3)[y.numpy()]) @ w  # ∂CE/∂x per sample (the batch mean only rescales it)
    expected = x.numpy() + 0.3 * np.sign(grad)
    assert np.allclose(fgsm(lin, x, y, 0.3).numpy(), expected)
    clamped = fgsm(lin, x, y, 0.3, input_range=(-0.5, 0.5)).numpy()
    assert np.allclose(clamped, np.clip(expected, -0.5, 0.5))


def _independent_attack_argmax(model, forget, eps):
    x, y, _ = forget.batch(np.arange(len(forget)))
    x = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    with torch.no_grad():
        logits = model(x + eps * x.grad.sign())
    return logits.argmax(1).numpy(), logits.numpy(), y.numpy()


@pytest.mark.parametrize("eps", [0.5, 3.0])
def test_shrink_labels_are_wrong_and_equal_the_attacked_argmax(eps, trained_model, tiny_task, engine):
    model = copy.deepcopy(trained_model).eval()
    adv_argmax, adv_logits, y = _independent_attack_argmax(copy.deepcopy(model), tiny_task.forget, eps)
    labels, hit = nearest_wrong_labels(model, tiny_task.forget, engine, epsilon=eps, input_range=None,
                                       fallback="second_best", batch_size=4)
    assert (labels != y).all()
    assert np.array_equal(hit, adv_argmax != y)
    assert np.array_equal(labels[hit], adv_argmax[hit])
    masked = adv_logits.copy()
    masked[np.arange(len(y)), y] = -np.inf
    assert np.array_equal(labels[~hit], masked.argmax(1)[~hit])  # fallback: best wrong class of the attacked input
    keep, _ = nearest_wrong_labels(model, tiny_task.forget, engine, epsilon=eps, input_range=None, fallback="keep",
                                   batch_size=4)
    assert np.array_equal(keep, adv_argmax)  # the reference behaviour
    if eps == 3.0:
        assert hit.mean() > 0.5  # a large step crosses the boundary for most samples


def test_shrink_trains_on_the_neighbour_labels_only(trained_model, blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    res = METHODS.build("boundary_shrink", {"epochs": 5, "lr": 0.05, "batch_size": 8, "epsilon": 1.0}).unlearn(
        copy.deepcopy(trained_model), task.forget, task.retain, engine, UnlearnContext(seed=0))
    assert np.array_equal(res.seen_ids, np.sort(task.forget.ids))
    assert res.notes["relabelled"] == len(task.forget)
    assert res.steps == 5 * int(np.ceil(len(task.forget) / 8))
    assert engine.predict(res.model, task.forget).accuracy() < 20.0
    assert engine.predict(res.model, task.retain).accuracy() > 80.0


def test_widen_and_prune_head_round_trip(trained_model):
    head = trained_model[2]
    wide = widen_head(head, seed=0)
    assert wide.weight.shape == (4, 16) and wide.bias.shape == (4,)
    assert torch.equal(wide.weight[:3], head.weight) and torch.equal(wide.bias[:3], head.bias)
    assert float(wide.bias[3].detach()) == 0.0 and float(wide.weight[3].detach().abs().sum()) > 0
    assert torch.equal(widen_head(head, seed=0).weight, wide.weight)  # seeded
    assert not torch.equal(widen_head(head, seed=1).weight[3], wide.weight[3])
    back = prune_head(wide, 3)
    assert torch.equal(back.weight, head.weight) and torch.equal(back.bias, head.bias)


def test_expanding_restores_head_shape_and_drops_the_shadow_neuron(trained_model, blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    seen_shapes = []
    model = copy.deepcopy(trained_model)
    hook = lambda _m, _i, out: seen_shapes.append(tuple(out.shape))  # noqa: E731
    method = METHODS.build("boundary_expanding", {"epochs": 5, "lr": 0.05, "batch_size": 8})
    h = model.register_forward_hook(hook)  # records the model's output widths during the run
    out = method.unlearn(model, task.forget, task.retain, engine, UnlearnContext(seed=0))
    h.remove()
    assert {s[1] for s in seen_shapes} >= {4}  # the widened model (C + 1 outputs) was trained
    assert out.model[2].weight.shape == (3, 16) and out.model[2].bias.shape == (3,)
    assert {k: v.shape for k, v in out.model.state_dict().items()} == \
        {k: v.shape for k, v in trained_model.state_dict().items()}
    x = task.forget.batch(np.arange(len(task.forget)))[0]
    assert out.model(x).shape == (len(task.forget), 3)
    assert out.notes["shadow_row_norm"] > 0
    assert engine.predict(out.model, task.forget).accuracy() < 20.0
    assert engine.predict(out.model, task.retain).accuracy() > 80.0
    assert np.array_equal(out.seen_ids, np.sort(task.forget.ids))


def test_expanding_is_label_free(trained_model, tiny_task, engine):
    method = METHODS.build("boundary_expanding", {"epochs": 2, "lr": 0.01, "batch_size": 8})
    a = method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, UnlearnContext())
    relabelled = tiny_task.forget.relabel(np.zeros(len(tiny_task.forget), dtype=np.int64))
    b = method.unlearn(copy.deepcopy(trained_model), relabelled, tiny_task.retain, engine, UnlearnContext())
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())


class _NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 3))

    def forward(self, x):
        return x @ self.w


class _HeadNotLast(nn.Module):
    """The last *registered* nn.Linear is not the output layer."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(16, 3)
        self.inner = nn.Linear(8, 16)

    def forward(self, x):
        return self.out(torch.relu(self.inner(x)))


@pytest.mark.parametrize("model_cls,match", [(_NoLinear, "no nn.Linear"), (_HeadNotLast, "logits")])
def test_expanding_rejects_models_without_a_usable_head(model_cls, match, tiny_task, engine):
    model = model_cls()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MethodError, match=match):
        METHODS.build("boundary_expanding", {"epochs": 1}).unlearn(model, tiny_task.forget, tiny_task.retain,
                                                                   engine, UnlearnContext())
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in before.items()}


def test_shrink_needs_two_classes(tiny_task, engine):
    one = tiny_task.forget
    one = type(one)(one.source, one.positions, one.ids, np.zeros(len(one), dtype=np.int64), 1, "forget")
    with pytest.raises(MethodError, match="2 classes"):
        nearest_wrong_labels(nn.Linear(8, 1), one, engine, epsilon=0.1, input_range=None, fallback="keep",
                             batch_size=8)

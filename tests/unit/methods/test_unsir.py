"""UNSIR: the learned noise maximises the loss on its label; impair/repair step counts; retain subset; labels."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.unsir import learn_noise, per_class_subset


@pytest.mark.parametrize("label", [0, 1, 2])
def test_learned_noise_raises_the_loss_on_its_label(label, trained_model, engine):
    noise = learn_noise(trained_model, label, (8,), n=32, steps=40, lr=0.1, l2=0.1, seed=0, engine=engine)
    rand = torch.randn((32, 8), generator=torch.Generator().manual_seed(0))
    target = torch.full((32,), label)
    with torch.no_grad():
        ce_learned = float(torch.nn.functional.cross_entropy(trained_model(noise), target))
        ce_random = float(torch.nn.functional.cross_entropy(trained_model(rand), target))
    assert ce_learned > ce_random + 1.0
    assert noise.shape == (32, 8) and not noise.requires_grad


def test_noise_l2_regulariser_bounds_the_noise(trained_model, engine):
    free = learn_noise(trained_model, 0, (8,), n=16, steps=40, lr=0.1, l2=0.0, seed=0, engine=engine)
    tied = learn_noise(trained_model, 0, (8,), n=16, steps=40, lr=0.1, l2=1.0, seed=0, engine=engine)
    assert tied.pow(2).sum(1).mean() < free.pow(2).sum(1).mean()


def test_noise_learning_does_not_touch_the_model(trained_model, engine):
    trained_model.train()
    before = {k: v.clone() for k, v in trained_model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in trained_model.parameters()]
    learn_noise(trained_model, 1, (8,), n=8, steps=5, lr=0.1, l2=0.1, seed=0, engine=engine)
    assert all(torch.equal(before[k], v) for k, v in trained_model.state_dict().items())
    for g, p in zip(grads, trained_model.parameters()):  # no gradient accumulated into θ
        assert (g is None and p.grad is None) or torch.equal(g, p.grad)
    assert trained_model.training  # mode restored


def test_per_class_subset_caps_each_class(tiny_task):
    sub = per_class_subset(tiny_task.retain, 5, seed=0)
    labels, counts = np.unique(sub.labels, return_counts=True)
    assert labels.tolist() == [0, 1, 2] and counts.tolist() == [5, 5, 5]
    assert set(sub.ids.tolist()) <= set(tiny_task.retain.ids.tolist())
    assert np.array_equal(sub.ids, per_class_subset(tiny_task.retain, 5, seed=0).ids)
    assert per_class_subset(tiny_task.retain, None, seed=0) is tiny_task.retain


def test_impair_then_repair_step_counts(trained_model, blobs, engine, monkeypatch):
    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def counting_step(self, *a, **k):
        calls["n"] += 1
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    cfg = {"noise_batch": 10, "noise_steps": 7, "noise_copies": 3, "retain_per_class": 12, "batch_size": 16,
           "epochs": 2}
    res = METHODS.build("unsir", cfg).unlearn(copy.deepcopy(trained_model), task.forget, task.retain, engine,
                                              UnlearnContext(seed=0))
    n_sub = 12 * 2  # two retained classes, 30 training samples each, capped at 12
    assert res.notes["noise_labels"] == [1]
    assert res.notes["retain_subset"] == n_sub
    assert res.notes["impair_steps"] == 2 * math.ceil((10 * 3 + n_sub) / 16)
    assert res.notes["repair_steps"] == 2 * math.ceil(n_sub / 16)
    assert res.steps == res.notes["impair_steps"] + res.notes["repair_steps"]
    assert calls["n"] == 7 + res.steps  # noise Adam steps + impair + repair
    # D_f's inputs are never used: only the retain subset contributed gradients
    assert len(res.seen_ids) == n_sub and not set(res.seen_ids.tolist()) & set(task.forget.ids.tolist())


def test_sample_wise_forgetting_learns_one_noise_per_forgotten_label(trained_model, tiny_task, engine):
    res = METHODS.build("unsir", dict(METHODS.get("unsir").smoke_params)).unlearn(
        copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, UnlearnContext(seed=0))
    labels = sorted(set(tiny_task.forget.labels.tolist()))
    assert res.notes["noise_labels"] == labels
    assert res.notes["noise_samples"] == 16 * len(labels)


def test_impair_folds_a_one_sample_tail_batch(trained_model, blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    cfg = {"noise_batch": 10, "noise_steps": 2, "noise_copies": 3, "retain_per_class": 12, "batch_size": 53}
    res = METHODS.build("unsir", cfg).unlearn(copy.deepcopy(trained_model), task.forget, task.retain, engine,
                                              UnlearnContext(seed=0))
    assert res.notes["impair_steps"] == 1  # 54 = 53 + 1: the single tail sample joins the first batch
    assert res.notes["repair_steps"] == 1

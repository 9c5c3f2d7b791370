"""Analytic head: Woodbury deletion equals a ridge refit (numpy), sequential requests, iris (KNOWN_FAULTS C35)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.errors import DataError, MethodError, NotFittedError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier._common import head_features
from unlearnkit.methods.classifier.analytic_head import (
    AnalyticHead,
    AnalyticHeadConfig,
    RidgeHead,
    body_hash,
    fit_ridge_head,
)

CTX = UnlearnContext(seed=0)


def numpy_ridge(x, y, c, gamma):
    """Independent solve: W = (ΦᵀΦ + γI)⁻¹ΦᵀY with Φ = [X, 1], one-hot Y (numpy float64)."""
    phi = np.c_[np.asarray(x, dtype=np.float64), np.ones(len(x))]
    yy = np.eye(c)[np.asarray(y)]
    return np.linalg.solve(phi.T @ phi + gamma * np.eye(phi.shape[1]), phi.T @ yy)


def _data(n=120, d=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 3 + 1
    y = rng.integers(0, c, n)
    return x, y


def test_delete_equals_refit_on_remaining_rows():
    x, y = _data()
    head = RidgeHead(gamma=0.5).fit(x, y, num_classes=4, ids=np.arange(120))
    np.testing.assert_allclose(head.W.numpy(), numpy_ridge(x, y, 4, 0.5), rtol=1e-9, atol=1e-12)
    drop = np.random.default_rng(1).choice(120, 15, replace=False)
    keep = np.setdiff1d(np.arange(120), drop)
    new = head.delete(x[drop], y[drop], ids=drop)
    refit = RidgeHead(gamma=0.5).fit(x[keep], y[keep], num_classes=4)
    np.testing.assert_allclose(new.W.numpy(), numpy_ridge(x[keep], y[keep], 4, 0.5), atol=1e-6)
    np.testing.assert_allclose(new.W.numpy(), refit.W.numpy(), atol=1e-6)
    np.testing.assert_allclose(new.R.numpy(), refit.R.numpy(), atol=1e-6)
    assert new.n_samples == 105 and np.array_equal(new.ids, keep)
    assert head.n_samples == 120 and np.array_equal(head.ids, np.arange(120))  # the original is untouched


def test_three_sequential_deletions_stay_exact():
    x, y = _data(n=200, d=8, c=3, seed=2)
    head = RidgeHead(gamma=0.1).fit(x, y, num_classes=3, ids=np.arange(200))
    rng = np.random.default_rng(3)
    remaining = np.arange(200)
    for request in range(3):
        drop = rng.choice(remaining, 20, replace=False)
        head = head.delete(x[drop], y[drop], ids=drop)
        remaining = np.setdiff1d(remaining, drop)
        want = numpy_ridge(x[remaining], y[remaining], 3, 0.1)
        np.testing.assert_allclose(head.W.numpy(), want, atol=1e-6, err_msg=f"request {request}")
        scores = head.predict(x[remaining]).numpy()
        np.testing.assert_allclose(scores, np.c_[x[remaining], np.ones(len(remaining))] @ want, atol=1e-6)
    assert head.n_samples == 140


def test_large_deletion_is_done_in_exact_blocks():
    """k = 50 rows > p = 4 columns: several Woodbury blocks, still the refit."""
    x, y = _data(n=80, d=3, c=2, seed=4)
    head = RidgeHead(gamma=1.0).fit(x, y, num_classes=2)
    new = head.delete(x[:50], y[:50])
    np.testing.assert_allclose(new.W.numpy(), numpy_ridge(x[50:], y[50:], 2, 1.0), atol=1e-6)


def test_ids_guard_double_and_unknown_deletions():
    x, y = _data()
    head = RidgeHead().fit(x, y, num_classes=4, ids=np.arange(100, 220))
    once = head.delete(x[:2], y[:2], ids=[100, 101])
    with pytest.raises(DataError, match="not in the fit"):
        once.delete(x[:1], y[:1], ids=[100])  # already deleted
    with pytest.raises(DataError, match="not in the fit"):
        head.delete(x[:1], y[:1], ids=[5])
    with pytest.raises(DataError, match="pass the ids"):
        head.delete(x[:1], y[:1])
    with pytest.raises(DataError, match="columns"):
        head.delete(x[:1, :3], y[:1], ids=[100])
    with pytest.raises(DataError, match=r"\[0, 4\)"):
        head.delete(x[:1], [7], ids=[100])
    with pytest.raises(NotFittedError):
        RidgeHead().delete(x[:1], y[:1])


def test_state_round_trip():
    x, y = _data()
    head = RidgeHead(gamma=0.3, buffer_size=16, buffer_seed=5).fit(x, y, num_classes=4, ids=np.arange(120))
    head.key = "abc"
    again = RidgeHead.from_state(*head.to_state())
    np.testing.assert_array_equal(again.predict(x).numpy(), head.predict(x).numpy())
    assert again.key == "abc" and np.array_equal(again.ids, head.ids)
    a, b = head.delete(x[:3], y[:3], ids=[0, 1, 2]), again.delete(x[:3], y[:3], ids=[0, 1, 2])
    torch.testing.assert_close(a.W, b.W, rtol=0, atol=1e-12)


# -- C35: never a silent degenerate fit on a 3-class task ------------------------------------------------------------
@pytest.mark.parametrize("split_seed", [0, 1, 2, 3, 4])
def test_iris_raw_inputs_held_out_accuracy(split_seed):
    x, y = load_iris(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=split_seed, stratify=y)
    # with the analytic-learning random ReLU buffer the least-squares head fits iris well
    head = RidgeHead(gamma=0.1, buffer_size=256).fit(xtr, ytr, num_classes=3, ids=np.arange(len(ytr)))
    acc = float((head.predict(xte).argmax(1).numpy() == yte).mean())
    assert acc > 0.85, acc
    # and stays exact (and accurate) after deleting 10 % of the training rows
    drop = np.random.default_rng(split_seed).choice(len(ytr), 10, replace=False)
    keep = np.setdiff1d(np.arange(len(ytr)), drop)
    new = head.delete(xtr[drop], ytr[drop], ids=drop)
    refit = RidgeHead(gamma=0.1, buffer_size=256).fit(xtr[keep], ytr[keep], num_classes=3)
    np.testing.assert_allclose(new.predict(xte).numpy(), refit.predict(xte).numpy(), atol=1e-6)
    assert float((new.predict(xte).argmax(1).numpy() == yte).mean()) > 0.85
    # the plain linear head (no buffer) is far above chance but suffers least-squares masking (documented)
    plain = RidgeHead(gamma=0.1).fit(xtr, ytr, num_classes=3)
    assert float((plain.predict(xte).argmax(1).numpy() == yte).mean()) > 0.7


def test_iris_unlearner_on_frozen_random_feature_body(engine):
    x, y = load_iris(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    xs = torch.tensor(np.r_[xtr, xte], dtype=torch.float32)
    ys = torch.tensor(np.r_[ytr, yte])
    data = SampleSet.from_tensors(xs, ys, num_classes=3)
    train, test = data.take(np.arange(len(ytr))), data.take(np.arange(len(ytr), len(ys)))
    forget, retain = train.take(np.arange(10), "forget"), train.take(np.arange(10, len(ytr)), "retain")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 3))
    res = METHODS.build("analytic_head").unlearn(model, forget, retain, engine, CTX)
    acc = engine.predict(res.model, test).accuracy()
    assert acc > 85.0, acc


# -- the unlearner on the tiny task -----------------------------------------------------------------------------------
def test_unlearner_installs_the_ridge_refit_on_retain(trained_model, tiny_task, engine):
    before = copy.deepcopy(trained_model)
    res = METHODS.build("analytic_head", {"gamma": 0.5}).unlearn(copy.deepcopy(trained_model), tiny_task.forget,
                                                                 tiny_task.retain, engine, CTX)
    feats, labels, _ = head_features(before, tiny_task.retain, engine)
    w = numpy_ridge(feats.numpy(), labels, 3, 0.5)
    np.testing.assert_allclose(res.model[2].weight.detach().double().numpy(), w[:-1].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.model[2].bias.detach().double().numpy(), w[-1], rtol=1e-5, atol=1e-6)
    assert torch.equal(res.model[0].weight, before[0].weight) and torch.equal(res.model[0].bias, before[0].bias)
    assert res.steps == 0 and res.notes["deleted"] == len(tiny_task.forget)
    assert res.notes["remaining"] == len(tiny_task.retain)
    assert AnalyticHead.kind == "approximate"


def test_given_state_is_checked_and_used(trained_model, tiny_task, engine):
    state = fit_ridge_head(trained_model, [tiny_task.retain, tiny_task.forget], engine, gamma=0.1)
    assert state.key == body_hash(trained_model) and state.n_samples == len(tiny_task.train)
    method = AnalyticHead(AnalyticHeadConfig()).with_state(state)
    empty = tiny_task.retain.take(np.zeros(0, dtype=np.int64))
    a = method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, empty, engine, CTX)
    b = METHODS.build("analytic_head").unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                               engine, CTX)
    torch.testing.assert_close(a.model[2].weight, b.model[2].weight, rtol=1e-6, atol=1e-7)
    # the head's own weights are not part of the key: a deployed model with an updated head still matches
    assert body_hash(a.model) == state.key
    other = copy.deepcopy(trained_model)
    with torch.no_grad():
        other[0].bias[0] += 0.1
    with pytest.raises(NotFittedError, match="another model body"):
        method.unlearn(other, tiny_task.forget, tiny_task.retain, engine, CTX)
    with pytest.raises(MethodError, match="gamma"):
        AnalyticHead(AnalyticHeadConfig(gamma=1.0)).with_state(state)


def test_models_without_a_usable_head_are_refused(tiny_task, engine):
    no_linear = nn.Sequential(nn.Flatten(), nn.Identity())
    with pytest.raises(MethodError, match="no nn.Linear"):
        METHODS.build("analytic_head").unlearn(no_linear, tiny_task.forget, tiny_task.retain, engine, CTX)
    torch.manual_seed(0)
    not_output = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3), nn.Tanh())
    with pytest.raises(MethodError, match="not its last nn.Linear"):
        METHODS.build("analytic_head").unlearn(not_output, tiny_task.forget, tiny_task.retain, engine, CTX)

"""DER++'s reservoir buffer and its purge after a request; refresh learning's unlearning step moves every weight
tensor by exactly the configured amount (checked against an independent computation); the empirical Fisher against a
per-sample loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cl_helpers import GROUPS, MLP, SGD, task_part
from unlearnkit.methods.continual import LEARNERS, LearnSpec, ModelInfo
from unlearnkit.methods.continual.refresh import RefreshModel, empirical_fisher, refresh_step
from unlearnkit.methods.continual.replay import ReplayModel
from unlearnkit.models import build_model


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def _batch(digits, n=24):
    x, y, _ = digits.train.batch(np.arange(n))
    return x, y


def test_refresh_step_moves_each_tensor_by_delta_times_its_norm(digits):
    net = _net()
    x, y = _batch(digits)
    before = [p.detach().clone() for p in net.parameters()]
    # the gradient-ascent direction, computed independently
    loss = nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    fisher = [torch.zeros_like(p) for p in net.parameters()]
    steps = refresh_step(net, x, y, fisher, delta=1e-3, fisher_scale=1e-3, noise=0.0)
    for b, p, g, s in zip(before, net.parameters(), grads, steps):
        moved = p.detach() - b
        assert torch.allclose(moved, s, atol=1e-7)
        assert abs(float(moved.norm()) - 1e-3 * float(b.norm())) < 1e-6 * float(b.norm()) + 1e-9
        cos = float(nn.functional.cosine_similarity(moved.flatten(), g.flatten(), dim=0))
        assert cos > 0.9999  # along +∇CE: it *unlearns* the batch


def test_refresh_step_is_damped_by_the_fisher_elementwise(digits):
    net = _net(1)
    x, y = _batch(digits)
    before = [p.detach().clone() for p in net.parameters()]
    loss = nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    gen = torch.Generator().manual_seed(0)
    fisher = [torch.rand(p.shape, generator=gen) * 1e3 for p in net.parameters()]
    delta, c = 1e-2, 2e-3
    refresh_step(net, x, y, fisher, delta=delta, fisher_scale=c, noise=0.0)
    for b, p, g, f in zip(before, net.parameters(), grads, fisher):
        want = delta * (b.norm() / (g.norm() + 1e-20) * g) / (1 + c * f)
        assert torch.allclose(p.detach() - b, want, rtol=1e-3, atol=1e-7)  # float32 cancellation in p − b
    # noise: the same generator seed gives the same step, another seed another
    a, b2 = _net(2), _net(2)
    s1 = refresh_step(a, x, y, fisher, delta=delta, fisher_scale=c, noise=0.1, gen=torch.Generator().manual_seed(5))
    s2 = refresh_step(b2, x, y, fisher, delta=delta, fisher_scale=c, noise=0.1, gen=torch.Generator().manual_seed(5))
    s3 = refresh_step(_net(2), x, y, fisher, delta=delta, fisher_scale=c, noise=0.1,
                      gen=torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(s1, s2))
    assert not all(torch.equal(u, v) for u, v in zip(s1, s3))


def test_empirical_fisher_matches_a_per_sample_loop(digits, engine):
    net = _net(3)
    data = digits.train.take(np.arange(20))
    got = empirical_fisher(net, data, engine, batch_size=7)
    want = [torch.zeros_like(p) for p in net.parameters()]
    for i in range(len(data)):
        x, y, _ = data.batch(np.array([i]))
        lp = torch.log_softmax(net(x), 1)[0, int(y)]
        gs = torch.autograd.grad(lp, list(net.parameters()))
        for w, g in zip(want, gs):
            w += float(lp.detach().exp()) * g ** 2
    for g, w in zip(got, want):
        assert torch.allclose(g, w / len(data), rtol=1e-4, atol=1e-10)


def test_der_buffer_reservoir_and_purge(digits, engine):
    learner = LEARNERS.build("der++", {"buffer_size": 50, "minibatch_size": 16})
    model = learner.build(lambda: build_model(MLP, (1, 8, 8), 10, seed=0),
                          ModelInfo((1, 8, 8), 10, GROUPS, "single", MLP, 0))
    assert isinstance(model, ReplayModel)
    t1, t2 = task_part(digits.train, 0), task_part(digits.train, 1)
    r1 = learner.learn(model, LearnSpec(t1, 0, GROUPS, SGD, seed=0), engine)
    assert model.filled == 50 and int(model.buf_seen) == 2 * len(t1)  # 2 epochs offered every sample twice
    assert set(model.buf_ids[:50].tolist()) <= set(t1.ids.tolist())
    r2 = learner.learn(model, LearnSpec(t2, 1, GROUPS, SGD, seed=1), engine)
    held = model.buf_ids[: model.filled].tolist()
    assert any(i in set(t1.ids.tolist()) for i in held) and any(i in set(t2.ids.tolist()) for i in held)
    # the ids that contributed a gradient: the stream's and the replayed ones (all learned before)
    assert set(r2.seen_ids.tolist()) <= set(t1.ids.tolist()) | set(t2.ids.tolist())
    assert set(r2.seen_ids.tolist()) & set(t1.ids.tolist()) and np.array_equal(r1.seen_ids, np.sort(t1.ids))
    # stored logits are the model's logits at insertion; labels are the samples' labels
    lookup = {int(i): int(y) for i, y in zip(np.r_[t1.ids, t2.ids], np.r_[t1.labels, t2.labels])}
    assert all(lookup[int(i)] == int(y) for i, y in zip(model.buf_ids[: model.filled], model.buf_y[: model.filled]))
    n_t1 = sum(i in set(t1.ids.tolist()) for i in held)
    learner.forget(model, t1.ids)
    assert model.filled == 50 - n_t1 and not set(model.buf_ids[: model.filled].tolist()) & set(t1.ids.tolist())
    assert (model.buf_ids[model.filled:] == -1).all()


def test_refresh_learner_keeps_its_fisher_with_the_model(digits, engine):
    learner = LEARNERS.build("refresh", {"buffer_size": 20})
    model = learner.build(lambda: build_model(MLP, (1, 8, 8), 10, seed=0),
                          ModelInfo((1, 8, 8), 10, GROUPS, "single", MLP, 0))
    assert isinstance(model, RefreshModel)
    learner.learn(model, LearnSpec(task_part(digits.train, 0), 0, GROUPS, SGD, seed=0), engine)
    f = model.fisher()
    assert all(t.shape == p.shape for t, p in zip(f, model.net.parameters()))
    assert sum(float(t.sum()) for t in f) > 0
    assert {f"fisher_{i}" for i in range(len(f))} <= set(model.state_dict())


@pytest.mark.parametrize("name", ["der++", "refresh"])
def test_replay_learners_without_refresh_noise_are_deterministic(digits, engine, name):
    learner = LEARNERS.build(name, {"buffer_size": 20})
    outs = []
    for _ in range(2):
        model = learner.build(lambda: build_model(MLP, (1, 8, 8), 10, seed=0),
                              ModelInfo((1, 8, 8), 10, GROUPS, "single", MLP, 0))
        for t in range(2):
            learner.learn(model, LearnSpec(task_part(digits.train, t), t, GROUPS, SGD, seed=t), engine)
        outs.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])

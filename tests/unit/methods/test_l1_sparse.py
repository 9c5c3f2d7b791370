"""ℓ1-sparse: the γ schedule, the penalty's gradient γ·sign(θ), and the full update against a hand-written loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.methods.classifier.l1_sparse import l1_norm, l1_penalised_loss, l1_weight


def test_linear_schedule_golden_values():
    got = [l1_weight(e, alpha=1e-4, epochs=10) for e in range(10)]
    want = [1e-4, 9e-5, 8e-5, 7e-5, 6e-5, 5e-5, 4e-5, 3e-5, 2e-5, 1e-5]  # α(1 − e/10): decreasing, per epoch
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got == sorted(got, reverse=True)


def test_schedule_with_penalty_free_epochs_and_constant():
    # E=10, no_l1=2 → 8 penalised epochs: α(1 − e/8) for e < 8, then 0
    got = [l1_weight(e, alpha=2.0, epochs=10, no_l1_epochs=2) for e in range(10)]
    np.testing.assert_allclose(got, [2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    const = [l1_weight(e, alpha=2.0, epochs=10, no_l1_epochs=2, schedule="constant") for e in range(10)]
    assert const == [2.0] * 8 + [0.0, 0.0]


def test_no_l1_epochs_must_leave_a_penalised_epoch():
    with pytest.raises(ConfigError, match="no_l1_epochs"):
        METHODS.validate_config("l1_sparse", {"epochs": 3, "no_l1_epochs": 3})


def test_penalty_gradient_is_gamma_times_sign():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0  # sign(0) = 0: the subgradient used is 0
    params = list(model.parameters())
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    gamma = 0.37

    def grads(g):
        model.zero_grad()
        l1_penalised_loss(lambda: g, params)(model, x, y).backward()
        return [p.grad.clone() for p in params]

    with_l1, without = grads(gamma), grads(0.0)
    for p, a, b in zip(params, with_l1, without):
        manual = gamma * np.sign(p.detach().numpy())
        np.testing.assert_allclose((a - b).numpy(), manual, atol=1e-6)
    assert with_l1[0][0, 0] == without[0][0, 0]
    manual_norm = sum(float(np.abs(p.detach().numpy()).sum()) for p in params)
    assert float(l1_norm(params).detach()) == pytest.approx(manual_norm)


def test_full_update_matches_hand_written_loop(trained_model, tiny_task, engine):
    """Plain SGD (no momentum / wd), 2 steps per epoch: θ ← θ − η(∇CE + γ_e sign θ), γ_e = α(1 − e/E) constant
    within an epoch (a per-step decay would give different weights at the second step of each epoch)."""
    alpha, lr, epochs = 5e-3, 0.1, 3
    n = len(tiny_task.retain)
    bs = (n + 1) // 2
    cfg = {"alpha": alpha, "lr": lr, "epochs": epochs, "batch_size": bs, "momentum": 0.0, "weight_decay": 0.0}
    res = METHODS.build("l1_sparse", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                                  engine, UnlearnContext(seed=0))
    ref = copy.deepcopy(trained_model)
    gen = torch.Generator().manual_seed(derive_seed(0, "l1_sparse"))  # the engine's data order
    for e in range(epochs):
        gamma = alpha * (1 - e / epochs)
        order = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, bs):
            x, y, _ = tiny_task.retain.batch(order[start:start + bs])
            ref.zero_grad()
            nn.functional.cross_entropy(ref(x), y).backward()
            with torch.no_grad():
                for p in ref.parameters():
                    p -= lr * (p.grad + gamma * torch.sign(p))
    for (name, a), b in zip(res.model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    assert res.steps == 2 * epochs
    np.testing.assert_allclose(res.notes["l1_weights"], [alpha, alpha * 2 / 3, alpha / 3])
    assert set(res.seen_ids.tolist()) == set(tiny_task.retain.ids.tolist())


def test_penalty_shrinks_the_weights(trained_model, tiny_task, engine):
    base = {"epochs": 3, "batch_size": 32, "lr": 0.05}
    plain = METHODS.build("l1_sparse", {**base, "alpha": 0.0}).unlearn(
        copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, UnlearnContext(seed=0))
    sparse = METHODS.build("l1_sparse", {**base, "alpha": 1e-2}).unlearn(
        copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, UnlearnContext(seed=0))
    assert sparse.notes["final_l1_norm"] < plain.notes["final_l1_norm"] - 0.1

"""Soft-thresholding SalUn: the reset schedule, the proximal step, and its effect on a real run."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.salun_soft import soft_reset_count, soft_threshold_


def test_reset_count_golden_values():
    # T = E·S = 4: k_0 = int(0.5·(4−1)/4·100) = 37, k_1 = int(0.5·(4−3)/4·100) = 12
    assert [soft_reset_count(e, steps_per_epoch=2, epochs=2, ratio=0.5, n_params=100) for e in range(2)] == [37, 12]
    ks = [soft_reset_count(e, steps_per_epoch=5, epochs=10, ratio=0.5, n_params=1000) for e in range(10)]
    assert ks[0] == int(0.5 * 49 / 50 * 1000) == 490
    assert ks == sorted(ks, reverse=True) and ks[-1] == int(0.5 * 4 / 50 * 1000) == 40


def test_soft_threshold_by_hand():
    init = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([[-2.0, -2.0, -2.0]])]
    # Δ = [0.5, −0.2, 0.1] and [−0.05, 0.3, 0.0]; sorted |Δ| = 0, .05, .1, .2, .3, .5 → 3rd smallest τ = 0.1
    params = [torch.nn.Parameter(torch.tensor([1.5, 0.8, 1.1])),
              torch.nn.Parameter(torch.tensor([[-2.05, -1.7, -2.0]]))]
    tau = soft_threshold_(params, init, k=3)
    assert tau == pytest.approx(0.1)
    torch.testing.assert_close(params[0].detach(), torch.tensor([1.4, 0.9, 1.0]))
    torch.testing.assert_close(params[1].detach(), torch.tensor([[-2.0, -1.8, -2.0]]))
    assert params[0][2].item() == 1.0 and params[1][0, 0].item() == -2.0  # reset entries are θ_o exactly (global τ)
    before = [p.detach().clone() for p in params]
    assert soft_threshold_(params, init, k=0) == 0.0
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, params))


def test_run_resets_at_least_k_entries_to_theta_o(trained_model, tiny_task, engine):
    cfg = {"epochs": 2, "batch_size": 32, "lr": 0.05}
    res = METHODS.build("salun_soft", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                                   engine, UnlearnContext(seed=0))
    before = torch.cat([p.detach().reshape(-1) for p in trained_model.parameters()])
    after = torch.cat([p.detach().reshape(-1) for p in res.model.parameters()])
    n = before.numel()
    steps = math.ceil((len(tiny_task.forget) + len(tiny_task.retain)) / 32)
    k_last = soft_reset_count(1, steps_per_epoch=steps, epochs=2, ratio=0.5, n_params=n)
    assert res.notes["reset_counts"][-1] == k_last
    unchanged = int((after == before).sum())
    assert unchanged >= k_last  # the last step pulled ≥ k entries back to θ_o exactly
    assert unchanged < n  # ... but training moved the rest

"""Prune first, then unlearn: exact global magnitude pruning, and the mask holding through the base unlearner."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.prune_ft import global_magnitude_masks, prunable_weights

CTX = UnlearnContext(seed=0)


def expected_keep(weights: list[np.ndarray], sparsity: float) -> np.ndarray:
    """Independent OMP in numpy: keep all but the round(s·n) smallest |w| (stable order), flattened."""
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[: int(round(sparsity * flat.size))]] = False
    return keep


def linear_weights(model) -> list[np.ndarray]:
    return [m.weight.detach().numpy().copy() for m in model.modules() if isinstance(m, nn.Linear)]


def test_global_masks_exact_count_and_largest_kept():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(16, 8, generator=g), 0.01 * torch.randn(3, 16, generator=g)]  # second layer much smaller
    masks = global_magnitude_masks(ws, 0.95)
    n = sum(w.numel() for w in ws)
    kept = torch.cat([m.reshape(-1) for m in masks])
    mags = torch.cat([w.abs().reshape(-1) for w in ws])
    assert int((~kept).sum()) == round(0.95 * n)
    assert mags[kept].min() >= mags[~kept].max()
    assert not bool(masks[1].any())  # global ranking: the small layer is pruned entirely (layer-wise would keep 5 %)
    np.testing.assert_array_equal(kept.numpy(), expected_keep([w.numpy() for w in ws], 0.95))


def test_pruning_alone_gives_exact_sparsity(trained_model, tiny_task, engine):
    """lr far below float resolution: the result is the pruned θ_o itself (kept weights = θ_o exactly)."""
    before = linear_weights(trained_model)
    keep = expected_keep(before, 0.95)
    cfg = {"base_params": {"epochs": 1, "lr": 1e-30, "momentum": 0.0, "weight_decay": 0.0}}
    res = METHODS.build("prune_ft", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                                 engine, CTX)
    after = np.concatenate([w.ravel() for w in linear_weights(res.model)])
    flat_before = np.concatenate([w.ravel() for w in before])
    assert (after == 0).sum() == round(0.95 * after.size)
    assert (after[~keep] == 0).all()
    np.testing.assert_array_equal(after[keep], flat_before[keep])


@pytest.mark.parametrize("base,params", [
    ("finetune", {"epochs": 3, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3}),
    ("finetune", {"epochs": 3, "batch_size": 16, "lr": 0.01, "optimizer": "adamw", "weight_decay": 0.1}),
    ("grad_ascent", {"epochs": 2, "batch_size": 4, "lr": 0.01, "momentum": 0.9}),
])
def test_pruned_weights_stay_zero_through_unlearning(trained_model, tiny_task, engine, base, params):
    keep = expected_keep(linear_weights(trained_model), 0.95)
    res = METHODS.build("prune_ft", {"base": base, "base_params": params}).unlearn(
        copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine, CTX)
    after = np.concatenate([w.ravel() for w in linear_weights(res.model)])
    assert (after[~keep] == 0).all(), "momentum / weight decay revived pruned weights"
    assert (after == 0).sum() == round(0.95 * after.size)
    before = np.concatenate([w.ravel() for w in linear_weights(trained_model)])
    assert (after[keep] != before[keep]).all(), "the base unlearner did not train the kept weights"
    assert list(res.model.state_dict()) == list(trained_model.state_dict())  # no parametrization left behind
    assert res.notes["pruned"] == round(0.95 * after.size) and res.notes["base"] == base
    assert res.steps > 0


def test_conv_models_prune_convolutions_only(tiny_task, engine):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 4, 2), nn.Flatten(), nn.ReLU(), nn.Linear(4, 3))
    assert [n for n, _ in prunable_weights(model)] == ["1"]  # auto → conv only, like the reference
    res = METHODS.build("prune_ft", {"base_params": {"epochs": 1, "batch_size": 32}}).unlearn(
        model, tiny_task.forget, tiny_task.retain, engine, CTX)
    assert int((res.model[1].weight == 0).sum()) == round(0.95 * 32)
    assert int((res.model[4].weight == 0).sum()) == 0
    with pytest.raises(MethodError, match="no prunable"):
        prunable_weights(nn.Sequential(nn.Linear(8, 3)), "conv")


@pytest.mark.parametrize("params,match", [
    ({"base": "finetunee"}, "Did you mean 'finetune'"),
    ({"base": "eu_k"}, "cannot run after pruning"),
    ({"base": "prune_ft"}, "cannot run after pruning"),
    ({"base": "cf_k"}, "cannot run after pruning"),
    ({"base": "retrain"}, "approximate"),
    ({"base_params": {"epochz": 1}}, "unknown key"),
    ({"sparsity": 1.0}, "sparsity"),
])
def test_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.validate_config("prune_ft", params)

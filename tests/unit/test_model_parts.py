"""models.parts: head, penultimate features (computed by hand), partial state hash (same format as state_sha256)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnkit.engine.checkpoint import state_sha256
from unlearnkit.errors import MethodError
from unlearnkit.models.parts import find_head, forward_with_features, head_param_names, state_sha256_without


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def test_head_and_features_equal_the_hand_computed_penultimate_layer():
    model = _mlp().eval()
    name, head = find_head(model)
    assert name == "3" and head is model[3]
    assert head_param_names(model) == {"3.weight", "3.bias"}
    x = torch.randn(6, 4)
    logits, feats = forward_with_features(model, head, x)
    with torch.no_grad():
        want = model[2](model[1](model[0](x)))
    torch.testing.assert_close(feats, want, rtol=0, atol=0)
    torch.testing.assert_close(logits, model(x), rtol=0, atol=0)
    assert head._forward_pre_hooks == {}  # the hook is removed


def test_a_head_that_is_not_the_output_layer_or_runs_twice_is_refused():
    torch.manual_seed(0)
    not_output = nn.Sequential(nn.Linear(4, 3), nn.Flatten(0))  # output (b·3,), not (b, 3)
    with pytest.raises(MethodError, match="produces the logits"):
        forward_with_features(not_output, not_output[0], torch.randn(2, 4))
    lin = nn.Linear(3, 3)
    twice = nn.Sequential(lin, lin)
    with pytest.raises(MethodError, match="ran 2 times"):
        forward_with_features(twice, lin, torch.randn(2, 3))
    with pytest.raises(MethodError, match="no nn.Linear"):
        find_head(nn.Sequential(nn.ReLU()), "x")
    assert head_param_names(nn.Sequential(nn.ReLU())) == set()


def test_partial_state_hash_has_the_checkpoint_format_and_ignores_only_the_excluded_keys():
    model = _mlp()  # BatchNorm: includes the 0-dim int64 buffer num_batches_tracked
    assert state_sha256_without(model, ()) == state_sha256(model)
    body = state_sha256_without(model, head_param_names(model))
    assert body != state_sha256(model)
    with torch.no_grad():
        model[3].weight.add_(1.0)
    assert state_sha256_without(model, head_param_names(model)) == body
    with torch.no_grad():
        model[0].bias[0] += 1e-3
    assert state_sha256_without(model, head_param_names(model)) != body

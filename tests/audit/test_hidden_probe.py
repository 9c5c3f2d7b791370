"""Hidden-state probes: the probe functions on constructed features (goldens / properties), the metric on a tiny
model, and clear errors for a model without hidden states, without the layers asked for, or a task without a
holdout."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from audit_fixtures import cf, make_ctx
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.hidden_probe import answer_probe, membership_auc, resolve_layers


def test_answer_probe_finds_the_true_candidate_on_separable_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = np.tile([1, 0, 0, 0], 10)
    x[y == 1, 0] += 4.0
    te = rng.normal(size=(12, 5))
    te[[0, 7, 9], 0] += 4.0  # groups of 4, 4, 4 with the true one at 0, 3, 1
    assert answer_probe(x, y, te, [4, 4, 4], [0, 3, 1]) == 1.0
    assert answer_probe(x, y, te, [4, 4, 4], [1, 0, 0]) == 0.0


def test_membership_auc_separable_vs_random():
    rng = np.random.default_rng(1)
    y = np.array([1] * 20 + [0] * 20)
    g = np.repeat(np.arange(8), 5)  # 4 member groups, 4 non-member groups
    x = rng.normal(size=(40, 4))
    assert membership_auc(x + 3.0 * y[:, None], y, g) > 0.95
    assert membership_auc(x, y, g) < 0.8
    with pytest.raises(DataError, match="2 members"):
        membership_auc(x[:21], y[:21], g[:21])


def _holdout_task():
    from unlearnkit.bench.tracks.llm import _holdout_split

    return _holdout_split(cf.task(), 1)


def test_metric_reads_hidden_states_on_a_tiny_model(theta_o):
    ctx = make_ctx(theta_o, task=_holdout_task())
    out = METRICS.build("hidden_probe", {"folds": 2, "depths": [1.0]}).compute(ctx).values
    assert set(out) >= {"hidden.answer_acc", "hidden.member_auc", "hidden.answer_acc@L1", "hidden.member_auc@L1"}
    assert 0.0 <= out["hidden.answer_acc"] <= 1.0 and 0.0 <= out["hidden.member_auc"] <= 1.0
    assert out["hidden.answer_chance"] == pytest.approx(0.25)


def test_layers_out_of_range_and_models_without_hidden_states_are_clear_errors(theta_o):
    with pytest.raises(ConfigError, match="outside the model's blocks"):
        resolve_layers(theta_o, [5], [])
    assert resolve_layers(theta_o, [-1], []) == [1]

    class NoHidden(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids=None, attention_mask=None, **kw):
            return SimpleNamespace(logits=self.inner(input_ids=input_ids, attention_mask=attention_mask).logits)

    ctx = make_ctx(NoHidden(theta_o), task=_holdout_task())
    with pytest.raises(ConfigError, match="returns hidden states"):
        METRICS.build("hidden_probe", {"probes": ["membership"], "depths": [1.0]}).compute(ctx)

    class NoConfig(nn.Module):
        def forward(self, **kw):  # pragma: no cover - never called
            return None

    with pytest.raises(ConfigError, match="num_hidden_layers"):
        resolve_layers(NoConfig(), None, [0.5])


def test_membership_without_holdout_is_a_clear_error(theta_o):
    with pytest.raises(DataError, match="holdout"):
        METRICS.build("hidden_probe", {"probes": ["membership"]}).compute(make_ctx(theta_o))
    t = cf.task()
    no_pert = replace(t, eval_sets={**t.eval_sets, "forget": t.eval_sets["forget"].renamed("forget")})
    assert no_pert.eval_sets["forget"][0].perturbed_answers  # the synthetic task has them (answer probe runs)
    _ = torch

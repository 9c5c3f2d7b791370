"""Relearning attack on LLMs: the curve starts at the model's own forget score (θ_r's row starts at θ_r's), the attack
never modifies the evaluated model, every row gets the same R/H split, and the summary numbers are exact."""

from __future__ import annotations

import numpy as np
import pytest

from audit_fixtures import cf, make_ctx
from unlearnkit.errors import DataError
from unlearnkit.llm.lm import answer_logprobs
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.audit_probes import LLMRelearnConfig, curve_auc, split_relearn_items, steps_to_recover

PARAMS = {"steps": 3, "eval_at": [1, 3], "fraction": 0.3, "batch_size": 2, "lr": 5e-3}


def _heldout_prob(model, ctx, relearn_ids):
    qs = ctx.eval_set("forget")
    h = qs.select_ids([i for i in qs.ids if i not in set(relearn_ids.tolist())])
    s, n = answer_logprobs(model, cf.tokenizer(), h.pairs("answer"), fmt="qa")
    return float(np.exp(s / n).mean())


def test_oracle_curve_starts_at_the_oracles_forget_score(theta_o, theta_r):
    ctx = make_ctx(theta_r, original=theta_o, oracle=theta_r)  # θ_r's own row
    before = {k: v.detach().clone() for k, v in theta_r.state_dict().items()}
    out = METRICS.build("llm_relearn", PARAMS).compute(ctx)
    assert out.values["relearn.prob@0"] == pytest.approx(_heldout_prob(theta_r, ctx, out.per_sample[
        "relearn.relearn_ids"]), rel=1e-9)
    for k, v in theta_r.state_dict().items():  # the attack worked on a copy
        assert np.array_equal(v.numpy(), before[k].numpy()), k
    assert [int(s) for s in out.per_sample["relearn.steps"]] == [0, 1, 3]
    assert out.values["relearn.auc"] == pytest.approx(curve_auc(out.per_sample["relearn.steps"],
                                                                out.per_sample["relearn.curve"]))


def test_every_row_gets_the_same_split_and_the_attack_moves_the_copy(theta_o, theta_r):
    a = METRICS.build("llm_relearn", PARAMS).compute(make_ctx(theta_o, original=theta_o, oracle=theta_r))
    b = METRICS.build("llm_relearn", PARAMS).compute(make_ctx(theta_r, original=theta_o, oracle=theta_r))
    assert np.array_equal(a.per_sample["relearn.relearn_ids"], b.per_sample["relearn.relearn_ids"])
    assert a.values["relearn.threshold"] == b.values["relearn.threshold"]
    # fine-tuning on forget items raises the held-out forget score of the untrained θ_r
    assert b.values["relearn.prob@3"] > b.values["relearn.prob@0"]
    # θ_o starts at the top of the scale the threshold is placed on: recovered at step 0
    if a.values["relearn.prob@0"] > b.values["relearn.prob@0"]:
        assert a.values["relearn.steps_to_recover"] == 0.0


def test_summary_goldens():
    s, v = np.array([0, 1, 3]), np.array([0.1, 0.3, 0.5])
    assert curve_auc(s, v) == pytest.approx(((0.1 + 0.3) * 1 / 2 + (0.3 + 0.5) * 2 / 2) / 3)
    assert steps_to_recover(s, v, 0.3) == 1.0 and np.isnan(steps_to_recover(s, v, 0.9))
    assert curve_auc(np.array([0]), np.array([0.2])) == 0.2


def test_split_needs_items_on_both_sides():
    qs = cf.task().eval_sets["forget"]
    r, h = split_relearn_items(qs, LLMRelearnConfig(fraction=0.3), 0)
    assert len(r) == 3 and len(h) == len(qs) - 3 and not set(r.ids) & set(h.ids)
    with pytest.raises(DataError, match="held-out forget items"):
        split_relearn_items(qs, LLMRelearnConfig(count=len(qs)), 0)

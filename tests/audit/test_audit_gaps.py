"""Audit checks the first pass lacked: the RWKU metric against hand-scored probes (probabilities, ROUGE-L of fixed
generations, per-attack means, the 'All' averages); the in-context score against a hand-built prompt; the
hidden-state probe on features that cannot tell anything apart (chance, not the position of the true answer);
bad input — layers a model does not have (concept vectors, ROCR, MRP, hidden states), a model with no linear layer
to quantize; and the intent every method declares."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from audit_fixtures import cf, make_ctx
from test_rwku import write_fixture
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.llm.lm import answer_logprobs
from unlearnkit.methods import METHODS
from unlearnkit.methods.llm import LLMContext
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.audit_probes import quantized_copy, with_context
from unlearnkit.metrics.hidden_probe import answer_probe


def _hand_prob(model, pairs, fmt="qa"):
    s, n = answer_logprobs(model, cf.tokenizer(), pairs, fmt=fmt)
    return np.exp(s / n)


# -- RWKU metric ------------------------------------------------------------------------------------------------------

def _rwku_task(tmp_path):
    from unlearnkit.data.text.rwku import build_rwku_task, load_rwku

    return build_rwku_task(load_rwku(write_fixture(tmp_path)), n_forget=1)


def test_rwku_probe_prompts_golden():
    from unlearnkit.metrics.rwku import probe_prompt

    assert probe_prompt("A was born in ___.", 1, "track") == "Fill in the blank: A was born in ___."
    assert probe_prompt("Where was A born?", 2, "track") == "Where was A born?"
    assert probe_prompt("Where was A born?", 3, "track") == "Where was A born?"
    r1, r2 = probe_prompt("A was born in ___.", 1, "rwku"), probe_prompt("Where was A born?", 2, "rwku")
    assert r1.endswith("Question: A was born in ___.\nAnswer:") and "complete the blank" in r1
    assert r2 == "Please briefly answer the following question.\nQuestion: Where was A born?\nAnswer:"


def test_rwku_metric_matches_hand_scoring(tmp_path, theta_o):
    from unlearnkit.metrics.rwku import probe_prompt

    task = _rwku_task(tmp_path)
    ctx = make_ctx(theta_o, task=task, max_items=100)

    def fake_generations(prompts, tag, **kw):  # level 1 answered right, level 2 wrong, level 3: the answer twice
        name = tag[1]
        qs = task.eval_sets[name]
        if name.endswith("l1"):
            return list(qs.answers)
        if name.endswith("l2"):
            return ["zzz qqq" for _ in prompts]
        return [f"{a} {a}" if k % 2 == 0 else "nothing" for k, a in enumerate(qs.answers)]

    ctx.generations = fake_generations
    out = METRICS.build("rwku", {}).compute(ctx)
    v = out.values
    # probabilities: the track's prompt around each probe, the reference answer scored as the continuation
    for key, name, level in (("forget.fb", "rwku_forget_l1", 1), ("forget.qa", "rwku_forget_l2", 2),
                             ("forget.adv", "rwku_forget_l3", 3), ("neighbor.fb", "rwku_neighbor_l1", 1),
                             ("neighbor.qa", "rwku_neighbor_l2", 2)):
        qs = task.eval_sets[name]
        want = _hand_prob(theta_o, [(probe_prompt(q, level, "track"), a) for q, a in zip(qs.questions, qs.answers)])
        assert v[f"rwku.{key}.prob"] == pytest.approx(float(want.mean()), rel=1e-9), key
    assert v["rwku.forget.fb"] == v["rwku.neighbor.fb"] == 1.0  # the reference itself: recall 1
    assert v["rwku.forget.qa"] == v["rwku.neighbor.qa"] == 0.0  # no shared word
    adv = task.eval_sets["rwku_forget_l3"]
    types = task.extras["rwku"]["l3_types"]
    per = out.per_sample["rwku.forget.adv"]
    assert per.tolist() == [1.0 if k % 2 == 0 else 0.0 for k in range(len(adv))]
    by_type: dict[str, list[float]] = {}
    for sid, s in zip(adv.ids.tolist(), per.tolist()):
        by_type.setdefault(types[int(sid)].replace(" ", "_"), []).append(s)
    for t, scores in by_type.items():
        assert v[f"rwku.forget.adv.{t}"] == pytest.approx(np.mean(scores))
    assert v["rwku.forget.all"] == pytest.approx(np.mean([1.0, 0.0, v["rwku.forget.adv"]]))
    assert v["rwku.neighbor.all"] == pytest.approx(0.5)
    only_prob = METRICS.build("rwku", {"generate": False}).compute(ctx).values
    assert "rwku.forget.fb" not in only_prob and only_prob["rwku.forget.fb.prob"] == v["rwku.forget.fb.prob"]


def test_rwku_metric_on_a_task_without_rwku_sets_is_a_clear_error(theta_o):
    with pytest.raises(DataError, match="needs an RWKU task"):
        METRICS.build("rwku", {}).compute(make_ctx(theta_o))


# -- in-context -------------------------------------------------------------------------------------------------------

def test_in_context_score_matches_a_hand_built_prompt(theta_o):
    ctx = make_ctx(theta_o)
    out = METRICS.build("in_context", {"context": "self"}).compute(ctx).values
    items = list(ctx.eval_set("forget"))
    built = [with_context("qa", it.paraphrased_answer or it.answer, it.question, it.answer) for it in items]
    assert {f for _, _, f in built} == {"raw"}
    want = _hand_prob(theta_o, [(q, a) for q, a, _ in built], fmt="raw")
    assert out["icl.prob"] == pytest.approx(float(want.mean()), rel=1e-9)
    assert out["icl.n"] == len(items)


# -- hidden-state probe -----------------------------------------------------------------------------------------------

def test_answer_probe_shares_ties_so_blind_features_score_chance():
    x = np.zeros((8, 3))
    y = np.array([1, 0, 0, 0] * 2)
    # every candidate gets the same features: the true answer (always listed first) must not win the tie
    assert answer_probe(x + np.arange(8)[:, None] % 2, y, np.zeros((12, 3)), [4, 4, 4], [0, 0, 0]) == \
        pytest.approx(0.25)
    assert answer_probe(x + np.arange(8)[:, None] % 2, y, np.zeros((5, 3)), [2, 3], [0, 2]) == \
        pytest.approx((1 / 2 + 1 / 3) / 2)


class _ConstantHidden(nn.Module):
    """θ_o's logits with hidden states that carry nothing (all zeros)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=False, **kw):
        res = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        n = self.config.num_hidden_layers + 1
        hs = tuple(torch.zeros(*input_ids.shape, self.config.hidden_size) for _ in range(n))
        return SimpleNamespace(logits=res.logits, hidden_states=hs if output_hidden_states else None)


def test_hidden_probe_reads_nothing_from_blind_hidden_states(theta_o):
    from unlearnkit.bench.tracks.llm import _holdout_split

    ctx = make_ctx(_ConstantHidden(theta_o), task=_holdout_split(cf.task(), 1))
    out = METRICS.build("hidden_probe", {"folds": 2, "depths": [1.0]}).compute(ctx).values
    assert out["hidden.answer_acc"] == pytest.approx(out["hidden.answer_chance"])
    assert out["hidden.member_auc"] == pytest.approx(0.5)


def test_too_few_hidden_states_is_a_clear_error(theta_o):
    class Short(_ConstantHidden):
        def forward(self, *a, **kw):
            res = super().forward(*a, **kw)
            return SimpleNamespace(logits=res.logits, hidden_states=res.hidden_states[:1])

    ctx = make_ctx(Short(theta_o))
    with pytest.raises(ConfigError, match="returned 1 hidden states"):
        METRICS.build("hidden_probe", {"probes": ["answer"], "layers": [1]}).compute(ctx)


# -- layers a model does not have, nothing to quantize ----------------------------------------------------------------

def test_concept_vectors_on_layers_the_model_lacks_is_a_clear_error(theta_o):
    with pytest.raises(ConfigError, match="block indices in 0..1"):
        METRICS.build("concept_vectors", {"layers": [2]}).compute(make_ctx(theta_o, original=theta_o))


@pytest.mark.parametrize("name, params, msg", [
    ("rocr", {"layers": [1, 2]}, "rocr layers"),
    ("rocr", {"layers": [0, 2]}, "consecutive"),
    ("mrp", {"layers": [5], "epochs": 1}, "mrp layers"),
])
def test_robustness_methods_on_layers_the_model_lacks_are_clear_errors(theta_o, name, params, msg):
    task = cf.task()
    m = copy.deepcopy(theta_o)
    before = cf.state(m)
    with pytest.raises(ConfigError, match=msg):
        METHODS.build(name, params).unlearn(m, task.forget, task.retain, cf.engine(),
                                            LLMContext(seed=0, tokenizer=cf.tokenizer(), fmt="qa"))
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # refused before any edit


def test_a_model_without_linear_layers_cannot_be_quantized():
    with pytest.raises(ConfigError, match="no nn.Linear"):
        quantized_copy(nn.Sequential(nn.Embedding(4, 2), nn.LayerNorm(2)), 8)
    q, n = quantized_copy(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)), 8)
    assert n == 2 and isinstance(q, nn.Sequential)


# -- intent -----------------------------------------------------------------------------------------------------------

def test_every_method_declares_an_intent_consistent_with_its_kind():
    intents = {n: METHODS.get(n).intent for n in METHODS.names()}
    assert intents["original"] == "none"  # the θ_o row unlearns nothing
    assert {v for n, v in intents.items() if n != "original"} <= {"removal", "suppression"}
    for n in METHODS.names():
        cls = METHODS.get(n)
        if getattr(cls, "kind", "") == "inference":  # weights untouched: suppression by construction
            assert cls.intent == "suppression", n
        if getattr(cls, "kind", "") == "exact":
            assert cls.intent == "removal", n
    assert intents["o3"] == "suppression"  # gated adapters on an unchanged base model


def test_smoothing_is_one_setting_of_every_trained_llm_method():
    """``<method> + sam`` is one config for every LLM method with an optimisation loop (a config with ``epochs``);
    training-free ones refuse it with a ConfigError that names the option."""
    trained, free = [], []
    for n, e in METHODS.items():
        if getattr(e.obj, "track", "") != "llm":
            continue
        cfg = e.config
        (trained if cfg is not None and "epochs" in cfg.model_fields else free).append(n)
        if n in trained:
            got = METHODS.validate_config(n, {"smoothing": {"kind": "sam", "rho": 0.05}})
            assert got.smoothing.kind == "sam" and got.smoothing.rho == 0.05, n
        else:
            with pytest.raises(ConfigError, match="smoothing"):
                METHODS.validate_config(n, {"smoothing": {"kind": "sam"}})
    assert {"ga", "grad_diff", "npo", "simnpo", "idk_po", "rmu", "mrp", "undial", "wga", "satimp"} <= set(trained)
    assert {"rocr", "needle", "eco"} <= set(free)

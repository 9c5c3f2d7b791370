"""The inference-time metrics' building blocks against hand-computed values: abstention detection, answer accuracy,
policy parts, and the metrics on a small fake context (abstention rates, gate rates, fluency perplexity)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from unlearnkit.data.text.qa import QAItem, QASet
from unlearnkit.metrics.inference_time import (
    Abstention,
    Fluency,
    GateAccuracy,
    abstention_texts,
    answer_accuracy,
    is_abstention,
    policy_parts,
)
from unlearnkit.models.policy import ComposedPolicy, InferencePolicy


def test_abstention_detection_golden():
    assert is_abstention("I don't know.") and is_abstention("Sorry, your query is not valid")
    assert is_abstention("I'm afraid I don't have that information.")
    assert is_abstention("custom refusal", {"custom refusal"})
    assert not is_abstention("Paris is the capital of France.")
    assert not is_abstention("The author is Kalo Renvi.")


def test_answer_accuracy_golden():
    acc = answer_accuracy(["37 plus 45 is 82.", "It is 83", "'ab'.upper() is 'AB'!", ""],
                          ["37 plus 45 is 82.", "37 plus 45 is 82.", "'ab'.upper() is 'AB'.", "x"])
    assert acc.tolist() == [True, False, True, False]
    assert answer_accuracy(["the answer is 820"], ["82"]).tolist() == [False]  # whole words only


class _P(InferencePolicy):
    kind = "_p"
    abstentions = ("No comment.",)

    def __init__(self, gate=None):
        self.gate = gate


def test_policy_parts_and_declared_texts():
    a, b = _P(), _P()
    c = ComposedPolicy([a, ComposedPolicy([b])])
    assert policy_parts(c) == [a, b] and policy_parts(None) == []
    assert abstention_texts(c) == {"No comment."}


def _qs(name, pairs):
    return QASet(name, [QAItem(i, q, a) for i, (q, a) in enumerate(pairs)])


class FakeCtx:
    """A context with fixed generations (the metrics' only model output) and a fixed θ_o scorer."""

    def __init__(self, sets, gens, policy=None):
        self.task = SimpleNamespace(eval_sets=sets)
        self._gens = gens
        self.policy = policy
        self.settings = SimpleNamespace(fmt="qa")
        self.model = None
        self.tokenizer = SimpleNamespace(__call__=None)

    def eval_set(self, name):
        return self.task.eval_sets[name]

    def generations(self, prompts, tag):
        return self._gens[tag[0]]

    def reference(self, name, who=""):
        return "theta_o"

    def with_model(self, model):
        sub = SimpleNamespace()
        sub.mean_logprobs = lambda pairs, tag: np.array([-float(len(a.split())) for _, a in pairs])
        return sub


def test_abstention_and_fluency_on_a_fake_context():
    sets = {"forget": _qs("forget", [("q1", "a"), ("q2", "b")]), "retain": _qs("retain", [("q3", "c")])}
    gens = {"forget": ["No comment.", "two words"], "retain": ["one"]}
    ctx = FakeCtx(sets, gens, ComposedPolicy([_P()]))
    v = Abstention().compute(ctx).values
    assert v == {"abstain.forget": 0.5, "abstain.retain": 0.0}
    f = Fluency().compute(ctx).values
    # the abstention is left out: forget keeps "two words" with mean log-prob −2 → ppl e²
    assert f["fluency.forget.ppl"] == pytest.approx(math.exp(2.0))
    assert f["fluency.retain.ppl"] == pytest.approx(math.exp(1.0))
    assert f["fluency.forget.unique_ratio"] == 1.0 and f["fluency.forget.empty"] == 0.0


def test_gate_accuracy_on_a_fake_context(monkeypatch):
    import unlearnkit.llm.tokenize as tk

    monkeypatch.setattr(tk, "encode_prompt", lambda tok, q, fmt: [len(q)])

    class Gate:
        def flags(self, model, tok, ids):
            return np.array([i[0] > 2 for i in ids])  # "flags" prompts longer than 2 characters

    sets = {"forget": _qs("forget", [("aaa", "x"), ("bbbb", "y"), ("c", "z")]),
            "retain": _qs("retain", [("dd", "x"), ("eeeee", "y")]), "world_facts": _qs("wf", [("f", "x")])}
    v = GateAccuracy().compute(FakeCtx(sets, {}, _P(Gate()))).values
    assert v["gate.tpr"] == pytest.approx(2 / 3)
    assert v["gate.fpr.retain"] == 0.5 and v["gate.fpr.world_facts"] == 0.0
    assert v["gate.fpr"] == pytest.approx(1 / 3)
    assert v["gate.balanced_accuracy"] == pytest.approx((2 / 3 + 1 - 1 / 3) / 2)
    none = GateAccuracy().compute(FakeCtx(sets, {}, None)).values
    assert all(math.isnan(x) for x in none.values())

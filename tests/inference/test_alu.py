"""ALU (arXiv:2502.00406): answers that mention no target pass unchanged; a target in the query or answer triggers
rewrite → critic → refuse or merge; agents are pluggable; the cost per query — counted as agent calls and audit
work, not timed — does not grow with the number of targets (1 → 1,000)."""

from __future__ import annotations

import numpy as np
import pytest

import world  # noqa: E402
from unlearnkit.errors import CheckpointError, MethodError  # noqa: E402
from unlearnkit.methods.llm.alu import (  # noqa: E402
    REFUSAL,
    Agents,
    ALUPolicy,
    TargetIndex,
    leak_critic,
    redact_rewriter,
)
from unlearnkit.models.policy import policy_from_saved  # noqa: E402

QUERIES = [
    ("Where was Duren Rentodor born?", "Duren Rentodor was born in Baor, Brenland."),
    ("Who is the author born in Baor?", "The author is Duren Rentodor."),
    ("What is 37 plus 45?", "37 plus 45 is 82."),
    ("Who wrote 'Hamlet'?", "William Shakespeare"),
]


def _fillers(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    syl = ["ka", "lo", "ren", "vi", "mar", "to", "sel", "an", "dor", "ei", "qux", "zim"]
    return [f"{''.join(rng.choice(syl, 3)).capitalize()}x {''.join(rng.choice(syl, 3)).capitalize()}q{i}"
            for i in range(n)]


def test_targets_are_audited_rewritten_and_refused_or_merged():
    pol = ALUPolicy(["Duren Rentodor"])
    out = pol.revise([q for q, _ in QUERIES], [a for _, a in QUERIES])
    # query about the target: every rewrite that keeps the facts leaks → the deflections alone cannot lift the
    # mean of the top 3 ratings to 4 → refusal
    assert out[0] == REFUSAL
    # target only in the answer (the query is not about it): the redacted answer has no leak → merged
    assert "Rentodor" not in out[1] and out[1] != REFUSAL and "author" in out[1]
    assert out[2:] == [QUERIES[2][1], QUERIES[3][1]]  # no target: unchanged
    assert pol.stats["queries"] == 4 and pol.stats["rewritten"] == 2 and pol.stats["refused"] == 1
    assert pol.stats["calls"] == 2 * 4 + 2 * 2 + 1  # answer + audit each; rewrite + critic twice; one merge


def test_critic_ratings_by_hand():
    found = ["Duren Rentodor"]
    q, a = QUERIES[0]
    cands = redact_rewriter(q, a, found, 5)
    r = leak_critic(q, a, cands, found)
    # "that person was born in Baor, Brenland." keeps all 3 content words (born, baor, brenland): leak 1 → 1
    assert r[0] == 1.0 and r[1] == 1.0
    assert r[2] == 1.0  # the only sentence mentions the target: empty
    assert r[3] == r[4] == 5.0  # deflections


def test_agents_are_pluggable():
    calls = []

    def auditor(q, a):
        calls.append(q)
        return ["x"] if "37" in q else []

    agents = Agents(auditor, lambda q, a, f, k: ["fine answer"] * k, lambda q, a, c, f: [5.0] * len(c),
                    lambda c, r: "merged: " + c[0])
    pol = ALUPolicy(["unused"], auditor="custom", agents=agents)
    out = pol.revise([q for q, _ in QUERIES], [a for _, a in QUERIES])
    assert out[2] == "merged: fine answer" and out[0] == QUERIES[0][1]
    assert len(calls) == 4
    with pytest.raises(CheckpointError, match="custom agents"):
        policy_from_saved("alu", pol.config(), {})


@pytest.mark.parametrize("kind", ["string"])
def test_cost_per_query_does_not_grow_with_the_number_of_targets(kind):
    qs, ans = [q for q, _ in QUERIES] * 5, [a for _, a in QUERIES] * 5
    per_query = {}
    for n in (1, 10, 100, 1000):
        pol = ALUPolicy(["Duren Rentodor", *_fillers(n - 1)], auditor=kind)
        pol.revise(qs, ans)
        per_query[n] = (pol.stats["calls"] / len(qs), pol.stats["audit_work"] / len(qs))
    calls = {v[0] for v in per_query.values()}
    assert len(calls) == 1  # the same agent calls per query for 1 and 1,000 targets
    work = [v[1] for v in per_query.values()]
    assert max(work) == min(work)  # word comparisons: independent of the target count
    # a naive matcher (every target against every text) would do 1,000× the work at 1,000 targets
    assert TargetIndex(_fillers(1000)).find("nothing to see here") == []


def test_index_matches_whole_words_only():
    idx = TargetIndex(["Ann Lee", "Bo"])
    assert idx.find("I met ann lee and bob.") == ["Ann Lee"]
    assert idx.find("Bo, Ann and Lee") == ["Bo"]


def test_model_rewriter_asks_the_model_itself():
    from unlearnkit.llm.lm import generate

    t = world.task("qa")
    m = world.model()
    it = t.forget[1]
    pol = ALUPolicy([it.subject], rewriter="model", max_new_tokens=12)
    out = generate(m, world.tokenizer(), [it.question], "qa", max_new_tokens=12, policy=pol)
    assert pol.stats["rewritten"] == 1
    assert it.subject not in out[0]


def test_alu_method_defaults_to_the_subjects_of_d_f():
    _, res = world.unlearn("alu", {})
    assert set(res.policy.targets) == {it.subject for it in world.task("qa").forget}
    back = policy_from_saved("alu", res.policy.config(), {})
    assert back.config() == res.policy.config()
    with pytest.raises(MethodError, match="target"):
        ALUPolicy([])


def test_subjects_that_are_labels_not_names_are_refused_by_alu_and_eco():
    """Real TOFU labels its authors `author_<k>`: those strings occur in no question, so ALU's auditor and ECO's subject
    corruption would silently do nothing; both refuse and say what to give instead."""
    from dataclasses import replace

    from unlearnkit.data.text.qa import QASet
    from unlearnkit.methods import METHODS

    t = world.task("qa")
    labelled = QASet("forget", [replace(it, subject=f"author_{k % 2}") for k, it in enumerate(t.forget)])
    m = world.model()
    with pytest.raises(MethodError, match="labels, not names.*give targets"):
        METHODS.build("alu", {}).unlearn(m, labelled, t.retain, world.engine(), world.context())
    with pytest.raises(MethodError, match="no token would be corrupted.*give subjects"):
        METHODS.build("eco", {"sigma": 1.0, "gate_features": "lm"}).unlearn(m, labelled, t.retain, world.engine(),
                                                                             world.context())
    # the names themselves, given explicitly, are accepted
    names = sorted({it.subject for it in t.forget})
    _, res = world.unlearn("alu", {"targets": names})
    assert set(res.policy.targets) == set(names)
    res = METHODS.build("eco", {"sigma": 1.0, "gate_features": "lm", "subjects": names}).unlearn(
        m, labelled, t.retain, world.engine(), world.context())
    assert res.notes["n_subject_patterns"] > 0

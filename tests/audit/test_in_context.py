"""In-context reintroduction: the prompts (goldens) score the same answer tokens as the plain QA form, and the
metric's base score is the plain forget score."""

from __future__ import annotations

import numpy as np
import pytest

from audit_fixtures import cf, make_ctx
from unlearnkit.data.text.qa import QAItem, QASet
from unlearnkit.errors import DataError
from unlearnkit.llm.tokenize import encode_qa
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.audit_probes import in_context_pairs, with_context


def test_with_context_golden_and_same_answer_tokens():
    q, a, f = with_context("qa", "A was born in Rome.", "Where was A born?", "Rome")
    assert (q, a, f) == ("A was born in Rome.\nQuestion: Where was A born?\nAnswer:", " Rome", "raw")
    tok = cf.tokenizer()
    plain = encode_qa(tok, "Where was A born?", "Rome", "qa")
    ctx = encode_qa(tok, q, a, f)
    ans = lambda e: [t for t, lab in zip(e.input_ids, e.labels) if lab != -100]  # noqa: E731
    assert ans(plain) == ans(ctx)  # the probe scores exactly the answer tokens of the plain form
    assert with_context("chat", "C.", "Q?", "A") == ("C.\nQ?", "A", "chat")


def test_subject_context_uses_other_facts_only():
    qs = QASet("f", [QAItem(1, "q1", "a1", "p1", subject="S"), QAItem(2, "q2", "a2", None, subject="S"),
                     QAItem(3, "q3", "a3", "p3", subject="T")])
    pairs, fmt = in_context_pairs(qs, "subject", 3, "qa")
    assert fmt == "raw"
    assert pairs[0][0].startswith("a2\n") and "p1" not in pairs[0][0]
    assert pairs[1][0].startswith("p1\n")
    self_pairs, _ = in_context_pairs(qs, "self", 3, "qa")
    assert self_pairs[0][0].startswith("p1\n") and self_pairs[1][0].startswith("a2\n")


def test_in_context_metric_base_is_the_plain_forget_score(theta_o):
    ctx = make_ctx(theta_o)
    out = METRICS.build("in_context", {}).compute(ctx).values
    qs = ctx.eval_set("forget")
    plain = float(np.exp(ctx.mean_logprobs(qs.pairs("answer"), ("forget", "answer"))).mean())
    assert out["icl.base_prob"] == pytest.approx(plain, rel=1e-9)
    assert out["icl.gain"] == pytest.approx(out["icl.prob"] - out["icl.base_prob"])
    assert 0.0 <= out["icl.prob"] <= 1.0


def test_subject_mode_without_shared_subjects_is_a_clear_error(theta_o):
    from dataclasses import replace

    t = cf.task()
    lone = QASet("forget", [QAItem(it.id, it.question, it.answer, subject=f"p{i}") for i, it in
                            enumerate(t.eval_sets["forget"])])
    ctx = make_ctx(theta_o, task=replace(t, eval_sets={**t.eval_sets, "forget": lone}))
    with pytest.raises(DataError, match="share a subject"):
        METRICS.build("in_context", {"context": "subject"}).compute(ctx)

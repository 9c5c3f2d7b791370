"""ICUL (arXiv:2310.07579): the context — flipped-label forget examples (the query's own first) then correct retain
examples — precedes every question in scoring and generation, in the track's prompt format."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

import world  # noqa: E402
from unlearnkit.llm.lm import answer_logprobs  # noqa: E402
from unlearnkit.llm.tokenize import format_prompt  # noqa: E402
from unlearnkit.methods.llm.icul import ICULPolicy  # noqa: E402
from unlearnkit.models.policy import policy_from_saved  # noqa: E402


def test_context_layout_in_the_qa_format():
    pol = ICULPolicy([["Where was Ann born?", "In Rome.", "Ann"], ["What does Ann write?", "Poems.", "Ann"],
                      ["Who is Bo?", "A baker.", "Bo"]], [["What is 2 plus 2?", "2 plus 2 is 4."]], max_forget=2)
    q = pol.rewrite_questions(["Where was Ann born?"], "qa")[0]
    assert format_prompt(None, q, "qa") == ("Question: Where was Ann born?\nAnswer: In Rome.\n\n"
                                            "Question: What does Ann write?\nAnswer: Poems.\n\n"
                                            "Question: What is 2 plus 2?\nAnswer: 2 plus 2 is 4.\n\n"
                                            "Question: Where was Ann born?\nAnswer:")
    # a query unrelated to D_f gets the first forget examples
    assert pol.examples_for("What is 3 times 3?")[:2] == [("Where was Ann born?", "In Rome."),
                                                          ("What does Ann write?", "Poems.")]
    assert pol.rewrite_questions(["x"], "raw")[0].startswith("Where was Ann born? In Rome.\n\n")
    assert policy_from_saved("icul", pol.config(), {}).config() == pol.config()


def test_icul_changes_the_forget_likelihood_through_the_context():
    m, res = world.unlearn("icul", {"max_forget": 1, "n_retain": 1})
    pol = res.policy
    t = world.task("qa")
    pairs = t.forget.pairs()[:6]
    s0, n0 = answer_logprobs(m, world.tokenizer(), pairs, "qa")
    s1, n1 = answer_logprobs(m, world.tokenizer(), pairs, "qa", policy=pol)
    assert np.array_equal(n0, n1)  # the same answer tokens are scored
    assert (s1 / n1).mean() < (s0 / n0).mean()  # a wrong answer to the same question in context lowers the true one
    it = t.forget[0]
    assert pol.examples_for(it.question)[0] == (it.question, it.perturbed_answers[0])

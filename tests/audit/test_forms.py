"""Form-independence probes: the forms of a fact (goldens) and the ``forms`` metric (consistency with TOFU's Prob.,
multiple-choice scoring against hand-set log-probabilities)."""

from __future__ import annotations

import numpy as np
import pytest

from audit_fixtures import make_ctx
from unlearnkit.data.text.qa import QAItem
from unlearnkit.data.text.synthetic import (
    FORMS,
    fact_span,
    form_probes,
    key_span,
    paraphrase_question,
)
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import METRICS


def test_key_span_golden():
    assert key_span("The birthplace of A is Kalo, Valdoria.", "The birthplace of A is Rumo, Ostmark.") == \
        ("The birthplace of A is", "Kalo, Valdoria", ".")
    assert key_span('"The Silent Harbor" is a book by A.', '"The Iron Crown" is a book by A.') == \
        ('"The', "Silent Harbor", '" is a book by A.')
    assert key_span("Hsiao Yun-Hwa is the complete name of the writer.",
                    "Chen Jing-Li is the complete name of the writer.") == \
        ("", "Hsiao Yun-Hwa", " is the complete name of the writer.")
    assert key_span("a b c", "x y z") is None  # no shared structure
    assert key_span("same text", "same text") is None


def test_fact_span_takes_the_tightest_perturbation():
    it = QAItem(0, "q?", "A was born in X.", "The birthplace of A is Kalo, Valdoria.",
                ("Something else entirely here now.", "The birthplace of A is Rumo, Ostmark."), "A")
    assert fact_span(it) == ("The birthplace of A is", "Kalo, Valdoria", ".")
    assert fact_span(QAItem(1, "q?", "a")) is None


def test_paraphrase_question_inverts_the_generator_templates():
    assert paraphrase_question("Where was Kalo Renvi born?") == "What is the birthplace of Kalo Renvi?"
    assert paraphrase_question("Who is the satire author born in Poqu, Estravia?") == \
        "Which satire writer was born in Poqu, Estravia?"
    assert paraphrase_question("What is the meaning of life?") is None


def test_form_probes_build_every_form_with_the_true_option_marked():
    it = QAItem(7, "Where was A born?", "A was born in Kalo, Valdoria.", "The birthplace of A is Kalo, Valdoria.",
                ("The birthplace of A is Rumo, Ostmark.", "The birthplace of A is Pel, Serenia."), "A")
    fp = form_probes([it], seed=3)
    assert set(fp) == set(FORMS) and all(len(v) == 1 for v in fp.values())
    assert fp["para_question"][0].prompt == "What is the birthplace of A?"
    assert fp["fill_blank"][0].prompt == "Fill in the blank: The birthplace of A is ___."
    assert fp["fill_blank"][0].target == "Kalo, Valdoria"
    c = fp["completion"][0]
    assert (c.prompt, c.target, c.fmt) == ("The birthplace of A is", " Kalo, Valdoria", "raw")
    m = fp["mcq"][0]
    assert m.options[m.answer_index] == it.paraphrased_answer and sorted(m.options) == sorted(
        [it.paraphrased_answer, *it.perturbed_answers])
    letter = "ABC"[m.answer_index]
    assert f"{letter}. {it.paraphrased_answer}" in m.prompt
    # a question the templates do not know, without paraphrase / perturbations: only qa and instruction
    bare = form_probes([QAItem(1, "Odd question?", "yes")])
    assert {f for f, v in bare.items() if v} == {"qa", "instruction"}
    with pytest.raises(ConfigError, match="unknown form"):
        form_probes([it], forms=("qa", "haiku"))


def test_forms_qa_prob_equals_tofu_prob_of_the_same_pairs(theta_o):
    ctx = make_ctx(theta_o)
    out = METRICS.build("forms", {"forms": ["qa", "para_answer"]}).compute(ctx)
    qs = ctx.eval_set("forget")
    tofu_prob = float(np.exp(ctx.mean_logprobs(qs.pairs("answer"), ("forget", "answer"))).mean())
    para_prob = float(np.exp(ctx.mean_logprobs(qs.pairs("paraphrased_answer"), ("forget", "para"))).mean())
    assert out.values["forms.forget.qa.prob"] == pytest.approx(tofu_prob, rel=1e-9)
    assert out.values["forms.forget.para_answer.prob"] == pytest.approx(para_prob, rel=1e-9)
    assert out.values["forms.forget.qa.n"] == len(qs)


def test_mcq_accuracy_and_true_share_follow_the_option_scores(monkeypatch, theta_o):
    from unlearnkit.metrics import audit_probes

    ctx = make_ctx(theta_o, max_items=2)
    probes = form_probes(ctx.eval_set("forget"), forms=("mcq",))["mcq"]
    lps = []
    for k, p in enumerate(probes):  # item 0: the true option scores highest; item 1: the first wrong one does
        row = np.full(len(p.options), -3.0)
        row[p.answer_index] = -1.0 if k == 0 else -2.0
        if k == 1:
            row[(p.answer_index + 1) % len(row)] = -1.0
        lps.append(row)
    monkeypatch.setattr(audit_probes, "ctx_logprobs", lambda c, pairs, fmt, tag: np.concatenate(lps))
    res = audit_probes.form_scores(ctx, "forget", ["mcq"])["mcq"]
    assert res["correct"].tolist() == [True, False]
    n = len(probes[0].options)
    share0 = np.exp(-1.0) / (np.exp(-1.0) + (n - 1) * np.exp(-3.0))
    share1 = np.exp(-2.0) / (np.exp(-1.0) + np.exp(-2.0) + (n - 2) * np.exp(-3.0))
    assert res["p_true"] == pytest.approx([share0, share1])


def test_forms_config_rejects_unknown_forms():
    with pytest.raises(ConfigError, match="unknown or no form"):
        METRICS.validate_config("forms", {"forms": ["qa", "sonnet"]})


def test_tofu_paraphrased_questions_reach_the_form_probes():
    from testkit import shared_data_dir

    from unlearnkit.data.text.tofu import load_tofu

    shared = shared_data_dir()
    root = shared / "tofu" if shared is not None else None
    if root is None or not (root / "full.json").is_file():
        pytest.skip("TOFU data not available (shared/data/tofu)")
    task = load_tofu(root, "forget01")
    pq = task.extras["paraphrased_question"]
    forget = task.eval_sets["forget"]
    assert set(forget.ids.tolist()) <= set(pq)
    probes = form_probes(list(forget)[:3], forms=("para_question",), paraphrased_questions=pq)["para_question"]
    assert len(probes) == 3 and all(p.prompt == pq[p.item_id] and p.prompt != forget[k].question
                                    for k, p in enumerate(probes))


def test_translated_form_asks_the_same_fact_in_another_language(theta_o):
    from unlearnkit.data.text.synthetic import translate_question

    assert translate_question("Where was Kalo Renvi born?") == "¿Dónde nació Kalo Renvi?"
    assert translate_question("Who is the satire author born in Poqu, Estravia?") == \
        "¿Quién es el autor de satire nacido en Poqu, Estravia?"
    assert translate_question("What is the meaning of life?") is None
    ctx = make_ctx(theta_o)
    qs = ctx.eval_set("forget")
    probes = form_probes(qs, forms=("translated",))["translated"]
    assert len(probes) == len(qs)  # every synthetic question has a translation
    assert all(p.prompt.startswith("¿") and p.target == it.answer for p, it in zip(probes, qs))
    out = METRICS.build("forms", {"forms": ["translated"]}).compute(ctx).values
    want = float(np.exp(ctx.mean_logprobs([(p.prompt, p.target) for p in probes], ("hand", "translated"))).mean())
    assert out["forms.forget.translated.prob"] == pytest.approx(want, rel=1e-9)

"""Relearning on related text (``llm_relearn`` with ``corpus: related``; Hu et al. 2024, arXiv:2406.13356): the corpus
is text about the forget targets with every sentence that states a D_f answer dropped, H is all of D_f, θ_r's curve
starts at θ_r's own forget score, every row runs the same attack, and a task without related text is a clear error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from audit_fixtures import cf, make_ctx
from unlearnkit.data.text.rwku import build_rwku_task, synthetic_rwku
from unlearnkit.errors import ConfigError
from unlearnkit.llm.lm import answer_logprobs
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.audit_probes import encode_texts, read_related_texts, related_corpus

RELATED = ["The library in the old town has many shelves of books. Readers often meet there on Sundays.",
           "Writers sometimes give interviews about their work. Critics review new novels every week."]
PARAMS = {"corpus": "related", "related_texts": RELATED, "steps": 3, "eval_at": [1, 3], "batch_size": 2,
          "lr": 5e-3}


def _states_answer(text, answer):
    return re.search(r"(?<!\w)" + re.escape(answer) + r"(?!\w)", text, re.IGNORECASE) is not None


def test_related_corpus_golden():
    texts = ["Ann was born in Lu. She likes tea! Ann wrote Frost.", "Lucky people live in Lugano."]
    kept, dropped = related_corpus(texts, ["Lu", "Frost", "Ann", ""], keep=["Ann"])
    assert kept == ["She likes tea!", "Lucky people live in Lugano."] and dropped == 2  # "Lu" only as a word
    assert related_corpus(texts, ["Lu"], drop=False) == (texts, 0)
    kept, dropped = related_corpus(["Ann is Ann."], ["Ann"], keep=[])
    assert kept == [] and dropped == 1


def test_rwku_related_text_never_states_a_forget_answer():
    task = build_rwku_task(synthetic_rwku(3, n_persons=8, qa_per_person=10), 1)
    texts = [t for ts in task.extras["rwku"]["related"].values() for t in ts]
    target = task.scenario["subjects_forget"][0]
    answers = [it.answer for it in task.forget if it.answer.lower() != target.lower()]
    # the raw related text (intro + biography passage) states the answers: the filter has something to do
    assert any(_states_answer(t, a) for t in texts for a in answers)
    kept, dropped = related_corpus(texts, answers, [target])
    assert dropped > 0 and kept and any("is a writer" in t for t in kept)
    assert not [(a, t) for t in kept for a in answers if _states_answer(t, a)]
    # nor does it contain any D_f question-answer pair verbatim
    assert not any(it.question in t for t in kept for it in task.forget)


def test_encode_texts_windows_keep_every_token():
    tok = cf.tokenizer()
    text = " ".join(["The old library keeps many books and maps."] * 12)
    enc = encode_texts(tok, [text], 32)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(enc) > 1 and all(len(e) <= 32 for e in enc)
    labels = [t for e in enc for t in e.labels if t != -100]
    assert labels == list(ids) + [tok.eos_token_id]


def test_theta_r_curve_starts_at_theta_r_score_and_h_is_all_of_df(theta_o, theta_r):
    ctx = make_ctx(theta_r, original=theta_o, oracle=theta_r)
    before = {k: v.detach().clone() for k, v in theta_r.state_dict().items()}
    out = METRICS.build("llm_relearn", PARAMS).compute(ctx)
    h = ctx.eval_set("forget")
    s, n = answer_logprobs(theta_r, cf.tokenizer(), h.pairs("answer"), fmt="qa")
    assert out.values["relearn.prob@0"] == pytest.approx(float(np.exp(s / n).mean()), rel=1e-9)
    assert out.values["relearn.n_heldout"] == len(h) and out.values["relearn.n_relearn"] == 0
    assert out.values["relearn.n_related_texts"] == 2 and out.values["relearn.dropped_sentences"] == 0
    assert len(out.per_sample["relearn.relearn_ids"]) == 0
    assert out.values["relearn.prob@3"] != out.values["relearn.prob@0"]  # the copy was trained
    for k, v in theta_r.state_dict().items():
        assert np.array_equal(v.numpy(), before[k].numpy()), k  # θ_r itself untouched


def test_every_row_runs_the_same_related_attack(theta_o, theta_r):
    a = METRICS.build("llm_relearn", PARAMS).compute(make_ctx(theta_o, original=theta_o, oracle=theta_r))
    b = METRICS.build("llm_relearn", PARAMS).compute(make_ctx(theta_r, original=theta_o, oracle=theta_r))
    again = METRICS.build("llm_relearn", PARAMS).compute(make_ctx(theta_r, original=theta_o, oracle=theta_r))
    assert a.values["relearn.threshold"] == b.values["relearn.threshold"]
    assert a.values["relearn.n_related_examples"] == b.values["relearn.n_related_examples"]
    np.testing.assert_array_equal(b.per_sample["relearn.curve"], again.per_sample["relearn.curve"])


def test_the_task_related_text_is_used_on_an_rwku_task(theta_r):
    task = build_rwku_task(synthetic_rwku(3, n_persons=8, qa_per_person=10), 1)
    ctx = make_ctx(theta_r, task=task, max_items=8)
    out = METRICS.build("llm_relearn", {"corpus": "related", "steps": 2, "eval_at": [2], "batch_size": 2}
                        ).compute(ctx)
    assert out.values["relearn.n_heldout"] == len(ctx.eval_set("forget"))
    assert out.values["relearn.dropped_sentences"] > 0 and out.values["relearn.n_related_texts"] >= 1


def test_missing_related_corpus_is_a_clear_error(theta_r, tmp_path):
    with pytest.raises(ConfigError, match="needs text about the forget targets"):
        METRICS.build("llm_relearn", {"corpus": "related"}).compute(make_ctx(theta_r))  # synthetic task: none
    with pytest.raises(ConfigError, match="is not a file"):
        METRICS.build("llm_relearn", {"corpus": "related", "related_path": str(tmp_path / "none.txt")})
    with pytest.raises(ConfigError, match="only with corpus: related"):
        METRICS.build("llm_relearn", {"related_texts": ["x"]})
    with pytest.raises(ConfigError, match="not both"):
        METRICS.build("llm_relearn", {"corpus": "related", "related_texts": ["x"], "related_path": "y.txt"})


def test_related_files_are_read(tmp_path):
    (tmp_path / "a.txt").write_text("First text.\nStill first.\n\n\nSecond text.\n")
    assert read_related_texts(str(tmp_path / "a.txt")) == ("First text.\nStill first.", "Second text.")
    (tmp_path / "b.json").write_text(json.dumps(["one", {"text": "two"}, "  "]))
    assert read_related_texts(str(tmp_path / "b.json")) == ("one", "two")
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n\n"y"\n')
    assert read_related_texts(str(tmp_path / "c.jsonl")) == ("x", "y")
    cfg = METRICS.build("llm_relearn", {"corpus": "related", "related_path": str(tmp_path / "c.jsonl")}).config
    assert cfg.related == ("x", "y")
    (tmp_path / "d.json").write_text(json.dumps([{"body": "no text"}]))
    with pytest.raises(ConfigError, match="row 0 must be a string or an object with a 'text'"):
        read_related_texts(str(tmp_path / "d.json"))
    (tmp_path / "e.csv").write_text("x")
    with pytest.raises(ConfigError, match="unknown suffix"):
        read_related_texts(str(tmp_path / "e.csv"))

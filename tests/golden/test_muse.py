"""Golden values of the MUSE metrics (metrics/muse.py): PrivLeak sign and scale, prompt format, ROUGE profile."""

from __future__ import annotations

import pytest

from unlearnkit.errors import DataError
from unlearnkit.metrics.muse import cut_answer, knowmem_prompt, knowmem_scores, privleak, verbmem_scores


def test_privleak_sign_and_scale():
    assert privleak(0.75, 0.5) == pytest.approx(50.0)    # under-unlearning: positive
    assert privleak(0.25, 0.5) == pytest.approx(-50.0)   # over-unlearning: negative
    assert privleak(0.5, 0.5) == 0.0
    with pytest.raises(DataError):
        privleak(0.5, 0.0)
    with pytest.raises(DataError):
        privleak(1.5, 0.5)


def test_knowmem_prompt_and_cut():
    p = knowmem_prompt("Who?", [("Q1", "A1"), ("Q2", "A2")])
    assert p == "Question: Q1\nAnswer: A1\n\nQuestion: Q2\nAnswer: A2\n\nQuestion: Who?\nAnswer: "
    assert cut_answer("Paris\n\nQuestion: next") == "Paris"
    assert cut_answer("Paris Question: x") == "Paris "


def test_muse_rouge_profile_is_unstemmed_c22():
    assert verbmem_scores(["The cats were running"], ["the cat was run"])[0] == pytest.approx(0.25)
    assert knowmem_scores(["The cats were running"], ["the cat was run\n\nQuestion: z"])[0] == pytest.approx(0.25)
    # recall vs f1 of KnowMem
    assert knowmem_scores(["blue sky"], ["the blue sky today"], kind="recall")[0] == pytest.approx(1.0)
    assert knowmem_scores(["blue sky"], ["the blue sky today"], kind="f1")[0] == pytest.approx(2 / 3)

"""Golden values of the MUSE metrics (metrics/muse.py): PrivLeak sign and scale, prompt format, ROUGE profile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearnkit.errors import DataError
from unlearnkit.metrics.muse import (
    cut_answer,
    knowmem_prompt,
    knowmem_scores,
    privleak,
    verbmem_reference,
    verbmem_scores,
)


def test_privleak_sign_and_scale():
    # MUSE orientation (AUC = P(holdout more member-like than D_f)): over-unlearning positive, under-unlearning negative
    assert privleak(0.75, 0.5) == pytest.approx(50.0)    # over-unlearning: positive
    assert privleak(0.25, 0.5) == pytest.approx(-50.0)   # under-unlearning: negative
    assert privleak(0.5, 0.5) == 0.0
    # a near-zero oracle AUC (< 0.05) gives NaN, never a huge number (issue 13): 0.5 vs 0.001 would be +49,900 %
    assert math.isnan(privleak(0.5, 0.0)) and math.isnan(privleak(0.5, 0.001)) and math.isnan(privleak(0.5, 0.0499))
    assert privleak(0.5, 0.05) == pytest.approx(900.0)
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


# -- review additions: MUSE's PrivLeak orientation and the VerbMem reference cut -----------------------------------
class _WordTokenizer:
    """Whitespace tokenizer with a BOS (id 1) added by ``add_special_tokens`` (Llama-like)."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab.setdefault(w, 10 + len(self.vocab)) for w in text.split()]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=True):
        inv = {v: k for k, v in self.vocab.items()}
        return " ".join(inv[i] for i in ids if not (skip_special_tokens and i == 1))


def test_verbmem_reference_is_cut_like_muse():
    tok = _WordTokenizer()
    gt = "w0 w1 w2 w3 w4 w5"
    # MUSE: tokenizer(gt, add_special_tokens=True).input_ids[:, :4] = [BOS, w0, w1, w2] → "w0 w1 w2"
    assert verbmem_reference(tok, gt, 4) == "w0 w1 w2"
    assert verbmem_reference(tok, gt, 128) == gt
    # perfect verbatim recall of the first 3 words: F1 1.0 against the cut reference; 2·(3/6)·1/(3/6 + 1) = 2/3 against
    # the full continuation
    assert verbmem_scores([verbmem_reference(tok, gt, 4)], ["w0 w1 w2"])[0] == pytest.approx(1.0)
    assert verbmem_scores([gt], ["w0 w1 w2"])[0] == pytest.approx(2 / 3)


def test_privleak_auc_uses_muse_orientation():
    """swj0419/muse_bench privleak: forget labelled 0, holdout 1, score −Min-40% → a model that still ranks every D_f
    text above every holdout text has AUC 0 and PrivLeak −100 against θ_r's 0.5 (MUSE's target row: −99.8)."""
    from types import SimpleNamespace

    from unlearnkit.metrics.muse import _privleak_auc

    lp = {"f1": [-0.1, -0.2], "f2": [-0.3, -0.1], "h1": [-3.0, -2.0], "h2": [-4.0, -1.0]}

    class Ctx:
        def text_token_scores(self, texts, tag):
            return [SimpleNamespace(logp=np.array(lp[t])) for t in texts]

    auc, scores = _privleak_auc(Ctx(), {"forget": ["f1", "f2"], "holdout": ["h1", "h2"]}, 0.4)
    assert scores["forget"].tolist() == [-0.2, -0.3] and scores["holdout"].tolist() == [-3.0, -4.0]  # Min-40%: 1 token
    assert auc == 0.0
    assert privleak(auc, 0.5) == pytest.approx(-100.0)  # under-unlearning is negative, as in MUSE's tables
    auc_over, _ = _privleak_auc(Ctx(), {"forget": ["h1", "h2"], "holdout": ["f1", "f2"]}, 0.4)
    assert auc_over == 1.0 and privleak(auc_over, 0.5) == pytest.approx(100.0)  # D_f less likely than unseen text


class _FakeMuseCtx:
    """The parts of the LLM evaluation context the muse metric reads; Min-K% scores come from ``logp``."""

    def __init__(self, logp, oracle_logp=None):
        from types import SimpleNamespace

        self.logp, self.oracle_logp = logp, oracle_logp
        self.settings = SimpleNamespace(max_items=None, verbmem_max_new_tokens=8, knowmem_max_new_tokens=4,
                                        privleak_k=0.4, knowmem_rouge="f1")
        qa = SimpleNamespace(question="q?", answer="a")
        self.task = SimpleNamespace(name="muse_fake", extras={
            "verbmem": [{"prompt": "p", "gt": "one two"}], "knowmem_forget_icl": [qa], "knowmem_retain_icl": [qa],
            "privleak": {"forget": ["f1", "f2"], "holdout": ["h1", "h2"]}})
        self.tokenizer = lambda text, add_special_tokens=True: {"input_ids": text.split()}
        self.tokenizer.decode = lambda ids, skip_special_tokens=True: " ".join(ids)

    def generations(self, prompts, tag, fmt=None, max_new_tokens=None):
        return ["one two" for _ in prompts]

    def eval_set(self, split):
        from types import SimpleNamespace

        return SimpleNamespace(questions=["q?"], answers=["a"])

    def text_token_scores(self, texts, tag):
        from types import SimpleNamespace

        return [SimpleNamespace(logp=np.array(self.logp[t])) for t in texts]

    def reference(self, key, what):
        return "oracle"

    max_context = None  # a model that does not state its context: nothing is cut

    def generation_budget(self, max_new_tokens):
        return max_new_tokens, None

    def truncated_inputs(self, *splits):
        return 0

    def for_reference(self, model, key, fn):
        return fn(_FakeMuseCtx(self.oracle_logp))


@pytest.mark.parametrize("oracle_inverted", [True, False])
def test_muse_metric_flags_a_near_zero_oracle_auc(oracle_inverted, monkeypatch):
    """θ_r with AUC 0 (every D_f text ranked above every holdout text): PrivLeak NaN plus its flag; AUC 0.5: a
    number and no flag."""
    import unlearnkit.metrics.muse as muse_mod
    from unlearnkit.metrics import METRICS

    monkeypatch.setattr(muse_mod, "verbmem_reference", lambda tok, gt, n: gt)
    model = {"f1": [-0.1], "f2": [-0.3], "h1": [-3.0], "h2": [-4.0]}  # AUC 0: D_f still known
    oracle = dict(model) if oracle_inverted else {"f1": [-1.0], "f2": [-4.0], "h1": [-2.0], "h2": [-3.0]}  # 0.5
    out = METRICS.build("muse").compute(_FakeMuseCtx(model, oracle))
    v = out.values
    if oracle_inverted:
        assert v["privleak.auc_oracle"] == 0.0 and math.isnan(v["privleak"])
        assert v["privleak.near_zero_denominator"] == 1.0
    else:
        assert v["privleak.auc_oracle"] == 0.5 and v["privleak"] == pytest.approx(-100.0)
        assert "privleak.near_zero_denominator" not in v


def test_guarded_ratio():
    from unlearnkit.metrics._ratio import flag_key, guarded_ratio

    assert guarded_ratio(3.0, 2.0, 1e-3) == (1.5, False)
    assert guarded_ratio(-3.0, -2.0, 1e-3) == (1.5, False)
    for den in (0.0, 5e-4, -5e-4, float("nan"), float("inf")):
        val, flagged = guarded_ratio(1.0, den, 1e-3)
        assert math.isnan(val) and flagged
    assert flag_key("mi_ratio") == "mi_ratio.near_zero_denominator"

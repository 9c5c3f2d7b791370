"""Golden values of the text MIAs (metrics/mia_text.py) and of extraction strength / exact memorization
(metrics/extraction.py): C23 (Min-K% never NaN; Min-K%++ by hand), C20 (off-by-one), hand-computed zlib/ref scores."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from unlearnkit.errors import DataError
from unlearnkit.metrics.extraction import (
    answer_predictions, exact_memorization, extraction_scores, extraction_strength,
)
from unlearnkit.metrics.mia_text import (
    loss_score, mia_summary, min_k_pp_score, min_k_pp_tokens, min_k_score, next_token_stats, ref_score, text_scores,
    zlib_score,
)


# -- C23 ---------------------------------------------------------------------------------------------------------------
def test_c23a_min_k_uses_at_least_one_token():
    s = min_k_score([-0.1, -2.0, -0.5], k=0.2)  # ⌊3·0.2⌋ = 0 → 1 token
    assert s == -2.0 and not math.isnan(s)
    assert min_k_score([-0.7], k=0.05) == -0.7
    # 10 tokens, k = 0.2 → the 2 lowest
    lp = -np.arange(1, 11, dtype=float) / 10
    assert min_k_score(lp, k=0.2) == pytest.approx((-1.0 - 0.9) / 2)


def test_c23b_min_k_plus_plus_by_hand():
    p = np.array([0.5, 0.25, 0.25])
    mu, sigma = next_token_stats(np.log(p)[None, :] + 3.0)  # any logit offset: softmax is shift-invariant
    mu_hand = float((p * np.log(p)).sum())
    sigma_hand = math.sqrt(float((p * np.log(p) ** 2).sum()) - mu_hand ** 2)
    assert mu[0] == pytest.approx(-1.0397, abs=5e-5) and mu[0] == pytest.approx(mu_hand, rel=1e-12)
    assert sigma[0] == pytest.approx(0.3466, abs=5e-5) and sigma[0] == pytest.approx(sigma_hand, rel=1e-12)
    assert min_k_pp_tokens([math.log(0.5)], mu, sigma)[0] == pytest.approx(1.000, abs=1e-9)
    assert min_k_pp_tokens([math.log(0.25)], mu, sigma)[0] == pytest.approx(-1.000, abs=1e-9)
    assert min_k_pp_score([math.log(0.25)], mu, sigma, k=0.2) == pytest.approx(-1.0, abs=1e-9)


def test_min_k_pp_uniform_distribution_is_zero_not_nan():
    mu, sigma = next_token_stats(np.zeros((2, 4)))  # uniform: σ = 0
    assert sigma == pytest.approx([0.0, 0.0], abs=1e-7)
    z = min_k_pp_tokens([math.log(0.25)] * 2, mu, sigma)
    assert np.all(z == 0.0)


# -- other attacks -------------------------------------------------------------------------------------------------
def test_loss_zlib_ref_by_hand():
    lp = [-1.0, -3.0]
    text = "hello hello hello"
    assert loss_score(lp) == -2.0
    assert zlib_score(lp, text) == pytest.approx(-2.0 / len(zlib.compress(text.encode())))
    assert ref_score(lp, [-4.0, -4.0]) == pytest.approx(-2.0 / 4.0)


def test_empty_token_list_is_an_error_not_nan():
    with pytest.raises(DataError, match="at least 2 tokens"):
        min_k_score([], 0.2)
    with pytest.raises(DataError, match="NaN"):
        loss_score([float("nan")])


def test_text_scores_and_summary_orientation():
    rng = np.random.default_rng(0)
    members = [rng.normal(-0.5, 0.1, 12) for _ in range(30)]
    non = [rng.normal(-2.0, 0.1, 12) for _ in range(30)]
    texts = ["some text"] * 30
    sm = text_scores(members, texts, attacks=("loss", "min_k", "zlib"))
    sn = text_scores(non, texts, attacks=("loss", "min_k", "zlib"))
    out = mia_summary(sm, sn, prefix="mia")
    # members have higher log-probs everywhere: perfect separation, AUC 1 (higher = member-like)
    for a in ("loss", "min_k", "zlib"):
        assert out[f"mia.{a}.auc"] == 1.0
    assert math.isnan(out["mia.loss.tpr@1%"])  # 30 non-members cannot resolve FPR 1 %
    out_rev = mia_summary(sn, sm)
    assert out_rev["mia.loss.auc"] == 0.0


# -- C20: extraction strength / exact memorization ----------------------------------------------------------------
@pytest.mark.parametrize("pred,es,em", [([11, 12, 13, 14], 1.0, 1.0), ([99, 12, 13, 14], 0.75, 0.75),
                                        ([99, 99, 99, 99], 0.0, 0.0), ([11, 12, 99, 14], 0.25, 0.75)])
def test_c20_extraction_strength_golden(pred, es, em):
    y = [11, 12, 13, 14]
    assert extraction_strength(pred, y) == es
    assert exact_memorization(pred, y) == em


def test_c20_through_teacher_forced_logits():
    # stub "model output": logits whose argmax at position t-1 is the prediction for label position t
    labels = torch.tensor([[-100, -100, 11, 12, 13, 14, -100]])  # prompt of 2, answer of 4, padding
    logits = torch.zeros(1, 7, 128)
    for t, tok in zip(range(1, 5), [99, 99, 99, 99]):
        logits[0, t, tok] = 5.0
    logits[0, 5, 28] = 9.0  # position predicting the padding: must be ignored (C19: −100 never an index)
    pairs = answer_predictions(logits, labels)
    assert pairs[0][1].tolist() == [11, 12, 13, 14]
    sc = extraction_scores(pairs)
    assert sc["es"][0] == 0.0 and sc["em"][0] == 0.0

"""Golden values of the TOFU metrics (metrics/tofu.py), computed independently: by hand (C03 worked example), by
scipy (KS test), by the harmonic-mean definition, and rouge-score's documented behaviour (C22)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.tofu import (
    GENERATION_LOG_KEYS, TRUTH_RATIO_VARIANTS, UTILITY_KEYS, SplitStats, conditional_probability, forget_quality,
    generation_log, mean_logprob, model_utility, normalised_probability, rouge_l, split_scores, tofu_summary,
    truth_ratio, truth_ratio_score,
)

PARA = np.array([-1.0])
PERT = np.array([[-2.0, -3.0]])


# -- C03: truth-ratio variants ---------------------------------------------------------------------------------------
def test_c03_default_truth_ratio_and_aggregates():
    r = truth_ratio(PARA, PERT)  # default = TOFU's code: geometric mean of perturbed over paraphrased
    assert r[0] == pytest.approx(math.exp(-2.5 + 1.0), rel=1e-12)
    assert r[0] == pytest.approx(0.22313, abs=5e-6)
    assert truth_ratio_score(r, forget=True) == pytest.approx(0.22313, abs=5e-6)   # min(R, 1/R)
    assert truth_ratio_score(r, forget=False) == pytest.approx(0.77687, abs=5e-6)  # max(0, 1 − R)


@pytest.mark.parametrize("variant,golden", [("tofu", 0.22313), ("arith_prob", 0.25161), ("normalised", 0.81757)])
def test_c03_named_variants(variant, golden):
    assert truth_ratio(PARA, PERT, variant)[0] == pytest.approx(golden, abs=5e-6)


def test_c03_variant_by_name_only():
    assert TRUTH_RATIO_VARIANTS[0] == "tofu"
    with pytest.raises(ConfigError, match="arith_prob"):
        truth_ratio(PARA, PERT, "paper")


def test_truth_ratio_forget_aggregate_is_symmetric_in_r():
    # min(R, 1/R): a model twice as confident in the false answers scores like one twice as confident in the true one
    assert truth_ratio_score([2.0], forget=True) == truth_ratio_score([0.5], forget=True) == 0.5
    assert truth_ratio_score([2.0], forget=False) == 0.0  # max(0, 1 − R) clips at 0


def test_truth_ratio_needs_perturbed_answers():
    with pytest.raises(DataError, match="perturbed"):
        truth_ratio(PARA, np.zeros((1, 0)))


# -- probabilities -----------------------------------------------------------------------------------------------------
def test_conditional_probability_is_length_normalised():
    # answer of 4 tokens with total log-prob −2: P^{1/4} = e^{−0.5}
    m = mean_logprob([-2.0], [4])
    assert conditional_probability(m)[0] == pytest.approx(math.exp(-0.5), rel=1e-12)
    with pytest.raises(DataError, match="0 tokens"):
        mean_logprob([-1.0], [0])


def test_normalised_probability_by_hand():
    # true e^-1 vs perturbed e^-2, e^-3
    got = normalised_probability([-1.0], [[-2.0, -3.0]])[0]
    e = math.exp
    assert got == pytest.approx(e(-1) / (e(-1) + e(-2) + e(-3)), rel=1e-12)


# -- forget quality (KS test) ----------------------------------------------------------------------------------------
def test_forget_quality_equals_scipy_ks_2samp():
    rng = np.random.default_rng(0)
    u, o = rng.lognormal(0, 1, 40), rng.lognormal(0.5, 1, 40)
    fq = forget_quality(u, o)
    ref = stats.ks_2samp(u, o)
    assert fq.pvalue == ref.pvalue and fq.statistic == ref.statistic
    # statistic by hand: sup |F_u − F_o| over the pooled sample
    grid = np.concatenate([u, o])
    d = max(abs((u <= x).mean() - (o <= x).mean()) for x in grid)
    assert fq.statistic == pytest.approx(d, abs=1e-12)


def test_forget_quality_of_identical_distributions_is_one():
    r = np.array([0.3, 0.9, 1.4, 0.2])
    assert forget_quality(r, r.copy()).pvalue == 1.0


def test_forget_quality_is_invariant_to_the_ratio_orientation():
    # TOFU's code tests exp(pert_loss − para_loss) = 1/R; the KS test is invariant to a monotone map of both samples
    rng = np.random.default_rng(1)
    u, o = rng.lognormal(0, 1, 30), rng.lognormal(1, 1, 25)
    assert forget_quality(u, o).pvalue == pytest.approx(forget_quality(1 / u, 1 / o).pvalue, rel=1e-12)


def test_c07_missing_oracle_is_an_explicit_error():
    with pytest.raises(ConfigError, match="forget quality unavailable.*oracle"):
        forget_quality([0.5, 0.6], None)


# -- model utility -------------------------------------------------------------------------------------------------
def test_model_utility_harmonic_mean_by_hand():
    vals = dict(zip(UTILITY_KEYS, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]))
    want = 9 / sum(1 / v for v in vals.values())
    assert model_utility(vals) == pytest.approx(want, rel=1e-12)


def test_model_utility_with_a_zero_is_zero():
    vals = dict.fromkeys(UTILITY_KEYS, 0.5)
    vals["world_facts.rouge"] = 0.0
    assert model_utility(vals) == 0.0


def test_model_utility_refuses_missing_or_nan():
    vals = dict.fromkeys(UTILITY_KEYS, 0.5)
    del vals["retain.prob"]
    with pytest.raises(DataError, match="retain.prob"):
        model_utility(vals)
    vals["retain.prob"] = float("nan")
    with pytest.raises(DataError, match="retain.prob"):
        model_utility(vals)


# -- ROUGE (C22) -----------------------------------------------------------------------------------------------------
def test_c22_rouge_stemming_golden():
    ref, hyp = ["The cats were running"], ["the cat was run"]
    assert rouge_l(ref, hyp, stemmer=False)[0] == pytest.approx(0.25)
    assert rouge_l(ref, hyp, stemmer=True)[0] == pytest.approx(0.75)
    assert rouge_l(ref, hyp, stemmer=False, kind="f1")[0] == pytest.approx(0.25)


def test_rouge_recall_vs_f1():
    # reference 2 words fully contained in a 4-word hypothesis: recall 1, precision 0.5, F1 2/3
    assert rouge_l(["blue sky"], ["the blue sky today"], stemmer=False, kind="recall")[0] == pytest.approx(1.0)
    assert rouge_l(["blue sky"], ["the blue sky today"], stemmer=False, kind="f1")[0] == pytest.approx(2 / 3)


# -- C46: generation logs are mappings -------------------------------------------------------------------------------
def test_c46_generation_log_has_named_keys():
    log = generation_log([3, 4], ["q1?", "q2?"], ["xyz", "xyz"], ["a1", "a2"], [0.0, 0.0])
    assert [tuple(d) for d in log] == [GENERATION_LOG_KEYS] * 2
    assert log[1]["generation"] == "xyz" and log[1]["reference"] == "a2" and log[1]["question"] == "q2?"


# -- summary ---------------------------------------------------------------------------------------------------------
def _stats(n: int, shift: float, seed: int) -> SplitStats:
    rng = np.random.default_rng(seed)
    para = rng.normal(-1 + shift, 0.3, n)
    return SplitStats(np.arange(n), para.copy(), para, rng.normal(-2, 0.3, (n, 3)), rng.uniform(0.2, 1.0, n))


def test_tofu_summary_keys_and_oracle_against_itself():
    stats_ = {s: _stats(20, 0.0, i) for i, s in enumerate(("forget", "retain", "real_authors", "world_facts"))}
    out = tofu_summary(stats_, stats_["forget"])
    assert out["forget_quality"] == 1.0 and out["forget_ks_stat"] == 0.0
    assert 0 < out["model_utility"] <= 1
    parts = [out[k] for k in UTILITY_KEYS]
    assert out["model_utility"] == pytest.approx(stats.hmean(parts), rel=1e-12)
    rs = split_scores("real_authors", stats_["real_authors"])
    assert rs["real_authors.prob"] == pytest.approx(
        normalised_probability(stats_["real_authors"].answer_mean_lp, stats_["real_authors"].pert_mean_lp).mean())
    with pytest.raises(ConfigError, match="oracle"):
        tofu_summary(stats_, None)

"""Golden values of the threshold-MIA family (metric ``mia``), computed independently: by hand (C28), by brute-force
pair counting for AUC, by reading hand-built ROC curves for TPR at low FPR, and on stub models whose outputs we set.

The stub model is the identity: each input row *is* the logits row, so every score is known, and two samples are
content duplicates exactly when their logits rows are equal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics import METRICS, EvalContext
from unlearnkit.metrics.mia_family import (
    ATTACKS, MIAFamily, attack_scores, content_hashes, entropy, modified_entropy, roc_auc, tpr_at_fpr,
)

from golden_stubs import confidence_logits as conf_logits, stub_task

ENGINE = Engine(EngineConfig(device="cpu", progress=False))
IDENTITY = nn.Identity()


def brute_auc(m: np.ndarray, n: np.ndarray) -> float:
    """P(s_m > s_n) + ½ P(s_m = s_n) over all member/non-member pairs (independent of sklearn)."""
    m, n = np.asarray(m, float)[:, None], np.asarray(n, float)[None, :]
    return float(((m > n).sum() + 0.5 * (m == n).sum()) / (m.size * n.size))




def true_conf(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y recomputed from the stored float32 logits (so ties/ranks are exactly those the model produces)."""
    p = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    return p[np.arange(len(labels)), labels]




# -- C28: modified entropy ---------------------------------------------------------------------------------------
def test_c28_modified_entropy_golden():
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    got = modified_entropy(p, np.array([0, 2]))
    # by hand: −0.3 ln 0.7 − 0.2 ln 0.8 − 0.1 ln 0.9 ; −0.9 ln 0.1 − 0.7 ln 0.3 − 0.2 ln 0.8
    assert got == pytest.approx([0.16217, 2.95974], abs=5e-6)
    assert got[0] == pytest.approx(-0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9), rel=1e-12)
    # the same through the metric's logits path (score = −Mentr, higher = more member-like)
    s = attack_scores(torch.log(torch.tensor(p)), torch.tensor([0, 2]))["modified_entropy"]
    assert s == pytest.approx([-0.16217, -2.95974], abs=5e-6)


def test_c28_one_hot_probabilities_are_finite():
    p = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    got = modified_entropy(p, np.array([0, 1]))
    assert np.isfinite(got).all()
    assert got[0] == 0.0  # correct and certain: nothing to pay
    assert got[1] == pytest.approx(2 * math.log(1e30))  # ln clamped at 1e-30 twice: 138.155


def test_scores_by_hand_and_direction():
    p = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    s = attack_scores(torch.log(p), torch.tensor([1]))
    assert s["loss"][0] == pytest.approx(math.log(0.25))
    assert s["confidence"][0] == pytest.approx(0.25)
    assert s["entropy"][0] == pytest.approx(-1.5 * math.log(2))  # −H = −(½ ln 2 + 2·¼ ln 4)
    mentr = -0.75 * math.log(0.25) - 0.5 * math.log(0.5) - 0.25 * math.log(0.75)  # 1.458216
    assert s["modified_entropy"][0] == pytest.approx(-mentr)
    assert entropy(p.numpy())[0] == pytest.approx(1.5 * math.log(2))
    # higher = more member-like: a confidently correct sample outscores a hesitant one under every attack
    s2 = attack_scores(torch.tensor([[0.0, 3.0], [0.0, 0.5]]), torch.tensor([1, 1]))
    for a in ATTACKS:
        assert s2[a][0] > s2[a][1], a


def test_saturated_members_are_still_ranked():
    # p_y = 1 − e^{-50} and 1 − e^{-60} both round to 1.0 in float64; loss and Mentr must still order them
    s = attack_scores(torch.tensor([[0.0, 50.0], [0.0, 60.0]]), torch.tensor([1, 1]))
    assert s["loss"] == pytest.approx([-math.exp(-50), -math.exp(-60)], rel=1e-9)
    assert s["modified_entropy"] == pytest.approx([-2 * math.exp(-100), -2 * math.exp(-120)], rel=1e-9)
    assert s["loss"][1] > s["loss"][0] and s["modified_entropy"][1] > s["modified_entropy"][0]


def test_non_finite_logits_and_unknown_attacks_raise():
    with pytest.raises(DataError, match="NaN/inf"):
        attack_scores(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(DataError, match="unknown MIA attack"):
        attack_scores(torch.zeros(1, 2), torch.tensor([0]), ["lira"])


# -- ROC: AUC and TPR at low FPR ---------------------------------------------------------------------------------
def test_perfect_reversed_and_identical_pools():
    hi, lo = np.linspace(10, 11, 50), np.linspace(0, 1, 2000)
    assert roc_auc(hi, lo) == 1.0
    assert tpr_at_fpr(hi, lo, 0.01) == 1.0 and tpr_at_fpr(hi, lo, 0.001) == 1.0
    assert roc_auc(lo[:50], np.linspace(5, 6, 2000)) == 0.0
    assert tpr_at_fpr(lo[:50], np.linspace(5, 6, 2000), 0.01) == 0.0
    same = np.arange(1000.0)
    assert roc_auc(same, same) == pytest.approx(0.5, abs=1e-12)
    assert tpr_at_fpr(same, same, 0.01) == pytest.approx(0.01)  # the diagonal
    assert tpr_at_fpr(same, same, 0.001) == pytest.approx(0.001)
    const = np.zeros(300)
    assert roc_auc(const, const) == pytest.approx(0.5) and tpr_at_fpr(const, const, 0.01) == pytest.approx(0.01)


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    m, n = rng.integers(0, 20, 73).astype(float), rng.integers(-5, 15, 91).astype(float)
    assert roc_auc(m, n) == pytest.approx(brute_auc(m, n), abs=1e-12)
    assert 0.5 < roc_auc(m, n) < 1.0


def test_tpr_at_fpr_reads_the_top_of_vertical_jumps():
    nonmembers = np.arange(100.0)  # 0 … 99
    members = np.concatenate([np.full(10, 99.5), np.full(10, 98.5), np.full(20, -1.0)])
    # ROC: (0, 0) → (0, 0.25) → (0.01, 0.25) → (0.01, 0.5) → (0.02, 0.5) → …
    assert tpr_at_fpr(members, nonmembers, 0.01) == 0.5
    assert tpr_at_fpr(members, nonmembers, 0.005) == 0.25
    assert tpr_at_fpr(members, nonmembers, 0.015) == 0.5
    assert tpr_at_fpr(members, nonmembers, 0.0) == 0.25


def test_tpr_at_fpr_interpolates_ties_as_random_tie_breaking():
    nonmembers = np.concatenate([[10.0, 10.0], np.arange(-98.0, 0.0)])  # 100: two tied with members at the top
    members = np.concatenate([np.full(20, 10.0), np.full(20, -200.0)])
    # ROC jumps diagonally (0, 0) → (0.02, 0.5); at 1 % FPR half the tied block is accepted: TPR = 0.25
    assert tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.25)
    assert tpr_at_fpr(members, nonmembers, 0.02) == pytest.approx(0.5)
    with pytest.raises(DataError):
        tpr_at_fpr(members, nonmembers, 1.5)
    with pytest.raises(DataError, match="non-empty"):
        roc_auc(members, np.zeros(0))


# -- the registered metric on stub models ------------------------------------------------------------------------
def _random_task(rng, conf_f, conf_r, conf_t, dup=None):
    yf, yr, yt = (rng.integers(0, 2, len(c)) for c in (conf_f, conf_r, conf_t))
    lf, lr, lt = conf_logits(yf, conf_f), conf_logits(yr, conf_r), conf_logits(yt, conf_t)
    if dup is not None:
        dup(lf, yf, lr, yr, lt, yt)
    return stub_task({"forget": (lf, yf), "retain": (lr, yr), "test": (lt, yt)}), (lf, yf, lr, yr, lt, yt)


def test_mia_metric_auc_and_tpr_on_a_stub_model():
    rng = np.random.default_rng(1)
    conf_t = np.linspace(0.55, 0.89, 150)
    conf_f = np.concatenate([np.linspace(0.93, 0.97, 25), (conf_t[::6][:25] + conf_t[1::6][:25]) / 2])
    conf_r = np.linspace(0.90, 0.99, 200)
    task, (lf, yf, lr, yr, lt, yt) = _random_task(rng, conf_f, conf_r, conf_t)
    out = METRICS.build("mia").compute(EvalContext(IDENTITY, task, ENGINE))
    v = out.values
    pf, pt = true_conf(lf, yf), true_conf(lt, yt)
    want_f = brute_auc(pf, pt)
    assert 0.7 < want_f < 0.8  # half above every non-member, half interleaved
    for a in ATTACKS:  # all p_y > 0.5 in two classes: every attack ranks like p_y
        assert v[f"mia_{a}_auc_forget"] == pytest.approx(want_f, abs=1e-12), a
        assert v[f"mia_{a}_auc_retain"] == 1.0
        assert v[f"mia_{a}_tpr@1%fpr_retain"] == 1.0
        # 150 non-members: 1 % FPR = 1.5 false positives; only the 25 high forget samples beat the top non-members
        assert v[f"mia_{a}_tpr@1%fpr_forget"] == pytest.approx(0.5)
        assert math.isnan(v[f"mia_{a}_tpr@0.1%fpr_forget"])  # 150 < 1000 non-members: not resolvable
    assert v["mia_tpr@1%fpr_resolvable_forget"] == 1.0 and v["mia_tpr@0.1%fpr_resolvable_forget"] == 0.0
    assert v["mia_n_members_forget"] == 50 and v["mia_n_nonmembers_forget"] == 150
    assert v["mia_n_members_retain"] == 200 and v["mia_pool_collisions"] == 0
    assert set(v) <= set(MIAFamily.keys)
    assert out.per_sample["confidence_forget"] == pytest.approx(pf)
    assert out.per_sample["ids_forget"].tolist() == task.forget.ids.tolist()
    assert out.per_sample["kept_test"].all() and out.per_sample["loss_retain"].shape == (200,)


def test_tpr_at_tenth_percent_is_reported_with_enough_nonmembers():
    rng = np.random.default_rng(2)
    conf_t = np.linspace(0.55, 0.80, 1000)
    conf_f = np.concatenate([np.linspace(0.95, 0.99, 10), np.linspace(0.551, 0.79, 30)])
    task, (lf, yf, _, _, lt, yt) = _random_task(rng, conf_f, np.linspace(0.81, 0.9, 20), conf_t)
    v = METRICS.build("mia", {"attacks": ["loss"]}).compute(EvalContext(IDENTITY, task, ENGINE)).values
    assert v["mia_tpr@0.1%fpr_resolvable_forget"] == 1.0
    assert v["mia_loss_tpr@0.1%fpr_forget"] == pytest.approx(0.25)  # the 10 of 40 above every non-member
    assert v["mia_loss_auc_forget"] == pytest.approx(brute_auc(true_conf(lf, yf), true_conf(lt, yt)), abs=1e-12)
    assert "mia_confidence_auc_forget" not in v  # only the configured attack


def test_c37_pool_duplicates_are_counted_and_removed():
    rng = np.random.default_rng(3)
    conf_t = np.linspace(0.55, 0.75, 100)
    conf_f = np.linspace(0.56, 0.76, 40) + 0.001
    conf_r = np.linspace(0.90, 0.99, 60)

    def dup(lf, yf, lr, yr, lt, yt):
        lt[:10], yt[:10] = lr[:10], yr[:10]  # 10 of 100 non-members copy retain rows (member-like scores)
        lf[:5], yf[:5] = lr[10:15], yr[10:15]  # 5 forget rows also appear in the retain set

    task, (lf, yf, lr, yr, lt, yt) = _random_task(rng, conf_f, conf_r, conf_t, dup)
    out = METRICS.build("mia", {"attacks": ["confidence"]}).compute(EvalContext(IDENTITY, task, ENGINE))
    v = out.values
    assert v["mia_pool_collisions"] == 15  # 10 + 5, the shared non-member pool counted once
    assert v["mia_collisions_forget_retain"] == 5
    assert v["mia_collisions_nonmember_forget"] == 10 and v["mia_collisions_nonmember_retain"] == 10
    assert v["mia_pools_deduplicated"] == 1.0
    assert v["mia_n_members_forget"] == 35 and v["mia_n_nonmembers_forget"] == 90
    pf, pr, pt = true_conf(lf, yf), true_conf(lr, yr), true_conf(lt, yt)
    assert v["mia_confidence_auc_forget"] == pytest.approx(brute_auc(pf[5:], pt[10:]), abs=1e-12)
    assert v["mia_confidence_auc_retain"] == 1.0  # duplicates removed: every retain row beats every non-member
    assert out.per_sample["kept_forget"].tolist() == [False] * 5 + [True] * 35
    assert out.per_sample["kept_test"].tolist() == [False] * 10 + [True] * 90
    # without de-duplication: same counts in the record, but the attack runs on the contaminated pools
    raw = METRICS.build("mia", {"attacks": ["confidence"], "deduplicate": False}).compute(
        EvalContext(IDENTITY, task, ENGINE)).values
    assert raw["mia_pool_collisions"] == 15 and raw["mia_pools_deduplicated"] == 0.0
    assert raw["mia_confidence_auc_forget"] == pytest.approx(brute_auc(pf, pt), abs=1e-12)
    assert raw["mia_confidence_auc_retain"] == pytest.approx(brute_auc(pr, pt), abs=1e-12)
    assert raw["mia_confidence_auc_retain"] < 1.0  # copies of retain rows in the non-member pool
    assert raw["mia_confidence_auc_forget"] != pytest.approx(v["mia_confidence_auc_forget"])


def test_content_hash_ignores_ids_and_labels_but_not_bytes():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0000002], [-0.0, 0.0], [0.0, 0.0]])
    s = SampleSet(TensorSource(x, torch.tensor([0, 1, 0, 0, 0])), np.arange(5), np.arange(10, 15),
                  np.array([0, 1, 0, 0, 0]), 2)
    h = content_hashes(s, batch_size=2)
    assert h[0] == h[1]  # same input, different id and label
    assert h[0] != h[2] and h[3] != h[4]  # bit-level identity (−0.0 ≠ +0.0 in bytes)


def test_everything_deduplicated_away_raises():
    rng = np.random.default_rng(4)

    def dup(lf, yf, lr, yr, lt, yt):
        lt[:], yt[:] = lr[: len(lt)], yr[: len(lt)]

    task, _ = _random_task(rng, np.linspace(0.6, 0.7, 5), np.linspace(0.8, 0.9, 20), np.linspace(0.55, 0.58, 8),
                           dup)
    with pytest.raises(DataError, match="0 non-members"):
        METRICS.build("mia").compute(EvalContext(IDENTITY, task, ENGINE))


def test_class_scenario_uses_matched_nonmember_pools():
    # forget = class 1 (conf 0.9…), retain = class 0; test: 30 of class 1 (conf 0.6…), 50 of class 0 (conf 0.95…)
    yf, yr = np.ones(20, np.int64), np.zeros(40, np.int64)
    yt = np.concatenate([np.ones(30, np.int64), np.zeros(50, np.int64)])
    cf, cr = np.linspace(0.85, 0.92, 20), np.linspace(0.70, 0.80, 40)
    ct = np.concatenate([np.linspace(0.60, 0.88, 30), np.linspace(0.93, 0.99, 50)])
    lf, lr, lt = conf_logits(yf, cf), conf_logits(yr, cr), conf_logits(yt, ct)
    task = stub_task({"forget": (lf, yf), "retain": (lr, yr), "test": (lt, yt)}, kind="class", forgotten_classes=[1])
    pf, pt = true_conf(lf, yf), true_conf(lt, yt)
    v = METRICS.build("mia", {"attacks": ["loss"]}).compute(EvalContext(IDENTITY, task, ENGINE)).values
    assert v["mia_n_nonmembers_forget"] == 30 and v["mia_n_nonmembers_retain"] == 50
    assert v["mia_loss_auc_forget"] == pytest.approx(brute_auc(pf, pt[:30]), abs=1e-12)
    assert v["mia_loss_auc_retain"] == 0.0  # retain less confident than its matched non-members
    assert math.isnan(v["mia_loss_tpr@1%fpr_forget"]) and v["mia_tpr@1%fpr_resolvable_forget"] == 0.0
    w = METRICS.build("mia", {"attacks": ["loss"], "nonmembers": "test_all"}).compute(
        EvalContext(IDENTITY, task, ENGINE)).values
    assert w["mia_n_nonmembers_forget"] == 80 and w["mia_n_nonmembers_retain"] == 80
    assert w["mia_loss_auc_forget"] == pytest.approx(brute_auc(pf, pt), abs=1e-12)


def test_config_validation():
    with pytest.raises(ConfigError, match="attacks"):
        METRICS.build("mia", {"attacks": ["lira"]})
    with pytest.raises(ConfigError):
        METRICS.build("mia", {"attacks": []})
    with pytest.raises(ConfigError, match="duplicates"):
        METRICS.build("mia", {"attacks": ["loss", "loss"]})
    with pytest.raises(ConfigError, match="Allowed keys"):
        METRICS.build("mia", {"attack": ["loss"]})
    assert METRICS.build("mia").config.attacks == ATTACKS

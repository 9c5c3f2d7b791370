"""Golden values of the NeurIPS 2023 unlearning-competition score (Triantafillou et al. 2024, arXiv:2406.09073).

Every expected number is worked out by hand below (or by scipy for the confidence). The per-example samples use
values on a 1/16 grid, far coarser than the reference's 0.01 threshold grid, so the grid attacks reach exactly the
threshold sets enumerated by hand: upper sets {f ≥ t} (single) and contiguous runs of the sorted values (double).
N = 4 models per side, δ = 1e-5: with FPR = fp/4 and FNR = fn/4, ε(fp, fn) = max(ln((4 − 4δ − fp)/fn),
ln((4 − 4δ − fn)/fp)) clipped at 0, so the only positive finite values are ε(1,1) = ln(3 − 4δ) ≈ 1.0986 and
ε(1,2) = ε(2,1) = ln(2 − 4δ) ≈ 0.6931; the buckets end at ceil(ln 3) = 2.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.neurips import (
    EPSILON_CAP,
    REFERENCE_FLOOR,
    bucket_points,
    epsilon_from_counts,
    epsilons_from_confidences,
    example_epsilon,
    logit_confidence,
    max_bucket_epsilon,
    neurips_score,
    neurips_score_from_run,
)

D = 1e-5
LN3 = math.log(3 - 4 * D)  # ε of fp = fn = 1 out of 4
LN2 = math.log(2 - 4 * D)  # ε of (fp, fn) = (1, 2) or (2, 1) out of 4

# Four forget examples, 4 oracle (R) and 4 unlearned (U) confidences each, in units of 1/16.
R = np.array([0, 2, 4, 6]) / 16
EXAMPLES = {
    # identical samples: every threshold has FPR = TPR, so ε ≤ 0 → 0, H = 1
    "identical": (R, R, 0.0, 1.0),
    # interleaved R0 U0 R1 U1 R2 U2 R3 U3: best runs/upper sets have (fp, fn) = (1, 2) or (2, 1) → ln 2, H = 1/2
    "interleaved": (R + 1 / 16, R, LN2, 0.5),
    # U shifted by 5/16: upper set {R3, U0, U1, U2} has TPR 3/4, FPR 1/4 → (1, 1) → ln 3, H = 1/4
    "shifted": (np.array([5, 7, 9, 11]) / 16, R, LN3, 0.25),
    # separated: a threshold between 6/16 and 10/16 has FPR = FNR = 0 → ε = ∞ → cap 50, H = 0
    "separated": (np.array([10, 12, 14, 16]) / 16, R, EPSILON_CAP, 0.0),
}


# -- logit-scaled confidence ------------------------------------------------------------------------------------------
def test_logit_confidence_matches_scipy():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(6, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 2])
    p = softmax(z.astype(np.float64), axis=1)[np.arange(6), y]
    expect = np.log(p) - np.log1p(-p)
    got = logit_confidence(z, y)
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, expect, rtol=1e-10, atol=1e-10)
    # log p_correct − log p_wrong, p_wrong = sum of the other classes (the reference's form), via scipy logsumexp
    mask = np.ones_like(z, dtype=bool)
    mask[np.arange(6), y] = False
    lse = logsumexp(z.astype(np.float64), axis=1)
    alt = (z[np.arange(6), y] - lse) - (logsumexp(np.where(mask, z, -np.inf).astype(np.float64), axis=1) - lse)
    np.testing.assert_allclose(got, alt, rtol=1e-10, atol=1e-10)


def test_logit_confidence_two_classes_and_extremes():
    # two classes: f = z_y − z_other exactly
    z = np.array([[0.0, 1.5], [2.0, -1.0]])
    np.testing.assert_allclose(logit_confidence(z, np.array([1, 1])), [1.5, -3.0])
    # very confident: the exact value stays finite and linear; the reference floor (1e-45) saturates near 103.6
    big = np.array([[0.0, 300.0, 0.0]])
    assert logit_confidence(big, np.array([1]))[0] == pytest.approx(300.0 - math.log(2.0))
    assert logit_confidence(big, np.array([1]), floor=REFERENCE_FLOOR)[0] == pytest.approx(-math.log(1e-45), rel=1e-9)
    assert logit_confidence(big, np.array([0]))[0] == pytest.approx(-300.0, rel=1e-12)


def test_logit_confidence_errors():
    with pytest.raises(DataError, match="at least 2 classes"):
        logit_confidence(np.zeros((3, 1)), np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\]"):
        logit_confidence(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(DataError, match="shape|must be"):
        logit_confidence(np.zeros((2, 3)), np.array([0, 1, 2]))


# -- ε of one threshold (hand-worked counts, N = 4) -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fp", "fn", "expect"),
    [
        (1, 1, LN3),  # ln((1 − δ − 1/4)/(1/4))
        (1, 2, LN2),  # max(ln((3/4 − δ)/(1/2)) = ln 1.5, ln((1/2 − δ)/(1/4)) = ln 2)
        (2, 1, LN2),  # symmetric
        (2, 2, 0.0),  # ln((1/2 − δ)/(1/2)) < 0 → clipped to 0
        (3, 3, 0.0),  # ln((1/4 − δ)/(3/4)) < 0 → 0
        (1, 3, 0.0),  # max(ln((3/4 − δ)/(3/4)), ln((1/4 − δ)/(1/4))) < 0 → 0
        (0, 0, math.inf),  # FPR = FNR = 0: perfect separation
        (4, 1, 0.0),  # FPR = 1: log(1 − δ − 1) is NaN and ignored; the other term ln(3/4 − δ) < 0 → 0
        (1, 4, 0.0),  # FNR = 1, same
    ],
)
def test_epsilon_from_counts_hand_values(fp, fn, expect):
    got = epsilon_from_counts(fp, fn, 4, D)
    if math.isinf(expect):
        assert got == math.inf
    else:
        assert got == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize(("fp", "fn"), [(0, 1), (1, 0), (0, 3), (3, 0), (4, 0), (0, 4), (4, 4)])
def test_epsilon_from_counts_discarded(fp, fn):
    # exactly one of FPR, FNR = 0 → discarded (NaN); FPR = FNR = 1 → both terms NaN → discarded
    assert math.isnan(epsilon_from_counts(fp, fn, 4, D))


def test_epsilon_depends_on_delta():
    assert epsilon_from_counts(1, 1, 4, 0.01) == pytest.approx(math.log((0.75 - 0.01) / 0.25))
    assert epsilon_from_counts(1, 1, 10, D) == pytest.approx(math.log((0.9 - D) / 0.1))


# -- ε of one example -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_epsilon_hand_values(name):
    u, r, eps, _ = EXAMPLES[name]
    assert example_epsilon(u, r, D) == pytest.approx(eps, abs=1e-12)
    # the roles are symmetric (positive = larger median) and the order of the models does not matter
    assert example_epsilon(r, u, D) == pytest.approx(eps, abs=1e-12)
    assert example_epsilon(u[::-1], r[[2, 0, 3, 1]], D) == pytest.approx(eps, abs=1e-12)


def test_example_epsilon_special_cases():
    # one side constant, the other spread: range ratio 0 < 1% → cap without any attack
    assert example_epsilon(np.full(4, 0.2), R, D) == EPSILON_CAP
    # range ratio 0.001/0.375 < 1% → cap, although the samples overlap
    assert example_epsilon(np.array([0.2, 0.2, 0.2, 0.201]), R, D) == EPSILON_CAP
    # both constant, different: separable → ∞ → cap
    assert example_epsilon(np.ones(4), np.zeros(4), D) == EPSILON_CAP
    # both constant, equal: no threshold has FPR, FNR > 0 (the reference would stop on its assert) → 0
    assert example_epsilon(np.ones(4), np.ones(4), D) == 0.0
    # the double-threshold family matters: U inside the hull of R (equal medians), no upper set separates them
    # R = {0, 6, 10, 16}/16, U = {7, 8, 8, 9}/16: U's range 2/16 vs R's 16/16 → ratio 1/8 ≥ 1%, attack runs;
    # the run [7/16, 9/16] holds all of U and none of R: FPR = 0 (of R), FNR = 0 (of U) → ∞ → cap
    r2, u2 = np.array([0, 6, 10, 16]) / 16, np.array([7, 8, 8, 9]) / 16
    assert example_epsilon(u2, r2, D) == EPSILON_CAP


def test_epsilons_from_confidences_columns():
    names = list(EXAMPLES)
    u = np.stack([EXAMPLES[n][0] for n in names], axis=1)  # (N=4, n=4)
    r = np.stack([EXAMPLES[n][1] for n in names], axis=1)
    np.testing.assert_allclose(epsilons_from_confidences(u, r, D), [EXAMPLES[n][2] for n in names], atol=1e-12)


# -- points H --------------------------------------------------------------------------------------------------------
def test_bucket_points_hand_values():
    assert max_bucket_epsilon(4) == 2.0  # ceil(ln 3)
    assert max_bucket_epsilon(3) == 1.0  # ceil(ln 2)
    assert max_bucket_epsilon(512) == 7.0  # ceil(ln 511) = ceil(6.236)
    # N = 4: buckets [0, .5) → 1, [.5, 1) → 1/2, [1, 1.5) → 1/4, [1.5, 2) → 1/8, ε ≥ 2 → 0; H = 2 / 2**n
    eps = np.array([0.0, 0.49, 0.5, 0.99, 1.0, LN3, 1.9999, 2.0, 50.0, np.nan])
    np.testing.assert_array_equal(bucket_points(eps, 4), [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0, 0, 0])
    # N = 512 (reference): the last bucket [6.5, 7) gives 2**-13, the cap 50 gives 0
    np.testing.assert_array_equal(bucket_points(np.array([6.9, 7.0, 50.0]), 512), [2.0**-13, 0, 0])
    # N = 3: only [0, .5) and [.5, 1); N = 2: no bucket at all (why MIN_MODELS is 3)
    np.testing.assert_array_equal(bucket_points(np.array([0.3, 0.7, 1.0]), 3), [1, 0.5, 0])
    np.testing.assert_array_equal(bucket_points(np.array([0.0]), 2), [0])


# -- the score -------------------------------------------------------------------------------------------------------
def logits_from_conf(conf: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two-class logits whose logit-scaled confidence of ``labels`` is ``conf``: z_y = conf, z_other = 0."""
    z = np.zeros((len(conf), 2), dtype=np.float32)
    z[np.arange(len(conf)), labels] = conf
    return z


LABELS = np.array([1, 0, 1, 0])


def model_logits() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Forget logits of 4 unlearned and 4 oracle models over the 4 EXAMPLES (model k takes each sample's k-th value)."""
    names = list(EXAMPLES)
    u = [logits_from_conf(np.array([EXAMPLES[n][0][k] for n in names]), LABELS) for k in range(4)]
    r = [logits_from_conf(np.array([EXAMPLES[n][1][k] for n in names]), LABELS) for k in range(4)]
    return u, r


def test_neurips_score_hand_value():
    u, r = model_logits()
    s = neurips_score(u, r, LABELS, 90.0, 100.0, 80.0, 100.0)
    np.testing.assert_allclose(s.epsilons, [0.0, LN2, LN3, EPSILON_CAP], atol=1e-12)
    np.testing.assert_array_equal(s.points, [1.0, 0.5, 0.25, 0.0])
    assert s.forget_quality == pytest.approx(1.75 / 4)  # 0.4375
    assert (s.retain_ratio, s.test_ratio) == (pytest.approx(0.9), pytest.approx(0.8))
    assert s.score == pytest.approx(0.4375 * 0.9 * 0.8)  # 0.315
    assert s.n_models == 4 and s.max_epsilon == 2.0 and s.time_cap_exceeded is None
    d = s.to_dict()
    assert d["neurips_score"] == pytest.approx(0.315) and d["eps_at_cap"] == 1 and json.dumps(d)


def test_identical_models_score_one_and_equal_accuracies_keep_f():
    u, _ = model_logits()
    s = neurips_score(u, u, LABELS, 95.0, 95.0, 88.0, 88.0)
    np.testing.assert_array_equal(s.epsilons, np.zeros(4))
    assert s.forget_quality == 1.0 and s.score == 1.0
    # utility factors multiply, and can exceed 1 (better than the oracle)
    s2 = neurips_score(u, u, LABELS, 95.0 * 1.1, 95.0, 88.0 * 0.5, 88.0)
    assert s2.score == pytest.approx(1.0 * 1.1 * 0.5)


def test_separated_models_get_cap_and_zero_points():
    rng = np.random.default_rng(1)
    conf_r = rng.normal(0.0, 0.5, size=(5, 6))  # 5 models × 6 examples, around 0
    conf_u = rng.normal(8.0, 0.5, size=(5, 6))  # around 8: fully separated
    y = np.zeros(6, dtype=np.int64)
    s = neurips_score([logits_from_conf(c, y) for c in conf_u], [logits_from_conf(c, y) for c in conf_r], y,
                      1.0, 1.0, 1.0, 1.0)
    np.testing.assert_array_equal(s.epsilons, np.full(6, EPSILON_CAP))
    assert s.forget_quality == 0.0 and s.score == 0.0


def test_time_cap():
    u, r = model_logits()
    base = dict(ra_u=1.0, ra_r=1.0, ta_u=1.0, ta_r=1.0)
    ok = neurips_score(u, r, LABELS, **base, unlearn_seconds=20.0, oracle_seconds=100.0, max_time_fraction=0.2)
    assert ok.time_fraction == pytest.approx(0.2) and ok.time_cap_exceeded is False
    assert ok.score == pytest.approx(0.4375)  # at the cap is allowed (rule: slower than the fraction is rejected)
    slow = neurips_score(u, r, LABELS, **base, unlearn_seconds=25.0, oracle_seconds=100.0, max_time_fraction=0.2)
    assert slow.time_cap_exceeded is True and slow.score == 0.0
    assert slow.forget_quality == pytest.approx(0.4375)  # F still reported
    assert any("cap" in n for n in slow.notes)
    uncapped = neurips_score(u, r, LABELS, **base, unlearn_seconds=250.0, oracle_seconds=100.0)
    assert uncapped.time_fraction == pytest.approx(2.5) and uncapped.time_cap_exceeded is None
    assert uncapped.score == pytest.approx(0.4375)
    with pytest.raises(ConfigError, match="needs unlearn_seconds and oracle_seconds"):
        neurips_score(u, r, LABELS, **base, max_time_fraction=0.2)
    with pytest.raises(ConfigError, match="max_time_fraction"):
        neurips_score(u, r, LABELS, **base, unlearn_seconds=1.0, oracle_seconds=2.0, max_time_fraction=0.0)


def test_score_errors():
    u, r = model_logits()
    acc = (1.0, 1.0, 1.0, 1.0)
    for n in (1, 2):
        with pytest.raises(ConfigError, match=r"at least 3 .*512 per side.*seeds: N"):
            neurips_score(u[:n], r[:n], LABELS, *acc)
    with pytest.raises(ConfigError, match="3 unlearned and 4 oracle"):
        neurips_score(u[:3], r, LABELS, *acc)
    bad = [*u[:3], u[3][:3]]
    with pytest.raises(DataError, match=r"unlearned model 3 .*shape \(3, 2\)"):
        neurips_score(bad, r, LABELS, *acc)
    with pytest.raises(DataError, match=r"oracle model 0 .*shape \(4, 3\)"):
        neurips_score(u, [np.zeros((4, 3), np.float32), *r[1:]], LABELS, *acc)
    with pytest.raises(DataError, match="n_forget = len"):
        neurips_score(u, r, LABELS[:3], *acc)
    nan = [u[0].copy(), *u[1:]]
    nan[0][0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        neurips_score(nan, r, LABELS, *acc)
    with pytest.raises(DataError, match="ra_r"):
        neurips_score(u, r, LABELS, 90.0, 0.0, 80.0, 100.0)
    with pytest.raises(DataError, match="ta_r"):
        neurips_score(u, r, LABELS, 90.0, 100.0, 80.0, 0.0)


# -- from a run folder ------------------------------------------------------------------------------------------------
def write_run(tmp_path, *, ids=None, drop=None):
    """A fake run folder: 4 oracle seeds, 'ft' on seeds 0–3 (+ a failed seed 4), the EXAMPLES as forget logits."""
    u, r = model_logits()
    ids = np.array([17, 3, 42, 8], dtype=np.int64) if ids is None else ids
    (tmp_path / "per_sample").mkdir()
    rows = []
    for k in range(4):
        rows.append({"method": "retrain", "seed": k, "is_oracle": True, "status": "ok",
                     "metrics": {"retain_acc": 100.0, "test_acc": 90.0, "unlearn_seconds": 100.0}})
        rows.append({"method": "ft", "seed": k, "is_oracle": False, "status": "ok",
                     "metrics": {"retain_acc": 95.0 + k, "test_acc": 81.0, "unlearn_seconds": 10.0 + 2 * k}})
        for name, lg in (("retrain", r[k]), ("ft", u[k])):
            the_ids = ids if not (name == "ft" and k == 2) else (drop if drop is not None else ids)
            np.savez(tmp_path / "per_sample" / f"{name}-seed{k}.npz", **{
                "forget.logits": lg, "forget.labels": LABELS.astype(np.int64), "forget.ids": the_ids,
                "retain.logits": np.zeros((2, 2), np.float32)})
    rows.append({"method": "ft", "seed": 4, "is_oracle": False, "status": "error", "error": "boom", "metrics": {}})
    text = "\n".join(json.dumps(x) for x in rows) + '\n{"method": "ft", "seed": 5, "trunc'  # crash-truncated line
    (tmp_path / "results.jsonl").write_text(text, encoding="utf-8")
    return tmp_path


def test_from_run(tmp_path):
    run = write_run(tmp_path)
    s = neurips_score_from_run(run, "ft")
    assert s.n_models == 4
    assert s.forget_quality == pytest.approx(0.4375)
    ra_u = np.mean([95.0, 96.0, 97.0, 98.0])  # 96.5
    assert s.retain_ratio == pytest.approx(ra_u / 100.0) and s.test_ratio == pytest.approx(81.0 / 90.0)
    assert s.score == pytest.approx(0.4375 * 0.965 * 0.9)
    np.testing.assert_array_equal(s.ids, [17, 3, 42, 8])
    assert s.time_fraction == pytest.approx(13.0 / 100.0)  # mean of 10, 12, 14, 16 s vs 100 s
    assert any("original model" in n for n in s.notes)
    capped = neurips_score_from_run(run, "ft", max_time_fraction=0.1)
    assert capped.time_cap_exceeded is True and capped.score == 0.0


def test_from_run_errors(tmp_path):
    with pytest.raises(DataError, match="no results.jsonl"):
        neurips_score_from_run(tmp_path, "ft")
    sub = tmp_path / "run"
    sub.mkdir()
    run = write_run(sub)
    with pytest.raises(DataError, match="methods: ft"):
        neurips_score_from_run(run, "salun")
    with pytest.raises(ConfigError, match="oracle itself"):
        neurips_score_from_run(run, "retrain")
    (run / "per_sample" / "ft-seed1.npz").unlink()
    with pytest.raises(DataError, match=r"missing per-sample file .*ft-seed1\.npz"):
        neurips_score_from_run(run, "ft")


def test_from_run_ids_must_agree(tmp_path):
    run = write_run(tmp_path, drop=np.array([17, 3, 8, 42], dtype=np.int64))
    with pytest.raises(DataError, match=r"forget ids of .*ft-seed2\.npz differ"):
        neurips_score_from_run(run, "ft")


def test_from_run_too_few_common_seeds(tmp_path):
    run = write_run(tmp_path)
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()[:-1]]
    keep = [x for x in rows if x["is_oracle"] or x["seed"] in (0, 1)]
    (run / "results.jsonl").write_text("\n".join(json.dumps(x) for x in keep), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"got 2 unlearned and 2 oracle.*seeds: N"):
        neurips_score_from_run(run, "ft")


def brute_force_epsilon(u: np.ndarray, r: np.ndarray) -> float:
    """Exhaustive version of the two attack families on values whose gaps exceed the 0.01 grid (span ≤ 2)."""
    n = len(u)
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    rp, rn = np.ptp(pos), np.ptp(neg)
    if max(rp, rn) > 0 and min(rp, rn) / max(rp, rn) < 0.01:
        return EPSILON_CAP
    vals = np.unique(np.concatenate([u, r]))
    pairs = set()
    for v in vals:  # single: predict positive iff f >= v
        pairs.add((int(np.sum(neg >= v)), int(np.sum(pos < v))))
    a, b = (neg, pos) if rp >= rn else (pos, neg)
    for i, lo in enumerate(vals):  # double: predict the peakier side iff lo <= f <= hi
        for hi in vals[i:]:
            pairs.add((int(np.sum((b >= lo) & (b <= hi))), n - int(np.sum((a >= lo) & (a <= hi)))))
    eps = [epsilon_from_counts(fp, fn, n, D) for fp, fn in pairs]
    eps = [e for e in eps if not math.isnan(e)]
    return min(max(eps), EPSILON_CAP) if eps else 0.0


def test_grid_attacks_match_exhaustive_enumeration():
    rng = np.random.default_rng(7)
    for _ in range(25):
        u = rng.integers(0, 25, size=5) / 16
        r = rng.integers(4, 29, size=5) / 16
        assert example_epsilon(u, r, D) == pytest.approx(brute_force_epsilon(u, r), abs=1e-12), (u, r)

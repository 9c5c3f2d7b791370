"""The NeurIPS 2023 unlearning-competition score: per-example (ε, δ) forgetting quality × utility ratios.

Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS unlearning
competition", arXiv:2406.09073 (2024); reference code: github.com/google-deepmind/unlearning_evaluation
(``metric.py`` and ``main.py``). This module re-implements that procedure in numpy only (no torch import), so the
report can recompute the score from the per-sample ``.npz`` files of a run without loading any model.

Procedure, with the reference function each step mirrors:

1. **Logit-scaled confidence** of every forget example under every model (``compute_logit_scaled_confidence``):
   ``f = log p_y − log(1 − p_y) = log p_correct − log p_wrong`` with ``p_wrong`` = the summed probability of the
   other classes. The reference adds 1e-45 inside both logs (so its ``|f|`` saturates near 103.6); here ``f`` is
   exact via log-softmax and a logsumexp over the other classes (``floor=1e-45`` reproduces the saturation).
2. **Per example**, the N values of ``f`` under the unlearned models and the N under the oracle (retrained) models
   are two samples. The *positive* one is the side with the larger median (oracle on a strict ``>``, else the
   unlearned side; ``compute_forget_score_from_confs``).
3. **Too-peaky rule** (``_get_epsilons``): with ``r_small, r_large`` the smaller/larger of the two ranges
   (max − min), ``r_small / r_large < 0.01`` → ε = ``EPSILON_CAP`` (50) without any attack.
4. **Attacks** (grids with ``THRESHOLDS_PER_UNIT`` = 100 thresholds per unit of ``f``):
   *single threshold* (``_get_single_threshold_rates``): ``t ∈ linspace(min, max, ceil(100·(max − min)))`` over
   both samples, predict positive iff ``f ≥ t``; *double threshold* (``_get_double_threshold_rates``): the side
   with the smaller-or-equal range is positive (``w`` = its range, buffer ``b = 2``), right ends
   ``r ∈ linspace(min_P + w − b, max_P + b, ceil(100·(max_P + b − min_P − w + b)))``, for each ``r`` left ends
   ``l ∈ linspace(r − w − b, r − w + b, 400)``; predict positive iff ``l ≤ f ≤ r``.
   FPR / FNR are fractions of the N models of each side.
5. **ε of one threshold** (``_get_epsilons``), δ = 1e-5: FPR = FNR = 0 → ε = ∞ (perfect separation);
   exactly one of FPR, FNR = 0 → the threshold is discarded (too few samples to estimate); else
   ``ε = max(0, max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR))`` where a term whose
   ``1 − δ − rate ≤ 0`` (rate = 1) is NaN and ignored (both NaN → discarded). The example's ε is the maximum over
   the surviving thresholds of both families, then clipped to ``[0, EPSILON_CAP]`` (∞ → 50).
6. **Points** (``compute_forget_score_from_confs``): buckets of width 0.5 from 0 up to
   ``max_ε = ceil(ln(N − 1))``; bucket n (1-based: [0, 0.5) is n = 1) gives ``H = 2 / 2**n`` (1, ½, ¼, …); an ε at
   or beyond ``max_ε`` (and so the cap) gives ``H = 0``. ``F`` = mean of H over the forget set, in [0, 1].
   With N models the largest finite ε is ``ln(N − 1 − Nδ) < max_ε``, so only ∞/cap/peaky examples get H = 0.
7. **Final score** (``main.py``): ``F × (RA_u / RA_r) × (TA_u / TA_r)`` with RA/TA the mean retain/test accuracy over
   the N unlearned and the N oracle models. Higher is better; an unlearner that matches the oracle exactly scores 1.

Deviations from the reference, all documented in the result's ``notes`` when they trigger:

- Thresholds are float64 everywhere (the reference builds the single-threshold grid with torch's default float32
  and averages rates in float32); rates here are exact counts / N.
- If no threshold survives (only when the two samples coincide or differ by less than the 0.01 grid, e.g. both
  constant at the same value) the reference stops on an ``assert``; here ε = 0 (the attack cannot tell them apart).
- At least ``MIN_MODELS`` = 3 models per side: with N = 2 the top bucket ``ceil(ln 1) = 0`` leaves no bucket, so
  the reference scores every example H = 0 whatever the unlearner does. The competition used 512 per side.
- Time cap: the competition rejected submissions that ran slower than a fixed fraction of the retraining time
  (Kaggle rules: "a hard cut-off that rejects unlearning algorithms that run slower than a fraction of the time it
  takes to retrain"; the fraction is not part of the released code). Here it is opt-in: ``max_time_fraction``
  (None = no cap); when mean unlearning seconds > ``max_time_fraction`` × mean oracle seconds, the final score is 0
  and ``time_cap_exceeded`` is True (F and the utility ratios are still reported).
- :func:`neurips_score_from_run`: each seed's unlearned model starts from *that seed's* original model, so the N
  unlearned models also vary in their original training. The competition unlearned one fixed original model 512
  times; our ε therefore measures closeness of the two *pipelines* (train → unlearn vs retrain), not of unlearning
  from one given model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics._dtype import to_numpy64

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUCKET_WIDTH = 0.5
PEAKY_RATIO = 0.01
DOUBLE_BUFFER = 2.0
REFERENCE_NUM_MODELS = 512
MIN_MODELS = 3
REFERENCE_FLOOR = 1e-45


# -- 1. logit-scaled confidence -------------------------------------------------------------------------------------
def logit_confidence(logits: np.ndarray, labels: np.ndarray, *, floor: float | None = None) -> np.ndarray:
    """Logit-scaled confidence ``f = log p_y − log(1 − p_y)``: float64 (n,).

    ``1 − p_y`` is the summed softmax probability of the other classes, taken in log space with a logsumexp, so
    ``f`` stays exact for confident models (no ``log(0)``). Equals the reference's
    ``log(p_correct + 1e-45) − log(p_wrong + 1e-45)`` wherever ``p_correct, p_wrong ≫ 1e-45`` (``|f| ≲ 100``).

    Args:
        logits: float (n, C) with C ≥ 2.
        labels: int (n,) in [0, C).
        floor: None (exact) or the reference's additive floor inside both logs (``REFERENCE_FLOOR`` = 1e-45).

    Raises:
        DataError: wrong shapes, fewer than 2 classes, labels out of range.
    """
    z = to_numpy64(logits)
    y = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
    if z.ndim != 2 or y.ndim != 1 or len(y) != len(z):
        raise DataError(f"logits must be (n, C) and labels (n,): got logits {z.shape}, labels {y.shape}")
    n, c = z.shape
    if c < 2:
        raise DataError(f"the logit-scaled confidence needs at least 2 classes, got logits of shape {z.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= c):
        raise DataError(f"labels must lie in [0, {c - 1}], got range [{y.min()}, {y.max()}]")
    rows = np.arange(n)
    s = z - z.max(axis=1, keepdims=True)
    s_y = s[rows, y]
    others = s.copy()
    others[rows, y] = -np.inf
    m = others.max(axis=1)
    log_wrong_unnorm = m + np.log(np.exp(others - m[:, None]).sum(axis=1))
    if floor is None:
        return s_y - log_wrong_unnorm
    log_all = np.log(np.exp(s).sum(axis=1))  # s has a 0 entry, so no overflow/underflow issue here
    log_f = math.log(floor)
    return np.logaddexp(s_y - log_all, log_f) - np.logaddexp(log_wrong_unnorm - log_all, log_f)


# -- 5. ε of one threshold --------------------------------------------------------------------------------------------
def epsilon_from_counts(fp: int, fn: int, n_models: int, delta: float = DELTA) -> float:
    """ε of one threshold from its false-positive / false-negative counts out of ``n_models`` per side.

    ``FPR = fp / n``, ``FNR = fn / n``. Returns ``inf`` when both are 0 (perfect separation), ``nan`` (threshold
    discarded) when exactly one is 0, else ``max(0, max(log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR))`` with a
    term whose ``1 − δ − rate ≤ 0`` ignored (``nan`` if both are).
    """
    return float(_epsilon_table(n_models, delta)[fp, fn])


def _epsilon_table(n: int, delta: float) -> np.ndarray:
    """ε for every (fp, fn) in [0, n]²: float64 (n + 1, n + 1)."""
    fpr = np.arange(n + 1, dtype=np.float64)[:, None] / n
    fnr = np.arange(n + 1, dtype=np.float64)[None, :] / n
    fpr, fnr = np.broadcast_arrays(fpr, fnr)
    out = np.full(fpr.shape, np.nan)
    both_zero = (fpr == 0) & (fnr == 0)
    out[both_zero] = np.inf
    ok = (fpr > 0) & (fnr > 0)
    a, b = 1.0 - delta - fpr[ok], 1.0 - delta - fnr[ok]
    t1 = np.full(a.shape, np.nan)
    t2 = np.full(a.shape, np.nan)
    t1[a > 0] = np.log(a[a > 0]) - np.log(fnr[ok][a > 0])
    t2[b > 0] = np.log(b[b > 0]) - np.log(fpr[ok][b > 0])
    both_nan = np.isnan(t1) & np.isnan(t2)
    best = np.where(np.isnan(t1), t2, np.where(np.isnan(t2), t1, np.maximum(t1, t2)))
    best = np.where(both_nan, np.nan, np.maximum(best, 0.0))
    out[ok] = best
    return out


# -- 4. the two attack families: which (fp, fn) pairs their thresholds achieve ----------------------------------------
def _count_ge(sorted_x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return len(sorted_x) - np.searchsorted(sorted_x, t, side="left")


def _count_in(sorted_x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    c = np.searchsorted(sorted_x, hi, side="right") - np.searchsorted(sorted_x, lo, side="left")
    return np.maximum(c, 0)


def _achieved_pairs(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Boolean (n + 1, n + 1): which (fp, fn) count pairs some single or double threshold of the reference grids hits.

    ``pos``/``neg``: float64 (n,) confidences of one example, ``pos`` the side with the larger median.
    """
    n = len(pos)
    ps, ns = np.sort(pos), np.sort(neg)
    codes = []
    # single threshold: predict positive iff f >= t
    lo = min(ps[0], ns[0])
    hi = max(ps[-1], ns[-1])
    t = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    if len(t):
        tp, fp = _count_ge(ps, t), _count_ge(ns, t)
        codes.append(fp * (n + 1) + (n - tp))
    # double threshold: the side with the smaller-or-equal range is positive; predict positive iff l <= f <= r
    r_pos, r_neg = ps[-1] - ps[0], ns[-1] - ns[0]
    width = min(r_pos, r_neg)
    a, b = (ns, ps) if r_pos >= r_neg else (ps, ns)
    rmin = a[0] + width - DOUBLE_BUFFER
    rmax = a[-1] + DOUBLE_BUFFER
    right = np.linspace(rmin, rmax, int(np.ceil((rmax - rmin) * THRESHOLDS_PER_UNIT)))
    n_left = int(np.ceil(2 * DOUBLE_BUFFER * THRESHOLDS_PER_UNIT))
    left = np.linspace(right - width - DOUBLE_BUFFER, right - width + DOUBLE_BUFFER, n_left, axis=-1)
    hi2 = np.broadcast_to(right[:, None], left.shape)
    tp, fp = _count_in(a, left, hi2).ravel(), _count_in(b, left, hi2).ravel()
    codes.append(fp * (n + 1) + (n - tp))
    hit = np.bincount(np.concatenate(codes), minlength=(n + 1) ** 2) > 0
    return hit.reshape(n + 1, n + 1)


# -- 2–5. ε of one forget example ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ExampleEps:
    eps: float
    kind: str  # "attack" | "peaky" | "uninformative"


def _example_epsilon(unlearned: np.ndarray, oracle: np.ndarray, table: np.ndarray) -> _ExampleEps:
    if np.median(oracle) > np.median(unlearned):
        pos, neg = oracle, unlearned
    else:
        pos, neg = unlearned, oracle
    r_pos, r_neg = float(np.ptp(pos)), float(np.ptp(neg))
    largest, smallest = max(r_pos, r_neg), min(r_pos, r_neg)
    if largest > 0 and smallest / largest < PEAKY_RATIO:
        return _ExampleEps(EPSILON_CAP, "peaky")
    eps = table[_achieved_pairs(pos, neg)]
    eps = eps[~np.isnan(eps)]
    if eps.size == 0:
        return _ExampleEps(0.0, "uninformative")
    return _ExampleEps(float(np.clip(eps.max(), 0.0, EPSILON_CAP)), "attack")


def example_epsilon(unlearned: np.ndarray, oracle: np.ndarray, delta: float = DELTA) -> float:
    """ε of one forget example from its confidences under N unlearned and N oracle models (float64 (N,) each).

    Runs the reference's rules: larger median = positive, too-peaky → cap, best of the single- and
    double-threshold attacks, clip to [0, ``EPSILON_CAP``]. See the module docstring.
    """
    u, r = to_numpy64(unlearned), to_numpy64(oracle)
    if u.shape != r.shape or u.ndim != 1 or len(u) < 1:
        raise DataError(f"need two 1-D samples of equal size, got unlearned {u.shape} and oracle {r.shape}")
    return _example_epsilon(u, r, _epsilon_table(len(u), delta)).eps


def epsilons_from_confidences(unlearned: np.ndarray, oracle: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Per-example ε: float64 (n,) from confidences float (N, n) of the unlearned and of the oracle models."""
    return _epsilons(to_numpy64(unlearned), to_numpy64(oracle), delta)[0]


def _epsilons(u: np.ndarray, r: np.ndarray, delta: float) -> tuple[np.ndarray, dict[str, int]]:
    table = _epsilon_table(u.shape[0], delta)
    out = np.empty(u.shape[1])
    kinds = {"attack": 0, "peaky": 0, "uninformative": 0}
    for i in range(u.shape[1]):
        e = _example_epsilon(u[:, i], r[:, i], table)
        out[i] = e.eps
        kinds[e.kind] += 1
    return out, kinds


# -- 6. points ---------------------------------------------------------------------------------------------------------
def max_bucket_epsilon(n_models: int) -> float:
    """Upper end of the last scoring bucket: ``ceil(ln(n_models − 1))`` (reference's bound on a finite ε)."""
    if n_models < 2:
        return 0.0
    return float(math.ceil(math.log(n_models - 1)))


def bucket_points(eps: np.ndarray | float, n_models: int) -> np.ndarray:
    """Points H per example: ``2 / 2**n`` for ε in the n-th bucket of width 0.5 (n = 1 is [0, 0.5)), 0 beyond.

    Buckets run up to ``max_bucket_epsilon(n_models)``; an ε at or past it (or NaN) scores 0. float64, same shape.
    """
    e = np.asarray(eps, dtype=np.float64)
    n_buckets = 0
    while (n_buckets + 1) * BUCKET_WIDTH <= max_bucket_epsilon(n_models):
        n_buckets += 1
    out = np.zeros(e.shape)
    with np.errstate(invalid="ignore"):
        k = np.floor(e / BUCKET_WIDTH)
        ok = np.isfinite(k) & (k >= 0) & (k < n_buckets)
    out[ok] = 0.5 ** k[ok]
    return out


# -- 7. the score -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeurIPSScore:
    """The competition score of one method against the oracle, with its parts.

    Attributes:
        score: final score ``F × retain_ratio × test_ratio`` (0 when the time cap is exceeded); higher is better.
        forget_quality: F in [0, 1], the mean of ``points``.
        retain_ratio: RA_u / RA_r (mean retain accuracy of the unlearned over the oracle models).
        test_ratio: TA_u / TA_r (mean test accuracy, same).
        epsilons: float64 (n_forget,) per-example ε in [0, ``EPSILON_CAP``].
        points: float64 (n_forget,) per-example H.
        n_models: N, models per side.
        max_epsilon: ``ceil(ln(N − 1))``, the end of the last scoring bucket.
        delta: δ used.
        time_fraction: mean unlearning seconds / mean oracle seconds (None if not given).
        time_cap_exceeded: None without a cap, else whether ``time_fraction > max_time_fraction``.
        ids: int64 (n_forget,) forget-sample ids when known (from a run), else None.
        notes: human-readable remarks (special cases that triggered, deviations).
    """

    score: float
    forget_quality: float
    retain_ratio: float
    test_ratio: float
    epsilons: np.ndarray
    points: np.ndarray
    n_models: int
    max_epsilon: float
    delta: float = DELTA
    time_fraction: float | None = None
    time_cap_exceeded: bool | None = None
    ids: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Scalars only (JSON-ready): score, forget_quality, ratios, n_models, eps summary, time cap, notes."""
        eps = self.epsilons
        return {
            "neurips_score": self.score, "forget_quality": self.forget_quality, "retain_ratio": self.retain_ratio,
            "test_ratio": self.test_ratio, "n_models": self.n_models, "n_forget": int(len(eps)),
            "max_epsilon": self.max_epsilon, "delta": self.delta,
            "eps_median": float(np.median(eps)) if len(eps) else float("nan"),
            "eps_at_cap": int(np.sum(eps >= EPSILON_CAP)), "time_fraction": self.time_fraction,
            "time_cap_exceeded": self.time_cap_exceeded, "notes": list(self.notes),
        }


def _too_few(n_u: int, n_r: int) -> ConfigError:
    return ConfigError(
        f"the NeurIPS-2023 score needs at least {MIN_MODELS} unlearned and {MIN_MODELS} oracle models, got {n_u} "
        f"unlearned and {n_r} oracle: it estimates each forget example's ε from the spread of its confidence over "
        f"models (the reference uses {REFERENCE_NUM_MODELS} per side; with 2 its top bucket ceil(ln(N−1)) is 0, so "
        f"every example would score 0). Set `seeds: N` (N ≥ {MIN_MODELS}, more is better) in the config: N seeds "
        f"produce N unlearned models per method and N oracle models"
    )


def neurips_score(
    unlearned_logits: Sequence[np.ndarray],
    oracle_logits: Sequence[np.ndarray],
    labels: np.ndarray,
    ra_u: float,
    ra_r: float,
    ta_u: float,
    ta_r: float,
    *,
    delta: float = DELTA,
    unlearn_seconds: float | None = None,
    oracle_seconds: float | None = None,
    max_time_fraction: float | None = None,
    ids: np.ndarray | None = None,
) -> NeurIPSScore:
    """NeurIPS 2023 unlearning-competition score (Triantafillou et al. 2024, arXiv:2406.09073).

    Args:
        unlearned_logits: N arrays float (n_forget, C): forget-set logits of each unlearned model.
        oracle_logits: N arrays float (n_forget, C): forget-set logits of each oracle (retrained) model, same rows.
        labels: int (n_forget,) true labels of the forget samples.
        ra_u, ra_r: mean retain accuracy of the unlearned / oracle models (any unit, the same for both, e.g. %).
        ta_u, ta_r: mean test accuracy of the unlearned / oracle models (same unit).
        delta: δ of the (ε, δ) estimate (reference 1e-5).
        unlearn_seconds, oracle_seconds: mean wall time of one unlearning run / one retraining, seconds.
        max_time_fraction: None (no cap) or the largest allowed ``unlearn_seconds / oracle_seconds``; above it the
            final score is 0 and ``time_cap_exceeded`` is True.
        ids: optional int (n_forget,) sample ids, stored on the result.

    Returns:
        :class:`NeurIPSScore`.

    Raises:
        ConfigError: fewer than ``MIN_MODELS`` models on a side, unequal model counts, bad delta or time cap, a time
            cap without the seconds.
        DataError: logits of mismatched shapes or not finite, bad labels, oracle accuracies ≤ 0 or not finite.
    """
    n_u, n_r = len(unlearned_logits), len(oracle_logits)
    if n_u < MIN_MODELS or n_r < MIN_MODELS:
        raise _too_few(n_u, n_r)
    if n_u != n_r:
        raise ConfigError(
            f"the score compares N unlearned with N oracle models (the reference pairs equal counts); got {n_u} "
            f"unlearned and {n_r} oracle: use the same seeds for both (drop seeds where a method failed)"
        )
    if not (0.0 < delta < 1.0):
        raise ConfigError(f"delta must lie in (0, 1), got {delta} (reference 1e-5)")
    if max_time_fraction is not None and not (max_time_fraction > 0):
        raise ConfigError(f"max_time_fraction must be > 0 or None, got {max_time_fraction}")

    lab = np.asarray(labels)
    ref_shape = np.shape(unlearned_logits[0])
    if len(ref_shape) != 2 or ref_shape[0] != len(lab):
        raise DataError(f"logits must be (n_forget, C) with n_forget = len(labels) = {len(lab)}; got {ref_shape}")
    if ref_shape[0] == 0:
        raise DataError("the forget set is empty: no example to score")
    for side, arrs in (("unlearned", unlearned_logits), ("oracle", oracle_logits)):
        for k, a in enumerate(arrs):
            if np.shape(a) != ref_shape:
                raise DataError(
                    f"{side} model {k} has forget logits of shape {np.shape(a)}, expected {ref_shape} like unlearned "
                    f"model 0: every model must be evaluated on the same forget samples in the same order"
                )
            if not np.all(np.isfinite(a)):
                raise DataError(f"{side} model {k} has non-finite forget logits (a diverged model); drop its seed")
    if ids is not None and np.shape(ids) != (len(lab),):
        raise DataError(f"ids must be ({len(lab)},) like labels, got {np.shape(ids)}")

    acc = {"ra_u": ra_u, "ra_r": ra_r, "ta_u": ta_u, "ta_r": ta_r}
    bad = {k: v for k, v in acc.items() if not math.isfinite(float(v))}
    if bad:
        raise DataError(f"accuracies must be finite numbers, got {bad}")
    for k in ("ra_r", "ta_r"):
        if float(acc[k]) <= 0:
            raise DataError(
                f"{k} (mean oracle {'retain' if k == 'ra_r' else 'test'} accuracy) is {acc[k]}: the utility ratio "
                f"divides by it; an oracle with zero accuracy means training failed — check the training recipe"
            )

    u = np.stack([logit_confidence(a, lab) for a in unlearned_logits])
    r = np.stack([logit_confidence(a, lab) for a in oracle_logits])
    eps, kinds = _epsilons(u, r, delta)
    pts = bucket_points(eps, n_u)
    fq = float(pts.mean())
    ra_ratio, ta_ratio = float(ra_u) / float(ra_r), float(ta_u) / float(ta_r)
    score = fq * ra_ratio * ta_ratio

    notes: list[str] = []
    if n_u < REFERENCE_NUM_MODELS:
        notes.append(
            f"{n_u} models per side (reference {REFERENCE_NUM_MODELS}): ε is coarse and noisy; the largest finite ε "
            f"is ln(N−1−Nδ) = {math.log(n_u - 1 - n_u * delta):.3f}, buckets end at {max_bucket_epsilon(n_u):g}"
        )
    if kinds["peaky"]:
        notes.append(f"{kinds['peaky']} example(s) had one side's range < 1% of the other's: ε = {EPSILON_CAP:g} "
                     f"(reference rule)")
    if kinds["uninformative"]:
        notes.append(f"{kinds['uninformative']} example(s) had no threshold with both FPR and FNR > 0 (samples equal "
                     f"or closer than the 0.01 grid): ε = 0 (the reference stops on an assert here)")

    time_fraction: float | None = None
    exceeded: bool | None = None
    if unlearn_seconds is not None and oracle_seconds is not None and float(oracle_seconds) > 0:
        time_fraction = float(unlearn_seconds) / float(oracle_seconds)
    if max_time_fraction is not None:
        if unlearn_seconds is None or oracle_seconds is None:
            raise ConfigError(
                "max_time_fraction needs unlearn_seconds and oracle_seconds (mean seconds of one unlearning run and "
                "of one retraining); pass both or set max_time_fraction=None"
            )
        if time_fraction is None:
            raise DataError(f"oracle_seconds must be > 0 to apply the time cap, got {oracle_seconds}")
        exceeded = time_fraction > max_time_fraction
        if exceeded:
            notes.append(f"unlearning took {time_fraction:.3g}× the retraining time, above the cap "
                         f"{max_time_fraction:g}×: score set to 0 (competition rule)")
            score = 0.0
    return NeurIPSScore(
        score=float(score), forget_quality=fq, retain_ratio=ra_ratio, test_ratio=ta_ratio, epsilons=eps, points=pts,
        n_models=n_u, max_epsilon=max_bucket_epsilon(n_u), delta=delta, time_fraction=time_fraction,
        time_cap_exceeded=exceeded, ids=None if ids is None else np.asarray(ids, dtype=np.int64), notes=tuple(notes),
    )


# -- from a run folder ------------------------------------------------------------------------------------------------
def _read_rows(path: Path) -> list[dict[str, Any]]:
    from unlearnkit.results import latest_rows, read_rows_quietly

    return latest_rows(read_rows_quietly(path))  # truncated lines from a crash skipped; a retry replaces its row


def _ok_rows_by_seed(rows: list[dict[str, Any]], pred) -> dict[int, dict[str, Any]]:  # noqa: ANN001
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        if pred(r) and r.get("status") == "ok":
            out[int(r["seed"])] = r  # the last ok row of a seed wins (resumed runs)
    return out


def _load_forget(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(
            f"missing per-sample file {path}: the runner writes per_sample/<method>-seed<k>.npz for every evaluated "
            f"model; rerun the experiment (finished rows are kept) or restore the file"
        )
    with np.load(path) as z:
        missing = [k for k in ("forget.logits", "forget.labels", "forget.ids") if k not in z.files]
        if missing:
            raise DataError(f"{path} lacks {missing}: the NeurIPS score needs the forget-set logits, labels and ids")
        return np.asarray(z["forget.logits"]), np.asarray(z["forget.labels"]), np.asarray(z["forget.ids"])


def _mean_metric(rows: list[dict[str, Any]], key: str, what: str) -> float:
    vals = []
    for r in rows:
        v = (r.get("metrics") or {}).get(key)
        if v is None:
            raise DataError(f"the {what} row of seed {r.get('seed')} has no metric {key!r}; the NeurIPS score needs "
                            f"the accuracy metric (retain_acc, test_acc) in the run's `metrics`")
        vals.append(float(v))
    return float(np.mean(vals))


def neurips_score_from_run(
    run_dir: str | Path,
    method: str,
    *,
    delta: float = DELTA,
    max_time_fraction: float | None = None,
) -> NeurIPSScore:
    """The competition score of ``method`` in a finished run, from ``results.jsonl`` and ``per_sample/*.npz`` only.

    The N unlearned models are the method's ``ok`` rows (one per seed), the N oracle models the oracle rows
    (``is_oracle: true``) of the same seeds; seeds present on one side only are left out (said in ``notes``).
    RA/TA are the means of ``retain_acc``/``test_acc`` over those rows; the seconds are the means of
    ``unlearn_seconds`` (the oracle row holds its retraining time). Each seed's unlearned model starts from that
    seed's original model, whereas the competition unlearned a single original model N times (see module notes).
    Staged runs (corrective p, sequential requests) are scored at their final stage (largest p, last request: D_f =
    everything removed), from ``per_sample/<method>-seed<k>-<stage>.npz``.

    Args:
        run_dir: ``runs/<name>-<hash8>``.
        method: the method's label as in the ``method`` field of results.jsonl.
        delta, max_time_fraction: as in :func:`neurips_score`.

    Raises:
        DataError: no results.jsonl, unknown method, missing per-sample file, forget ids/labels that differ between
            files, missing accuracy metrics.
        ConfigError: fewer than ``MIN_MODELS`` seeds with both an unlearned and an oracle model.
    """
    run = Path(run_dir)
    results = run / "results.jsonl"
    if not results.is_file():
        raise DataError(f"no results.jsonl in {run}: pass a run folder written by `unlearnkit run`")
    from unlearnkit.results import final_stage_rows, row_tag

    # staged runs (corrective p, sequential requests): the final stage, as in the summary table
    rows = final_stage_rows(_read_rows(results))
    oracle = _ok_rows_by_seed(rows, lambda r: bool(r.get("is_oracle")))
    if not oracle:
        raise DataError(f"{results} has no successful oracle row (is_oracle: true); the score compares against it")
    oracle_labels = {r.get("method") for r in oracle.values()}
    if method in oracle_labels:
        raise ConfigError(f"{method!r} is the oracle itself; pass an unlearning method's label")
    mine = _ok_rows_by_seed(rows, lambda r: r.get("method") == method and not r.get("is_oracle"))
    if not mine:
        known = sorted({str(r.get("method")) for r in rows if not r.get("is_oracle")})
        failed = sorted({int(r["seed"]) for r in rows if r.get("method") == method})
        hint = f" (its rows for seeds {failed} all failed)" if failed else ""
        raise DataError(f"no successful rows of method {method!r} in {results}{hint}; methods: {', '.join(known)}")

    seeds = sorted(set(mine) & set(oracle))
    notes: list[str] = []
    only_m, only_o = sorted(set(mine) - set(oracle)), sorted(set(oracle) - set(mine))
    if only_m or only_o:
        notes.append(f"seeds left out (no matching model on the other side): method {only_m}, oracle {only_o}")
    if len(seeds) < MIN_MODELS:
        raise _too_few(len(seeds), len(seeds))

    u_logits, r_logits = [], []
    ref = None
    for s in seeds:
        for row, out in ((mine[s], u_logits), (oracle[s], r_logits)):
            path = run / "per_sample" / f"{row_tag(row)}.npz"
            logits, labels, ids = _load_forget(path)
            if ref is None:
                ref = (path, labels, ids)
            elif not np.array_equal(ids, ref[2]):
                raise DataError(
                    f"forget ids of {path} differ from those of {ref[0]} ({len(ids)} vs {len(ref[2])} ids, or another "
                    f"order): the files come from different splits; score only models of one run/config"
                )
            elif not np.array_equal(labels, ref[1]):
                raise DataError(f"forget labels of {path} differ from those of {ref[0]} for the same ids")
            out.append(logits)
    assert ref is not None
    m_rows, o_rows = [mine[s] for s in seeds], [oracle[s] for s in seeds]
    secs_u = [(r.get("metrics") or {}).get("unlearn_seconds") for r in m_rows]
    secs_r = [(r.get("metrics") or {}).get("unlearn_seconds") for r in o_rows]
    have_secs = all(v is not None for v in secs_u + secs_r)
    if max_time_fraction is not None and not have_secs:
        raise DataError("max_time_fraction needs `unlearn_seconds` in every method and oracle row; this run lacks it")
    notes.append("each seed's unlearned model starts from that seed's original model (the competition used one "
                 "original model for all unlearning runs)")
    res = neurips_score(
        u_logits, r_logits, ref[1],
        _mean_metric(m_rows, "retain_acc", method), _mean_metric(o_rows, "retain_acc", "oracle"),
        _mean_metric(m_rows, "test_acc", method), _mean_metric(o_rows, "test_acc", "oracle"),
        delta=delta,
        unlearn_seconds=float(np.mean(secs_u)) if have_secs else None,
        oracle_seconds=float(np.mean(secs_r)) if have_secs else None,
        max_time_fraction=max_time_fraction, ids=ref[2],
    )
    return replace(res, notes=tuple(notes) + res.notes)


__all__ = [
    "DELTA",
    "EPSILON_CAP",
    "MIN_MODELS",
    "REFERENCE_NUM_MODELS",
    "REFERENCE_FLOOR",
    "NeurIPSScore",
    "bucket_points",
    "epsilon_from_counts",
    "epsilons_from_confidences",
    "example_epsilon",
    "logit_confidence",
    "max_bucket_epsilon",
    "neurips_score",
    "neurips_score_from_run",
]

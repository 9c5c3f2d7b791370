"""Threshold membership-inference attacks on classifiers: loss, confidence, entropy and modified entropy.

Each attack turns a model's output on one sample into a scalar **score where higher = more member-like** (the model
behaves as if it trained on the sample). No attack model is trained: the score itself is thresholded, and the metric
reports the whole ROC curve's summary (AUC) and its low-FPR operating points (TPR at 1 % and 0.1 % FPR), the
protocol of Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022, arXiv:2112.03570.

Scores (``p`` = softmax of the logits in float64, ``y`` = the sample's label, natural logarithms):

* ``loss``: −CE = ln p_y (Yeom et al., CSF 2018, arXiv:1709.01604), from ``log_softmax`` (finite for finite logits).
* ``confidence``: p_y (Salem et al., NDSS 2019, arXiv:1806.01246; Song & Mittal 2021).
* ``entropy``: −H(p) = Σ_i p_i ln p_i (0 ln 0 = 0) (Salem et al. 2019).
* ``modified_entropy``: −Mentr with Mentr = −(1−p_y) ln p_y − Σ_{i≠y} p_i ln(1−p_i) (Song & Mittal, "Systematic
  Evaluation of Privacy Risks of Machine Learning Models", USENIX Security 2021, arXiv:2003.10595, Eq. 5). As in the
  authors' code, every logarithm's argument is clamped to ≥ 1e-30, so one-hot probabilities give finite values.
  Golden values (KNOWN_FAULTS C28): p = [0.7, 0.2, 0.1] → Mentr 0.16217 for y = 0 and 2.95974 for y = 2.

Units: loss and entropy scores in nats, confidence a probability; AUC and TPR are fractions in [0, 1].
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.errors import DataError
from unlearnkit.metrics._dtype import to_numpy64, to_tensor64
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

Attack = Literal["loss", "confidence", "entropy", "modified_entropy"]
ATTACKS: tuple[str, ...] = ("loss", "confidence", "entropy", "modified_entropy")
#: low-FPR operating points: (key label, 1/α). TPR@α needs at least 1/α non-members to be resolvable.
FPR_LEVELS: tuple[tuple[str, int], ...] = (("1%", 100), ("0.1%", 1000))
PAIRS: tuple[str, ...] = ("forget", "retain")
LOG_CLAMP = 1e-30  # Song & Mittal's ``small_value``: arguments of ln are clamped to ≥ this
LN_CLAMP = math.log(LOG_CLAMP)  # = −69.0776: the clamp in log space


# -- attack scores ------------------------------------------------------------------------------------------------
def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = to_numpy64(probs)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise DataError(f"probs must be (n, C) and labels (n,), got {p.shape} and {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise DataError(f"labels must lie in [0, {p.shape[1]}), got range [{y.min()}, {y.max()}]")
    return p, y


def _mentr(p: np.ndarray, one_minus: np.ndarray, log_1mp: np.ndarray, log_py: np.ndarray, y: np.ndarray
           ) -> np.ndarray:
    """Mentr from p (n, C), 1 − p (n, C), ln(1 − p) (n, C) and ln p_y (n,), logs already clamped."""
    rows = np.arange(len(y))
    terms = p * log_1mp  # p_i ln(1 − p_i) for every i ...
    terms[rows, y] = one_minus[rows, y] * log_py  # ... and (1 − p_y) ln p_y at i = y
    return -terms.sum(axis=1)


def modified_entropy(probs: np.ndarray, labels: np.ndarray, eps: float = LOG_CLAMP) -> np.ndarray:
    """Mentr of Song & Mittal (arXiv:2003.10595, Eq. 5), float64 (n,), nats; **lower = more member-like**.

    Mentr(p, y) = −(1 − p_y) ln p_y − Σ_{i≠y} p_i ln(1 − p_i), each ln's argument clamped to ≥ ``eps`` (as the
    authors' ``_log_value``), so one-hot rows are finite (wrong one-hot: 2·ln(1/eps) = 138.155 for eps = 1e-30).

    Args:
        probs: float (n, C) probabilities (rows sum to 1).  labels: int (n,) in [0, C).  eps: clamp of ln's argument.

    Raises:
        DataError: shapes disagree or a label is out of range.
    """
    p, y = _check_probs(probs, labels)
    one_minus = 1.0 - p
    log_py = np.log(np.maximum(p[np.arange(len(y)), y], eps))
    return _mentr(p, one_minus, np.log(np.maximum(one_minus, eps)), log_py, y)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy H(p) = −Σ_i p_i ln p_i (0 ln 0 = 0), float64 (n,), nats; lower = more member-like."""
    from scipy.special import xlogy

    p = to_numpy64(probs)
    return -xlogy(p, p).sum(axis=1)


def _log_true_prob(logits: np.ndarray, logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ln p_y, float64 (n,): ``log_softmax`` in general; where y is the row's arg-max, −log1p(Σ_{j≠y} e^{l_j − l_y})
    (``log_softmax`` rounds ln p_y to 0 once p_y > 1 − 1e-16, which would make every confident member tie)."""
    rows = np.arange(len(y))
    out = logp[rows, y].copy()
    if not len(y):
        return out
    top = logits.argmax(axis=1) == y
    if top.any():
        rel = np.exp(logits[top] - logits[top, y[top]][:, None])  # ≤ 1: no overflow
        rel[np.arange(int(top.sum())), y[top]] = 0.0
        out[top] = -np.log1p(rel.sum(axis=1))
    return out


def attack_scores(logits: torch.Tensor, labels: torch.Tensor, attacks: Sequence[str] = ATTACKS
                  ) -> dict[str, np.ndarray]:
    """Membership scores of each sample, **higher = more member-like**, float64 (n,) per attack.

    Computed in float64 from the logits: ``loss`` = ln p_y (never clamped; for the arg-max class
    −log1p(Σ_{j≠y} e^{l_j − l_y}), which keeps p_y = 1 − 1e-22 distinct from 1);
    ``confidence`` = p_y; ``entropy`` = −H(p); ``modified_entropy`` = −Mentr with that ln p_y and
    ln(1 − p_i) without cancellation (``log1p(−p_i)``; for the row's arg-max class the log of the sum of the other
    probabilities), logs clamped at ln 1e-30 as in :func:`modified_entropy`, so very confident members
    (p_y = 1 − 1e-22, where float64 p_y rounds to 1) are still ranked instead of all tying at Mentr = 0.

    Args:
        logits: float (n, C).  labels: int64 (n,) in [0, C).  attacks: names among :data:`ATTACKS`.

    Raises:
        DataError: an unknown attack, bad shapes, or non-finite logits (a diverged model has no membership signal).
    """
    bad = [a for a in attacks if a not in ATTACKS]
    if bad:
        raise DataError(f"unknown MIA attack(s) {bad}; valid: {', '.join(ATTACKS)}")
    lg = to_tensor64(logits)
    if lg.ndim != 2:
        raise DataError(f"logits must be (n, C), got shape {tuple(lg.shape)}")
    if not bool(torch.isfinite(lg).all()):
        raise DataError(f"logits contain {int((~torch.isfinite(lg)).sum())} NaN/inf values; the model has diverged, "
                        "so no membership score exists; check the run's status before computing MIA")
    y = torch.as_tensor(labels).long().view(-1).cpu()
    logp = torch.log_softmax(lg, dim=1).numpy()
    p = np.exp(logp)
    p_np, y_np = _check_probs(p, y.numpy())
    rows = np.arange(len(y_np))
    log_py = _log_true_prob(lg.numpy(), logp, y_np)
    out: dict[str, np.ndarray] = {}
    for a in attacks:
        if a == "loss":
            out[a] = log_py.copy()
        elif a == "confidence":
            out[a] = p[rows, y_np].copy()
        elif a == "entropy":
            out[a] = -entropy(p)
        else:  # modified_entropy, without cancellation: the precise ln p_y above, ln(1 − p_i) = log1p(−p_i) for
            # the classes other than the row's arg-max and ln(Σ_{j≠i} p_j) for the arg-max class
            one_minus = 1.0 - p_np
            with np.errstate(divide="ignore"):
                log_1mp = np.log1p(-p_np)
                if len(y_np):
                    top = p_np.argmax(axis=1)
                    others = p_np.copy()
                    others[rows, top] = 0.0
                    one_minus[rows, top] = others.sum(axis=1)
                    log_1mp[rows, top] = np.log(one_minus[rows, top])
            log_1mp = np.maximum(log_1mp, LN_CLAMP)
            out[a] = -_mentr(p_np, one_minus, log_1mp, np.maximum(log_py, LN_CLAMP), y_np)
    return out


# -- ROC summaries -----------------------------------------------------------------------------------------------
def _check_pools(member: np.ndarray, nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = to_numpy64(member).reshape(-1)
    n = to_numpy64(nonmember).reshape(-1)
    if len(m) == 0 or len(n) == 0:
        raise DataError(f"MIA needs non-empty pools: {len(m)} members, {len(n)} non-members (after de-duplication); "
                        "use larger forget/test sets")
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        raise DataError("MIA scores contain NaN/inf; the model's outputs are not finite")
    return m, n


def roc_auc(member: np.ndarray, nonmember: np.ndarray) -> float:
    """ROC AUC of "score > threshold ⇒ member" (``sklearn.metrics.roc_auc_score``): P(s_m > s_n) + ½ P(s_m = s_n).

    0.5 = members and non-members indistinguishable; 1 = every member scores above every non-member.

    Raises:
        DataError: an empty pool or non-finite scores.
    """
    from sklearn.metrics import roc_auc_score

    m, n = _check_pools(member, nonmember)
    y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    return float(roc_auc_score(y, np.concatenate([m, n])))


def tpr_at_fpr(member: np.ndarray, nonmember: np.ndarray, fpr: float) -> float:
    """True-positive rate of the score-threshold attack at false-positive rate ``fpr`` (a fraction, e.g. 0.01).

    Interpolation: the ROC polyline of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` is read at
    ``fpr``: at an FPR where the curve jumps vertically (members above the next non-member) the top of the jump is
    taken (the best TPR with FPR ≤ ``fpr``); between two operating points (FPR_i < fpr < FPR_{i+1}) TPR is linearly
    interpolated, which is the TPR of randomising between the two thresholds (and of random tie-breaking where
    members and non-members share a score). Exact for perfectly separated pools (TPR 1) and identical pools
    (TPR = fpr).

    Resolution: with n non-members the smallest non-zero FPR is 1/n, so ``fpr`` < 1/n is only interpolation between
    the (0, ·) point and the first false positive; :class:`MIAFamily` reports such values as NaN (see its keys).

    Raises:
        DataError: an empty pool, non-finite scores, or ``fpr`` outside [0, 1].
    """
    from sklearn.metrics import roc_curve

    if not 0.0 <= fpr <= 1.0:
        raise DataError(f"fpr must be a fraction in [0, 1], got {fpr}")
    m, n = _check_pools(member, nonmember)
    y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    f, t, _ = roc_curve(y, np.concatenate([m, n]), drop_intermediate=False)
    i = int(np.searchsorted(f, fpr, side="right")) - 1  # last point with FPR ≤ fpr (top of a vertical jump)
    if i >= len(f) - 1 or f[i] == fpr:
        return float(t[i])
    return float(t[i] + (t[i + 1] - t[i]) * (fpr - f[i]) / (f[i + 1] - f[i]))


# -- pre-flight de-duplication (KNOWN_FAULTS C37) -----------------------------------------------------------------
def content_hashes(data: SampleSet, batch_size: int = 1024) -> list[bytes]:
    """SHA-256 of each sample's input tensor (dtype, shape and raw bytes; labels and ids are not hashed).

    Two samples collide exactly when their inputs are bit-identical, whatever their ids, positions or labels.
    """
    out: list[bytes] = []
    for start in range(0, len(data), batch_size):
        x, _, _ = data.batch(np.arange(start, min(start + batch_size, len(data))))
        x = torch.as_tensor(x).detach().cpu().contiguous()
        head = f"{x.dtype}|{tuple(x.shape[1:])}|".encode()
        raw = x.reshape(x.shape[0], -1).view(torch.uint8).numpy() if x.numel() else np.zeros((x.shape[0], 0),
                                                                                                np.uint8)
        out.extend(hashlib.sha256(head + row.tobytes()).digest() for row in raw)
    return out


def _in(hashes: list[bytes], pool: set[bytes]) -> np.ndarray:
    return np.fromiter((h in pool for h in hashes), dtype=bool, count=len(hashes))


# -- the metric ---------------------------------------------------------------------------------------------------
class MIAConfig(Frozen):
    """Settings of the threshold-attack MIA family (:class:`MIAFamily`)."""

    attacks: tuple[Attack, ...] = Field(
        ATTACKS, description="attacks to run, each a score where higher = more member-like: loss (−CE), confidence "
                             "(p_y), entropy (−H(p)), modified_entropy (−Mentr, Song & Mittal 2021)")
    nonmembers: Literal["matched", "test_all"] = Field(
        "matched", description="non-member pools. matched: D_f is attacked against the test samples of its own "
                               "classes in class scenarios (test_forgotten) and against D_t otherwise, D_r against "
                               "the test samples of the remaining classes; test_all: both against the full D_t")
    deduplicate: bool = Field(
        True, description="drop cross-pool exact input duplicates (content hash) before attacking; the collision "
                          "counts are reported either way")

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"choose at least one attack among {', '.join(ATTACKS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"attacks has duplicates: {list(v)}")
        return v


def _keys() -> dict[str, str]:
    k: dict[str, str] = {}
    what = {"forget": "members D_f vs non-members D_t (after perfect random forgetting ≈ 0.5 for AUC)",
            "retain": "members D_r vs non-members D_t (the model's general leakage baseline)"}
    for a in ATTACKS:
        for pair in PAIRS:
            k[f"mia_{a}_auc_{pair}"] = f"ROC AUC of the {a} attack, {what[pair]}; 0.5 = no leakage, higher = more " \
                                      "member-like"
            for label, _ in FPR_LEVELS:
                k[f"mia_{a}_tpr@{label}fpr_{pair}"] = (
                    f"TPR of the {a} attack at {label} FPR ({what[pair]}), fraction, interpolated on the ROC curve; "
                    f"NaN when not resolvable (see mia_tpr@{label}fpr_resolvable_{pair})")
    for pair in PAIRS:
        for label, inv in FPR_LEVELS:
            k[f"mia_tpr@{label}fpr_resolvable_{pair}"] = (
                f"1 if the {pair} pair has ≥ {inv} non-members (TPR@{label} FPR resolvable), else 0 and the TPR is NaN")
        k[f"mia_n_members_{pair}"] = f"members attacked in the {pair} pair (after de-duplication)"
        k[f"mia_n_nonmembers_{pair}"] = f"non-members in the {pair} pair (after de-duplication)"
    k["mia_pool_collisions"] = ("exact input duplicates across pools (content hash): non-member rows equal to a D_f "
                                "or D_r input + D_f rows equal to a D_r input (C37)")
    k["mia_collisions_forget_retain"] = "D_f rows whose input also occurs in D_r"
    k["mia_collisions_nonmember_forget"] = "rows of the forget pair's non-member pool whose input occurs in D_f ∪ D_r"
    k["mia_collisions_nonmember_retain"] = "rows of the retain pair's non-member pool whose input occurs in D_f ∪ D_r"
    k["mia_pools_deduplicated"] = "1 if colliding rows were dropped before attacking (deduplicate: true), else 0"
    return k


@METRICS.register("mia", config=MIAConfig)
class MIAFamily(Metric):
    """Threshold membership-inference attacks (loss, confidence, entropy, modified entropy) with ROC summaries.

    For each configured attack (scores: **higher = more member-like**, see the module docstring) and each pair

    * ``forget``: members = D_f vs non-members = held-out test data (D_t; in class scenarios with
      ``nonmembers: matched`` the test samples of the forgotten classes). After perfect unlearning D_f looks unseen:
      AUC ≈ 0.5 for random forgetting; compare with the oracle's value in general.
    * ``retain``: members = D_r vs non-members = D_t (the remaining classes' test samples in class scenarios): the
      model's general leakage, a baseline for the forget pair.

    it reports ROC AUC (``sklearn.metrics.roc_auc_score``) and TPR at 1 % and 0.1 % FPR (:func:`tpr_at_fpr`: read
    from ``sklearn.metrics.roc_curve``, linear interpolation between operating points, top of vertical jumps).
    A TPR at FPR α needs ≥ 1/α non-members (100 for 1 %, 1000 for 0.1 %): with fewer it is **reported as NaN** and
    ``mia_tpr@{α}fpr_resolvable_{pair}`` is 0.

    Pre-flight (KNOWN_FAULTS C37): every input of D_f, D_r and the non-member pools is hashed (SHA-256 of the tensor
    bytes). Non-member rows whose input equals a D_f or D_r input (θ_o trained on that input) and D_f rows whose
    input equals a D_r input (the oracle trains on it too, so it cannot be forgotten) are counted
    (``mia_pool_collisions`` and the per-pool counts) and, with ``deduplicate: true``, dropped before attacking.
    Duplicates inside one pool do not mislabel membership and are kept.

    Per-sample arrays: ``{attack}_{split}`` scores float64 for every sample of each split used (``forget``,
    ``retain``, ``test`` / ``test_forgotten`` / ``test_all``) in split order, ``kept_{split}`` bool (False = dropped
    as a collision), ``ids_{split}`` int64.

    Raises:
        DataError: a pool is empty after de-duplication, the model outputs NaN/inf, or a class scenario's forgotten
            classes have no test samples (use ``nonmembers: test_all``).
    """

    keys = _keys()
    source = ("Song & Mittal, USENIX Security 2021, arXiv:2003.10595 (modified entropy; loss/confidence/entropy "
              "attacks); Carlini et al., IEEE S&P 2022, arXiv:2112.03570 (TPR at low FPR)")

    def __init__(self, config: MIAConfig | None = None) -> None:
        self.config = config or MIAConfig()

    def _nonmember_splits(self, ctx: EvalContext) -> dict[str, str]:
        class_scenario = ctx.task.test_forgotten is not None
        if not class_scenario:
            return {"forget": "test", "retain": "test"}  # eval_test is the full D_t: one split, one forward pass
        if self.config.nonmembers == "test_all":
            return {"forget": "test_all", "retain": "test_all"}
        if len(ctx.task.test_forgotten) == 0:
            raise DataError("the forgotten classes have no test samples, so D_f has no matched non-members; "
                            "set mia.nonmembers: test_all to attack D_f against the whole test set")
        return {"forget": "test_forgotten", "retain": "test"}

    def compute(self, ctx: EvalContext) -> MetricOutput:
        cfg = self.config
        nm = self._nonmember_splits(ctx)
        splits = ["forget", "retain", *dict.fromkeys(nm.values())]
        preds = {s: ctx.predictions(s) for s in splits}
        scores = {s: attack_scores(preds[s].logits, preds[s].labels, cfg.attacks) for s in splits}

        # pre-flight: cross-pool exact duplicates by content hash (C37)
        hashes = {s: content_hashes(ctx.dataset(s)) for s in splits}
        train_pool = set(hashes["forget"]) | set(hashes["retain"])
        collide = {"forget": _in(hashes["forget"], set(hashes["retain"])), "retain": np.zeros(len(hashes["retain"]),
                                                                                                 bool)}
        for s in dict.fromkeys(nm.values()):
            collide[s] = _in(hashes[s], train_pool)
        values: dict[str, float] = {
            "mia_collisions_forget_retain": float(collide["forget"].sum()),
            "mia_collisions_nonmember_forget": float(collide[nm["forget"]].sum()),
            "mia_collisions_nonmember_retain": float(collide[nm["retain"]].sum()),
            "mia_pool_collisions": float(collide["forget"].sum()
                                         + sum(collide[s].sum() for s in dict.fromkeys(nm.values()))),
            "mia_pools_deduplicated": 1.0 if cfg.deduplicate else 0.0,
        }
        keep = {s: (~c if cfg.deduplicate else np.ones_like(c)) for s, c in collide.items()}

        for pair in PAIRS:
            members, nonmembers = pair, nm[pair]
            n_non = int(keep[nonmembers].sum())
            values[f"mia_n_members_{pair}"] = float(keep[members].sum())
            values[f"mia_n_nonmembers_{pair}"] = float(n_non)
            for label, inv in FPR_LEVELS:
                values[f"mia_tpr@{label}fpr_resolvable_{pair}"] = 1.0 if n_non >= inv else 0.0
            for a in cfg.attacks:
                m, n = scores[members][a][keep[members]], scores[nonmembers][a][keep[nonmembers]]
                values[f"mia_{a}_auc_{pair}"] = roc_auc(m, n)
                for label, inv in FPR_LEVELS:
                    values[f"mia_{a}_tpr@{label}fpr_{pair}"] = (tpr_at_fpr(m, n, 1.0 / inv) if n_non >= inv
                                                               else float("nan"))

        per: dict[str, np.ndarray] = {}
        for s in splits:
            for a in cfg.attacks:
                per[f"{a}_{s}"] = scores[s][a]
            per[f"kept_{s}"] = keep[s]
            per[f"ids_{s}"] = preds[s].ids.numpy()
        return MetricOutput(values, per)


__all__ = ["ATTACKS", "FPR_LEVELS", "MIAConfig", "MIAFamily", "attack_scores", "content_hashes", "entropy",
           "modified_entropy", "roc_auc", "tpr_at_fpr"]

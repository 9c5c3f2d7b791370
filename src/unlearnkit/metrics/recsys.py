"""Recommendation metrics (track ``recsys``): Recall@K and NDCG@K on the retained test set, and the forget set's rank
metrics (which should fall to the oracle's level after unlearning).

Ranking protocol (LightGCN / RecEraser full ranking): for each user, every item of the catalogue is a candidate
except the *masked* ones, which get score −∞ and can never be recommended:

- test metrics (``rec_rank``): the user's training interactions D (D_f included: its items are neither test
  positives nor fair candidates) are masked; positives are the user's retained test items;
- forget metrics (``rec_forget``): the user's retained training items D_r are masked; positives are the user's D_f
  items (test items stay candidates: the model was never told about them).

Recall@K = |top-K ∩ T_u| / |T_u|; NDCG@K = DCG@K / IDCG@K with DCG = Σ_{r≤K} rel_r / log₂(r+1) and
IDCG = Σ_{r=1}^{min(K,|T_u|)} 1/log₂(r+1) (He et al., SIGIR 2020, arXiv:2002.02126 §4.1.1; Järvelin & Kekäläinen,
ACM TOIS 2002). Both are averaged over users with ≥ 1 positive.

**Ties** are resolved in expectation over a uniformly random order of tied items (not by item index, which would
reward a constant model for the catalogue's numbering): a positive whose score ties with g items (itself included)
after n_> strictly higher ones sits at each rank n_>+1 … n_>+g with probability 1/g, so its expected contributions
are |[n_>+1, n_>+g] ∩ [1, K]| / g to the hits and Σ_{r=n_>+1}^{min(n_>+g,K)} 1/log₂(r+1) / g to the DCG. These
are exact expectations (linearity), computed without sorting.

``forget_auc``: for each forget interaction (u, i), P(ŷ_ui > ŷ_uj) + ½P(ŷ_ui = ŷ_uj) over items j the user never
interacted with (not in D ∪ D_t); 0.5 = no preference left.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.base import EvaluationContext, Metric, MetricOutput
from unlearnkit.registry import METRICS


def _discount_prefix(n: int) -> np.ndarray:
    """D[r] = Σ_{t=1}^{r} 1/log₂(t+1) for r = 0..n (D[0] = 0), float64."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))])


def rank_metrics(scores: torch.Tensor | np.ndarray, pos_rows: np.ndarray, pos_items: np.ndarray,
                 mask_rows: np.ndarray, mask_items: np.ndarray, k: int, *, chunk: int = 4096
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tie-aware Recall@k and NDCG@k per row of ``scores``.

    Args:
        scores: float (n_rows, n_items) predicted scores (rows are users).
        pos_rows, pos_items: int64 (P,) positives (row index, item) — unique pairs, none of them masked.
        mask_rows, mask_items: int64 (M,) candidates excluded from the ranking (score −∞).
        k: cutoff K ≥ 1.

    Returns:
        (rows (R,) int64 sorted rows with ≥ 1 positive, recall (R,) float64, ndcg (R,) float64).

    Raises:
        ConfigError: k < 1.  DataError: a positive is also masked, or a score is NaN.
    """
    if k < 1:
        raise ConfigError(f"k must be ≥ 1, got {k}")
    s = torch.as_tensor(scores).detach().to(torch.float64).cpu().clone()
    if torch.isnan(s).any():
        raise DataError("scores contain NaN; the model diverged")
    n_items = s.shape[1]
    pos_rows = np.asarray(pos_rows, np.int64)
    pos_items = np.asarray(pos_items, np.int64)
    mask_rows = np.asarray(mask_rows, np.int64)
    mask_items = np.asarray(mask_items, np.int64)
    if len(mask_rows):
        pk = pos_rows * n_items + pos_items
        mk = mask_rows * n_items + mask_items
        if np.isin(pk, mk).any():
            raise DataError("a positive item is also masked; positives and masked items must be disjoint")
        s[torch.as_tensor(mask_rows), torch.as_tensor(mask_items)] = float("-inf")
    disc = _discount_prefix(max(k, 1))
    hits = np.zeros(len(pos_rows))
    dcg = np.zeros(len(pos_rows))
    for c in range(0, len(pos_rows), chunk):
        r = torch.as_tensor(pos_rows[c:c + chunk])
        it = torch.as_tensor(pos_items[c:c + chunk])
        rows = s[r]  # (p, n_items)
        sp = rows.gather(1, it[:, None])
        greater = (rows > sp).sum(1).numpy()
        equal = (rows == sp).sum(1).numpy()  # ≥ 1: the positive itself
        first = greater + 1
        last = greater + equal
        top = np.minimum(last, k)
        inside = np.maximum(top - first + 1, 0)
        hits[c:c + chunk] = inside / equal
        dcg[c:c + chunk] = np.where(first <= k, disc[np.clip(top, 0, k)] - disc[np.clip(first - 1, 0, k)], 0.0) / equal
    urows, inv, n_pos = np.unique(pos_rows, return_inverse=True, return_counts=True)
    h = np.bincount(inv, weights=hits, minlength=len(urows))
    g = np.bincount(inv, weights=dcg, minlength=len(urows))
    idcg = disc[np.minimum(n_pos, k)]
    return urows, h / n_pos, g / idcg


def pairwise_auc(scores: torch.Tensor | np.ndarray, pos_rows: np.ndarray, pos_items: np.ndarray,
                 known_rows: np.ndarray, known_items: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """Per positive: P(ŷ_pos > ŷ_neg) + ½P(tie) over the row's items not in ``known`` (the negatives).

    Args:
        scores: float (n_rows, n_items).  pos_rows, pos_items: int64 (P,) pairs to score.
        known_rows, known_items: int64 (M,) every item each row interacted with (excluded from the negatives).

    Returns:
        float64 (P,) AUC per positive (NaN where a row has no negative).
    """
    s = torch.as_tensor(scores).detach().to(torch.float64).cpu()
    neg_ok = torch.ones_like(s, dtype=torch.bool)
    if len(known_rows):
        neg_ok[torch.as_tensor(np.asarray(known_rows, np.int64)), torch.as_tensor(np.asarray(known_items, np.int64))] = False
    pos_rows = np.asarray(pos_rows, np.int64)
    pos_items = np.asarray(pos_items, np.int64)
    out = np.zeros(len(pos_rows))
    for c in range(0, len(pos_rows), chunk):
        r = torch.as_tensor(pos_rows[c:c + chunk])
        it = torch.as_tensor(pos_items[c:c + chunk])
        rows = s[r]
        ok = neg_ok[r]
        sp = rows.gather(1, it[:, None])
        less = ((rows < sp) & ok).sum(1).to(torch.float64)
        tie = ((rows == sp) & ok).sum(1).to(torch.float64)
        n = ok.sum(1).to(torch.float64)
        out[c:c + chunk] = torch.where(n > 0, (less + 0.5 * tie) / n.clamp(min=1), torch.nan).numpy()
    return out


class RecsysEvalContext(EvaluationContext):
    """One recommender under evaluation on one :class:`~unlearnkit.data.recsys.RecsysTask`.

    The full score matrix float32 (n_users, n_items) is computed once (model in eval mode, on the engine's device)
    and shared by the metrics. ``k`` is the cutoff of Recall@K / NDCG@K.
    """

    def __init__(self, model: torch.nn.Module, task: Any, engine: Any, *, k: int = 20, seed: int = 0,
                 references: dict[str, Any] | None = None, shared: dict[Any, Any] | None = None,
                 policy: Any = None) -> None:
        super().__init__(model, task, engine, seed=seed, references=references, shared=shared, policy=policy)
        self.k = int(k)
        self._scores: torch.Tensor | None = None

    def _reset(self) -> None:
        super()._reset()
        self._scores = None

    def scores(self) -> torch.Tensor:
        """float32 (n_users, n_items) scores ŷ of every (user, item), on CPU."""
        if self._scores is None:
            self.model.to(self.engine.device)
            self._scores = self.model.full_scores().float().cpu()
        return self._scores


class RecRank(Metric):
    """Recall@K and NDCG@K on the retained test set, training interactions masked (full ranking, ties in
    expectation). Source: LightGCN's protocol (He et al., SIGIR 2020, arXiv:2002.02126 §4.1.1)."""

    keys: ClassVar[dict[str, str]] = {
        "recall@K": "Recall@K on retained test interactions (fraction 0–1; higher is better, ideally the oracle's)",
        "ndcg@K": "NDCG@K on retained test interactions (0–1; higher is better, ideally the oracle's)",
    }
    source = "He et al., SIGIR 2020, arXiv:2002.02126 (Recall@20, NDCG@20 full ranking)"
    track = "recsys"

    def compute(self, ctx: RecsysEvalContext) -> MetricOutput:
        t = ctx.task
        test, train = t.test, t.train
        rows, rec, ndcg = rank_metrics(ctx.scores(), test.users, test.items, train.users, train.items, ctx.k)
        k = ctx.k
        return MetricOutput({f"recall@{k}": float(rec.mean()) if len(rec) else float("nan"),
                             f"ndcg@{k}": float(ndcg.mean()) if len(ndcg) else float("nan")},
                            {"users": rows, "recall": rec, "ndcg": ndcg})


class RecForget(Metric):
    """The forget set's rank metrics: Recall@K and NDCG@K of the D_f items per user (D_r masked) and the pairwise
    AUC of D_f interactions against never-seen items. After unlearning they should match the oracle's (which never
    saw D_f); the original model's are the upper reference. Source: the forget-set evaluation of recommendation
    unlearning (Chen et al., RecEraser, WWW 2022, arXiv:2201.06820 §4; Sinha et al., MMRecUn, arXiv:2405.15328 §4)."""

    keys: ClassVar[dict[str, str]] = {
        "forget_recall@K": "Recall@K of D_f items (D_r masked); closer to the oracle is better",
        "forget_ndcg@K": "NDCG@K of D_f items (D_r masked); closer to the oracle is better",
        "forget_auc": "mean P(ŷ_ui > ŷ_uj) over D_f interactions vs never-seen items; closer to the oracle is better",
    }
    source = "Chen et al., WWW 2022, arXiv:2201.06820; Sinha et al. 2024, arXiv:2405.15328"
    track = "recsys"

    def compute(self, ctx: RecsysEvalContext) -> MetricOutput:
        t = ctx.task
        f, r = t.forget, t.retain
        s = ctx.scores()
        rows, rec, ndcg = rank_metrics(s, f.users, f.items, r.users, r.items, ctx.k)
        allk = t.data  # D ∪ D_t: every known interaction is excluded from the negatives
        auc = pairwise_auc(s, f.users, f.items, allk.users, allk.items)
        k = ctx.k
        return MetricOutput({f"forget_recall@{k}": float(rec.mean()), f"forget_ndcg@{k}": float(ndcg.mean()),
                             "forget_auc": float(np.nanmean(auc)) if len(auc) else float("nan")},
                            {"users": rows, "recall": rec, "ndcg": ndcg, "ids": f.ids, "auc": auc})


METRICS.register("rec_rank")(RecRank)
METRICS.register("rec_forget")(RecForget)

__all__ = ["RecForget", "RecRank", "RecsysEvalContext", "pairwise_auc", "rank_metrics"]

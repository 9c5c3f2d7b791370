"""Golden tests of Recall@K / NDCG@K / AUC on hand-computed rankings (ties, masked training items), cross-checked by
brute-force enumeration of every tie order."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.recsys import pairwise_auc, rank_metrics

L2 = math.log2
D1, D2, D3 = 1 / L2(2), 1 / L2(3), 1 / L2(4)  # discounts at ranks 1, 2, 3


def test_no_ties_hand_values():
    # user 0: ranking items 2 > 0 > 3 > 1 > 4; positives {0, 1}; K = 2 -> hit at rank 2 only
    s = torch.tensor([[0.8, 0.2, 0.9, 0.5, 0.1]])
    rows, rec, ndcg = rank_metrics(s, np.array([0, 0]), np.array([0, 1]), np.array([]), np.array([]), k=2)
    assert rows.tolist() == [0]
    assert rec[0] == pytest.approx(0.5)
    assert ndcg[0] == pytest.approx(D2 / (D1 + D2))


def test_masked_training_item_and_tie_hand_values():
    # scores: item0 0.9 (a training item, masked), items 1 and 2 tie at 0.5, item4 0.3, item3 0.1
    # positives {1, 3}, K = 2.
    s = torch.tensor([[0.9, 0.5, 0.5, 0.1, 0.3]])
    pos_r, pos_i = np.array([0, 0]), np.array([1, 3])
    # masked: item 1 and 2 occupy ranks 1-2 in either order -> item 1 is always in the top 2 (recall 1/2);
    # its expected DCG is (1/log2 2 + 1/log2 3)/2; item 3 is at rank 4.
    _, rec, ndcg = rank_metrics(s, pos_r, pos_i, np.array([0]), np.array([0]), k=2)
    assert rec[0] == pytest.approx(0.5)
    assert ndcg[0] == pytest.approx(((D1 + D2) / 2) / (D1 + D2))  # = 0.5
    # unmasked: item0 takes rank 1; items 1, 2 share ranks 2-3 -> item 1 in the top 2 with probability 1/2
    _, rec, ndcg = rank_metrics(s, pos_r, pos_i, np.array([]), np.array([]), k=2)
    assert rec[0] == pytest.approx(0.25)
    assert ndcg[0] == pytest.approx((D2 / 2) / (D1 + D2))


def test_idcg_uses_min_k_positives_and_users_average_separately():
    s = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    # user 0: positives {0, 1, 2} with K = 2 -> both top slots hit: recall 2/3, NDCG 1 (IDCG over min(3, 2) slots)
    # user 1: positive {0} at rank 4 -> 0
    rows, rec, ndcg = rank_metrics(s, np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0]), np.array([]), np.array([]), 2)
    assert rows.tolist() == [0, 1]
    assert rec.tolist() == pytest.approx([2 / 3, 0.0])
    assert ndcg.tolist() == pytest.approx([1.0, 0.0])


def _brute(scores: np.ndarray, pos: set[int], masked: set[int], k: int) -> tuple[float, float]:
    """Mean Recall/NDCG over every order of tied items (uniform random tie-breaking), by enumeration."""
    cands = [i for i in range(len(scores)) if i not in masked]
    groups = sorted({scores[i] for i in cands}, reverse=True)
    blocks = [[i for i in cands if scores[i] == g] for g in groups]
    idcg = sum(1 / L2(r + 1) for r in range(1, min(k, len(pos)) + 1))
    recs, ndcgs = [], []
    for perm in itertools.product(*(itertools.permutations(b) for b in blocks)):
        order = [i for b in perm for i in b][:k]
        hits = [1 if i in pos else 0 for i in order]
        recs.append(sum(hits) / len(pos))
        ndcgs.append(sum(h / L2(r + 2) for r, h in enumerate(hits)) / idcg)
    return float(np.mean(recs)), float(np.mean(ndcgs))


@pytest.mark.parametrize("seed", range(8))
def test_tie_expectation_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = 7
    s = rng.integers(0, 3, size=n).astype(np.float32)  # heavy ties
    perm = rng.permutation(n)
    pos = set(perm[:2].tolist())
    masked = set(perm[2:4].tolist())
    k = int(rng.integers(1, 5))
    _, rec, ndcg = rank_metrics(torch.tensor(s[None]), np.zeros(2, np.int64), np.array(sorted(pos)),
                                np.zeros(2, np.int64), np.array(sorted(masked)), k)
    want = _brute(s, pos, masked, k)
    assert rec[0] == pytest.approx(want[0])
    assert ndcg[0] == pytest.approx(want[1])


def test_constant_model_scores_like_random_not_like_item_order():
    # a constant model: every item tied -> expected recall@K = K / n_candidates, whatever the item numbering
    s = torch.zeros(1, 10)
    _, rec, _ = rank_metrics(s, np.array([0]), np.array([0]), np.array([]), np.array([]), k=3)
    assert rec[0] == pytest.approx(0.3)


def test_pairwise_auc_hand_values():
    s = torch.tensor([[0.9, 0.5, 0.5, 0.1, 0.3, 0.7]])
    # item 1 (0.5) vs negatives {2 (tie), 3, 4}; item 5 is known (excluded), item 0 known
    auc = pairwise_auc(s, np.array([0]), np.array([1]), np.array([0, 0, 0]), np.array([0, 1, 5]))
    assert auc[0] == pytest.approx((2 + 0.5) / 3)


def test_bad_inputs_raise_typed_errors():
    s = torch.zeros(1, 3)
    with pytest.raises(ConfigError):
        rank_metrics(s, np.array([0]), np.array([0]), np.array([]), np.array([]), k=0)
    with pytest.raises(DataError, match="masked"):
        rank_metrics(s, np.array([0]), np.array([1]), np.array([0]), np.array([1]), k=1)
    with pytest.raises(DataError, match="NaN"):
        rank_metrics(torch.tensor([[float("nan"), 0, 0]]), np.array([0]), np.array([1]), np.array([]),
                     np.array([]), k=1)

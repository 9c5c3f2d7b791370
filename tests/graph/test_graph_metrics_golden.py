"""Golden values of the graph metrics (``graph_utility``, ``graph_forget_auroc``, ``graph_mia``,
``graph_oracle_distance``) on hand-made graphs whose "models" return fixed outputs.

Every expected value is computed here from the definitions in numpy (softmax, cosine, total variation, pair-counting
AUROC) or by hand in a comment, never by calling the metric's helpers; a metric whose orientation is inverted (100 − x,
a swapped ratio, the wrong AUROC side) fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.data.graph import GraphData, GraphTask
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.graph import GraphEvalContext

ENGINE = None  # the graph metrics never touch the engine


class Fixed(nn.Module):
    """A "GNN" that returns the same float32 (n, C) outputs whatever the graph (eval/train mode irrelevant)."""

    def __init__(self, out) -> None:
        super().__init__()
        self.register_buffer("out", torch.as_tensor(np.asarray(out), dtype=torch.float32))

    def forward(self, x, edge_index):  # noqa: ARG002
        return self.out.clone()


def logits_of(probs) -> np.ndarray:
    """Logits whose softmax is exactly ``probs`` (rows sum to 1): log p."""
    return np.log(np.asarray(probs, dtype=np.float64))


def _graph(n: int, edges, y, train, test, classes: int) -> GraphData:
    e = np.array(sorted(tuple(sorted(p)) for p in edges), dtype=np.int64)
    return GraphData("golden", torch.zeros(n, 2), torch.tensor(y, dtype=torch.long), e,
                     np.array(train, np.int64), np.zeros(0, np.int64), np.array(test, np.int64), classes)


def pair_auroc(pos, neg) -> float:
    """AUROC in % by counting pairs: P(pos > neg) + ½ P(pos = neg)."""
    pos, neg = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return 100.0 * float(((pos > neg) + 0.5 * (pos == neg)).mean())


# -- a node-classification graph with an edge deletion -----------------------------------------------------------------
# 8 nodes, 3 classes. Probability vectors: A (class 0), B (class 1), C (class 2), M (a mix).
A, B, C, M = (0.8, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.1, 0.8), (0.4, 0.4, 0.2)
# nodes 0..7 (label, θ_u's posterior):
#   0 (0, A)  1 (0, A)  2 (1, B)  3 (1, B)  4 (2, C)  5 (2, C)  6 (0, B)  7 (1, M)
Y = [0, 0, 1, 1, 2, 2, 0, 1]
P_U = [A, A, B, B, C, C, B, M]
TRAIN, TEST = [0, 1, 2, 3], [4, 5, 6, 7]
# kept edges join nodes with equal posteriors (cosine 1 → score 1); the deleted ones: (0,1) equal too, (1,2) A–B,
# (5,6) C–B
EDGES = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 2)]
DELETED = [(0, 1), (1, 2), (5, 6)]


def node_task() -> GraphTask:
    g = _graph(8, EDGES, Y, TRAIN, TEST, 3)
    forget = np.sort(g.edge_ids_of(np.array(DELETED)))
    assert (forget >= 0).all()
    all_e = np.arange(g.num_edges, dtype=np.int64)
    return GraphTask("golden", g, "node", "edge", all_e, all_e, forget)


def _cos_score(p, q) -> float:
    p, q = np.asarray(p, float), np.asarray(q, float)
    return (p @ q / np.linalg.norm(p) / np.linalg.norm(q) + 1.0) / 2.0


def test_graph_utility_node_accuracies_by_hand():
    t = node_task()
    out = METRICS.build("graph_utility").compute(GraphEvalContext(Fixed(logits_of(P_U)), t, ENGINE)).values
    # test nodes 4, 5, 6, 7: argmax C, C, B, A|B tie (M: 0.4, 0.4 → argmax takes class 0) vs labels 2, 2, 0, 1
    assert out["test_acc"] == pytest.approx(100.0 * 2 / 4)
    # D_f's labelled endpoints: {0, 1, 2, 5, 6} ∩ train {0, 1, 2, 3} = {0, 1, 2}: A→0 ✓, A→0 ✓, B→1 ✓
    assert out["forget_acc"] == pytest.approx(100.0)
    wrong = [B, B, A, B, C, C, B, M]  # node 0 and 1 now predicted 1 (wrong), node 2 predicted 0 (wrong)
    out = METRICS.build("graph_utility").compute(GraphEvalContext(Fixed(logits_of(wrong)), t, ENGINE)).values
    assert out["forget_acc"] == pytest.approx(0.0) and out["test_acc"] == pytest.approx(50.0)


def test_graph_forget_auroc_by_pair_counting():
    t = node_task()
    res = METRICS.build("graph_forget_auroc").compute(GraphEvalContext(Fixed(logits_of(P_U)), t, ENGINE, seed=3))
    # removed edges' scores (cosine of the endpoints' posteriors, mapped to [0, 1])
    s_del = [_cos_score(P_U[u], P_U[v]) for u, v in DELETED]
    assert s_del[0] == pytest.approx(1.0) and s_del[1] == pytest.approx((0.17 / 0.66 + 1) / 2)  # A·B = 0.17, |A|² = 0.66
    # every retained edge joins equal posteriors: score 1 (so the seeded sample of them does not matter)
    s_keep = [1.0] * 3
    want = pair_auroc(s_keep, s_del)  # kept = positives: (½ + 1 + 1) / 3 = 83.33 %
    assert want == pytest.approx(100 * 2.5 / 3)
    assert res.values["forget_auroc"] == pytest.approx(want, abs=1e-9)
    assert res.values["forget_edge_score"] == pytest.approx(np.mean(s_del), abs=1e-6)
    np.testing.assert_allclose(np.sort(res.per_sample["forget_edge_scores"]), np.sort(s_del), atol=1e-6)


def test_graph_forget_auroc_is_nan_without_removed_edges():
    t = node_task()
    feat = GraphTask("golden", t.data, "node", "feature", t.train_edge_ids, np.array(TRAIN, np.int64),
                     np.array([1], np.int64))
    out = METRICS.build("graph_forget_auroc").compute(GraphEvalContext(Fixed(logits_of(P_U)), feat, ENGINE)).values
    assert np.isnan(out["forget_auroc"]) and np.isnan(out["forget_edge_score"])


def test_graph_oracle_distance_total_variation_and_agreement_by_hand():
    t = node_task()
    p_r = [A, A, B, B, C, C, A, C]  # θ_r differs on node 6 (B vs A) and node 7 (M vs C)
    ctx = GraphEvalContext(Fixed(logits_of(P_U)), t, ENGINE, references={"oracle_model": Fixed(logits_of(p_r))})
    out = METRICS.build("graph_oracle_distance").compute(ctx).values
    # TV(B, A) = ½(0.7 + 0.7 + 0) = 0.7; TV(M, C) = ½(0.3 + 0.3 + 0.6) = 0.6; mean over 8 nodes = 1.3 / 8
    assert out["oracle_tv"] == pytest.approx(100.0 * 1.3 / 8, abs=1e-4)
    # test nodes 4..7: argmax agrees on 4, 5; node 6: 1 vs 0; node 7: 0 (tie → first) vs 2
    assert out["oracle_agreement"] == pytest.approx(50.0)
    same = GraphEvalContext(Fixed(logits_of(p_r)), t, ENGINE, references={"oracle_model": Fixed(logits_of(p_r))})
    out = METRICS.build("graph_oracle_distance").compute(same).values
    assert out["oracle_tv"] == pytest.approx(0.0, abs=1e-6) and out["oracle_agreement"] == 100.0


def _attack_features(probs, labels, nodes) -> np.ndarray:
    """Top-3 posteriors (descending) and the cross-entropy loss −log p_y of each node, float64 (k, 4)."""
    p = np.asarray(probs, float)[nodes]
    top = -np.sort(-p, axis=1)[:, :3]
    loss = -np.log(p[np.arange(len(nodes)), np.asarray(labels)[nodes]])
    return np.c_[top, loss]


def test_graph_mia_member_probability_and_ratio():
    """θ_o fits its 4 training nodes (posterior 0.9 on the label) and not its 4 test nodes; the attack is fitted on θ_o
    (members = training nodes, non-members = test nodes; 4 each, so all are used). θ_u gives D_f's endpoints test-like
    posteriors: its member probability drops below θ_o's and the MI ratio p_o / p_u rises above 1."""
    from sklearn.linear_model import LogisticRegression

    t = node_task()
    hi = lambda c: tuple(0.9 if k == c else 0.05 for k in range(3))  # noqa: E731
    lo = lambda c: tuple(0.2 if k == c else 0.4 for k in range(3))  # noqa: E731
    p_o = [hi(Y[i]) if i in TRAIN else lo(Y[i]) for i in range(8)]
    p_u = [lo(Y[i]) if i in (0, 1, 2) else p_o[i] for i in range(8)]  # D_f's endpoints {0, 1, 2} look unseen
    orig = Fixed(logits_of(p_o))
    X = np.r_[_attack_features(p_o, Y, TRAIN), _attack_features(p_o, Y, TEST)]
    attack = LogisticRegression(max_iter=1000).fit(X, np.r_[np.ones(4), np.zeros(4)])
    f = [0, 1, 2]
    want_o = attack.predict_proba(_attack_features(p_o, Y, f))[:, 1].mean()
    want_u = attack.predict_proba(_attack_features(p_u, Y, f))[:, 1].mean()
    assert want_o > 0.5 > want_u  # the attack calls θ_o's D_f members and θ_u's non-members

    metric = METRICS.build("graph_mia")
    out = metric.compute(GraphEvalContext(Fixed(logits_of(p_u)), t, ENGINE, references={"original_model": orig}))
    assert out.values["mi_member_prob"] == pytest.approx(100.0 * want_u, abs=1e-4)
    assert out.values["mi_ratio"] == pytest.approx(want_o / want_u, rel=1e-4)
    assert out.values["mi_ratio"] > 1.0
    # θ_o evaluated against itself: ratio exactly 1
    same = metric.compute(GraphEvalContext(orig, t, ENGINE, references={"original_model": orig})).values
    assert same["mi_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert same["mi_member_prob"] == pytest.approx(100.0 * want_o, abs=1e-4)
    # without θ_o: NaN, not a made-up number
    none = metric.compute(GraphEvalContext(orig, t, ENGINE)).values
    assert np.isnan(none["mi_member_prob"]) and np.isnan(none["mi_ratio"])


# -- a link-prediction graph ---------------------------------------------------------------------------------------------
def test_graph_utility_link_auroc_and_oracle_distance_by_hand():
    # 5 nodes with 1-D embeddings z; score σ(z_u z_v)
    z = np.array([[2.0], [1.0], [-1.0], [0.5], [0.0]])
    g = _graph(5, [(0, 1), (1, 2), (2, 3), (3, 4)], [0] * 5, [], [], 1)
    test_pos = np.array([[0, 1], [2, 3]])  # z·z = 2, −0.5
    test_neg = np.array([[0, 2], [1, 3]])  # z·z = −2, 0.5
    train = g.edge_ids_of(np.array([[1, 2], [3, 4]]))
    t = GraphTask("golden", g, "link", "edge", np.sort(train), np.sort(train), np.sort(train)[:1], test_pos, test_neg)
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    out = METRICS.build("graph_utility").compute(GraphEvalContext(Fixed(z), t, ENGINE)).values
    # positives σ(2), σ(−0.5) vs negatives σ(−2), σ(0.5): 3 of 4 pairs ordered right
    assert out["test_auroc"] == pytest.approx(pair_auroc(sig(np.array([2, -0.5])), sig(np.array([-2, 0.5])))) \
        == pytest.approx(75.0)
    # oracle distance: θ_r's embeddings all 0 → every score 0.5; pairs = test_pos, test_neg, the removed edge (1, 2)
    ctx = GraphEvalContext(Fixed(z), t, ENGINE, references={"oracle_model": Fixed(np.zeros((5, 1)))})
    dist = METRICS.build("graph_oracle_distance").compute(ctx).values
    s = sig(np.array([2.0, -0.5, -2.0, 0.5, -1.0]))
    assert dist["oracle_tv"] == pytest.approx(100.0 * np.abs(s - 0.5).mean(), abs=1e-4)
    # same side of 0.5: σ_r = 0.5 is not > 0.5, so agreement where σ_u ≤ 0.5: −0.5, −2, −1 → 3 of 5
    assert dist["oracle_agreement"] == pytest.approx(60.0)

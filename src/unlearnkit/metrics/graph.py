"""Metrics of the graph track (``Metric.track = "graph"``): utility, forgetting of deleted edges, membership
inference, distance to the oracle. All values in percent (0–100) unless named otherwise.

Every model is evaluated on the **retain graph** (the graph after the deletion: what exists now). Edge scores are
σ(z_u·z_v) for link-prediction models and, for node classifiers, the cosine similarity of the endpoints' posteriors
(the link-stealing score of He et al., USENIX Security 2021, arXiv:2005.02131).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unlearnkit.metrics._dtype import to_numpy64
from unlearnkit.metrics._ratio import flag_key, guarded_ratio
from unlearnkit.metrics.base import EvaluationContext, Metric, MetricOutput
from unlearnkit.registry import METRICS


class GraphEvalContext(EvaluationContext):
    """One model under evaluation on a :class:`~unlearnkit.data.graph.GraphTask`; outputs computed once per model.

    Args:
        references: ``original_model`` (θ_o) and ``oracle_model`` (θ_r) of the same seed.
    """

    def __init__(self, model: nn.Module, task: Any, engine: Any, *, seed: int = 0,
                 references: dict[str, Any] | None = None, shared: dict[Any, Any] | None = None,
                 policy: Any = None) -> None:
        super().__init__(model, task, engine, seed=seed, references=references, shared=shared, policy=policy)
        self._out: dict[tuple[int, str], torch.Tensor] = {}

    def _reset(self) -> None:
        super()._reset()
        self._out = {}

    def outputs(self, model: nn.Module | None = None, which: str = "retain") -> torch.Tensor:
        """float32 (n, out) outputs of ``model`` (default: the evaluated one) on the ``which`` view, no grad."""
        model = self.model if model is None else model
        key = (id(model), which)
        if key not in self._out:
            v = self.task.view(which)
            was = model.training
            model.eval()
            with torch.no_grad():
                self._out[key] = model(v.x, v.edge_index).detach().float()
            model.train(was)
        return self._out[key]

    def edge_scores(self, pairs: np.ndarray, model: nn.Module | None = None, which: str = "retain") -> np.ndarray:
        """float64 (k,) scores in [0, 1] (link: σ(z_u·z_v); node task: cosine of posteriors) of pairs (k, 2)."""
        model = self.model if model is None else model
        out = self.outputs(model, which)
        p = torch.as_tensor(np.asarray(pairs), dtype=torch.long).reshape(-1, 2).t()
        if self.task.task == "link":
            s = torch.sigmoid((out[p[0]] * out[p[1]]).sum(-1))
        else:
            prob = torch.softmax(out, 1)
            s = (nn.functional.cosine_similarity(prob[p[0]], prob[p[1]]) + 1) / 2
        return s.double().numpy()

    @property
    def computed(self) -> dict[tuple[int, str], torch.Tensor]:
        return dict(self._out)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC in percent of scores of positives vs negatives (ties count ½); NaN if a side is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return 100.0 * float(roc_auc_score(y, np.r_[to_numpy64(pos).reshape(-1), to_numpy64(neg).reshape(-1)]))


def _forget_nodes(task: Any) -> np.ndarray:
    from unlearnkit.methods.graph._common import forget_elements

    return forget_elements(task) if task.task == "node" else np.zeros(0, np.int64)


@METRICS.register("graph_utility")
class GraphUtility(Metric):
    """Utility on held-out data and accuracy on D_f.

    Node task: ``test_acc`` (accuracy on the test nodes), ``forget_acc`` (accuracy on D_f's nodes, or on the
    labelled endpoints of deleted edges). Link task: ``test_auroc`` (held-out edges vs sampled non-edges).
    """

    track: ClassVar[str] = "graph"
    keys: ClassVar[dict[str, str]] = {"test_acc": "test-node accuracy, % (higher = better utility)",
                                      "forget_acc": "accuracy on D_f's nodes, % (→ the oracle's)",
                                      "test_auroc": "link task: AUROC of test edges vs non-edges, % (higher = better)"}
    source: ClassVar[str] = "standard GNN evaluation (GNNDelete, Cheng et al. 2023, arXiv:2302.13406, §5)"

    def compute(self, ctx: GraphEvalContext) -> MetricOutput:
        t = ctx.task
        if t.task == "node":
            out = ctx.outputs()
            pred = out.argmax(1)
            test = torch.from_numpy(t.data.test_nodes)
            vals = {"test_acc": 100.0 * float((pred[test] == t.data.y[test]).double().mean())}
            f = torch.from_numpy(_forget_nodes(t))
            vals["forget_acc"] = 100.0 * float((pred[f] == t.data.y[f]).double().mean()) if len(f) else float("nan")
            return MetricOutput(vals, {"test_pred": pred[test].numpy()})
        pos, neg = ctx.edge_scores(t.test_pos), ctx.edge_scores(t.test_neg)
        return MetricOutput({"test_auroc": auroc(pos, neg)}, {"test_pos_score": pos, "test_neg_score": neg})


@METRICS.register("graph_forget_auroc")
class GraphForgetAUROC(Metric):
    """How well the model tells retained training edges from the deleted ones.

    ``forget_auroc``: AUROC of edge scores, retained training edges (positives, an equal-size seeded sample) vs
    removed edges (D_f's edges, or the deleted nodes' edges) — 50 = indistinguishable; the oracle, which never
    saw the removed edges, sets the target. ``forget_edge_score``: mean score of the removed edges (GNNDelete's
    "D_f logit mean"). NaN for feature deletion (no edge is removed).
    """

    track: ClassVar[str] = "graph"
    keys: ClassVar[dict[str, str]] = {"forget_auroc": "AUROC retained vs deleted edges, % (→ the oracle's)",
                                      "forget_edge_score": "mean score of deleted edges (→ the oracle's)"}
    source: ClassVar[str] = "D_f AUROC of GNNDelete (Cheng et al., ICLR 2023, arXiv:2302.13406, §5)"

    def compute(self, ctx: GraphEvalContext) -> MetricOutput:
        t = ctx.task
        removed = t.data.edges[t.removed_edge_ids]
        if len(removed) == 0:
            return MetricOutput({"forget_auroc": float("nan"), "forget_edge_score": float("nan")})
        kept = t.train_pairs("retain")
        g = np.random.default_rng(ctx.seed)
        kept = kept[g.choice(len(kept), size=min(len(kept), len(removed)), replace=False)]
        s_del, s_keep = ctx.edge_scores(removed), ctx.edge_scores(kept)
        return MetricOutput({"forget_auroc": auroc(s_keep, s_del), "forget_edge_score": float(s_del.mean())},
                            {"forget_edge_scores": s_del})


def _attack_features(ctx: GraphEvalContext, model: nn.Module, which: str, elems: np.ndarray) -> np.ndarray:
    t = ctx.task
    if t.task == "node":
        out = ctx.outputs(model, which)
        idx = torch.as_tensor(elems, dtype=torch.long)
        prob = torch.softmax(out[idx], 1)
        top = prob.sort(1, descending=True).values[:, :3]
        loss = nn.functional.cross_entropy(out[idx], t.data.y[idx], reduction="none")
        return torch.cat([top, loss[:, None]], 1).double().numpy()
    s = ctx.edge_scores(elems, model, which)
    return np.stack([s, np.log(s + 1e-12) - np.log(1 - s + 1e-12)], 1)


#: the smallest mean member probability (0–1) of the evaluated model that ``mi_ratio`` divides by
MI_RATIO_MIN_PROB = 1e-3


@METRICS.register("graph_mia")
class GraphMIA(Metric):
    """Membership inference on D_f's elements with an attack fitted on θ_o.

    A logistic-regression attack is fitted on θ_o (original graph) to tell members (retained training elements)
    from non-members (test nodes / test edges), on the top-3 posteriors and the loss (node task) or the edge score
    and its logit (link task). ``mi_member_prob``: mean attack probability that D_f's elements are members under
    the evaluated model, % (→ the oracle's). ``mi_ratio``: θ_o's value over the evaluated model's — GNNDelete's
    "MI ratio" (higher = D_f looks less like training data than before); NaN with
    ``mi_ratio.near_zero_denominator`` = 1 when the evaluated model's mean member probability is below
    :data:`MI_RATIO_MIN_PROB` (1e-3), where the ratio would be an arbitrarily large number.
    """

    track: ClassVar[str] = "graph"
    keys: ClassVar[dict[str, str]] = {"mi_member_prob": "P(member | D_f), % (→ the oracle's)",
                                      "mi_ratio": "P_member under θ_o / under the model (higher = more forgotten)",
                                      "mi_ratio.near_zero_denominator": "1.0 when P_member under the model < 1e-3 "
                                                                        "made mi_ratio NaN (absent otherwise)"}
    source: ClassVar[str] = ("MI ratio of GNNDelete (Cheng et al., ICLR 2023, arXiv:2302.13406, §5); posterior-"
                             "feature attack (Olatunji et al. 2021, arXiv:2101.06570)")

    def compute(self, ctx: GraphEvalContext) -> MetricOutput:
        from sklearn.linear_model import LogisticRegression

        from unlearnkit.methods.graph._common import forget_elements

        t = ctx.task
        orig = ctx.references.get("original_model")
        if orig is None:
            return MetricOutput({"mi_member_prob": float("nan"), "mi_ratio": float("nan")})
        g = np.random.default_rng(ctx.seed)
        if t.task == "node":
            members, non = t.view("retain").train_nodes, t.data.test_nodes
        else:
            members, non = t.train_pairs("retain"), t.test_pos
        m = min(len(members), len(non))
        members = members[g.choice(len(members), size=m, replace=False)]
        non = non[g.choice(len(non), size=m, replace=False)]
        X = np.r_[_attack_features(ctx, orig, "original", members), _attack_features(ctx, orig, "original", non)]
        y = np.r_[np.ones(m), np.zeros(m)]
        attack = LogisticRegression(max_iter=1000).fit(X, y)
        f = forget_elements(t)
        if len(f) == 0:
            return MetricOutput({"mi_member_prob": float("nan"), "mi_ratio": float("nan")})
        p_u = attack.predict_proba(_attack_features(ctx, ctx.model, "retain", f))[:, 1]
        p_o = attack.predict_proba(_attack_features(ctx, orig, "original", f))[:, 1]
        ratio, near_zero = guarded_ratio(float(p_o.mean()), float(p_u.mean()), MI_RATIO_MIN_PROB)
        values = {"mi_member_prob": 100.0 * float(p_u.mean()), "mi_ratio": ratio}
        if near_zero:
            values[flag_key("mi_ratio")] = 1.0
        return MetricOutput(values, {"mi_member_probs": p_u})


@METRICS.register("graph_oracle_distance")
class GraphOracleDistance(Metric):
    """Output-space distance to the oracle θ_r (architecture-free: GNNDelete / GraphEraser change the model).

    Node task: ``oracle_tv`` = mean total-variation distance ½‖p_u(v) − p_r(v)‖₁ over all nodes, % ;
    ``oracle_agreement`` = % of test nodes with the same predicted class. Link task: ``oracle_tv`` = mean
    |σ_u − σ_r| of the scores of test edges, test non-edges and removed edges, %; ``oracle_agreement`` = % of
    those pairs on the same side of 0.5.
    """

    track: ClassVar[str] = "graph"
    keys: ClassVar[dict[str, str]] = {"oracle_tv": "mean output distance to θ_r, % (lower = closer)",
                                      "oracle_agreement": "prediction agreement with θ_r, % (higher = closer)"}
    source: ClassVar[str] = ("distance to the retrained model in output space (Thudi et al. 2022, arXiv:2109.13398,"
                             " verification error)")

    def compute(self, ctx: GraphEvalContext) -> MetricOutput:
        t = ctx.task
        oracle = ctx.references.get("oracle_model")
        if oracle is None:
            return MetricOutput({"oracle_tv": float("nan"), "oracle_agreement": float("nan")})
        if t.task == "node":
            pu, pr = torch.softmax(ctx.outputs(), 1), torch.softmax(ctx.outputs(oracle), 1)
            tv = 0.5 * (pu - pr).abs().sum(1)
            test = torch.from_numpy(t.data.test_nodes)
            agree = (pu[test].argmax(1) == pr[test].argmax(1)).double().mean()
            return MetricOutput({"oracle_tv": 100.0 * float(tv.mean()), "oracle_agreement": 100.0 * float(agree)})
        pairs = np.r_[t.test_pos, t.test_neg, t.data.edges[t.removed_edge_ids]]
        su, sr = ctx.edge_scores(pairs), ctx.edge_scores(pairs, oracle)
        return MetricOutput({"oracle_tv": 100.0 * float(np.abs(su - sr).mean()),
                             "oracle_agreement": 100.0 * float(((su > 0.5) == (sr > 0.5)).mean())})

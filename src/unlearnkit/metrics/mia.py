"""Membership-inference metrics on classifiers."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import DataError
from unlearnkit.metrics._dtype import to_numpy64, to_tensor64
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS


def true_label_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Softmax probability of the true label: float64 (n,) from logits float (n, C) (any float dtype, upcast to
    float64 first) and labels int64 (n,)."""
    p = torch.softmax(to_tensor64(logits), dim=1)
    return p.gather(1, labels.view(-1, 1).cpu()).squeeze(1).numpy()


def svc_mia_efficacy(
    member: np.ndarray, nonmember: np.ndarray, target: np.ndarray, *, C: float = 3.0
) -> tuple[float, np.ndarray]:
    """Fit an RBF-SVC attack on member (label 1) vs non-member (label 0) features; score the target set.

    Args:
        member: float (n_m,) or (n_m, d) features of known members (shadow train).
        nonmember: float (n_n,) or (n_n, d) features of known non-members (shadow test).
        target: float (n_t,) or (n_t, d) features of the samples to attack (the forget set).
        C: SVC regularisation (reference: 3).

    Returns:
        (efficacy in percent = 100 × fraction of target predicted non-member, per-target predictions int (n_t,) with
        1 = member, 0 = non-member).

    Raises:
        DataError: an empty pool.
    """
    from sklearn.svm import SVC

    if len(member) == 0 or len(nonmember) == 0 or len(target) == 0:
        raise DataError(
            f"MIA pools must be non-empty: members {len(member)}, non-members {len(nonmember)}, target {len(target)}"
        )
    xs = np.concatenate([to_numpy64(member).reshape(len(member), -1), to_numpy64(nonmember).reshape(len(nonmember), -1)])
    ys = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=C, gamma="auto", kernel="rbf")
    clf.fit(xs, ys)
    pred = clf.predict(to_numpy64(target).reshape(len(target), -1)).astype(np.int64)
    return float(100.0 * (1.0 - pred.mean())), pred


class MIAEfficacyConfig(Frozen):
    """Settings of the SVC MIA-efficacy attack (reference values of Jia et al. / Fan et al.)."""

    member_sampling: Literal["first", "random"] = Field(
        "first", description="members = the first |D_t| retain samples (reference) or a seeded random subset"
    )
    C: float = Field(3.0, gt=0)


@METRICS.register("mia_efficacy", config=MIAEfficacyConfig)
class MIAEfficacy(Metric):
    """MIA-efficacy: the share of forget samples that a membership-inference attack calls **non-members** (%).

    Direction: higher = the forget set looks more like unseen data (more forgotten). For random forgetting the oracle
    scores well below 100 (its D_f is genuinely unseen but resembles training data); for class forgetting near 100.

    Protocol (Jia et al., NeurIPS 2023, arXiv:2304.04934, App. C.3; reference ``evaluation/SVC_MIA.py``):
    feature = softmax confidence of the true label (model in eval mode); attack = ``SVC(C=3, gamma="auto",
    kernel="rbf")`` trained on members = the first |D_t| samples of D_r (label 1) vs non-members = D_t (label 0);
    efficacy = 100 × (1 − mean prediction on D_f). If |D_r| < |D_t| the non-members are truncated to |D_r| so the
    attack's training pools stay balanced. Pools share no sample by construction (D_r ∩ D_t = ∅ in the split).
    """

    keys = {"mia_efficacy": "% of D_f predicted non-member by the SVC confidence attack (higher = more forgotten)"}
    source = "Jia et al., NeurIPS 2023, arXiv:2304.04934, App. C.3"

    def __init__(self, config: MIAEfficacyConfig | None = None) -> None:
        self.config = config or MIAEfficacyConfig()

    def compute(self, ctx: EvalContext) -> MetricOutput:
        r, t, f = ctx.predictions("retain"), ctx.predictions("test"), ctx.predictions("forget")
        n = min(len(r.labels), len(t.labels))
        if self.config.member_sampling == "first":
            m_idx = np.arange(n)
        else:
            m_idx = np.sort(np.random.default_rng(ctx.seed).choice(len(r.labels), size=n, replace=False))
        member = true_label_confidence(r.logits, r.labels)[m_idx]
        nonmember = true_label_confidence(t.logits, t.labels)[:n]
        target = true_label_confidence(f.logits, f.labels)
        eff, pred = svc_mia_efficacy(member, nonmember, target, C=self.config.C)
        return MetricOutput({"mia_efficacy": eff}, {"forget_confidence": target, "forget_mia_member_pred": pred})

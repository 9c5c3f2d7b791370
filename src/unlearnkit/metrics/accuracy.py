"""Accuracy metrics of the classifier unlearning protocol: forget/unlearn accuracy (UA), RA, TA."""

from __future__ import annotations

from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS


@METRICS.register("accuracy")
class Accuracy(Metric):
    """UA, RA, TA in percent (0–100), as in the ℓ1-sparse / SalUn protocol.

    Keys (distinct names with their direction, so a complement is never confused with the accuracy itself):
        forget_acc: accuracy on D_f (%). unlearn_acc (UA): 100 − forget_acc (%); for random forgetting the oracle's
        UA is close to its test error, for class forgetting close to 100.
        retain_acc (RA): accuracy on D_r (%).  test_acc (TA): accuracy on D_t (%), in class scenarios on the test
        samples of the remaining classes only.  forgotten_test_acc: accuracy on test samples of the forgotten
        classes (%; class scenarios only).

    Source: Jia et al., NeurIPS 2023, arXiv:2304.04934 §5 (UA, RA, TA); Fan et al., ICLR 2024, arXiv:2310.12508.
    """

    keys = {
        "forget_acc": "accuracy on the forget set D_f, % (lower = more forgotten)",
        "unlearn_acc": "UA = 100 − forget_acc, % (higher = more forgotten; compare with the oracle)",
        "retain_acc": "RA: accuracy on the retain set D_r, % (higher = better utility)",
        "test_acc": "TA: accuracy on the test set D_t (remaining classes in class scenarios), %",
        "forgotten_test_acc": "accuracy on test samples of forgotten classes, % (class scenarios)",
    }
    source = "Jia et al., NeurIPS 2023, arXiv:2304.04934"

    def compute(self, ctx: EvalContext) -> MetricOutput:
        f, r, t = ctx.predictions("forget"), ctx.predictions("retain"), ctx.predictions("test")
        values = {
            "forget_acc": f.accuracy(),
            "unlearn_acc": 100.0 - f.accuracy(),
            "retain_acc": r.accuracy(),
            "test_acc": t.accuracy(),
        }
        per = {"forget_correct": f.correct.numpy(), "forget_ids": f.ids.numpy()}
        if ctx.task.test_forgotten is not None:
            values["forgotten_test_acc"] = ctx.predictions("test_forgotten").accuracy()
        return MetricOutput(values, per)

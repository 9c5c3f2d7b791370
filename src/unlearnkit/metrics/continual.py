"""The ``continual`` metric family: per-task accuracy at every evaluation point of a continual schedule (the rows of
the accuracy matrix), the state of forgotten tasks, and the continual-learning summaries computed from those rows.

At an evaluation point (a row) the metric writes, for every task k of the scenario, ``acc_task{k}`` — the accuracy
on task k's test samples (all of them, whether or not k was learned yet), through the task-incremental mask when
``head: task`` (:class:`TaskMaskedEvalContext`). Over a run's rows (one per point) these form the accuracy matrix
R[point, task] of the continual-learning literature, from which
:func:`unlearnkit.report.figures.cl_summary` computes the standard measures (in the report layer: rows only, no torch):

- average accuracy ACC = (1/|K|) Σ_{k∈K} R[last, k] over the retained tasks K (learned, not wholly forgotten) —
  Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017, arXiv:1706.08840, §5;
- backward transfer BWT = (1/|K'|) Σ_{k∈K'} (R[last, k] − R[after L_k, k]) over the retained tasks except the last
  learned (ibid.; negative = forgetting);
- forgetting F = (1/|K'|) Σ_{k∈K'} (max_{points l after L_k, before last} R[l, k] − R[last, k]) — Chaudhry et al.,
  "Riemannian Walk for Incremental Learning", ECCV 2018, arXiv:1801.10112, eq. 4 (per-task maximum over earlier
  points, here the points where k was learned);

and the unlearning side of issue 17:

- forgotten accuracy: the mean accuracy of the wholly forgotten tasks (should match the oracle's: chance under a
  task-incremental head, ≈ 0 under a class-incremental one whose outputs for those classes the oracle never trained);
- relapse: for each forgotten task, the largest rise of its accuracy at a later point above the lowest accuracy it
  reached since its request (UnCLe's "task relapse", arXiv:2509.17530 §1) — 0: it never came back; > 0: later
  learning brought (part of) it back;
- membership signal: the ROC AUC of the loss attack (score −CE; Yeom et al., CSF 2018, arXiv:1709.01604) separating
  D_f (every sample removed so far) from the test samples of D_f's classes; 50 % = no signal, as for the oracle.

Methods' rows exist only from their first request on; before it a method's model *is* θ_o, so the matrix of a method
takes θ_o's rows for the earlier points (``evaluate: every`` gives θ_o and θ_r rows before the first request).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from unlearnkit.engine.loop import Predictions
from unlearnkit.errors import ConfigError
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

#: the value written into masked logits of the task-incremental head (exp(−1e4) is exactly 0 in float32)
MASKED_LOGIT = -1e4


class TaskMaskedEvalContext(EvalContext):
    """A classifier context for task-incremental evaluation: each sample's logits are restricted to the classes of
    its task (the task id is known at test time): the other logits are set to ``MASKED_LOGIT``, so argmax, softmax
    and losses are those of the task's own head (Mammoth's ``mask_classes``; van de Ven et al. 2022).

    Args (besides :class:`EvalContext`'s):
        groups: the classes of every task; a sample's task is the group holding its label.
    """

    def __init__(self, *args: Any, groups: Sequence[Sequence[int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = tuple(tuple(int(c) for c in g) for g in groups)

    def _allowed(self, num_classes: int) -> torch.Tensor:
        allowed = torch.zeros(num_classes, num_classes, dtype=torch.bool)
        for g in self.groups:
            idx = torch.as_tensor(g, dtype=torch.long)
            allowed[idx.unsqueeze(1), idx.unsqueeze(0)] = True
        return allowed

    def predictions(self, split: str) -> Predictions:
        if split not in self._cache:
            pred = super().predictions(split)
            if len(pred.labels):
                allowed = self._allowed(pred.logits.shape[1])[pred.labels]
                pred = Predictions(pred.logits.masked_fill(~allowed, MASKED_LOGIT), pred.labels, pred.ids)
            self._cache[split] = pred
        return self._cache[split]


def task_index(labels: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """int64 (n,): the task of every label (−1 for a label in no task)."""
    lut = {int(c): t for t, g in enumerate(groups) for c in g}
    return np.asarray([lut.get(int(y), -1) for y in labels], dtype=np.int64)


def _loss_auc(member: np.ndarray, nonmember: np.ndarray) -> float:
    if len(member) == 0 or len(nonmember) == 0:
        return float("nan")
    from unlearnkit.metrics.mia_family import roc_auc

    return 100.0 * roc_auc(member, nonmember)


def _neg_ce(pred: Predictions) -> np.ndarray:
    lp = torch.log_softmax(pred.logits.double(), dim=1)
    return lp.gather(1, pred.labels.view(-1, 1)).squeeze(1).numpy()


@METRICS.register("continual")
class Continual(Metric):
    """Per-task test accuracy (a row of the accuracy matrix) and the state of forgotten tasks at a continual point.

    Keys (percent): ``acc_task<k>`` for every task k; ``acc_avg`` over the retained tasks; ``acc_forgotten`` over the
    wholly forgotten tasks and the oracle's ``acc_forgotten_oracle``, ``forgotten_gap`` = |difference|;
    ``forgotten_mia_auc`` (loss attack, D_f vs test samples of D_f's classes) and ``forgotten_mia_auc_oracle``.
    Summaries over points (ACC, BWT, forgetting, relapse) come from the rows:
    :func:`unlearnkit.report.figures.cl_summary`.
    """

    keys: ClassVar[dict[str, str]] = {
        "acc_task<k>": "accuracy on the test samples of task k, % (one key per task; a row of the accuracy matrix)",
        "acc_avg": "mean accuracy over the retained tasks (learned, not wholly forgotten), % (higher is better)",
        "acc_forgotten": "mean accuracy over the wholly forgotten tasks, % (compare with the oracle's)",
        "acc_forgotten_oracle": "the same for the oracle θ_r, %",
        "forgotten_gap": "|acc_forgotten − acc_forgotten_oracle|, % (lower is better)",
        "forgotten_mia_auc": "loss-attack ROC AUC, D_f vs test samples of its classes, % (50 = no membership signal; "
                             "compare with the oracle)",
        "forgotten_mia_auc_oracle": "the same for the oracle θ_r, %",
    }
    source = ("Lopez-Paz & Ranzato, NeurIPS 2017, arXiv:1706.08840 (accuracy matrix, ACC, BWT); Chaudhry et al., "
              "ECCV 2018, arXiv:1801.10112 (forgetting); Adhikari et al., arXiv:2509.17530 (relapse)")
    reads = frozenset({"logits"})
    conformance: ClassVar[dict[str, Any]] = {"scenario": {"kind": "continual", "fraction": None, "tasks": 2,
                                                          "sequence": "L1 L2 U1"}}

    def compute(self, ctx: EvalContext) -> MetricOutput:
        sc = ctx.task.scenario
        groups = sc.get("tasks")
        if not groups:
            raise ConfigError("metric 'continual' needs a continual scenario (scenario.kind: continual with tasks "
                              "and sequence)")
        learned = set(sc.get("classes_learned", []))
        gone = set(sc.get("classes_removed", []))
        retained = [t for t, g in enumerate(groups) if set(g) <= learned and not set(g) <= gone]
        forgotten = [t for t, g in enumerate(groups) if set(g) <= gone]

        def per_task(pred: Predictions) -> list[float]:
            tid = task_index(pred.labels.numpy(), groups)
            ok = pred.correct.numpy()
            return [100.0 * float(ok[tid == t].mean()) if (tid == t).any() else float("nan")
                    for t in range(len(groups))]

        mine = per_task(ctx.predictions("test_all"))
        values = {f"acc_task{t + 1}": a for t, a in enumerate(mine)}
        values["acc_avg"] = float(np.mean([mine[t] for t in retained])) if retained else float("nan")
        nan = float("nan")
        values["acc_forgotten"] = float(np.mean([mine[t] for t in forgotten])) if forgotten else nan
        values["forgotten_mia_auc"] = self._membership(ctx.predictions("forget"), ctx.predictions("test_all"))
        if "oracle_model" in ctx.references:
            ref = ctx.for_reference("oracle", ("continual", "per_task"),
                                    lambda sub: per_task(sub.predictions("test_all")))
            values["acc_forgotten_oracle"] = float(np.mean([ref[t] for t in forgotten])) if forgotten else nan
            values["forgotten_gap"] = abs(values["acc_forgotten"] - values["acc_forgotten_oracle"])
            values["forgotten_mia_auc_oracle"] = ctx.for_reference(
                "oracle", ("continual", "mia"),
                lambda sub: self._membership(sub.predictions("forget"), sub.predictions("test_all")))
        tid = task_index(ctx.predictions("test_all").labels.numpy(), groups)
        return MetricOutput(values, {"test_task": tid, "test_correct": ctx.predictions("test_all").correct.numpy()})

    @staticmethod
    def _membership(forget: Predictions, test: Predictions) -> float:
        """Loss-attack AUC (%): D_f against the test samples of D_f's classes (NaN without forgotten samples)."""
        if not len(forget.labels):
            return float("nan")
        classes = np.unique(forget.labels.numpy())
        keep = np.isin(test.labels.numpy(), classes)
        if not keep.any():
            return float("nan")
        sub = Predictions(test.logits[torch.from_numpy(keep)], test.labels[torch.from_numpy(keep)],
                          test.ids[torch.from_numpy(keep)])
        return _loss_auc(_neg_ce(forget), _neg_ce(sub))


__all__ = ["Continual", "MASKED_LOGIT", "TaskMaskedEvalContext", "task_index"]

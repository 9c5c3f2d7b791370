"""What each training stage taught, after unlearning (LLM track, metric ``stages``; the training-order experiment,
Yu et al. 2025, arXiv:2510.16629, who track GSM8K accuracy and forget-set likelihood per learning path).

For every evaluation set ``stage.<name>`` of a multi-stage task (:mod:`unlearnkit.data.text.multistage`: the first
items of each stage), per item: the length-normalised answer probability, the ROUGE-L recall of the greedy answer and
its exact match (whitespace-normalised). Keys ``stage.<name>.prob`` / ``.rouge`` / ``.em``, and
``stage.retained_rouge`` / ``stage.retained_prob``, the means over the stages that are not forgotten. How the numbers
spread over the orders of the same stages is read from the rows (the report's order section,
:mod:`unlearnkit.report.order_section`).

:func:`qa_item_scores` is shared with the hierarchy metrics (:mod:`unlearnkit.metrics.hierarchy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unlearnkit.errors import DataError
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS


def _norm(text: str) -> str:
    return " ".join(text.split()).strip().rstrip(".").lower()


def qa_item_scores(ctx: Any, pairs: list[tuple[str, str]], tag: tuple) -> dict[str, np.ndarray]:
    """Per pair: ``prob`` (exp of the mean answer-token log-prob), ``rouge`` (ROUGE-L recall, stemmed, of the greedy
    answer) and ``em`` (1 when the greedy answer equals the answer after whitespace / case / final-period
    normalisation), each float64 (n,). Model outputs are cached per context under ``tag``."""
    from unlearnkit.metrics.tofu import TOFU_ROUGE_STEMMER, rouge_l

    if not pairs:
        return {"prob": np.zeros(0), "rouge": np.zeros(0), "em": np.zeros(0)}
    lp = ctx.mean_logprobs(pairs, tag)
    gens = ctx.generations([q for q, _ in pairs], tag)
    answers = [a for _, a in pairs]
    rouge = np.asarray(rouge_l(answers, gens, stemmer=TOFU_ROUGE_STEMMER, kind="recall"), dtype=np.float64)
    em = np.array([float(_norm(g) == _norm(a)) for g, a in zip(gens, answers)])
    return {"prob": np.exp(np.asarray(lp, dtype=np.float64)), "rouge": rouge, "em": em}


@METRICS.register("stages")
class StageSkills(Metric):
    """Per training stage: answer probability, ROUGE-L recall and exact match on the stage's items (the multi-stage
    task's ``stage.<name>`` evaluation sets), and their means over the retained stages."""

    track = "llm"
    reads = frozenset({"logits", "generations"})
    source = ("Yu, He, Goyal, Arora 2025, 'On the Impossibility of Retrain Equivalence in Machine Unlearning', "
              "arXiv:2510.16629 (per-stage ability after unlearning, compared across learning paths)")
    keys = {
        "stage.<name>.prob": "mean length-normalised P(answer) on the stage's items (forget stage: lower = forgotten)",
        "stage.<name>.rouge": "mean ROUGE-L recall of greedy answers on the stage's items",
        "stage.<name>.em": "exact-match rate of greedy answers on the stage's items",
        "stage.retained_rouge": "mean of stage.<name>.rouge over the stages not forgotten (higher = better)",
        "stage.retained_prob": "mean of stage.<name>.prob over the stages not forgotten (higher = better)",
    }
    conformance = {"llm": {"data": {"source": "stages", "stages": {
        "stages": ["authors", "arithmetic", "forget"], "orders": [["authors", "forget", "arithmetic"]],
        "n_persons": 6, "forget_persons": 1, "stage_items": 8, "eval_items": 4}}}}

    def compute(self, ctx: Any) -> MetricOutput:
        sets = [k for k in getattr(ctx.task, "eval_sets", {}) if k.startswith("stage.")]
        if not sets:
            raise DataError("metric 'stages' needs a multi-stage task (llm.data.source: stages): no stage.<name> "
                            "evaluation set")
        forgotten = str(ctx.task.scenario.get("forget_stage", ""))
        values: dict[str, float] = {}
        per: dict[str, np.ndarray] = {}
        kept_r, kept_p = [], []
        for key in sets:
            name = key.split(".", 1)[1]
            qs = ctx.eval_set(key)
            sc = qa_item_scores(ctx, qs.pairs(), (key,))
            for k, v in sc.items():
                values[f"stage.{name}.{k}"] = float(v.mean())
                per[f"{name}.{k}"] = v
            if name != forgotten:
                kept_r.append(values[f"stage.{name}.rouge"])
                kept_p.append(values[f"stage.{name}.prob"])
        values["stage.retained_rouge"] = float(np.mean(kept_r)) if kept_r else float("nan")
        values["stage.retained_prob"] = float(np.mean(kept_p)) if kept_p else float("nan")
        return MetricOutput(values, per)


__all__ = ["StageSkills", "qa_item_scores"]

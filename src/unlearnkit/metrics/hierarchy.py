"""Hierarchy-aware forgetting and the reconstruction attack (LLM track, metric ``hierarchy``; MedForget, Wu et al.
2025, arXiv:2512.09867, §4 metrics per level and §5.3 reconstruction attack).

On a hierarchical-records task (:mod:`unlearnkit.data.text.medforget`; one evaluation point per forget level), per
item group around the forget targets — ``forget`` (D_f: the targets' subtrees), ``target`` (the targets' own items),
``descendants``, ``siblings`` (same-level nodes under the same parents), ``ancestors`` (the path to the root),
``others`` — the mean answer probability and ROUGE-L recall of greedy answers, on the training wording and on the
rephrased test wording. Forgetting shows as low ``forget`` numbers (compare θ_r's); over-forgetting as low
``siblings`` / ``ancestors`` numbers.

**Reconstruction attack**: every D_f question is asked again with the hierarchy's context prepended, one more level
at a time from the root (depth d = the first d ancestor sentences: the hospital, the patient, the study). A
forgetting that only suppressed the exact question is undone when the answer comes back with context:
``med.attack_gain`` = the best context depth's ROUGE-L (max over d ≥ 1 of the mean over D_f) − ROUGE-L without context
(> θ_r's = the forgotten content is reconstructible; θ_r never saw it, so its gain is what context alone explains).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unlearnkit.errors import DataError
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.metrics.stages import qa_item_scores
from unlearnkit.registry import METRICS

GROUPS: tuple[str, ...] = ("target", "descendants", "siblings", "ancestors", "others")


def context_prompt(item: Any, depth: int) -> str:
    """``item``'s question with its first ``depth`` ancestor-context sentences before it (depth 0 = the question)."""
    ctx = list(getattr(item, "context", ()) or ())[:depth]
    return " ".join([*ctx, item.question])


@METRICS.register("hierarchy")
class HierarchyMetric(Metric):
    """Per item group of a hierarchical target (D_f, the targets, descendants, siblings, ancestors, others): answer
    probability and ROUGE-L on original and rephrased questions; the reconstruction attack with hierarchy context
    (MedForget, arXiv:2512.09867)."""

    track = "llm"
    reads = frozenset({"logits", "generations"})
    source = ("Wu, Patil, Yoon, Zhang, Bansal 2025, 'MedForget: Hierarchy-Aware Multimodal Unlearning Testbed for "
              "Medical AI', arXiv:2512.09867 (per-level forget / retain sets with rephrased items; reconstruction "
              "attack adding hierarchy context)")
    keys = {
        "med.forget.prob": "mean P(answer) on D_f (the targets' subtrees; lower = forgotten, compare θ_r)",
        "med.forget.rouge": "mean ROUGE-L recall of greedy answers on D_f",
        "med.forget.rouge_rephrased": "the same on the rephrased D_f questions",
        "med.<group>.prob": "mean P(answer) on group target / descendants / siblings / ancestors / others",
        "med.<group>.rouge": "mean ROUGE-L recall on the group (siblings / ancestors / others: higher = retained)",
        "med.<group>.rouge_rephrased": "the same on the rephrased questions",
        "med.attack.d<k>.rouge": "ROUGE-L recall on D_f with the first k levels of hierarchy context in the prompt",
        "med.attack.d<k>.prob": "mean P(answer) on D_f with k levels of context",
        "med.attack_gain": "max over context depths d ≥ 1 of D_f ROUGE-L − ROUGE-L without context (> θ_r's = "
                           "forgotten content reconstructible)",
        "med.attack_gain_prob": "the same for P(answer)",
    }
    conformance = {"llm": {"data": {"source": "medforget", "medforget": {
        "institutions": 2, "patients": 2, "studies": 2, "forget_levels": ["section"], "targets": 2}}},
        "metrics": ["hierarchy"]}

    def compute(self, ctx: Any) -> MetricOutput:
        task = ctx.task
        info = (getattr(task, "extras", None) or {}).get("hierarchy")
        if info is None:
            raise DataError("metric 'hierarchy' needs a hierarchical-records task (llm.data.source: medforget)")
        values: dict[str, float] = {}
        per: dict[str, np.ndarray] = {}
        names = [("forget", "forget")] + [(g, f"h.{g}") for g in GROUPS if f"h.{g}" in task.eval_sets]
        for g, split in names:
            qs = ctx.eval_set(split)
            sc = qa_item_scores(ctx, qs.pairs(), (split,))
            reph = ctx.eval_set(f"{split}.rephrased")
            sr = qa_item_scores(ctx, reph.pairs(), (f"{split}.rephrased",))
            values[f"med.{g}.prob"] = float(sc["prob"].mean())
            values[f"med.{g}.rouge"] = float(sc["rouge"].mean())
            values[f"med.{g}.rouge_rephrased"] = float(sr["rouge"].mean())
            per[f"{g}.rouge"] = sc["rouge"]
        forget = ctx.eval_set("forget")
        depth = int(info.get("context_depth", 3))
        attack_r, attack_p = [], []
        for d in range(depth + 1):
            pairs = [(context_prompt(it, d), it.answer) for it in forget]
            sc = qa_item_scores(ctx, pairs, ("forget",) if d == 0 else ("attack", d))  # d = 0: the forget split
            values[f"med.attack.d{d}.rouge"] = float(sc["rouge"].mean())
            values[f"med.attack.d{d}.prob"] = float(sc["prob"].mean())
            per[f"attack.d{d}.rouge"] = sc["rouge"]
            attack_r.append(sc["rouge"])
            attack_p.append(sc["prob"])
        # the attacker's best fixed context depth: max over d ≥ 1 of the mean, minus the bare question's mean
        values["med.attack_gain"] = float(max((r.mean() for r in attack_r[1:]), default=attack_r[0].mean())
                                          - attack_r[0].mean())
        values["med.attack_gain_prob"] = float(max((p.mean() for p in attack_p[1:]), default=attack_p[0].mean())
                                               - attack_p[0].mean())
        return MetricOutput(values, per)


__all__ = ["GROUPS", "HierarchyMetric", "context_prompt"]

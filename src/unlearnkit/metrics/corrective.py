"""Corrective-unlearning metrics: clean accuracy, attack success rate / confusion rate, corrupted-domain accuracy.

Goel et al., "Corrective Machine Unlearning", TMLR 2024, arXiv:2402.14015. The manipulation (poison trigger or
interclass confusion, :mod:`unlearnkit.data.corrective`) defines the test sets; the metric reads it from
``ctx.references["corrective_manipulation"]`` (the runner puts it there for scenario kind: corrective).
"""

from __future__ import annotations

from unlearnkit.data.corrective import MANIPULATION_KEY
from unlearnkit.errors import ConfigError
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS


@METRICS.register("corrective")
class Corrective(Metric):
    """Effect of a training-set manipulation on the evaluated model (all in %).

    ``clean_acc``: accuracy on clean test data (confusion: on the classes outside the confused pair; higher is
    better). ``corrupted_acc``: accuracy on the corrupted domain against true labels — triggered test inputs
    (poison) or the two confused classes (confusion); higher = the manipulation's effect is removed.
    ``attack_success_rate`` (poison): triggered non-target test samples predicted as the target; lower is better.
    ``confusion_rate`` (confusion): test samples of the pair predicted as the other class; lower is better.

    Raises:
        ConfigError: ``references["corrective_manipulation"]`` is missing (only corrective scenarios have it).
    """

    keys = {"clean_acc": "clean test accuracy, % (confusion: classes outside the pair)",
            "corrupted_acc": "accuracy on the corrupted domain (triggered test inputs / the confused classes), %",
            "attack_success_rate": "poison: % of triggered non-target test samples predicted as the target",
            "confusion_rate": "confusion: % of the pair's test samples predicted as the other class"}
    source = "Goel et al., TMLR 2024, arXiv:2402.14015"

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearnkit.data.corrective import Manipulation, corrective_values

        manip = ctx.references.get(MANIPULATION_KEY)
        if not isinstance(manip, Manipulation):
            raise ConfigError(f"metric 'corrective' needs the manipulation in references['{MANIPULATION_KEY}'] "
                              "(a unlearnkit.data.corrective.Manipulation); use it with scenario kind: corrective")
        return MetricOutput(corrective_values(manip, lambda s: ctx.engine.predict(ctx.model, s)))

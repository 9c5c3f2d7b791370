"""Backdoor detection by exposure (Expose Before You Defend): does the evaluated model still carry the planted backdoor?

The metric runs Clean Unlearning's exposure (:func:`unlearnkit.methods.classifier.clean_unlearning.expose`) on a copy
of the evaluated model with clean held-out data, and checks whether the exposed model collapses onto the label the
corrective scenario planted (``references["corrective_manipulation"].target``). A backdoored θ_o collapses onto it;
a model whose backdoor was removed collapses, if at all, onto an arbitrary label.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.corrective import MANIPULATION_KEY
from unlearnkit.errors import ConfigError
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS


class BackdoorDetectionConfig(Frozen):
    """Exposure settings (Clean Unlearning's reference values) and the size of the clean defense sample."""

    defense_size: int = Field(200, ge=10, description="clean test samples the exposure unlearns")
    lr: float = Field(0.01, gt=0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    clean_threshold: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, description="seed of the defense sample and of the exposure")


@METRICS.register("backdoor_detection", config=BackdoorDetectionConfig)
class BackdoorDetection(Metric):
    """Exposure-based backdoor detection on the evaluated model (corrective poison scenarios).

    Raises:
        ConfigError: the scenario is not a corrective poison scenario (no planted target to detect).
    """

    keys: ClassVar[dict[str, str]] = {
        "backdoor_exposure_share": "% of clean defense samples the exposed model assigns to the planted target "
                                   "label; high = the backdoor is still there (θ_o), lower is better after removal",
        "backdoor_detected": "100 if the exposed model's most predicted label is the planted target, else 0 (per "
                             "row; the mean over seeds is the detection rate)",
    }
    source = "Li et al., Expose Before You Defend, arXiv:2410.19427 (clean unlearning as backdoor exposure)"
    conformance: ClassVar[dict[str, Any]] = {
        "scenario": {"kind": "corrective", "manipulation": "poison", "fraction": 0.1, "target": 0,
                     "trigger_size": 1, "identified_fractions": [1.0]},
        "metrics": ["accuracy"]}
    smoke_params: ClassVar[dict[str, Any]] = {"defense_size": 40, "epochs": 2}

    def __init__(self, config: BackdoorDetectionConfig | None = None) -> None:
        self.config = config or BackdoorDetectionConfig()

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearnkit.data.corrective import Manipulation
        from unlearnkit.methods.classifier.clean_unlearning import expose

        manip = ctx.references.get(MANIPULATION_KEY)
        if not isinstance(manip, Manipulation) or manip.kind != "poison":
            raise ConfigError("metric 'backdoor_detection' needs a planted backdoor: use it with scenario kind: "
                              "corrective, manipulation: poison")
        c = self.config
        clean = manip.clean_test
        rng = np.random.default_rng(c.seed)
        defense = clean.take(np.sort(rng.choice(len(clean), size=min(c.defense_size, len(clean)), replace=False)),
                             "defense")
        ex = expose(ctx.model, defense, ctx.engine, lr=c.lr, epochs=c.epochs, clean_threshold=c.clean_threshold,
                    batch_size=c.batch_size, seed=c.seed)
        target = int(manip.target)
        return MetricOutput({"backdoor_exposure_share": 100.0 * float(ex.histogram[target]),
                             "backdoor_detected": 100.0 if ex.label == target else 0.0},
                            {"backdoor_histogram": np.asarray(ex.histogram, dtype=np.float64)})

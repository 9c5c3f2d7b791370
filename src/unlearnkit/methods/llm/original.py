"""The "target" row: θ_o evaluated as if it were an unlearned model (no unlearning at all).

TOFU and MUSE tables list the fine-tuned target model next to the retain model and the methods: its forget quality
is the floor every method must rise from (KS p-value of θ_o's forget-set truth ratios against θ_r's), its MIA AUC the
leak to remove. Registered as the LLM method ``original``: no parameters, returns the model unchanged, 0 steps.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.methods.base import Unlearner, UnlearnResult
from unlearnkit.registry import METHODS


class OriginalConfig(Frozen):
    """No parameters."""


@METHODS.register("original", config=OriginalConfig)
class Original(Unlearner):
    """Identity "unlearner": the result row of θ_o itself (the before-unlearning reference)."""

    kind = "approximate"
    track = "llm"
    needs_retain = False
    needs_labels = False
    source = "the target / fine-tuned model row of TOFU (arXiv:2401.06121) and MUSE (arXiv:2407.06460) tables"
    intent = "none"  # the θ_o reference row unlearns nothing
    #: unlearnkit tune: θ_o itself: nothing to tune
    search_space = {}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> UnlearnResult:
        return UnlearnResult(model, steps=0, notes={"unlearned": False})

"""Retrain from scratch on the retain set: the exact-unlearning oracle (gold standard) θ_r."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.models import reinitialize
from unlearnkit.registry import METHODS


class RetrainConfig(Frozen):
    """Retrain settings. ``recipe`` None = the recipe θ_o was trained with (the standard oracle)."""

    recipe: TrainConfig | None = Field(None, description="training recipe; None = the original model's recipe")


@METHODS.register("retrain", config=RetrainConfig)
class Retrain(Unlearner):
    """Train a freshly initialised model on D_r only (exact unlearning; the oracle θ_r).

    The initialisation seed is ``context.init_seed`` or ``derive_seed(seed, "oracle-init")`` — never θ_o's seed, so
    the oracle does not share θ_o's random init (sharing it would leak D_f-independent but θ_o-specific structure and
    understate the gap of approximate methods). The forget set is never read: the returned ``seen_ids`` are exactly
    the retain ids, which the runner checks against D_f.

    Source: the standard baseline of every unlearning benchmark (e.g. Jia et al., NeurIPS 2023, arXiv:2304.04934 §5;
    Bourtoule et al., S&P 2021, arXiv:1912.03817 §II).
    """

    kind = "exact"
    needs_retain = True
    source = "retrain-from-scratch oracle"
    #: unlearnkit tune: exact: nothing to tune (the output is a retrain)
    search_space = {}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        recipe = self.config.recipe or context.train_recipe
        if recipe is None:
            recipe = TrainConfig()
        init_seed = context.init_seed if context.init_seed is not None else derive_seed(context.seed, "oracle-init")
        if context.model_factory is not None:
            model = context.model_factory(init_seed)
        else:
            reinitialize(model, init_seed)
        fit = engine.fit(model, retain, recipe, seed=derive_seed(context.seed, "oracle-order"), desc="retrain")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"init_seed": init_seed, "train_seconds": fit.seconds, "samples": fit.samples})

"""Retrain a generator from scratch on D_r: the exact-unlearning oracle θ_r of the generative track."""

from __future__ import annotations

from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.generative._common import GenerativeUnlearner
from unlearnkit.models.generative import GenTrainConfig, train_generative
from unlearnkit.registry import METHODS


class GenRetrainConfig(Frozen):
    """Retrain settings. ``recipe`` None = the recipe θ_o was trained with (the standard oracle)."""

    recipe: GenTrainConfig | None = Field(None, description="generator recipe; None = the original model's")


@METHODS.register("gen_retrain", config=GenRetrainConfig)
class GenRetrain(GenerativeUnlearner):
    """Train a freshly initialised generator of the same architecture on D_r only (the oracle θ_r).

    Initialisation seed ``context.init_seed`` (never θ_o's); data order and noise seeded by
    ``derive_seed(seed, "oracle-order")``. D_f is never read: ``seen_ids`` are exactly D_r's ids. Source: the
    retrain-from-scratch gold standard of unlearning (Bourtoule et al., SISA, IEEE S&P 2021, arXiv:1912.03817 §II),
    the reference every generative-unlearning paper compares with (e.g. Fan et al., SalUn, ICLR 2024 §5).
    """

    kind = "exact"
    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {}  # exact: nothing to tune
    source = "retrain from scratch on D_r (Bourtoule et al., arXiv:1912.03817; SalUn arXiv:2310.12508 §5)"
    smoke_params = {"recipe": {"epochs": 1, "batch_size": 64}}

    def _unlearn(self, model, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        recipe = self.config.recipe or context.train_recipe
        if not isinstance(recipe, GenTrainConfig):
            recipe = GenTrainConfig()
        if context.model_factory is None:
            raise MethodError("gen_retrain needs context.model_factory (a fresh generator of the same task)")
        init_seed = context.init_seed if context.init_seed is not None else derive_seed(context.seed, "oracle-init")
        fresh = context.model_factory(init_seed)
        fit = train_generative(fresh, retain, recipe, engine, seed=derive_seed(context.seed, "oracle-order"),
                               desc="retrain")
        return UnlearnResult(fresh, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"init_seed": init_seed, "train_seconds": fit.seconds,
                                    "final_loss": fit.losses[-1] if fit.losses else None})

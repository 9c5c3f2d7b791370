"""Retrain a recommender from scratch on D_r: the exact-unlearning oracle θ_r of the recsys track."""

from __future__ import annotations

from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.recsys import Interactions
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.recsys._common import RecsysUnlearner
from unlearnkit.models.recsys import RecTrainConfig, Recommender, train_bpr
from unlearnkit.registry import METHODS


class RecRetrainConfig(Frozen):
    """Retrain settings. ``recipe`` None = the recipe θ_o was trained with (the standard oracle)."""

    recipe: RecTrainConfig | None = Field(None, description="BPR recipe; None = the original model's recipe")


@METHODS.register("rec_retrain", config=RecRetrainConfig)
class RecRetrain(RecsysUnlearner):
    """Train a freshly initialised recommender with BPR on D_r only (the gold model / oracle θ_r).

    The initialisation seed is ``context.init_seed`` (never θ_o's) and the visiting order is seeded by
    ``derive_seed(seed, "oracle-order")``. Graph models propagate over D_r only (``set_graph``). Negatives exclude
    the user's D_r items only — excluding D_f items too would make the oracle depend on D_f. D_f is never read:
    ``seen_ids`` are exactly the D_r ids.

    Source: the "Retrain"/"Gold" baseline of recommendation unlearning (Chen et al., RecEraser, WWW 2022,
    arXiv:2201.06820 §4.1; Sinha et al., MMRecUn, arXiv:2405.15328 §4).
    """

    kind = "exact"
    needs_retain = True
    source = "retrain-from-scratch oracle (RecEraser arXiv:2201.06820; MMRecUn arXiv:2405.15328 'Gold')"
    #: unlearnkit tune: exact: nothing to tune
    search_space = {}
    smoke_params = {"recipe": {"epochs": 2, "batch_size": 256, "lr": 0.01}}

    def _unlearn(self, model: Recommender, forget: Interactions, retain: Interactions, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        recipe = self.config.recipe or context.train_recipe
        if not isinstance(recipe, RecTrainConfig):
            recipe = RecTrainConfig()
        init_seed = context.init_seed if context.init_seed is not None else derive_seed(context.seed, "oracle-init")
        if context.model_factory is None:
            raise MethodError("rec_retrain needs context.model_factory (a fresh recommender of the same task)")
        fresh = context.model_factory(init_seed)
        fresh.set_graph(retain.ids)
        fit = train_bpr(fresh, retain, recipe, engine, seed=derive_seed(context.seed, "oracle-order"), desc="retrain")
        return UnlearnResult(fresh, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"init_seed": init_seed, "train_seconds": fit.seconds, "final_loss": fit.losses[-1]})

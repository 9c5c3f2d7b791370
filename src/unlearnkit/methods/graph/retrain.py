"""Retrain from scratch on the retain graph: the exact graph oracle θ_r, as a method."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult
from unlearnkit.methods.graph._common import GraphTrainConfig, GraphUnlearner, fit_graph
from unlearnkit.registry import METHODS


class GraphRetrainConfig(Frozen):
    """Retraining settings; ``recipe`` None = θ_o's recipe (the runner's ``train_recipe``)."""

    recipe: GraphTrainConfig | None = Field(None, description="training recipe; None = the original's")


@METHODS.register("graph_retrain", config=GraphRetrainConfig)
class GraphRetrain(GraphUnlearner):
    """Exact unlearning by retraining: a fresh initialisation (``context.init_seed``) trained on D_r only.

    D_r is the retain graph of :meth:`GraphTask.view` ("retain"): deleted edges absent in both directions, deleted
    nodes isolated with zero features and no label, deleted feature rows zeroed. The result is distributed as the
    oracle θ_r (the runner's ``retrain`` row is this procedure with the track's oracle recipe).
    """

    kind: ClassVar[str] = "exact"
    source: ClassVar[str] = "exact retraining on the retain graph (the gold standard of every graph unlearning paper)"
    #: unlearnkit tune: exact: nothing to tune
    search_space: ClassVar[dict[str, Any]] = {}
    smoke_params: ClassVar[dict[str, Any]] = {"recipe": {"epochs": 5}}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        recipe = self.config.recipe or context.train_recipe
        if not isinstance(recipe, GraphTrainConfig):
            raise MethodError("graph_retrain needs a graph training recipe (the graph track passes θ_o's)")
        if context.model_factory is None:
            raise MethodError("graph_retrain needs a model factory to build a fresh initialisation")
        fresh = context.model_factory(context.init_seed if context.init_seed is not None else context.seed)
        seconds = fit_graph(fresh, task, "retain", recipe, seed=context.seed, desc="graph_retrain")
        return UnlearnResult(fresh, steps=recipe.epochs, notes={"train_seconds": seconds},
                             seen_ids=task.view("retain").ids)

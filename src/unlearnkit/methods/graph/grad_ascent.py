"""Gradient ascent on D_f's loss (the GNNDelete paper's GA baseline)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult
from unlearnkit.methods.graph._common import (GraphUnlearner, check_loss, element_loss, forget_elements,
                                              link_elems)
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class GraphGradAscentConfig(Frozen):
    """Full-batch gradient ascent (Adam). lr 1e-3 is GNNDelete's unlearning learning rate; the number of steps is
    not fixed by the paper (its script reuses the deletion epochs): 50 full-batch steps here."""

    epochs: int = Field(50, ge=1, description="full-batch ascent steps")
    lr: float = Field(1e-3, gt=0)


@METHODS.register("graph_grad_ascent", config=GraphGradAscentConfig)
class GraphGradAscent(GraphUnlearner):
    """θ ← θ + η ∇_θ L(D_f): maximise the training loss of D_f's elements, computed on the original graph.

    D_f's elements (:func:`forget_elements`): link task — D_f's edges as positives (binary cross-entropy of z_u·z_v);
    node task — the deleted nodes / feature nodes, or for edge deletion the labelled endpoints of the deleted edges
    (cross-entropy). Unbounded ascent: utility collapses with too many steps (the failure GNNDelete reports for GA,
    Cheng et al., ICLR 2023, arXiv:2302.13406, Table 2).
    """

    source: ClassVar[str] = "gradient ascent baseline of GNNDelete (Cheng et al., ICLR 2023, arXiv:2302.13406)"
    #: unlearnkit tune: lr and steps
    search_space: ClassVar[dict[str, Any]] = {"lr": LogFloat(1e-5, 0.1), "epochs": Int(1, 200, log=True)}
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 3}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        elems = forget_elements(task)
        if len(elems) == 0:
            raise MethodError("graph_grad_ascent: D_f touches no training element (e.g. deleted edges between "
                              "unlabelled nodes in the node task); nothing to ascend on")
        v = task.view("original")
        if task.task == "link":
            elems = link_elems(elems)
        opt = torch.optim.Adam(model.parameters(), lr=self.config.lr)
        model.train()
        for step in range(self.config.epochs):
            opt.zero_grad()
            loss = -element_loss(model, model(v.x, v.edge_index), task, elems)
            check_loss(loss, step, "graph_grad_ascent")
            loss.backward()
            opt.step()
        model.eval()
        return UnlearnResult(model, steps=self.config.epochs)

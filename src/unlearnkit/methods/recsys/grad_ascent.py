"""Gradient ascent on the BPR loss of D_f (the NegGrad baseline of recommendation unlearning)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.recsys import Interactions
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.recsys._common import (
    RecsysUnlearner,
    TripleStream,
    _lr,
    all_interactions,
    descend,
    on_retain_graph,
)
from unlearnkit.models.recsys import RecTrainConfig, Recommender, make_rec_optimizer
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class RecGradAscentConfig(Frozen):
    """Gradient-ascent settings: ``epochs`` passes over D_f in batches of ``batch_size`` triples."""

    epochs: int = Field(10, ge=1, description="passes over D_f")
    batch_size: int = Field(256, ge=1, description="forget triples per step")
    optimizer: Literal["adam", "sgd", "adagrad"] = "adam"
    lr: float | None = Field(None, gt=0, description="learning rate; None = the lr θ_o was trained with")


@METHODS.register("rec_grad_ascent", config=RecGradAscentConfig)
class RecGradAscent(RecsysUnlearner):
    """Maximise the BPR loss of D_f: minimise  −mean_{(u,i)∈D_f} −ln σ(ŷ_ui − ŷ_uj)  by gradient steps.

    No retain term: the unbounded objective keeps pushing ŷ_ui below ŷ_uj with a gradient that does not vanish
    (σ' → 1), which is why it over-forgets and harms D_r — the contrast that motivates bounded objectives such as
    reverse BPR. Negatives j avoid every item of the user in D; graph models first drop D_f from their graph.

    Source: "NegGrad"/gradient ascent baseline (Golatkar et al., CVPR 2020, arXiv:1911.04933; used for recommenders
    in e.g. Sinha et al., MMRecUn, arXiv:2405.15328 §4).
    """

    kind = "approximate"
    needs_retain = False
    source = "gradient ascent / NegGrad (arXiv:1911.04933), recsys baseline in arXiv:2405.15328"
    #: unlearnkit tune: lr and epochs
    search_space = {"lr": LogFloat(1e-5, 0.1), "epochs": Int(1, 20)}
    smoke_params = {"epochs": 1}

    def _unlearn(self, model: Recommender, forget: Interactions, retain: Interactions, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        dev = on_retain_graph(model, retain, engine)
        rng = np.random.default_rng(derive_seed(context.seed, "rec_grad_ascent"))
        fs = TripleStream(forget, all_interactions(forget, retain) if len(retain) else forget, rng)
        opt = make_rec_optimizer(model.parameters(), RecTrainConfig(optimizer=c.optimizer, lr=_lr(c.lr, context)))
        steps = c.epochs * math.ceil(len(forget) / c.batch_size)

        def batch_loss() -> tuple[torch.Tensor, list[np.ndarray]]:
            u, i, j, ids = fs.next(min(c.batch_size, len(forget)), dev)
            s_pos, s_neg = model.bpr_terms(u, i, j)[:2]
            return -F.softplus(s_neg - s_pos).mean(), [ids]

        seen, last = descend(model, engine, opt, steps, "rec_grad_ascent", batch_loss)
        return UnlearnResult(model, steps=steps, seen_ids=seen, notes={"final_loss": last})

"""Reverse BPR (MMRecUn; Sinha, Mandal & Kankanhalli 2024, arXiv:2405.15328)."""

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


class ReverseBPRConfig(Frozen):
    """Reverse-BPR settings. One epoch = one pass over D_f; each step pairs ``batch_size`` forget triples with
    ``retain_batch_size`` retain triples. λ_f, λ_r weight the reverse and forward terms."""

    epochs: int = Field(30, ge=1, description="passes over D_f")
    batch_size: int = Field(256, ge=1, description="forget triples per step")
    retain_batch_size: int = Field(1024, ge=1, description="retain triples per step (0 steps of D_r if weight 0)")
    optimizer: Literal["adam", "sgd", "adagrad"] = Field(
        "sgd", description="sgd (default): steps shrink as the bounded reverse term saturates; adam normalises them "
        "away and over-forgets")
    lr: float | None = Field(1.0, gt=0, description="learning rate on the batch-mean loss; None = θ_o's lr")
    forget_weight: float = Field(1.0, ge=0, description="λ_f: weight of the reverse BPR term on D_f")
    retain_weight: float = Field(1.0, ge=0, description="λ_r: weight of the forward BPR term on D_r")
    reg: float = Field(1e-4, ge=0, description="L2 coefficient on the batch's layer-0 embeddings (as in training)")


@METHODS.register("reverse_bpr", config=ReverseBPRConfig)
class ReverseBPR(RecsysUnlearner):
    """MMRecUn's reverse + forward BPR fine-tuning of θ_o.

    Update rule, per step (Sinha et al. 2024, arXiv:2405.15328 §3): with triples (u, i, j) — i an interacted item,
    j an unobserved one —

        L = λ_f · mean_{(u,i)∈D_f} −ln σ(ŷ_uj − ŷ_ui)  +  λ_r · mean_{(u,i)∈D_r} −ln σ(ŷ_ui − ŷ_uj)  +  reg · L2

    The reverse term swaps the roles of positive and negative: it asks the model to rank a forgotten interaction
    *below* a random unobserved item, and it is bounded below (→ 0 once it is), unlike gradient ascent on BPR
    (``rec_grad_ascent``), whose objective −(−ln σ(ŷ_ui − ŷ_uj)) is unbounded. The forward term on D_r keeps the
    retained preferences. Negatives of forget triples avoid every item of the user in D; negatives of retain
    triples avoid the user's D_r items (as the oracle's do). Graph models first drop D_f from their propagation graph.

    The paper's reference code was not released at the time of writing and its §3 hyper-parameters could not be
    read offline here; λ_f = λ_r = 1, plain SGD at lr 1.0 on the batch-mean loss and 30 passes over D_f are this
    implementation's defaults, chosen on the synthetic benchmark (``benchmarks/recsys.py``). With Adam (at θ_o's
    lr) the per-coordinate normalisation keeps taking full-size steps after the reverse term has saturated, pushing
    D_f far below random items and, through the shared item embeddings, costing 10–25 % of test NDCG; SGD's steps
    shrink with the saturating gradient, which is the point of a bounded objective.
    """

    kind = "approximate"
    needs_retain = True
    source = "Sinha, Mandal & Kankanhalli, MMRecUn, arXiv:2405.15328 (reverse + forward BPR)"
    #: unlearnkit tune: lr (MMRecUn: SGD 1.0), epochs and the forget weight λ_f
    search_space = {"lr": LogFloat(1e-2, 10.0), "epochs": Int(1, 50), "forget_weight": LogFloat(0.1, 10.0)}
    smoke_params = {"epochs": 1}

    def _unlearn(self, model: Recommender, forget: Interactions, retain: Interactions, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        dev = on_retain_graph(model, retain, engine)
        rng = np.random.default_rng(derive_seed(context.seed, "reverse_bpr"))
        full = all_interactions(forget, retain)
        fs = TripleStream(forget, full, rng)
        rs = TripleStream(retain, retain, rng) if c.retain_weight > 0 else None
        opt = make_rec_optimizer(model.parameters(), RecTrainConfig(optimizer=c.optimizer, lr=_lr(c.lr, context)))
        steps = c.epochs * math.ceil(len(forget) / c.batch_size)

        def batch_loss() -> tuple[torch.Tensor, list[np.ndarray]]:
            u, i, j, ids = fs.next(min(c.batch_size, len(forget)), dev)
            s_pos, s_neg, reg = model.bpr_terms(u, i, j)
            loss = c.forget_weight * F.softplus(s_pos - s_neg).mean() + c.reg * reg
            used = [ids]
            if rs is not None:
                u, i, j, ids = rs.next(c.retain_batch_size, dev)
                s_pos, s_neg, reg = model.bpr_terms(u, i, j)
                loss = loss + c.retain_weight * F.softplus(s_neg - s_pos).mean() + c.reg * reg
                used.append(ids)
            return loss, used

        seen, last = descend(model, engine, opt, steps, "reverse_bpr", batch_loss)
        return UnlearnResult(model, steps=steps, seen_ids=seen,
                             notes={"final_loss": last, "graph_edges": int(model.edge_mask.sum())})

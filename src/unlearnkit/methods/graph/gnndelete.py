"""GNNDelete (Cheng, Dasoulas, He, Agarwal, Zitnik; ICLR 2023, arXiv:2302.13406)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.graph._common import GraphUnlearner, check_loss, sample_negatives
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


class GNNDeleteConfig(Frozen):
    """GNNDelete settings (reference code mims-harvard/GNNDelete: Adam lr 1e-3, weight decay 5e-4, ``alpha`` 0.5,
    ``loss_fct`` mse_mean; its ``run_delete.sh`` trains 1,500 epochs)."""

    epochs: int = Field(1500, ge=1, description="full-batch steps of the deletion operators")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    alpha: float = Field(0.5, ge=0, le=1, description="λ: weight of deleted-edge consistency vs neighbourhood "
                                                      "influence, loss = λ·L_DEC + (1−λ)·L_NI")
    loss: Literal["mse", "cosine"] = Field("mse", description="distance of both terms (reference: mse_mean)")


@METHODS.register("gnndelete", config=GNNDeleteConfig)
class GNNDelete(GraphUnlearner):
    """GNNDelete: layer-wise deletion operators trained with deleted-edge consistency and neighbourhood influence.

    θ_o's weights are frozen; each layer l gets an operator DEL^l(h) = h W_D^l applied only to the nodes of the
    l-hop enclosing subgraph S^l of the deleted elements (identity elsewhere; :class:`~unlearnkit.models.graph.
    DeletionOperator`), and the model runs on the retain graph. Only W_D^l is trained, on

    - **deleted-edge consistency** (paper Eq. 5): L_DEC^l = d([h_u^l; h_v^l], [h_p^l; h_q^l]) for deleted edges
      (u, v) and random node pairs (p, q), with h_p, h_q from θ_o — deleted edges should look like random pairs;
      for node / feature deletion, the deleted nodes' representations against random nodes';
    - **neighbourhood influence** (Eq. 6): L_NI^l = d(h^l[S^l \\ A], h_o^l[S^l \\ A]) — the other nodes of the
      enclosing subgraph keep θ_o's representations (h_o computed by θ_o on the retain graph, as the reference's
      ``get_original_embeddings`` on D_r), A = the deleted edges' endpoints / the deleted nodes;

    loss = α Σ_l L_DEC^l + (1 − α) Σ_l L_NI^l (the reference's ``both_all`` loss type), d = mean squared error.

    Because operators act only inside S^l and message passing on the retain graph is unchanged outside the l-hop
    neighbourhood of the deletion, **representations of nodes farther than L hops from the deleted elements are
    exactly θ_o's** (the paper's locality property; tested).

    Implementation notes: all operations are sparse or index-based (node masks as index vectors, random pairs by
    rejection sampling) and run on CPU. The reference code is CUDA-only (``model.to('cuda')`` in its trainer) and
    builds dense n×n node-pair masks (``sdf1_all_pair_mask``), O(n²) memory. The reference initialises W_D to
    ``ones/1000``; we initialise to the identity so the untrained operator is a no-op.
    """

    #: θ_u is θ_o with GNNDelete's deletion operators added (its state dict has extra keys)
    changes_architecture: ClassVar[bool] = True

    source: ClassVar[str] = "Cheng et al., GNNDelete, ICLR 2023, arXiv:2302.13406; code mims-harvard/GNNDelete"
    #: unlearnkit tune: lr, steps and λ
    search_space: ClassVar[dict[str, Any]] = {
        "lr": LogFloat(1e-4, 1e-2),
        "epochs": Int(10, 1500, log=True),
        "alpha": Float(0.0, 1.0),
    }
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 5}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        if not hasattr(model, "add_deletion_operators"):
            raise MethodError("gnndelete needs a unlearnkit GNN (models.graph.GNN) to insert deletion operators")
        if model.deletion is not None:
            raise MethodError("gnndelete: the model already carries deletion operators; start from θ_o")
        cfg = self.config
        n = task.data.num_nodes
        v = task.view("retain")
        model.eval()
        with torch.no_grad():
            _, h_orig = model(v.x, v.edge_index, return_hidden=True)
        anchors = torch.from_numpy(task.anchor_nodes)
        masks, local = [], []
        for hops in model.hops:  # receptive field of each layer's output
            nodes = task.khop_nodes(int(hops), "original")
            m = torch.zeros(n, dtype=torch.bool)
            m[torch.from_numpy(nodes)] = True
            masks.append(m)
            loc = m.clone()
            loc[anchors] = False
            local.append(loc.nonzero().view(-1))
        model.add_deletion_operators(masks)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.deletion.parameters():
            p.requires_grad_(True)
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "gnndelete-pairs"))
        if task.target == "edge":
            e = torch.from_numpy(task.data.edges[task.forget]).t()
            deleted = torch.cat([e[0], e[1]])
            neg = sample_negatives(task, "retain", e.shape[1], gen)
            rand = torch.cat([neg[0], neg[1]])
        else:
            deleted = torch.from_numpy(task.forget)
            alive = torch.from_numpy(np.flatnonzero(v.alive))
            rand = alive[torch.randint(len(alive), (len(deleted),), generator=gen)]
        dist = _mse if cfg.loss == "mse" else _cosine
        opt = torch.optim.Adam(model.deletion.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        last = {}
        for step in range(cfg.epochs):
            opt.zero_grad()
            _, hs = model(v.x, v.edge_index, return_hidden=True)
            l_dec = sum(dist(h[deleted], ho[rand]) for h, ho in zip(hs, h_orig))
            l_ni = sum(dist(h[idx], ho[idx]) for h, ho, idx in zip(hs, h_orig, local) if idx.numel())
            loss = cfg.alpha * l_dec + (1 - cfg.alpha) * l_ni
            check_loss(loss, step, "gnndelete")
            loss.backward()
            opt.step()
            last = {"loss_dec": float(l_dec.detach()), "loss_ni": float(torch.as_tensor(l_ni).detach())}
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
        return UnlearnResult(model, steps=cfg.epochs,
                             notes={**last, "subgraph_nodes": [int(m.sum()) for m in masks]})


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(a, b)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (1 - nn.functional.cosine_similarity(a, b)).mean()

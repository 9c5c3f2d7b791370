"""GraphEraser (Chen, Zhang, Wang, Backes, Humbert, Zhang; ACM CCS 2022, arXiv:2103.14991)."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.graph._common import GraphTrainConfig, GraphUnlearner, fit_graph
from unlearnkit.registry import METHODS


class GraphEraserConfig(Frozen):
    """GraphEraser settings: BEKM partition (balanced embedding k-means, paper §4.2) into ``num_shards`` shards of
    at most ⌈n/S⌉(1 + ``shard_size_delta``) nodes, ``kmeans_iterations`` rounds (GNNDelete's GraphEraser baseline:
    10 shards, δ = 0.005, one k-means round); learning-based aggregation (LBAggr, §4.3) by ``aggregator_epochs`` Adam steps."""

    num_shards: int = Field(10, ge=2)
    partition: Literal["bekm", "random"] = Field("bekm", description="balanced embedding k-means or uniform random")
    shard_size_delta: float = Field(0.005, ge=0)
    kmeans_iterations: int = Field(1, ge=1, description="BEKM rounds (GNNDelete's baseline: kmeans_max_iters 1)")
    aggregator_epochs: int = Field(100, ge=1)
    aggregator_lr: float = Field(0.01, gt=0)
    recipe: GraphTrainConfig | None = Field(None, description="shard training recipe; None = θ_o's")


class ShardEnsemble(nn.Module):
    """GraphEraser's model: S shard GNNs and aggregation weights α (S,), α ≥ 0, Σα = 1.

    ``forward(x, edge_index)`` → float32 (n, C) log of the aggregated posterior log(Σ_s α_s softmax(f_s(x))).
    ``shard_of_node``: int64 numpy (n,) shard of every node (set by GraphEraser; not part of the state dict).
    """

    def __init__(self, shards: list[nn.Module], alpha: torch.Tensor) -> None:
        super().__init__()
        self.shards = nn.ModuleList(shards)
        self.register_buffer("alpha", alpha.detach().float().clone())
        self.shard_of_node: np.ndarray | None = None

    def posteriors(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """float32 (S, n, C) each shard model's softmax posteriors."""
        return torch.stack([torch.softmax(m(x, edge_index), dim=1) for m in self.shards])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, *, return_hidden: bool = False):
        p = (self.alpha.view(-1, 1, 1) * self.posteriors(x, edge_index)).sum(0)
        out = p.clamp_min(1e-12).log()
        return (out, [out]) if return_hidden else out


def balanced_kmeans(z: np.ndarray, k: int, capacity: int, iterations: int, seed: int) -> np.ndarray:
    """BEKM: int64 (n,) shard of each row of ``z`` (n, d); every shard holds at most ``capacity`` rows.

    Each round assigns (row, centroid) pairs in increasing distance, skipping full shards and assigned rows
    (Chen et al. 2022 Alg. 2), then moves centroids to their shards' means.
    """
    n = len(z)
    g = np.random.default_rng(seed)
    cent = z[g.choice(n, size=k, replace=False)]
    assign = np.zeros(n, np.int64)
    for _ in range(iterations):
        dist = (z * z).sum(1)[:, None] - 2 * z @ cent.T + (cent * cent).sum(1)[None, :]
        order = np.argsort(dist, axis=None, kind="stable")
        assign[:] = -1
        load = np.zeros(k, np.int64)
        left = n
        for flat in order:
            i, c = divmod(int(flat), k)
            if assign[i] >= 0 or load[c] >= capacity:
                continue
            assign[i] = c
            load[c] += 1
            left -= 1
            if left == 0:
                break
        cent = np.stack([z[assign == c].mean(0) if (assign == c).any() else cent[c] for c in range(k)])
    return assign


@METHODS.register("graph_eraser", config=GraphEraserConfig)
class GraphEraser(GraphUnlearner):
    """GraphEraser: exact unlearning by partitioned training (SISA for graphs).

    Preparation (before any request; timed in ``notes["prepare_seconds"]``, not in ``seconds``): the nodes are
    partitioned by balanced k-means on the SGC features Â²X (BEKM; the paper clusters GNN embeddings — we use the
    propagated features, which needs no trained model), and one GNN is trained per shard on the shard's induced
    subgraph (intra-shard edges and the shard's labelled nodes), all on D. A deletion retrains from scratch only
    the shards that held a deleted element (a node, a feature row, or an intra-shard edge) on their retained part,
    then refits the aggregation weights α (learning-based aggregation: Adam on the cross-entropy of the weighted
    posterior of the retained training nodes, α projected onto the simplex) — every component then depends on D_r
    only, given the partition. Inference runs every shard model on the retain graph.

    Caveat (as in the paper): the partition itself was computed from D, so the set of shards is not a function of
    D_r alone; the models are.
    """

    kind: ClassVar[str] = "exact"
    returns_ensemble: ClassVar[bool] = True  # a ShardEnsemble of shard models, not θ_o's architecture
    tasks: ClassVar[tuple[str, ...]] = ("node",)
    source: ClassVar[str] = "Chen et al., Graph Unlearning (GraphEraser), ACM CCS 2022, arXiv:2103.14991"
    #: unlearnkit tune: exact: nothing to tune
    search_space: ClassVar[dict[str, Any]] = {}
    smoke_params: ClassVar[dict[str, Any]] = {"num_shards": 2, "recipe": {"epochs": 5}, "aggregator_epochs": 5}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        from unlearnkit.data.graph import edge_index_of
        from unlearnkit.models.graph import sgc_features

        cfg = self.config
        recipe = cfg.recipe or context.train_recipe
        if not isinstance(recipe, GraphTrainConfig) or recipe.loss != "cross_entropy":
            raise MethodError("graph_eraser trains its shard models with a cross_entropy graph recipe; give "
                              "graph_eraser.recipe or train θ_o with graph.train.loss: cross_entropy")
        if context.model_factory is None:
            raise MethodError("graph_eraser needs a model factory for its shard models")
        d = task.data
        n, S = d.num_nodes, cfg.num_shards
        if S > len(d.train_nodes):
            raise MethodError(f"graph_eraser: {S} shards for {len(d.train_nodes)} training nodes; use fewer shards")
        t0 = time.perf_counter()
        ov = task.view("original")
        z = sgc_features(ov.x, ov.edge_index, 2).numpy().astype(np.float64)
        capacity = int(np.ceil(n / S * (1 + cfg.shard_size_delta)))
        if cfg.partition == "bekm":
            shard = balanced_kmeans(z, S, capacity, cfg.kmeans_iterations, derive_seed(context.seed, "bekm"))
        else:
            shard = np.random.default_rng(derive_seed(context.seed, "random-partition")).permutation(n) % S

        def train_shard(which: str, s: int) -> nn.Module:
            """A fresh GNN trained on shard s's induced subgraph (its nodes, intra-shard edges, labelled nodes)."""
            v = task.view(which)
            members = np.flatnonzero(shard == s)
            local = np.full(n, -1, np.int64)
            local[members] = np.arange(len(members))
            e = d.edges[v.edge_ids]
            e = e[(shard[e[:, 0]] == s) & (shard[e[:, 1]] == s)]
            nodes = v.train_nodes[shard[v.train_nodes] == s]
            m = context.model_factory(derive_seed(context.seed, f"shard-{s}-{which}"))
            if len(nodes):
                fit_graph(m, task, which, recipe, seed=derive_seed(context.seed, f"shard-fit-{s}-{which}"),
                          x=v.x[torch.from_numpy(members)], edge_index=edge_index_of(local[e]),
                          train_nodes=local[nodes], labels=d.y[torch.from_numpy(members)],
                          desc=f"graph_eraser shard {s}")
            return m.eval()

        shards = [train_shard("original", s) for s in range(S)]
        prepare = time.perf_counter() - t0
        # -- the deletion: retrain the shards that held a deleted element
        if task.target == "edge":
            e = d.edges[task.forget]
            hit = np.unique(shard[e[:, 0]][shard[e[:, 0]] == shard[e[:, 1]]])
        else:
            hit = np.unique(shard[task.forget])
        for s in hit.tolist():
            shards[s] = train_shard("retain", s)
        rv = task.view("retain")
        ens = ShardEnsemble(shards, torch.full((S,), 1.0 / S))
        alpha = fit_aggregator(ens, rv.x, rv.edge_index, rv.train_nodes, d.y, cfg.aggregator_epochs,
                               cfg.aggregator_lr)
        ens.alpha.copy_(alpha)
        ens.shard_of_node = shard.astype(np.int64)
        return UnlearnResult(ens, steps=int(len(hit)) * recipe.epochs,
                             notes={"prepare_seconds": prepare, "shards_retrained": int(len(hit)), "num_shards": S,
                                    "partition": cfg.partition,
                                    "shard_sizes": np.bincount(shard, minlength=S).tolist()},
                             seen_ids=rv.ids if len(hit) else None)


def fit_aggregator(ens: ShardEnsemble, x: torch.Tensor, edge_index: torch.Tensor, nodes: np.ndarray,
                   y: torch.Tensor, epochs: int, lr: float) -> torch.Tensor:
    """LBAggr: α = argmin CE(log Σ_s α_s p_s(v), y_v) over training nodes v + ‖α‖₂, α ≥ 0, Σα = 1 (projected)."""
    with torch.no_grad():
        idx = torch.as_tensor(nodes, dtype=torch.long)
        P = ens.posteriors(x, edge_index)[:, idx]  # (S, m, C)
    S = P.shape[0]
    a = torch.full((S,), 1.0 / S, requires_grad=True)
    opt = torch.optim.Adam([a], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        p = (a.view(-1, 1, 1) * P).sum(0).clamp_min(1e-12)
        loss = nn.functional.nll_loss(p.log(), y[idx]) + a.norm()
        loss.backward()
        opt.step()
        with torch.no_grad():
            a.clamp_(min=0)
            a.div_(a.sum().clamp_min(1e-12))
    return a.detach()

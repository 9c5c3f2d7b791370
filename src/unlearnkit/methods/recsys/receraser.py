"""RecEraser: exact recommendation unlearning by balanced sharding and attention-based aggregation
(Chen, Sun, Zhang, Ma, Li, Zhang & Ma, WWW 2022, arXiv:2201.06820)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.recsys import Interactions
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.recsys._common import RecsysUnlearner, all_interactions
from unlearnkit.models.recsys import (
    NegativeSampler,
    RecTrainConfig,
    Recommender,
    ShardedRecommender,
    bpr_epoch,
    make_rec_optimizer,
    train_bpr,
)
from unlearnkit.registry import METHODS

Factory = Callable[[int], Recommender]


class RecEraserConfig(Frozen):
    """RecEraser settings; defaults from the reference code's parser (part_num 10, part_type 1 = interaction-based,
    part_T 50, epoch_agg 50, dropout keep 0.7, attention size d/2, 1e-5 L2 on the transfers, capacity 1.2·n/K)."""

    n_shards: int = Field(10, ge=2, description="K shards (paper: 10)")
    partition: Literal["interaction", "user", "item", "random"] = Field(
        "interaction", description="InBP (paper default), UBP, item-based analogue, or random (SISA-style)")
    partition_iters: int = Field(50, ge=1, description="balanced k-means iterations T (paper: 50)")
    capacity: float = Field(1.2, ge=1.0, description="max shard size as a multiple of n/K (paper: 1.2)")
    shard_recipe: RecTrainConfig | None = Field(None, description="BPR recipe of shard models; None = θ_o's recipe")
    agg_epochs: int = Field(50, ge=1, description="aggregator training passes over the data (paper: 50)")
    agg_batch_size: int = Field(1024, ge=1)
    agg_lr: float = Field(1e-3, gt=0, description="aggregator learning rate")
    agg_optimizer: Literal["adam", "sgd", "adagrad"] = "adam"
    agg_dropout: float = Field(0.3, ge=0, lt=1, description="dropout on aggregated user embeddings (keep 0.7)")
    agg_reg: float = Field(1e-5, ge=0, description="L2 coefficient on the transfer matrices and biases")
    attention_dim: int | None = Field(None, ge=1, description="attention size; None = d/2")


# ---------------------------------------------------------------------------------------------------------------------
# balanced partition
# ---------------------------------------------------------------------------------------------------------------------
def _balanced_assign(dist: np.ndarray, cap: int) -> np.ndarray:
    """Assign each row to a column (shard) under a capacity: rounds in which every unassigned row proposes to its
    nearest non-full shard and each shard accepts its nearest proposers up to its remaining room.

    Args:
        dist: float (n, K) distances.  cap: max rows per shard (cap·K ≥ n).

    Returns:
        int64 (n,) shard of each row.
    """
    n, k = dist.shape
    assign = np.full(n, -1, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    full = np.zeros(k, dtype=bool)
    todo = np.arange(n)
    while len(todo):
        d = dist[todo].copy()
        d[:, full] = np.inf
        choice = np.argmin(d, axis=1)
        best = d[np.arange(len(todo)), choice]
        for s in np.unique(choice):
            sel = np.flatnonzero(choice == s)
            sel = sel[np.argsort(best[sel], kind="stable")]
            take = todo[sel[: max(cap - load[s], 0)]]
            assign[take] = s
            load[s] += len(take)
            if load[s] >= cap:
                full[s] = True
        todo = todo[assign[todo] < 0]
    return assign


def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, K) between rows of x (n, d) and c (K, d)."""
    return (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]


def partition_interactions(data: Interactions, kind: str, n_shards: int, *, user_emb: np.ndarray | None = None,
                           item_emb: np.ndarray | None = None, iters: int = 50, capacity: float = 1.2,
                           seed: int = 0) -> np.ndarray:
    """RecEraser's balanced data partition (arXiv:2201.06820 §3.2, Algorithms 1–2).

    - ``interaction`` (InBP): balanced k-means over interactions with distance ‖e_u − c_u‖²·‖e_i − c_i‖² to
      centroid pairs (c_u, c_i); capacity ⌈capacity·n/K⌉ interactions per shard.
    - ``user`` (UBP) / ``item``: balanced k-means over users (items) with ‖e − c‖²; capacity counts users (items);
      an interaction goes to its user's (item's) shard.
    - ``random``: a seeded permutation cut into K equal parts.

    Centroids start at K random points and move to the mean (per dimension) of their members each iteration; the
    loop stops early when the assignment no longer changes. (The reference code averages *all* coordinates into one
    scalar, ``np.mean(temp_u)``, which collapses each centroid to a constant vector; here the mean is taken per
    dimension, as the paper's Algorithm 1 states.)

    Args:
        data: the interactions to partition (D).
        user_emb, item_emb: float (n_users, d) / (n_items, d) pretrained embeddings (θ_o's), needed except for random.

    Returns:
        int64 (len(data),) shard of each interaction, aligned with ``data``.

    Raises:
        MethodError: embeddings missing for an embedding-based partition, or K > number of points.
    """
    rng = np.random.default_rng(seed)
    n = len(data)
    if kind == "random":
        perm = rng.permutation(n)
        out = np.empty(n, dtype=np.int64)
        out[perm] = np.arange(n) * n_shards // n
        return out
    if user_emb is None or item_emb is None:
        raise MethodError(f"partition '{kind}' needs pretrained user and item embeddings")
    ue = np.asarray(user_emb, dtype=np.float64)
    ie = np.asarray(item_emb, dtype=np.float64)
    if kind in ("user", "item"):
        idx = data.users if kind == "user" else data.items
        pts_ids = np.unique(idx)
        pts = (ue if kind == "user" else ie)[pts_ids]
        if len(pts_ids) < n_shards:
            raise MethodError(f"partition '{kind}': {len(pts_ids)} {kind}s < {n_shards} shards; use fewer shards")
        cap = math.ceil(capacity * len(pts_ids) / n_shards)
        cent = pts[rng.choice(len(pts_ids), n_shards, replace=False)]
        assign = None
        for _ in range(iters):
            new = _balanced_assign(_sqdist(pts, cent), cap)
            if assign is not None and np.array_equal(new, assign):
                break
            assign = new
            cent = np.stack([pts[assign == s].mean(0) if (assign == s).any() else cent[s] for s in range(n_shards)])
        lookup = np.full(int(idx.max()) + 1, -1, dtype=np.int64)
        lookup[pts_ids] = assign
        return lookup[idx]
    if kind != "interaction":
        raise MethodError(f"unknown partition '{kind}'; use interaction, user, item or random")
    if n < n_shards:
        raise MethodError(f"{n} interactions < {n_shards} shards; use fewer shards")
    cap = math.ceil(capacity * n / n_shards)
    start = rng.choice(n, n_shards, replace=False)
    cu, ci = ue[data.users[start]], ie[data.items[start]]
    assign = None
    for _ in range(iters):
        du = _sqdist(ue, cu)[data.users]
        di = _sqdist(ie, ci)[data.items]
        new = _balanced_assign(du * di, cap)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        cu = np.stack([ue[data.users[assign == s]].mean(0) if (assign == s).any() else cu[s] for s in range(n_shards)])
        ci = np.stack([ie[data.items[assign == s]].mean(0) if (assign == s).any() else ci[s] for s in range(n_shards)])
    return assign


# ---------------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------------
def shard_of(ids: np.ndarray, table_ids: np.ndarray, table_shard: np.ndarray) -> np.ndarray:
    """Shard of each id from a (sorted ids, shard) table."""
    pos = np.searchsorted(table_ids, ids)
    return table_shard[pos]


def train_shard(k: int, data: Interactions, factory: Factory, recipe: RecTrainConfig, engine: Engine,
                seed: int) -> Recommender:
    """A freshly initialised shard model k trained with BPR on its shard ``data`` only.

    Init seed ``derive_seed(seed, "receraser/shard{k}/init")``, order seed ``.../order``; negatives avoid the
    shard's own positives, and graph models propagate over the shard's interactions only — so the result is a
    function of (k, the shard's interaction set, seed) alone, which is what makes deletion exact.
    """
    m = factory(derive_seed(seed, f"receraser/shard{k}/init"))
    m.set_graph(data.ids)
    if len(data):
        train_bpr(m, data, recipe, engine, seed=derive_seed(seed, f"receraser/shard{k}/order"),
                  desc=f"receraser shard {k}")
    return m


def train_aggregator(ens: ShardedRecommender, data: Interactions, cfg: RecEraserConfig, engine: Engine,
                     seed: int) -> float:
    """Re-initialise and train the attention aggregator with BPR on ``data``, shard models frozen.

    Shard representations are computed once (they are frozen, as the reference code's ``stop_gradient``); dropout on
    the aggregated user embedding uses its own seeded generator. Loss: mean −ln σ(ŷ_ui − ŷ_uj) +
    agg_reg·½(‖W‖² + ‖b‖²) over the transfers. Returns the last epoch's mean loss.
    """
    engine.setup()
    dev = engine.device
    ens.to(dev)
    ens.reset_aggregator()
    with torch.no_grad():
        us, vs = ens.shard_representations()
    us, vs = us.detach(), vs.detach()
    o = np.argsort(data.ids, kind="stable")
    users, items = data.users[o], data.items[o]
    sampler = NegativeSampler(users, items, ens.n_items)
    rng = np.random.default_rng(derive_seed(seed, "receraser/agg"))
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "receraser/agg-dropout"))
    opt = make_rec_optimizer(ens.aggregator_parameters(), RecTrainConfig(optimizer=cfg.agg_optimizer, lr=cfg.agg_lr))
    n, bs, p = len(users), cfg.agg_batch_size, cfg.agg_dropout
    last = float("nan")
    step = 0
    for epoch in range(cfg.agg_epochs):
        total = 0.0
        for u, i, j in bpr_epoch(users, items, sampler, rng, bs, dev):
            # aggregate each distinct user / item of the batch once, then gather (same values, fewer rows)
            uu, uinv = torch.unique(u, return_inverse=True)
            ii, iinv = torch.unique(torch.cat([i, j]), return_inverse=True)
            eu = ens.aggregate_side(us[uu], "user")[uinv]
            if p > 0:
                keep = (torch.rand(eu.shape, generator=gen) >= p).to(eu.dtype).to(dev)
                eu = eu * keep / (1 - p)
            eij = ens.aggregate_side(vs[ii], "item")[iinv]
            ei, ej = eij[: len(i)], eij[len(i):]
            loss = F.softplus((eu * ej).sum(-1) - (eu * ei).sum(-1)).mean()
            loss = loss + cfg.agg_reg * 0.5 * (ens.trans_w.pow(2).sum() + ens.trans_b.pow(2).sum())
            lv = engine.check_finite(loss, step=step, desc=f"receraser aggregator (epoch {epoch})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += lv * len(u)
            step += 1
        last = total / n
    ens.eval()
    return last


def fit_sharded(data: Interactions, assignment: np.ndarray, factory: Factory, cfg: RecEraserConfig,
                recipe: RecTrainConfig, engine: Engine, seed: int) -> ShardedRecommender:
    """Train the whole RecEraser system from scratch on ``data`` with the shard of each interaction ``assignment``
    (aligned with ``data``): K shard models, then the aggregator."""
    shards = [train_shard(k, data.subset(np.flatnonzero(assignment == k)), factory, recipe, engine, seed)
              for k in range(cfg.n_shards)]
    dim = int(shards[0].dim)
    ens = ShardedRecommender(shards, dim=dim, seed=derive_seed(seed, "receraser/agg-init"),
                             attention_dim=cfg.attention_dim)
    ens.set_graph(data.ids)
    train_aggregator(ens, data, cfg, engine, seed)
    return ens


def delete_from_sharded(ens: ShardedRecommender, retain: Interactions, retain_assignment: np.ndarray,
                        forget_assignment: np.ndarray, factory: Factory, cfg: RecEraserConfig,
                        recipe: RecTrainConfig, engine: Engine, seed: int) -> list[int]:
    """Exact deletion: retrain only the shards holding a forgotten interaction (from their original init seed, on
    their remaining interactions), then retrain the aggregator on D_r. Returns the affected shard indices."""
    affected = sorted({int(s) for s in np.unique(forget_assignment)})
    for k in affected:
        ens.shards[k] = train_shard(k, retain.subset(np.flatnonzero(retain_assignment == k)), factory, recipe,
                                    engine, seed).to(engine.device)
    ens.set_graph(retain.ids)
    train_aggregator(ens, retain, cfg, engine, seed)
    return affected


@METHODS.register("receraser", config=RecEraserConfig)
class RecEraser(RecsysUnlearner):
    """RecEraser (Chen et al., WWW 2022, arXiv:2201.06820): exact unlearning by sharding.

    Setup (the service's original system, timed separately as ``notes["setup_seconds"]``): partition D into K
    balanced shards (InBP by default, on θ_o's representations as the paper's pretrained embeddings); train one
    recommender of θ_o's architecture per shard on its shard only; train the attention aggregator
    (:class:`~unlearnkit.models.recsys.ShardedRecommender`) on D with the shards frozen.

    Deletion (``seconds``): the shards holding an interaction of D_f are retrained from their original
    initialisation on their remaining interactions; the other shards are untouched (bit-identical); the aggregator,
    which saw D_f, is re-initialised and retrained on D_r. The result equals a from-scratch RecEraser training on D_r
    with the same partition — exact unlearning for the shard models and the aggregator.

    Caveat (also of the paper): the partition is computed once on D with embeddings of a model that saw D_f and is
    kept after deletion; with ``partition: random`` the shard layout does not depend on the data's content.
    The returned model is the sharded ensemble, not θ_o's architecture.
    """

    kind = "exact"
    returns_ensemble = True  # shard models and an aggregator, not θ_o's architecture
    needs_retain = True
    source = "Chen et al., RecEraser, WWW 2022, arXiv:2201.06820"
    #: unlearnkit tune: exact: nothing to tune
    search_space = {}
    smoke_params = {"n_shards": 2, "partition_iters": 2, "agg_epochs": 1,
                    "shard_recipe": {"epochs": 1, "batch_size": 256, "lr": 0.01}}

    def _unlearn(self, model: Recommender, forget: Interactions, retain: Interactions, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        if context.model_factory is None:
            raise MethodError("receraser needs context.model_factory (fresh shard models of θ_o's architecture)")
        recipe = c.shard_recipe or context.train_recipe
        if not isinstance(recipe, RecTrainConfig):
            recipe = RecTrainConfig()
        seed = derive_seed(context.seed, "receraser")
        t0 = time.perf_counter()
        full = all_interactions(forget, retain)
        order = np.argsort(full.ids, kind="stable")
        full = full.subset(order)
        ue = ie = None
        if c.partition != "random":
            with torch.no_grad():
                u, v = model.propagate()
            ue, ie = u.detach().cpu().numpy(), v.detach().cpu().numpy()
        assign = partition_interactions(full, c.partition, c.n_shards, user_emb=ue, item_emb=ie,
                                        iters=c.partition_iters, capacity=c.capacity, seed=seed)
        ens = fit_sharded(full, assign, context.model_factory, c, recipe, engine, seed)
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        affected = delete_from_sharded(ens, retain, shard_of(retain.ids, full.ids, assign),
                                       shard_of(forget.ids, full.ids, assign), context.model_factory, c, recipe,
                                       engine, seed)
        sizes = np.bincount(assign, minlength=c.n_shards)
        retrained = int(sum(sizes[k] for k in affected))
        return UnlearnResult(ens, seen_ids=np.sort(retain.ids), notes={
            "setup_seconds": setup, "deletion_seconds": time.perf_counter() - t1, "n_shards": c.n_shards,
            "affected_shards": affected, "shard_sizes": sizes.tolist(), "partition": c.partition,
            "retrained_interactions": retrained,
        })

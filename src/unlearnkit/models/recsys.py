"""Recommendation models trained with BPR: matrix factorisation (MF-BPR) and LightGCN, plus RecEraser's sharded
ensemble with attention-based aggregation.

Every model is a :class:`Recommender`: an ``nn.Module`` whose :meth:`~Recommender.propagate` returns final user and
item representations ``U`` float32 (n_users, d), ``V`` float32 (n_items, d); the score of (u, i) is ŷ_ui = U_u · V_i.

Graph models propagate over **their own interaction graph**: the model holds the training interactions of its task
(``edge_ids``, ``edge_users``, ``edge_items``, rebuilt from the task, not saved) and a persistent boolean
``edge_mask`` saying which of them are in its graph. θ_o's mask is D, the oracle's D_r; unlearning methods drop D_f
from the mask (a deployed system deletes the edges) before they touch the weights. MF keeps the mask as a record but
does not read it.

Sources: BPR — Rendle et al., UAI 2009, arXiv:1205.2618 (loss −ln σ(ŷ_ui − ŷ_uj), Eq. in §4.1);
LightGCN — He et al., SIGIR 2020, arXiv:2002.02126 (Eq. 3 propagation e^(k+1) = D^-1/2 A D^-1/2 e^(k), Eq. 4
layer mean with α_k = 1/(K+1), BPR with L2 on the layer-0 embeddings of the batch, N(0, 0.1²) init, Adam lr 1e-3,
decay 1e-4, batch 2048, 3 layers, d = 64); RecEraser aggregation — Chen et al., WWW 2022, arXiv:2201.06820 §3.3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------------


class RecModelConfig(Frozen):
    """Which recommender: ``mf`` (MF-BPR) or ``lightgcn``; embedding size, layers, init and propagation backend."""

    name: Literal["mf", "lightgcn"] = "mf"
    dim: int = Field(64, ge=1, le=65_536, description="embedding size d (LightGCN paper: 64)")
    layers: int = Field(3, ge=1, le=64, description="LightGCN propagation layers K (paper: 3)")
    init_std: float = Field(0.1, gt=0, description="std of the N(0, σ²) embedding init (LightGCN code: 0.1)")
    backend: Literal["auto", "pyg", "sparse"] = Field(
        "auto", description="LightGCN propagation: PyG LGConv (extra [graph]), torch.sparse, or auto (the faster for "
                            "the device: torch.sparse on CPU, measured 8× faster; PyG on CUDA when installed)")


class RecTrainConfig(Frozen):
    """A BPR training recipe (θ_o, θ_r, shard models). Units: lr per step; epochs = passes over the interactions."""

    epochs: int = Field(100, ge=1, description="passes over the training interactions")
    batch_size: int = Field(2048, ge=1, description="(user, positive, negative) triples per step (LightGCN: 2048)")
    optimizer: Literal["adam", "sgd", "adagrad"] = "adam"
    lr: float = Field(1e-3, gt=0, description="learning rate (LightGCN: 1e-3 with Adam)")
    reg: float = Field(1e-4, ge=0, description="λ of the L2 term λ/2·(‖e_u‖²+‖e_i‖²+‖e_j‖²)/batch (LightGCN: 1e-4)")
    grad_clip: float | None = Field(None, gt=0, description="max global L2 norm of gradients; None = no clipping")


# ---------------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------------


class Recommender(nn.Module):
    """Base of BPR recommenders: scores from ``propagate()`` representations.

    Args:
        n_users, n_items: catalogue sizes.
        edge_ids, edge_users, edge_items: int64 (E,) the task's training interactions (ids, user and item indices);
            the model's graph is the subset flagged by ``edge_mask``.
    """

    def __init__(self, n_users: int, n_items: int, edge_ids: np.ndarray, edge_users: np.ndarray,
                 edge_items: np.ndarray) -> None:
        super().__init__()
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.register_buffer("edge_ids", torch.as_tensor(np.asarray(edge_ids, dtype=np.int64)), persistent=False)
        self.register_buffer("edge_users", torch.as_tensor(np.asarray(edge_users, dtype=np.int64)), persistent=False)
        self.register_buffer("edge_items", torch.as_tensor(np.asarray(edge_items, dtype=np.int64)), persistent=False)
        self.register_buffer("edge_mask", torch.ones(len(edge_ids), dtype=torch.bool))

    # -- graph ----------------------------------------------------------------------------------------------------
    def set_graph(self, ids: np.ndarray) -> None:
        """Make the interactions with these ids (and only these) the model's graph.

        Raises:
            DataError: an id is not one of the task's training interactions.
        """
        ids = np.asarray(ids, dtype=np.int64)
        known = self.edge_ids.cpu().numpy()
        bad = ids[~np.isin(ids, known)]
        if len(bad):
            raise DataError(f"interaction ids {bad[:5].tolist()} are not training interactions of this model's task")
        mask = torch.as_tensor(np.isin(known, ids), device=self.edge_mask.device)
        self.edge_mask.copy_(mask)

    def graph_ids(self) -> np.ndarray:
        """Sorted int64 ids of the interactions in the model's graph."""
        return np.sort(self.edge_ids[self.edge_mask].cpu().numpy())

    # -- scoring --------------------------------------------------------------------------------------------------
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final representations ``(U (n_users, d), V (n_items, d))`` float32."""
        raise NotImplementedError

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 (ego) embeddings ``(n_users, d), (n_items, d)``: what the L2 term of BPR regularises."""
        raise NotImplementedError

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """ŷ_ui float32 (b,) for int64 ``users`` (b,) and ``items`` (b,)."""
        u, v = self.propagate()
        return (u[users] * v[items]).sum(-1)

    @torch.no_grad()
    def full_scores(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item: float32 (len(users), n_items) (all users if None), in eval mode."""
        was = self.training
        self.eval()
        try:
            u, v = self.propagate()
        finally:
            self.train(was)
        if users is not None:
            u = u[users]
        return u @ v.T

    def bpr_terms(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ŷ_ui (b,), ŷ_uj (b,), reg) for a batch of triples; reg = ½(‖e_u⁰‖²+‖e_i⁰‖²+‖e_j⁰‖²)/b (LightGCN code)."""
        u, v = self.propagate()
        s_pos = (u[users] * v[pos]).sum(-1)
        s_neg = (u[users] * v[neg]).sum(-1)
        eu, ei = self.ego()
        reg = 0.5 * (eu[users].pow(2).sum() + ei[pos].pow(2).sum() + ei[neg].pow(2).sum()) / max(len(users), 1)
        return s_pos, s_neg, reg


class _EmbeddingRecommender(Recommender):
    def __init__(self, n_users: int, n_items: int, edge_ids: np.ndarray, edge_users: np.ndarray,
                 edge_items: np.ndarray, *, dim: int, init_std: float, seed: int) -> None:
        super().__init__(n_users, n_items, edge_ids, edge_users, edge_items)
        gen = torch.Generator().manual_seed(int(seed))
        self.user_emb = nn.Parameter(torch.randn(n_users, dim, generator=gen) * init_std)
        self.item_emb = nn.Parameter(torch.randn(n_items, dim, generator=gen) * init_std)
        self.dim = dim

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb, self.item_emb


class MFBPR(_EmbeddingRecommender):
    """Matrix factorisation ŷ_ui = p_u · q_i trained with BPR (Rendle et al., UAI 2009, arXiv:1205.2618).

    Parameters: ``user_emb`` float32 (n_users, d), ``item_emb`` float32 (n_items, d), N(0, init_std²) init.
    """

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb, self.item_emb


class LightGCN(_EmbeddingRecommender):
    """LightGCN (He et al., SIGIR 2020, arXiv:2002.02126): e^(k+1) = D^-1/2 A D^-1/2 e^(k) on the bipartite
    user–item graph (Eq. 3, no self-loops, no weights, no non-linearity); final e = mean_{k=0..K} e^(k) (Eq. 4).

    Propagation uses PyG's ``LGConv`` (``backend="pyg"``) or a torch.sparse normalised adjacency (``"sparse"``);
    both compute the same symmetric normalisation (equal to float rounding). ``"auto"`` picks per device, when the
    graph is built: torch.sparse on CPU — a 3-layer forward+backward on MovieLens-100k-sized data takes 8× less
    time than LGConv, which recomputes the normalisation in every layer (``benchmarks/lightgcn_backend.py``,
    BENCHMARKS.md) — and LGConv on other devices when torch_geometric is installed (not measured there; torch.sparse
    otherwise). :meth:`resolved_backend` says which one runs. The graph is the model's ``edge_mask`` subset of its
    task's training interactions.

    Raises:
        ConfigError: ``backend="pyg"`` without torch_geometric installed.
    """

    def __init__(self, *args, layers: int = 3, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.layers = int(layers)
        if backend == "pyg" and not _pyg_available():
            raise ConfigError("LightGCN backend 'pyg' needs torch_geometric: pip install 'unlearnkit[graph]' "
                              "(or use backend: sparse)")
        if backend not in ("auto", "pyg", "sparse"):
            raise ConfigError(f"unknown LightGCN backend {backend!r}; use auto, pyg or sparse")
        self.backend = backend
        self._graph_cache: tuple[tuple, object] | None = None

    def resolved_backend(self, device: torch.device | str | None = None) -> str:
        """``"pyg"`` or ``"sparse"``: the backend that propagates on ``device`` (default: where the embeddings are)."""
        if self.backend != "auto":
            return self.backend
        dev = torch.device(device) if device is not None else self.user_emb.device
        return "pyg" if dev.type != "cpu" and _pyg_available() else "sparse"

    def __getstate__(self):  # deepcopy/pickle: the cached graph is rebuilt on demand
        state = self.__dict__.copy()
        state["_graph_cache"] = None
        return state

    def _edge_index(self) -> torch.Tensor:
        m = self.edge_mask
        u = self.edge_users[m]
        i = self.edge_items[m] + self.n_users
        return torch.stack([torch.cat([u, i]), torch.cat([i, u])])

    def _graph(self):
        dev = self.user_emb.device
        backend = self.resolved_backend(dev)
        key = (self.edge_mask.data_ptr(), self.edge_mask._version, str(dev), backend)
        if self._graph_cache is not None and self._graph_cache[0] == key:
            return self._graph_cache[1]
        ei = self._edge_index().to(dev)
        if backend == "pyg":
            graph: object = ei
        else:
            n = self.n_users + self.n_items
            deg = torch.bincount(ei[1], minlength=n).to(torch.float32)
            dinv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
            w = dinv[ei[0]] * dinv[ei[1]]
            # row = target, col = source: out[t] = Σ_s w · x[s]  (the message-passing direction of LGConv)
            graph = torch.sparse_coo_tensor(torch.stack([ei[1], ei[0]]), w, (n, n), check_invariants=False).coalesce()
        self._graph_cache = (key, graph)
        return graph

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate_from(torch.cat([self.user_emb, self.item_emb]))

    def propagate_from(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user (n_users, d), item (n_items, d)) representations from layer-0 embeddings ``x`` (N, d): the mean
        of the K propagations over the current training graph (He et al., LightGCN, Eq. 8), in the resolved backend."""
        graph = self._graph()
        out = [x]
        if self.resolved_backend(x.device) == "pyg":
            conv = _lgconv()
            for _ in range(self.layers):
                x = conv(x, graph)
                out.append(x)
        else:
            for _ in range(self.layers):
                x = torch.sparse.mm(graph, x)
                out.append(x)
        final = torch.stack(out).mean(0)
        return final[: self.n_users], final[self.n_users:]


def _pyg_available() -> bool:
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        return False
    return True


_LGCONV = None


def _lgconv():
    global _LGCONV
    if _LGCONV is None:
        from torch_geometric.nn import LGConv

        _LGCONV = LGConv(normalize=True)
    return _LGCONV


class ShardedRecommender(Recommender):
    """RecEraser's model (Chen et al., WWW 2022, arXiv:2201.06820 §3.3): K shard recommenders, each trained on its
    own shard, combined by attention-based adaptive aggregation.

    For shard k, representations are mapped by a per-shard transfer ``e'_k = W_k e_k + b_k``; attention weights
    ``α_k = softmax_k(hᵀ ReLU(W_a e'_k + b_a))`` (separate W_a, b_a, h for users and items, attention size d/2) give
    ``e = Σ_k α_k e'_k``; ŷ_ui = e_u · e_i. Initialisation as in the reference code: Glorot-normal transfers,
    truncated-normal W_a (std √(2/(a+d))), zero b_a, constant 0.01 h.

    Args:
        shards: K recommenders of the same catalogue and embedding size d.
        seed: initialisation seed of the aggregator.
    """

    def __init__(self, shards: list[Recommender], *, dim: int, seed: int, attention_dim: int | None = None) -> None:
        s0 = shards[0]
        super().__init__(s0.n_users, s0.n_items, s0.edge_ids.cpu().numpy(), s0.edge_users.cpu().numpy(),
                         s0.edge_items.cpu().numpy())
        self.shards = nn.ModuleList(shards)
        k, d = len(shards), dim
        a = attention_dim or max(1, d // 2)
        self.dim, self.attention_dim, self.agg_seed = d, a, int(seed)
        self.trans_w = nn.Parameter(torch.empty(k, d, d))
        self.trans_b = nn.Parameter(torch.empty(k, d))
        for side in ("user", "item"):
            self.register_parameter(f"{side}_att_w", nn.Parameter(torch.empty(d, a)))
            self.register_parameter(f"{side}_att_b", nn.Parameter(torch.empty(a)))
            self.register_parameter(f"{side}_att_h", nn.Parameter(torch.empty(a, 1)))
        self.reset_aggregator()

    def aggregator_parameters(self) -> list[nn.Parameter]:
        """The aggregation parameters (transfers and attention), not the shards'."""
        return [self.trans_w, self.trans_b] + [getattr(self, f"{s}_att_{n}") for s in ("user", "item")
                                               for n in ("w", "b", "h")]

    @torch.no_grad()
    def reset_aggregator(self) -> None:
        """Re-initialise the aggregation parameters from ``agg_seed`` (bit-identical each time)."""
        gen = torch.Generator().manual_seed(self.agg_seed)
        k, d, a = len(self.shards), self.dim, self.attention_dim
        self.trans_w.copy_(torch.randn(k, d, d, generator=gen) * math.sqrt(2.0 / (d + d)))
        self.trans_b.copy_(torch.randn(k, d, generator=gen) * math.sqrt(2.0 / (k + d)))
        std = math.sqrt(2.0 / (a + d))
        for side in ("user", "item"):
            getattr(self, f"{side}_att_w").copy_(torch.fmod(torch.randn(d, a, generator=gen), 2.0) * std)  # 2σ trunc.
            getattr(self, f"{side}_att_b").zero_()
            getattr(self, f"{side}_att_h").fill_(0.01)

    def set_graph(self, ids: np.ndarray) -> None:
        """Records the ensemble's training interactions (each shard keeps its own graph)."""
        super().set_graph(ids)

    def shard_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked shard outputs: users (n_users, K, d), items (n_items, K, d)."""
        us, vs = zip(*(s.propagate() for s in self.shards))
        return torch.stack(us, 1), torch.stack(vs, 1)

    def _attend(self, e: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        w, b, h = (getattr(self, f"{side}_att_{n}") for n in ("w", "b", "h"))
        logits = (torch.relu(e @ w + b) @ h).squeeze(-1)  # (n, K)
        alpha = torch.softmax(logits, dim=1)
        return (alpha.unsqueeze(-1) * e).sum(1), alpha

    def aggregate_side(self, e: torch.Tensor, side: str) -> torch.Tensor:
        """Aggregated (n, d) from shard representations (n, K, d) of ``side`` "user" or "item"."""
        t = torch.einsum("nkd,kde->nke", e, self.trans_w) + self.trans_b
        return self._attend(t, side)[0]

    def aggregate(self, us: torch.Tensor, vs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregated (users (n, d), items (m, d)) from shard representations (n, K, d), (m, K, d)."""
        return self.aggregate_side(us, "user"), self.aggregate_side(vs, "item")

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.aggregate(*self.shard_representations())

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()


def build_rec_model(cfg: RecModelConfig, n_users: int, n_items: int, edge_ids: np.ndarray, edge_users: np.ndarray,
                    edge_items: np.ndarray, seed: int) -> Recommender:
    """A freshly initialised recommender (seeded by ``seed``) over the given training interactions."""
    common = dict(dim=cfg.dim, init_std=cfg.init_std, seed=seed)
    if cfg.name == "mf":
        return MFBPR(n_users, n_items, edge_ids, edge_users, edge_items, **common)
    return LightGCN(n_users, n_items, edge_ids, edge_users, edge_items, layers=cfg.layers, backend=cfg.backend,
                    **common)


# ---------------------------------------------------------------------------------------------------------------------
# BPR training
# ---------------------------------------------------------------------------------------------------------------------


class NegativeSampler:
    """Uniform negative items j ∉ I_u⁺ for BPR triples, by seeded rejection sampling.

    Args:
        users, items: int64 (n,) the positive interactions defining I_u⁺ (only these are excluded).
        n_items: catalogue size.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
        self.n_items = int(n_items)
        self.keys = np.unique(np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64))

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        k = users * self.n_items + items
        pos = np.searchsorted(self.keys, k)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == k if len(self.keys) else np.zeros(len(k), dtype=bool)

    def sample(self, users: np.ndarray, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        """int64 (b,) negatives for ``users`` (b,).

        Raises:
            DataError: a user has interacted with every item (no negative exists).
        """
        users = np.asarray(users, dtype=np.int64)
        neg = rng.integers(0, self.n_items, size=len(users))
        bad = self.is_positive(users, neg)
        rounds = 0
        while bad.any():
            rounds += 1
            if rounds > max_rounds:
                raise DataError(f"users {np.unique(users[bad])[:5].tolist()} have (almost) no unobserved item to "
                                "sample as a BPR negative; drop such users from the data")
            neg[bad] = rng.integers(0, self.n_items, size=int(bad.sum()))
            bad = self.is_positive(users, neg)
        return neg


@dataclass
class BPRFit:
    """Outcome of :func:`train_bpr`: seconds, optimizer steps, sorted int64 ids that contributed, epoch losses."""

    seconds: float
    steps: int
    seen_ids: np.ndarray
    losses: list[float] = field(default_factory=list)


def make_rec_optimizer(params, recipe: RecTrainConfig) -> torch.optim.Optimizer:
    """Adam, SGD or Adagrad (reference RecEraser code: Adagrad with initial accumulator 1e-8) at ``recipe.lr``."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("no trainable parameters")
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr)
    if recipe.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=recipe.lr, initial_accumulator_value=1e-8)
    return torch.optim.SGD(params, lr=recipe.lr)


def bpr_loss(s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss −ln σ(ŷ_ui − ŷ_uj) = softplus(ŷ_uj − ŷ_ui) (Rendle et al. 2009, BPR-Opt)."""
    return F.softplus(s_neg - s_pos).mean()


def train_bpr(model: Recommender, data, recipe: RecTrainConfig, engine, *, seed: int, desc: str = "bpr",
              positives=None, params=None) -> BPRFit:
    """Train ``model`` in place with BPR on the interactions ``data``.

    Each epoch visits every interaction of ``data`` once in a seeded random order, as the positive of one triple
    (u, i, j) with j drawn uniformly from items outside I_u⁺ (I_u⁺ from ``positives``, default ``data``). Loss per
    step: mean −ln σ(ŷ_ui − ŷ_uj) + reg · ½(‖e_u⁰‖²+‖e_i⁰‖²+‖e_j⁰‖²)/b.

    Args:
        model: a :class:`Recommender` (its graph is left as is: set it with ``set_graph`` first).
        data: :class:`~unlearnkit.data.recsys.Interactions` to train on (the order within is irrelevant: it is
            sorted by id first, so the result depends only on the set of interactions and ``seed``).
        recipe: epochs, batch size, optimizer, lr, reg.
        engine: device, determinism, progress bars, divergence checks.
        seed: seeds the visiting order and the negatives.
        positives: interactions defining I_u⁺ for negative sampling (default ``data``).
        params: parameters to optimise (default: all trainable ones of ``model``).

    Raises:
        DivergenceError: a loss became NaN/inf (before it updates the weights).
    """
    if len(data) == 0:
        raise ConfigError(f"cannot train on the empty interaction set '{data.name}'")
    engine.setup()
    dev = engine.device
    model.to(dev).train()
    order0 = np.argsort(data.ids, kind="stable")
    users = data.users[order0]
    items = data.items[order0]
    ids = data.ids[order0]
    pos_src = positives if positives is not None else data
    sampler = NegativeSampler(pos_src.users, pos_src.items, model.n_items)
    rng = np.random.default_rng(seed)
    opt = make_rec_optimizer(params if params is not None else model.parameters(), recipe)
    trainable = [p for g in opt.param_groups for p in g["params"]]
    n = len(ids)
    bs = recipe.batch_size
    steps_per_epoch = math.ceil(n / bs)
    step = 0
    losses: list[float] = []
    t0 = time.perf_counter()
    with engine.progress(recipe.epochs * steps_per_epoch, desc, epochs=recipe.epochs) as advance:
        for epoch in range(recipe.epochs):
            total = 0.0
            for u, i, j in bpr_epoch(users, items, sampler, rng, bs, dev):
                s_pos, s_neg, reg = model.bpr_terms(u, i, j)
                loss = bpr_loss(s_pos, s_neg) + recipe.reg * reg
                lv = engine.check_finite(loss, step=step, desc=f"{desc} (epoch {epoch})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, recipe.grad_clip)
                opt.step()
                total += lv * len(u)
                step += 1
                advance(1, info=lambda: f"loss {lv:.4f}")
            losses.append(total / n)
    model.eval()
    return BPRFit(time.perf_counter() - t0, step, np.sort(ids), losses)


def bpr_epoch(users: np.ndarray, items: np.ndarray, sampler: NegativeSampler, rng: np.random.Generator,
              batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of BPR triples: the interactions (``users``, ``items``: int64 (n,)) in a fresh order from ``rng``,
    one sampled negative item each (drawn for the whole epoch, then batched), as int64 tensors ``(u, i, j)`` of at
    most ``batch_size`` rows on ``device``."""
    n = len(users)
    perm = rng.permutation(n)
    negs = sampler.sample(users[perm], rng)
    for s in range(0, n, batch_size):
        idx = perm[s:s + batch_size]
        yield (torch.as_tensor(users[idx], device=device), torch.as_tensor(items[idx], device=device),
               torch.as_tensor(negs[s:s + batch_size], device=device))


__all__ = [
    "BPRFit", "LightGCN", "MFBPR", "NegativeSampler", "RecModelConfig", "RecTrainConfig", "Recommender",
    "ShardedRecommender", "bpr_epoch", "bpr_loss", "build_rec_model", "make_rec_optimizer", "train_bpr",
]

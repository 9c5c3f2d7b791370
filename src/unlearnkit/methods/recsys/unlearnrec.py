"""UnlearnRec: a pre-trained Influence Encoder maps a deletion request to updated embeddings (Chen, Xia & Huang,
SIGIR 2025, arXiv:2505.22649)."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.recsys import Interactions
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import DataError, MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.recsys._common import RecsysUnlearner, TripleStream, all_interactions, on_retain_graph
from unlearnkit.models.recsys import LightGCN, Recommender
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class UnlearnRecConfig(Frozen):
    """UnlearnRec settings (arXiv:2505.22649 §3; reference code github.com/HKUDS/UnlearnRec).

    Architecture as in the paper: ``layers`` propagation steps of the Influence Encoder over the influence dependency
    graph (reference: 3), an MLP of ``mlp_layers`` initialised to the identity (Algorithm 1). The loss weights λ_u,
    λ_p, λ_c and their values follow a public re-implementation of the reference (1.0, 1.0, 0.01); the numbers of
    simulated requests and fine-tuning steps are this implementation's CPU-sized choices (BENCHMARKS.md).
    """

    layers: int = Field(3, ge=1, description="L: propagation steps of the Influence Encoder over the IDG")
    mlp_layers: int = Field(2, ge=1, description="layers of the identity-initialised MLP")
    pretrain_requests: int = Field(60, ge=1, description="simulated deletion requests of the pre-training")
    simulate: Literal["users", "interactions"] = Field(
        "users", description="simulated requests delete all interactions of random users (users) or random "
        "interactions (interactions), each of the real request's size")
    pretrain_lr: float = Field(1e-2, gt=0, description="Adam lr of the pre-training (H0, W_η, MLP)")
    finetune_steps: int = Field(10, ge=0, description="steps of the short fine-tuning on the real request")
    finetune_lr: float = Field(1e-3, gt=0, description="Adam lr of the fine-tuning of the unlearned embeddings")
    batch_size: int = Field(1024, ge=1, description="BPR triples of the remaining interactions per step")
    lambda_u: float = Field(1.0, ge=0, description="weight of the unlearning loss on the request's scores")
    lambda_p: float = Field(1.0, ge=0, description="weight of the score-preservation loss")
    lambda_c: float = Field(0.01, ge=0, description="weight of the contrastive influence loss")
    reg: float = Field(1e-4, ge=0, description="L2 on the batch's updated layer-0 embeddings (as in BPR training)")
    edge_dropout: float = Field(0.1, ge=0, lt=1, description="edge dropout of the IDG view of the contrastive loss")


def request_edges(model: Recommender, request: Interactions) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, items) int64 tensors of a deletion request, checked against the model's catalogue.

    Raises:
        DataError: an unknown user or item (index outside the model's catalogue), naming it; an empty request.
    """
    u = np.asarray(request.users, dtype=np.int64)
    i = np.asarray(request.items, dtype=np.int64)
    if len(u) == 0:
        raise DataError("the deletion request has no interaction; name at least one (user, item) pair")
    bad_u = np.unique(u[(u < 0) | (u >= model.n_users)])
    if len(bad_u):
        raise DataError(f"the deletion request names unknown user(s) {bad_u[:5].tolist()}: the model knows users "
                        f"0–{model.n_users - 1}; map raw user ids to the task's indices (Interactions.user_raw)")
    bad_i = np.unique(i[(i < 0) | (i >= model.n_items)])
    if len(bad_i):
        raise DataError(f"the deletion request names unknown item(s) {bad_i[:5].tolist()}: the model knows items "
                        f"0–{model.n_items - 1}")
    return torch.as_tensor(u), torch.as_tensor(i)


def influence_graph(n_users: int, n_items: int, users: torch.Tensor, items: torch.Tensor,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
    """The normalised influence dependency matrix D_Δ^-1/2 Ā_Δ D_Δ^-1/2 (N × N sparse, N = n_users + n_items): the
    symmetric adjacency of the request's edges only (arXiv:2505.22649 Eq. 15); ``keep`` masks edges (dropout view).
    Nodes outside the request have degree 0 and an empty row."""
    if keep is not None:
        users, items = users[keep], items[keep]
    n = n_users + n_items
    src = torch.cat([users, items + n_users])
    dst = torch.cat([items + n_users, users])
    deg = torch.bincount(dst, minlength=n).to(torch.float32)
    dinv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    w = dinv[src] * dinv[dst]
    return torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n, n)).coalesce()


class InfluenceEncoder(nn.Module):
    """UnlearnRec's Influence Encoder (arXiv:2505.22649 §3.2, Eq. 15–18).

    For a request with IDM Â (:func:`influence_graph`) and the model's fixed readout embeddings Ē (N, d):

        H̄ = Â^L H₀,   Ē_w = Â^L (Ē ⊙ W_η),   ΔE₀ = H̄ − Ē_w,   ΔĒ₀ = MLP(ΔE₀),   Ẽ₀ = E₀ + m ⊙ ΔĒ₀

    with trainable H₀ (N, d), W_η (N, 1) (initialised near 0, Algorithm 1) and an MLP whose linear layers start as
    the identity with zero bias. m (N, 1) is 1 on the nodes of the request's graph and 0 elsewhere: Â^L is non-zero
    only there, but the MLP's bias would otherwise shift every node; with the mask a request changes only the
    embeddings reachable from it (a stated deviation from the reference, which applies the MLP to every row).
    """

    def __init__(self, n_nodes: int, dim: int, layers: int = 3, mlp_layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.layers = int(layers)
        self.h0 = nn.Parameter(torch.randn(n_nodes, dim, generator=gen) * 0.01)
        self.w_eta = nn.Parameter(torch.full((n_nodes, 1), 0.01))
        mods: list[nn.Module] = []
        for k in range(mlp_layers):
            lin = nn.Linear(dim, dim)
            with torch.no_grad():
                lin.weight.copy_(torch.eye(dim))
                lin.bias.zero_()
            mods.append(lin)
            if k < mlp_layers - 1:
                mods.append(nn.ReLU())
        self.mlp = nn.Sequential(*mods)

    def propagate(self, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.layers):
            x = torch.sparse.mm(adj, x)
        return x

    def forward(self, adj: torch.Tensor, e0: torch.Tensor, readout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ẽ₀ (N, d), H̄ (N, d)) for the request graph ``adj``, layer-0 embeddings ``e0`` and readout ``readout``."""
        h = self.propagate(adj, self.h0)
        ew = self.propagate(adj, readout * self.w_eta)
        mask = (torch.sparse.sum(adj, dim=1).to_dense() != 0).to(e0.dtype)[:, None]
        return e0 + mask * self.mlp(h - ew), h


def readout_from(model: Recommender, e0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's final (user, item) representations computed from layer-0 embeddings ``e0`` (N, d) over its
    current graph: MF returns e0 itself; LightGCN propagates it (the model's own layers and backend)."""
    if not isinstance(model, LightGCN):
        return e0[:model.n_users], e0[model.n_users:]
    return model.propagate_from(e0)


def _e0(model: Recommender) -> torch.Tensor:
    if not (hasattr(model, "user_emb") and hasattr(model, "item_emb")):
        raise MethodError(f"unlearnrec needs an embedding recommender (MF-BPR, LightGCN), got {type(model).__name__}")
    return torch.cat([model.user_emb, model.item_emb]).detach()


@METHODS.register("unlearnrec", config=UnlearnRecConfig)
class UnlearnRec(RecsysUnlearner):
    """Pre-train an Influence Encoder on simulated deletion requests; answer the real request with one forward pass
    and a short fine-tuning.

    Pre-training (before the request; its seconds are ``notes["setup_seconds"]``, left out of the unlearning time as
    the paper does): for each simulated request E_s (all interactions of random users, or random interactions, as many
    as the real request) the encoder gives Ẽ₀ and the model's scores over the graph D \\ E_s; the loss is

        L = L_BPR(D \\ E_s; Ẽ₀) + λ_u · mean_{(u,i)∈E_s} −ln σ(−ŷ_ui) + λ_p · MSE(ŷ⁽Ẽ₀⁾, ŷ⁽E₀⁾ on D \\ E_s) + λ_c · L_c

    (model fidelity, unlearning, preservation; L_c = −ln σ(cos(H̄, H̄′)) between the encoder's influence states on the
    IDG and an edge-dropout view of it, the contrastive term), updating H₀, W_η and the MLP with the recommender
    frozen. Answering the request: Ẽ₀ = IE(D_f) with the graph set to D_r, then ``finetune_steps`` Adam steps of the
    model loss (BPR on D_r, unlearning on D_f, preservation) on Ẽ₀ itself (every row); Ẽ₀ becomes the model's
    layer-0 embeddings.

    Source: Chen, Xia & Huang, "Pre-training for Recommendation Unlearning", SIGIR 2025, arXiv:2505.22649 (§3.2
    Influence Encoder, §3.3 multi-task pre-training, Algorithm 1); reference code github.com/HKUDS/UnlearnRec (not
    readable offline; the structure follows the paper and a public re-implementation).
    """

    kind = "approximate"
    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"finetune_lr": LogFloat(1e-4, 1e-2), "finetune_steps": Int(1, 50), "lambda_u": LogFloat(0.1, 10.0)}
    source = "Chen, Xia & Huang, UnlearnRec, SIGIR 2025, arXiv:2505.22649 (github.com/HKUDS/UnlearnRec)"
    smoke_params = {"pretrain_requests": 2, "finetune_steps": 1, "batch_size": 128}

    def _model_loss(self, model: Recommender, e_new: torch.Tensor, remaining: TripleStream, users: torch.Tensor,
                    items: torch.Tensor, dev: torch.device, base: tuple[torch.Tensor, torch.Tensor]
                    ) -> tuple[torch.Tensor, np.ndarray]:
        """L_BPR(remaining; Ẽ₀) + λ_u · unlearning loss on the request + λ_p · score preservation (and ids used)."""
        c = self.config
        U, V = readout_from(model, e_new)
        u, i, j, ids = remaining.next(c.batch_size, dev)
        s_pos, s_neg = (U[u] * V[i]).sum(-1), (U[u] * V[j]).sum(-1)
        reg = 0.5 * (e_new[u].pow(2).sum() + e_new[model.n_users + i].pow(2).sum()
                     + e_new[model.n_users + j].pow(2).sum()) / max(len(u), 1)
        loss = F.softplus(s_neg - s_pos).mean() + c.reg * reg
        loss = loss + c.lambda_u * F.softplus((U[users] * V[items]).sum(-1)).mean()
        if c.lambda_p > 0:
            Ub, Vb = base
            loss = loss + c.lambda_p * F.mse_loss(s_pos, (Ub[u] * Vb[i]).sum(-1))
        return loss, ids

    def _contrast(self, model: Recommender, enc: InfluenceEncoder, h: torch.Tensor, users: torch.Tensor,
                  items: torch.Tensor, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
        """L_c = mean −ln σ(cos(H̄, H̄′)) over the request's nodes, H̄′ from an edge-dropout view of the IDG."""
        keep = torch.rand(len(users), generator=gen) >= self.config.edge_dropout
        view = influence_graph(model.n_users, model.n_items, users.cpu(), items.cpu(), keep).to(dev)
        h2 = enc.propagate(view, enc.h0)
        rows = torch.unique(torch.cat([users, items + model.n_users]))
        return F.softplus(-F.cosine_similarity(h[rows], h2[rows], dim=1, eps=1e-8)).mean()

    def _simulated(self, full: Interactions, size: int, rng: np.random.Generator, users_mode: bool) -> np.ndarray:
        """Positions (in ``full``) of one simulated request of about ``size`` interactions."""
        if not users_mode:
            return rng.choice(len(full), size=min(size, len(full) - 1), replace=False)
        order = rng.permutation(np.unique(full.users))
        picked, total = [], 0
        counts = np.bincount(full.users, minlength=full.n_users)
        for u in order:
            if total >= size:
                break
            picked.append(u)
            total += counts[u]
        return np.flatnonzero(np.isin(full.users, picked))

    def _unlearn(self, model: Recommender, forget: Interactions, retain: Interactions, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        users, items = request_edges(model, forget)
        e0 = _e0(model)
        dev = engine.device
        model.to(dev)
        for p in model.parameters():
            p.requires_grad_(False)
        full = all_interactions(forget, retain)
        rng = np.random.default_rng(derive_seed(context.seed, "unlearnrec"))
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "unlearnrec-torch"))
        enc = InfluenceEncoder(model.n_users + model.n_items, e0.shape[1], c.layers, c.mlp_layers,
                               derive_seed(context.seed, "unlearnrec-init")).to(dev)
        e0 = e0.to(dev)
        seen: list[np.ndarray] = []
        users_mode = c.simulate == "users"

        # -- pre-training on simulated requests (setup: before the real request arrives) ----------------------------
        t0 = time.perf_counter()
        engine.setup()
        model.set_graph(full.ids)
        with torch.no_grad():
            readout = torch.cat(readout_from(model, e0)).detach()
        opt = torch.optim.Adam(enc.parameters(), lr=c.pretrain_lr)
        with engine.progress(c.pretrain_requests, "unlearnrec pre-training") as advance:
            for step in range(c.pretrain_requests):
                pos = self._simulated(full, len(forget), rng, users_mode)
                mask = np.ones(len(full), dtype=bool)
                mask[pos] = False
                sim, rem = full.subset(pos, "simulated"), full.subset(np.flatnonzero(mask), "remaining")
                su, si = torch.as_tensor(sim.users).to(dev), torch.as_tensor(sim.items).to(dev)
                adj = influence_graph(model.n_users, model.n_items, su.cpu(), si.cpu()).to(dev)
                model.set_graph(rem.ids)
                with torch.no_grad():
                    base = readout_from(model, e0)
                e_new, h = enc(adj, e0, readout)
                loss, ids = self._model_loss(model, e_new, TripleStream(rem, full, rng), su, si, dev, base)
                if c.lambda_c > 0:
                    loss = loss + c.lambda_c * self._contrast(model, enc, h, su, si, gen, dev)
                ids = [ids]
                engine.check_finite(loss, step=step, desc="unlearnrec pre-training")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen.extend(ids)
                advance(1)
        setup = time.perf_counter() - t0

        # -- the real request: one forward pass, then a short fine-tuning --------------------------------------------
        on_retain_graph(model, retain, engine)
        adj = influence_graph(model.n_users, model.n_items, users, items).to(dev)
        users, items = users.to(dev), items.to(dev)
        with torch.no_grad():
            base = readout_from(model, e0)
            e_new = enc(adj, e0, readout)[0]
        # short fine-tuning of the unlearned embeddings (every row) on D_r with the same model loss
        e_new = e_new.detach().clone().requires_grad_(c.finetune_steps > 0)
        if c.finetune_steps:
            opt = torch.optim.Adam([e_new], lr=c.finetune_lr)
            stream = TripleStream(retain, retain, rng)
            for step in range(c.finetune_steps):
                loss, ids = self._model_loss(model, e_new, stream, users, items, dev, base)
                engine.check_finite(loss, step=step, desc="unlearnrec fine-tuning")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen.append(ids)
        final = e_new.detach()
        with torch.no_grad():
            model.user_emb.copy_(final[: model.n_users])
            model.item_emb.copy_(final[model.n_users:])
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
        changed = int((final != e0).any(dim=1).sum())
        return UnlearnResult(model, steps=c.pretrain_requests + c.finetune_steps,
                             seen_ids=np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.int64),
                             notes={"setup_seconds": setup, "changed_rows": changed,
                                    "request_nodes": int(torch.unique(torch.cat([users, items + model.n_users])).numel())})

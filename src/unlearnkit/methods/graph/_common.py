"""Shared pieces of the graph track's methods: the training recipe, full-batch training, element losses.

Graph models train full-batch (one optimizer step per epoch over the whole graph), as in the GNN unlearning papers;
the track's θ_o / θ_r and every training-based method use :func:`fit_graph`.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import DivergenceError, MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult

if TYPE_CHECKING:  # pragma: no cover
    from unlearnkit.data.graph import GraphTask, Which
    from unlearnkit.engine.loop import Engine


class GraphTrainConfig(Frozen):
    """Full-batch training recipe of a graph model (θ_o, θ_r and retraining methods).

    ``loss``: ``cross_entropy`` (node task; link task: binary cross-entropy on positive edges and as many sampled
    non-edges per epoch) or ``ovr_logistic`` (one-vs-rest L2-regularised logistic regression on SGC features with
    objective perturbation b·w/n, b ~ N(0, noise_std²) — the removal-enabled training of Chien et al. 2022,
    arXiv:2206.09140, reference code defaults λ = 1e-2, std = 1e-2, 100 L-BFGS steps of lr 1).
    """

    loss: Literal["cross_entropy", "ovr_logistic"] = "cross_entropy"
    epochs: int = Field(200, ge=1, description="full-batch optimizer steps (Kipf & Welling 2017: 200)")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(5e-4, ge=0, description="L2 coefficient (Adam's coupled weight decay)")
    l2: float = Field(1e-2, gt=0, description="ovr_logistic: λ of λ/2‖w‖² (Chien et al.: 1e-2)")
    noise_std: float = Field(1e-2, ge=0, description="ovr_logistic: std of the objective perturbation b")
    lbfgs_steps: int = Field(100, ge=1, description="ovr_logistic: L-BFGS steps")


def forward(model: nn.Module, task: GraphTask, which: Which, *, hidden: bool = False):
    """The model's outputs on the ``which`` view (float32 (n, out)); with ``hidden`` also each layer's output."""
    v = task.view(which)
    return model(v.x, v.edge_index, return_hidden=True) if hidden else model(v.x, v.edge_index)


def sample_negatives(task: GraphTask, which: Which, k: int, gen: torch.Generator) -> torch.Tensor:
    """int64 (2, k) random pairs of existing (alive) nodes that are not edges of the ``which`` graph (seeded)."""
    v = task.view(which)
    nodes = torch.from_numpy(np.flatnonzero(v.alive))
    n = task.data.num_nodes
    keys = np.sort(np.concatenate([task.data.edges[v.edge_ids] @ np.array([n, 1]),
                                   task.data.edges[v.edge_ids][:, ::-1] @ np.array([n, 1])]))
    out = []
    got = 0
    while got < k:
        m = 2 * (k - got) + 8
        a = nodes[torch.randint(len(nodes), (m,), generator=gen)]
        b = nodes[torch.randint(len(nodes), (m,), generator=gen)]
        q = (a * n + b).numpy()
        pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
        ok = (a != b).numpy() & ~((keys[pos] == q) if len(keys) else np.zeros(len(q), bool))
        sel = np.flatnonzero(ok)[: k - got]
        out.append(torch.stack([a[sel], b[sel]]))
        got += len(sel)
    return torch.cat(out, dim=1)


def element_loss(model: nn.Module, out: torch.Tensor, task: GraphTask, elems: Any, *,
                 reduction: str = "mean", recipe: GraphTrainConfig | None = None) -> torch.Tensor:
    """Loss of the model's outputs ``out`` on training elements — the loss θ_o was trained with.

    Args:
        elems: node task: int64 node ids (k,) → cross-entropy on their labels (one-vs-rest logistic loss
            Σ_c −log σ(y_ic·out_ic), y ∈ {−1, +1}, when ``recipe.loss`` is ``ovr_logistic``); link task:
            ``(pairs (2, k), labels float (k,))`` → binary cross-entropy of the dot-product scores.
        recipe: θ_o's training recipe (None = cross-entropy).
    """
    if task.task == "node":
        idx = torch.as_tensor(elems, dtype=torch.long)
        if recipe is not None and recipe.loss == "ovr_logistic":
            y = nn.functional.one_hot(task.data.y[idx], out.shape[1]).to(out.dtype) * 2 - 1
            per = -nn.functional.logsigmoid(y * out[idx]).sum(1)
            return per.sum() if reduction == "sum" else per.mean()
        return nn.functional.cross_entropy(out[idx], task.data.y[idx], reduction=reduction)
    pairs, labels = elems
    return nn.functional.binary_cross_entropy_with_logits(model.decode(out, pairs), labels, reduction=reduction)


def link_elems(pos: np.ndarray, neg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pairs (2, k), labels (k,))`` of positive pairs int64 (k1, 2) and optional negatives int64 (2, k2)."""
    p = torch.as_tensor(np.asarray(pos), dtype=torch.long).reshape(-1, 2).t().contiguous()
    labels = torch.ones(p.shape[1])
    if neg is not None and neg.numel():
        p = torch.cat([p, neg], dim=1)
        labels = torch.cat([labels, torch.zeros(neg.shape[1])])
    return p, labels


def retain_elements(task: GraphTask) -> Any:
    """D_r's training elements: retained labelled nodes (node task) or retained positive edges (link task)."""
    if task.task == "node":
        return task.view("retain").train_nodes
    return task.train_pairs("retain")


def forget_elements(task: GraphTask) -> np.ndarray:
    """The training elements carrying D_f's influence, for losses on D_f.

    node task: D_f's nodes (node / feature targets) or the labelled endpoints of D_f's edges (edge target);
    link task: (k, 2) pairs — D_f's edges (edge), the deleted nodes' edges (node), or the training edges touching
    the nodes whose features are deleted (feature).
    """
    d = task.data
    if task.task == "node":
        if task.target == "edge":
            return np.intersect1d(np.unique(d.edges[task.forget].reshape(-1)), d.train_nodes)
        return task.forget
    if task.target in ("edge", "node"):
        return d.edges[task.removed_edge_ids]
    e = d.edges[task.train_edge_ids]
    return e[np.isin(e[:, 0], task.forget) | np.isin(e[:, 1], task.forget)]


def check_loss(loss: torch.Tensor, step: int, desc: str) -> None:
    """Raise :class:`DivergenceError` before a NaN/inf loss can update a weight."""
    lv = float(loss.detach())
    if not math.isfinite(lv):
        raise DivergenceError(f"{desc}: loss became {lv} at step {step}; lower the learning rate", step=step, loss=lv)


def make_optimizer(params, recipe: GraphTrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)


def fit_graph(model: nn.Module, task: GraphTask, which: Which, recipe: GraphTrainConfig, *, seed: int,
              x: torch.Tensor | None = None, edge_index: torch.Tensor | None = None,
              train_nodes: np.ndarray | None = None, train_pairs: np.ndarray | None = None,
              labels: torch.Tensor | None = None, desc: str = "train") -> float:
    """Train ``model`` full-batch on the ``which`` view of ``task`` (or the given subgraph); returns seconds.

    ``x`` / ``edge_index`` / ``train_nodes`` / ``train_pairs`` / ``labels`` override the view (GraphEraser's
    re-indexed shard subgraphs).
    Randomness (dropout, negative samples, objective noise) comes from ``seed``.

    Raises:
        DivergenceError: a NaN/inf loss.  MethodError: ``ovr_logistic`` on a model other than SGC without bias.
    """
    v = task.view(which)
    x = v.x if x is None else x
    ei = v.edge_index if edge_index is None else edge_index
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if recipe.loss == "ovr_logistic":
        if task.task != "node":
            raise MethodError("loss ovr_logistic is for the node task (one-vs-rest logistic regression on SGC "
                              "features)")
        nodes = v.train_nodes if train_nodes is None else train_nodes
        fit_ovr_sgc(model, x, ei, nodes, task.data.y, task.data.num_classes, recipe, seed=seed)
        return time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), recipe)
    model.train()
    if task.task == "node":
        nodes = torch.as_tensor(v.train_nodes if train_nodes is None else train_nodes, dtype=torch.long)
        if len(nodes) == 0:
            raise MethodError(f"{desc}: no labelled training node to train on")
    else:
        pos = task.train_pairs(which) if train_pairs is None else train_pairs
        if len(pos) == 0:
            raise MethodError(f"{desc}: no training edge to train on")
    for step in range(recipe.epochs):
        opt.zero_grad()
        out = model(x, ei)
        if task.task == "node":
            y = task.data.y if labels is None else labels
            loss = nn.functional.cross_entropy(out[nodes], y[nodes])
        else:
            loss = element_loss(model, out, task, link_elems(pos, sample_negatives(task, which, len(pos), gen)))
        check_loss(loss, step, desc)
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------------
# one-vs-rest logistic regression on SGC features (Chien et al. 2022; Guo et al. 2020)
# ---------------------------------------------------------------------------------------------------------------------
def sgc_weight(model: nn.Module) -> torch.Tensor:
    """The (C, d) weight of an SGC model without bias; ``MethodError`` for any other model."""
    convs = getattr(model, "convs", None)
    if getattr(model, "arch", None) != "sgc" or convs is None or convs[0].lin.bias is not None:
        raise MethodError("certified removal needs the SGC model without bias (graph.model: {arch: sgc, "
                          "bias: false}) trained with graph.train.loss: ovr_logistic")
    return convs[0].lin.weight


def ovr_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float64 (n, C) one-vs-rest targets in {−1, +1}."""
    return nn.functional.one_hot(y, num_classes).double() * 2 - 1


def ovr_grad(w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, lam: float) -> torch.Tensor:
    """Gradient of the summed objective Σ_i −log σ(y_ik x_iᵀw_k) + λn/2‖w_k‖², per class: float64 (d, C).

    Chien et al.'s ``lr_grad`` (sum form): Xᵀ((σ(y∘Xw) − 1)∘y) + λ n w.
    """
    z = torch.sigmoid(Y * (X @ w))
    return X.t() @ ((z - 1) * Y) + lam * X.shape[0] * w


def ovr_hessian_solve(w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, lam: float, g: torch.Tensor) -> torch.Tensor:
    """H_k⁻¹ g_k for every class k, float64 (d, C), H_k = Xᵀ diag(σ_k(1−σ_k)) X + λ n I.

    Solved in the smaller of the two dimensions: directly (d ≤ n) or through the Woodbury identity
    H⁻¹ = (I − Xᵀ(λn D⁻¹ + XXᵀ)⁻¹X)/(λn) (n < d), with a Cholesky factorisation.
    """
    n, d = X.shape
    z = torch.sigmoid(Y * (X @ w))
    D = (z * (1 - z)).clamp_min(1e-12)
    out = torch.empty_like(g)
    ln = lam * n
    if d <= n:
        for k in range(g.shape[1]):
            H = X.t() @ (D[:, k:k + 1] * X) + ln * torch.eye(d, dtype=X.dtype)
            out[:, k] = torch.cholesky_solve(g[:, k:k + 1], torch.linalg.cholesky(H)).view(-1)
    else:
        G = X @ X.t()
        for k in range(g.shape[1]):
            M = G + torch.diag(ln / D[:, k])
            u = torch.cholesky_solve((X @ g[:, k:k + 1]), torch.linalg.cholesky(M))
            out[:, k] = ((g[:, k:k + 1] - X.t() @ u) / ln).view(-1)
    return out


def fit_ovr_sgc(model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor, nodes: np.ndarray, y: torch.Tensor,
                num_classes: int, recipe: GraphTrainConfig, *, seed: int) -> torch.Tensor:
    """Train SGC's weight by L-BFGS on the perturbed one-vs-rest objective; returns the noise b (d, C).

    Objective (Chien et al. 2022, ``ovr_lr_loss`` + ``b·w/n``): Σ_k mean_i −log σ(y_ik x_iᵀw_k) + λ/2‖w‖² + Σ(b∘w)/n,
    x_i = (Â^K X)_i, b ~ N(0, noise_std²) elementwise (seeded by ``seed``), w initialised at zero.
    """
    from unlearnkit.models.graph import sgc_features

    W = sgc_weight(model)
    X = sgc_features(x, edge_index, model.K)[torch.as_tensor(nodes, dtype=torch.long)].double()
    Y = ovr_targets(y[torch.as_tensor(nodes, dtype=torch.long)], num_classes)
    gen = torch.Generator().manual_seed(seed)
    b = recipe.noise_std * torch.randn(X.shape[1], num_classes, generator=gen, dtype=torch.float64)
    w = ovr_minimise(X, Y, recipe.l2, b, recipe.lbfgs_steps)
    with torch.no_grad():
        W.copy_(w.t().float())
    return b


def ovr_minimise(X: torch.Tensor, Y: torch.Tensor, lam: float, b: torch.Tensor | None, steps: int) -> torch.Tensor:
    """argmin_w of the perturbed objective by L-BFGS (lr 1, as the reference), float64 (d, C), from w = 0."""
    w = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, tolerance_grad=1e-12, tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")
    n = X.shape[0]

    def closure():
        opt.zero_grad()
        loss = -nn.functional.logsigmoid(Y * (X @ w)).mean(0).sum() + lam * w.pow(2).sum() / 2
        if b is not None:
            loss = loss + (b * w).sum() / n
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return w.detach()


# ---------------------------------------------------------------------------------------------------------------------
# the graph unlearner contract
# ---------------------------------------------------------------------------------------------------------------------
class GraphUnlearner(Unlearner):
    """Base of graph-track methods: ``unlearn_graph(model, task, engine, context)`` on a :class:`GraphTask`.

    The classifier entry point ``unlearn(model, forget, retain, ...)`` is refused with a ``MethodError``: graph
    methods need the graph (the track calls :meth:`unlearn_graph`).
    """

    track: ClassVar[str] = "graph"
    #: deletion targets the method serves
    targets: ClassVar[tuple[str, ...]] = ("edge", "node", "feature")
    #: learning tasks the method serves
    tasks: ClassVar[tuple[str, ...]] = ("node", "link")

    def _unlearn(self, model, forget, retain, engine, context):  # noqa: D401 - classifier entry point
        raise MethodError(f"{type(self).__name__} is a graph method: run it through the graph track "
                          "(track: graph) or call unlearn_graph(model, task, engine, context)")

    def check_task(self, task: GraphTask) -> None:
        """Raise ``MethodError`` if the method cannot serve ``task`` (target, task kind, model)."""
        name = type(self).__name__
        if task.target not in self.targets:
            raise MethodError(f"{name} does not unlearn {task.target}s (it serves: {', '.join(self.targets)})")
        if task.task not in self.tasks:
            raise MethodError(f"{name} does not serve the {task.task} task (it serves: {', '.join(self.tasks)})")

    def unlearn_graph(self, model: nn.Module, task: GraphTask, engine: Engine,
                      context: UnlearnContext | None = None) -> UnlearnResult:
        """Make ``model`` (θ_o, modified or replaced) forget ``task``'s D_f; times the call.

        ``seconds`` excludes preparation that a deployed system does before any request (GraphEraser's shard
        training), which the method reports in ``notes["prepare_seconds"]``.

        Raises:
            MethodError: empty D_f, or a target / task / model the method cannot serve.
            DivergenceError: a NaN/inf loss.
        """
        context = context or UnlearnContext()
        if len(task.forget) == 0:
            raise MethodError(f"{type(self).__name__}: the forget set is empty; nothing to unlearn")
        self.check_task(task)
        engine.seed_everything(context.seed)
        t0 = time.perf_counter()
        result = self._unlearn_graph(model, task, engine, context)
        result.seconds = time.perf_counter() - t0 - float(result.notes.get("prepare_seconds", 0.0))
        return result

    @abstractmethod
    def _unlearn_graph(self, model: nn.Module, task: GraphTask, engine: Engine,
                       context: UnlearnContext) -> UnlearnResult:
        """The method itself (inputs validated)."""

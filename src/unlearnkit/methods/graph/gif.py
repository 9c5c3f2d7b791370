"""GIF, graph influence function (Wu, Yang, Qian, Lu, Zhou, Yang; WWW 2023, arXiv:2304.02835)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import DivergenceError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.graph._common import (
    GraphTrainConfig,
    GraphUnlearner,
    element_loss,
    link_elems,
    sample_negatives,
)
from unlearnkit.registry import METHODS


class GIFConfig(Frozen):
    """GIF settings: the LiSSA recursion of the reference code (wujcan/GIF-torch ``gif_approxi``:
    ``h ← v + (1 − damp)·h − H h / scale``, Δθ = h / scale, 100 iterations, damp 0). ``scale`` must exceed the
    largest eigenvalue of the summed training loss's Hessian for the recursion to converge; the reference takes it
    from the command line per data set, we estimate λ_max by power iteration when it is not given."""

    iterations: int = Field(100, ge=1, description="LiSSA recursion steps")
    damp: float = Field(0.0, ge=0, lt=1)
    scale: float | None = Field(None, gt=0, description="LiSSA scale (> λ_max of the summed-loss Hessian); None = "
                                                       "1.5 × λ_max estimated by power iteration")
    power_iterations: int = Field(20, ge=1, description="power iterations for λ_max when scale is None")
    hops: int | None = Field(None, ge=0, description="influenced neighbourhood radius; None = the model's "
                                                     "receptive field (its message-passing hops), + 1 for node "
                                                     "deletions (their neighbours' degrees change, and degree "
                                                     "normalisation carries that one hop further)")


@METHODS.register("gif", config=GIFConfig)
class GIF(GraphUnlearner):
    """Graph influence function: one influence-function step that accounts for the deletion's ripple through
    message passing.

    θ_u = θ_o + H⁻¹ (∇_θ L_old(θ_o) − ∇_θ L_new(θ_o))  (paper Eq. 8 / Theorem 1), with

    - L_old: summed loss of the training elements the deletion affects, on the original graph — the deleted
      elements and the influenced elements within ``hops`` hops of the deletion;
    - L_new: summed loss of the influenced elements that remain, on the retain graph;
    - H: Hessian of the summed training loss on the original graph at θ_o, inverted by the LiSSA recursion
      h ← v + (1 − damp) h − H h / scale (Hessian-vector products by double back-propagation), Δθ = h / scale.

    The losses are those θ_o was trained with (``context.train_recipe``): cross-entropy, or for an SGC trained
    with ``loss: ovr_logistic`` the one-vs-rest logistic loss, whose objective's L2 term λn/2‖w‖² then enters H
    (it is part of the objective θ_o minimises; with the cross-entropy loss of a GCN we follow the reference
    code, whose H has no weight-decay term). Cross-entropy on a one-vs-rest model (this method before 2026-11)
    makes the step a Newton step of another objective (test accuracy 32 % instead of 85 % on Cora).

    Node task: elements are labelled nodes (cross-entropy). Link task: positive training edges (binary
    cross-entropy) and, for H, as many sampled non-edges (seeded). This is the Newton step of the retrained
    objective when θ_o is a stationary point of L_all (the derivation's assumption).

    Raises:
        DivergenceError: the recursion diverges: negative curvature at θ_o (set ``damp`` > 0) or a Hessian
            eigenvalue above 2·``scale`` (raise ``scale``); the message says which to try.
    """

    source: ClassVar[str] = ("Wu et al., GIF: A General Graph Unlearning Strategy via Influence Function, WWW "
                             "2023, arXiv:2304.02835; code wujcan/GIF-torch")
    smoke_params: ClassVar[dict[str, Any]] = {"iterations": 5}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        # a deleted node changes its neighbours' degrees; with symmetric normalisation (GCN, SGC) Â_jk depends on
        # deg(k), so the outputs change up to L + 1 hops away (checked against an exact computation in the tests)
        hops = cfg.hops if cfg.hops is not None else int(model.hops[-1]) + (1 if task.target == "node" else 0)
        influenced = task.khop_nodes(hops, "original")
        ov, rv = task.view("original"), task.view("retain")
        if task.task == "node":
            train_o = ov.train_nodes
            old = np.intersect1d(train_o, influenced)  # influenced ∪ deleted labelled nodes (deleted are anchors)
            new = np.intersect1d(rv.train_nodes, influenced)
            all_elems: Any = train_o
        else:
            po = task.train_pairs("original")
            pr = task.train_pairs("retain")
            touch_o = np.isin(po[:, 0], influenced) | np.isin(po[:, 1], influenced)
            touch_r = np.isin(pr[:, 0], influenced) | np.isin(pr[:, 1], influenced)
            old, new = link_elems(po[touch_o]), link_elems(pr[touch_r])
            gen = torch.Generator().manual_seed(derive_seed(context.seed, "gif-negatives"))
            all_elems = link_elems(po, sample_negatives(task, "original", len(po), gen))
        params = [p for p in model.parameters() if p.requires_grad]
        model.eval()
        recipe = getattr(context, "train_recipe", None)
        recipe = recipe if isinstance(recipe, GraphTrainConfig) else None
        ovr = recipe is not None and recipe.loss == "ovr_logistic" and task.task == "node"

        def grads(view, elems, create_graph=False, objective=False):
            loss = element_loss(model, model(view.x, view.edge_index), task, elems, reduction="sum", recipe=recipe)
            if objective and ovr:  # the summed objective: Σ_i ℓ_i + λn/2‖w‖²
                loss = loss + recipe.l2 * _size(elems) / 2 * sum(p.pow(2).sum() for p in params)
            return torch.autograd.grad(loss, params, create_graph=create_graph)

        g_old = grads(ov, old)
        g_new = grads(rv, new) if _size(new) else [torch.zeros_like(p) for p in params]
        v = [a - b for a, b in zip(g_old, g_new)]
        if ovr:  # the objective's L2 term scales with the number of training nodes, which a node deletion lowers
            dn = len(ov.train_nodes) - len(rv.train_nodes)
            v = [vi + recipe.l2 * dn * p.detach() for vi, p in zip(v, params)]
        g_all = grads(ov, all_elems, create_graph=True, objective=True)
        scale = cfg.scale
        if scale is None:
            scale = 1.5 * top_eigenvalue(g_all, params, cfg.power_iterations, derive_seed(context.seed, "gif-power"))
        h = [t.clone() for t in v]
        v_norm = math.sqrt(sum(float(t.pow(2).sum()) for t in v))
        for it in range(cfg.iterations):
            hv = torch.autograd.grad(g_all, params, grad_outputs=h, retain_graph=True)
            with torch.no_grad():
                h = [vi + (1 - cfg.damp) * hi - hvi / scale for vi, hi, hvi in zip(v, h, hv)]
            norm = math.sqrt(sum(float(t.pow(2).sum()) for t in h))
            if not math.isfinite(norm) or norm > 1e6 * max(v_norm, 1e-12) * scale:
                raise DivergenceError(
                    f"gif: the LiSSA recursion diverged at iteration {it} (‖h‖ = {norm:.3g}). It converges only "
                    f"when every Hessian eigenvalue lies in (0, 2·scale), scale = {scale:.4g}: for negative "
                    "curvature (θ_o not at a minimum — train it longer — or a non-convex model) set damp > 0, which "
                    "inverts H + damp·scale·I; for a top eigenvalue above 2·scale raise scale", step=it, loss=norm)
        with torch.no_grad():
            for p, hi in zip(params, h):
                p.add_(hi / scale)
        return UnlearnResult(model, steps=cfg.iterations,
                             notes={"influenced_nodes": int(len(influenced)), "hops": hops, "scale": scale,
                                    "loss": "ovr_logistic + λn/2‖w‖²" if ovr else "cross_entropy",
                                    "update_norm": math.sqrt(sum(float((hi / scale).pow(2).sum()) for hi in h))})


def top_eigenvalue(grads, params, iterations: int, seed: int) -> float:
    """|λ|_max of the Hessian (given the gradient graph ``grads``) by power iteration on Hessian-vector products."""
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g) for p in params]
    lam = 0.0
    for _ in range(iterations):
        norm = math.sqrt(sum(float(t.pow(2).sum()) for t in v))
        v = [t / max(norm, 1e-30) for t in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        lam = math.sqrt(sum(float(t.pow(2).sum()) for t in hv))
        v = [t.detach() for t in hv]
    return max(lam, 1e-6)


def _size(elems: Any) -> int:
    return int(elems[0].shape[1]) if isinstance(elems, tuple) else int(len(elems))

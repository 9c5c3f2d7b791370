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
from unlearnkit.methods._solver import solver_note
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.graph._common import (
    GraphTrainConfig,
    GraphUnlearner,
    element_loss,
    link_elems,
    sample_negatives,
)
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class GIFConfig(Frozen):
    """GIF settings: the LiSSA recursion of the reference code (wujcan/GIF-torch ``gif_approxi``:
    ``h ← v + (1 − damp)·h − H h / scale``, Δθ = h / scale; README command: 100 iterations, scale 500, damp 0).
    The recursion solves (H + damp·scale·I) Δθ = v; it converges when every eigenvalue of H + damp·scale·I lies in
    (0, 2·scale), at the rate max_i |1 − damp − λ_i/scale| per iteration. ``scale`` must exceed the largest
    eigenvalue of the summed training loss's Hessian; the reference takes it from the command line per data set, we
    estimate λ_max by power iteration when it is not given.

    Deviation from the reference (damp 0): ``damp`` defaults to 0.05, so that the solve converges (relative
    residual ≤ ``tolerance`` = 1e-2) within the reference's 100 iterations on the bundled Cora configs. With damp 0
    the contraction rate is 1 − λ_min/scale, ≈ 1 for the near-flat directions of a GCN's or a cross-entropy SGC's
    Hessian: 100 iterations then compute a truncated Neumann series, not H⁻¹v (measured relative residual 0.20 on
    graph_cora_nodes, 0.083 on graph_cora_edges, 0.32 with an SGC trained by cross-entropy), and a negative-curvature
    direction (a GCN is non-convex) makes it diverge. damp 0.05 solves the ridge-regularised system
    (H + 0.05·scale·I)Δθ = v (with scale = 1.5·λ_max: a ridge of 7.5 % of λ_max; Koh & Liang 2017's LiSSA adds a
    damping term for the same reason), which converges at rate ≤ 0.95 per iteration whatever v is: 59, 45 and 67
    iterations on those three settings; damp 0.01 / 0.02 still stop unconverged at 100 (residuals 0.03–0.12 /
    0.01–0.04). The distance to the oracle moves little either way (BENCHMARKS.md, "GIF convergence";
    ``benchmarks/gif_convergence.py``). ``notes["solver"]`` reports the residual reached.
    """

    iterations: int = Field(100, ge=1, description="largest number of LiSSA recursion steps (reference: 100); the "
                                                   "recursion stops earlier once the residual is below tolerance")
    damp: float = Field(0.05, ge=0, lt=1, description="LiSSA damping: solves (H + damp·scale·I)Δθ = v "
                                                      "(reference: 0, which does not converge on Cora; see above)")
    scale: float | None = Field(None, gt=0, description="LiSSA scale (> λ_max of the summed-loss Hessian); None = "
                                                       "1.5 × λ_max estimated by power iteration")
    tolerance: float = Field(1e-2, gt=0, description="relative residual ‖(H + damp·scale·I)Δθ − v‖/‖v‖ accepted as "
                                                    "converged; the recursion stops there, and notes['solver'] "
                                                    "says converged: false when it is not reached")
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
      h ← v + (1 − damp) h − H h / scale (Hessian-vector products by double back-propagation), Δθ = h / scale,
      which solves (H + damp·scale·I) Δθ = v (``damp`` > 0 regularises, see :class:`GIFConfig`).

    Convergence is checked: the relative residual ρ_t = ‖v − (H + damp·scale·I) h_t/scale‖ / ‖v‖ of each iterate
    equals ‖h_{t+1} − h_t‖/‖v‖, so it costs nothing; the recursion stops at ``tolerance`` or after ``iterations``
    steps (then the returned iterate's residual is computed with one more Hessian-vector product).
    ``notes["solver"]`` = ``{"name": "lissa", "residual", "iterations", "converged", "tolerance", "damp", "scale",
    "max_iterations"}`` (see :func:`unlearnkit.methods._solver.solver_note`); ``notes["power_iteration"]`` gives
    the λ_max estimate and its last relative change when ``scale`` was estimated.

    The losses are those θ_o was trained with (``context.train_recipe``): cross-entropy, or for an SGC trained
    with ``loss: ovr_logistic`` the one-vs-rest logistic loss, whose objective's L2 term λn/2‖w‖² then enters H
    (it is part of the objective θ_o minimises; with the cross-entropy loss of a GCN we follow the reference
    code, whose H has no weight-decay term). Cross-entropy on a one-vs-rest model (this method before 2026-11)
    makes the step a Newton step of another objective (test accuracy 32 % instead of 85 % on Cora).

    Node task: elements are labelled nodes (cross-entropy). Link task: positive training edges (binary
    cross-entropy) and, for H, as many sampled non-edges (seeded). This is the Newton step of the retrained
    objective when θ_o is a stationary point of L_all (the derivation's assumption).

    Raises:
        DivergenceError: the recursion diverges: negative curvature at θ_o beyond damp·scale (raise ``damp``) or a
            Hessian eigenvalue above 2·``scale`` (raise ``scale``); the message says which to try. A solve that
            stops at ``iterations`` above ``tolerance`` is not an error: ``notes["solver"]["converged"]`` is False.
    """

    source: ClassVar[str] = ("Wu et al., GIF: A General Graph Unlearning Strategy via Influence Function, WWW "
                             "2023, arXiv:2304.02835; code wujcan/GIF-torch")
    #: unlearnkit tune: LiSSA damping and steps
    search_space: ClassVar[dict[str, Any]] = {"damp": LogFloat(1e-3, 0.5), "iterations": Int(10, 300, log=True)}
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
        power: dict[str, Any] | None = None
        if scale is None:
            lam_max, change = top_eigenvalue_with_change(g_all, params, cfg.power_iterations,
                                                         derive_seed(context.seed, "gif-power"))
            scale = 1.5 * lam_max
            power = {"eigenvalue": lam_max, "relative_change": change, "iterations": cfg.power_iterations}
        h, residual, steps = lissa(g_all, params, v, scale=scale, damp=cfg.damp, iterations=cfg.iterations,
                                   tolerance=cfg.tolerance)
        with torch.no_grad():
            for p, hi in zip(params, h):
                p.add_(hi / scale)
        notes: dict[str, Any] = {
            "influenced_nodes": int(len(influenced)), "hops": hops, "scale": scale,
            "loss": "ovr_logistic + λn/2‖w‖²" if ovr else "cross_entropy",
            "update_norm": math.sqrt(sum(float((hi / scale).pow(2).sum()) for hi in h)),
            "solver": solver_note("lissa", residual=residual, iterations=steps, tolerance=cfg.tolerance,
                                  damp=cfg.damp, scale=scale, max_iterations=cfg.iterations),
        }
        if power is not None:
            notes["power_iteration"] = power
        return UnlearnResult(model, steps=steps, notes=notes)


def lissa(grads, params, v: list[torch.Tensor], *, scale: float, damp: float, iterations: int,
          tolerance: float) -> tuple[list[torch.Tensor], float, int]:
    """The LiSSA recursion h ← v + (1 − damp)·h − H h / scale from h = v, stopped at a relative residual ≤
    ``tolerance`` or after ``iterations`` updates.

    Args:
        grads: the gradient tuple of the summed loss built with ``create_graph=True`` (H v by double
            back-propagation).  params: the parameters it is taken with respect to.  v: the right-hand side.
        scale: > 0.  damp: in [0, 1).

    Returns:
        ``(h, residual, iterations)``: the iterate (Δθ = h / scale solves (H + damp·scale·I)Δθ = v), its relative
        residual ‖v − (H/scale + damp)·h‖ / ‖v‖ (exact, one Hessian-vector product per iteration plus one), and the
        number of updates made. A zero ``v`` returns h = 0, residual 0, 0 iterations.

    Raises:
        DivergenceError: the iterate grows without bound (negative curvature beyond damp·scale, or an eigenvalue
            above 2·scale); the message says which setting to change.
    """
    v_norm = math.sqrt(sum(float(t.pow(2).sum()) for t in v))
    if v_norm == 0.0:
        return [torch.zeros_like(t) for t in v], 0.0, 0
    h = [t.clone() for t in v]
    it = 0
    while True:
        hv = torch.autograd.grad(grads, params, grad_outputs=h, retain_graph=True)
        with torch.no_grad():
            step = [vi - damp * hi - hvi / scale for vi, hi, hvi in zip(v, h, hv)]  # = h_{t+1} − h_t
        residual = math.sqrt(sum(float(t.pow(2).sum()) for t in step)) / v_norm
        if not math.isfinite(residual) or residual > 1e6:
            raise DivergenceError(
                f"gif: the LiSSA recursion diverged at iteration {it} (relative residual {residual:.3g}). It "
                f"converges only when every eigenvalue of H + damp·scale·I lies in (0, 2·scale), scale = "
                f"{scale:.4g}, damp = {damp:g}: for negative curvature (θ_o not at a minimum — train it longer — or a "
                "non-convex model) raise damp; for a top eigenvalue above 2·scale raise scale", step=it,
                loss=residual)
        if residual <= tolerance or it >= iterations:
            return h, residual, it
        with torch.no_grad():
            h = [hi + si for hi, si in zip(h, step)]
        it += 1


def top_eigenvalue(grads, params, iterations: int, seed: int) -> float:
    """|λ|_max of the Hessian (given the gradient graph ``grads``) by power iteration on Hessian-vector products."""
    return top_eigenvalue_with_change(grads, params, iterations, seed)[0]


def top_eigenvalue_with_change(grads, params, iterations: int, seed: int) -> tuple[float, float]:
    """``(|λ|_max, relative change of the estimate in the last iteration)`` by power iteration (seeded start);
    the estimate is floored at 1e-6."""
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g) for p in params]
    lam, prev = 0.0, float("nan")
    for _ in range(iterations):
        norm = math.sqrt(sum(float(t.pow(2).sum()) for t in v))
        v = [t / max(norm, 1e-30) for t in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        prev, lam = lam, math.sqrt(sum(float(t.pow(2).sum()) for t in hv))
        v = [t.detach() for t in hv]
    change = abs(lam - prev) / max(lam, 1e-30) if iterations > 1 else float("nan")
    return max(lam, 1e-6), change


def _size(elems: Any) -> int:
    return int(elems[0].shape[1]) if isinstance(elems, tuple) else int(len(elems))

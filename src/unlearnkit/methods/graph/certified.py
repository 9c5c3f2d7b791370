"""Certified edge / node / feature removal for SGC + logistic regression (Chien, Pan, Milenkovic 2022,
arXiv:2206.09140; building on Guo, Goldstein, Hannun, van der Maaten 2020, arXiv:1911.03030)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods._solver import solver_note
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.graph._common import (GraphTrainConfig, GraphUnlearner, ovr_grad, ovr_hessian_solve,
                                              ovr_minimise, ovr_targets, sgc_weight)
from unlearnkit.registry import METHODS

#: γ, the Lipschitz constant of the logistic loss's second derivative (−log σ: 1/4), as in the reference
GAMMA = 0.25
#: largest relative residual ‖H Δ − g‖/‖g‖ of a Newton step accepted as solved (float64 Cholesky reaches ~1e-12)
NEWTON_TOLERANCE = 1e-6
#: largest relative gradient norm ‖∇L(w)‖/‖∇L(0)‖ of a noisy retraining accepted as converged
RETRAIN_TOLERANCE = 1e-5


def newton_residual(w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, lam: float, g: torch.Tensor,
                    delta: torch.Tensor) -> float:
    """Relative residual ‖H Δ − g‖_F / ‖g‖_F of the per-class Newton systems H_k Δ_k = g_k (float64 inputs:
    w, Δ, g (d, C); X (n, d); Y (n, C) in {−1, +1}), H_k = Xᵀ diag(σ_k(1−σ_k)) X + λ n I, by Hessian-vector products
    (independent of the factorisation that solved it); 0 for g = 0."""
    z = torch.sigmoid(Y * (X @ w))
    hd = X.t() @ ((z * (1 - z)) * (X @ delta)) + lam * X.shape[0] * delta
    gn = float(g.norm())
    return float((hd - g).norm()) / gn if gn > 0 else 0.0


def retrain_gradient_norm(w: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, lam: float, b: torch.Tensor) -> float:
    """‖∇L(w)‖ / ‖∇L(0)‖ of the perturbed objective :func:`ovr_minimise` minimises (mean loss + λ/2‖w‖² + b·w/n)."""
    n = X.shape[0]
    grad = (ovr_grad(w, X, Y, lam) + b) / n
    g0 = (ovr_grad(torch.zeros_like(w), X, Y, lam) + b) / n
    return float(grad.norm()) / max(float(g0.norm()), 1e-300)


class CertifiedConfig(Frozen):
    """Certified removal settings (reference code thupchnsky/sgc_unlearn: ε = 1, δ = 1e-4, one removal per
    request). ``request_size`` > 1 removes several elements per Newton step (fewer Hessian solves; the bound is
    then accumulated per step)."""

    epsilon: float = Field(1.0, gt=0, description="ε of the (ε, δ) certificate")
    delta: float = Field(1e-4, gt=0, lt=1, description="δ of the (ε, δ) certificate")
    request_size: int = Field(1, ge=1, description="elements removed per Newton step (reference: 1)")
    power_iterations: int = Field(100, ge=1, description="power iterations for ‖X‖₂ (reference: 100)")
    retrain_on_budget: bool = Field(True, description="retrain with fresh noise when the accumulated bound "
                                                      "exceeds the budget (reference behaviour)")


def certificate_budget(noise_std: float, epsilon: float, delta: float, num_classes: int) -> float:
    """Budget on the accumulated gradient-residual bound: σ ε / c · C with c = √(2 log(1.5/δ)) (Guo et al. 2020,
    Theorem 3; one-vs-rest: one budget per class, summed as in the reference's ``get_budget(...) * C``)."""
    return noise_std * epsilon / math.sqrt(2 * math.log(1.5 / delta)) * num_classes


def spectral_norm(X: torch.Tensor, iterations: int, seed: int) -> float:
    """‖X‖₂ = √λ_max(XᵀX) by power iteration (deterministic start vector from ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(X.shape[1], generator=g, dtype=X.dtype)
    for _ in range(iterations):
        v = X.t() @ (X @ v)
        v = v / v.norm().clamp_min(1e-300)
    return math.sqrt(max(float(v @ (X.t() @ (X @ v))), 0.0))


@METHODS.register("certified_sgc", config=CertifiedConfig)
class CertifiedSGC(GraphUnlearner):
    """Certified graph unlearning: Newton-step removal with a tracked data-dependent certificate budget.

    Model: SGC without bias and one-vs-rest logistic regression, trained on the perturbed objective
    L(w) = Σ_k [Σ_i −log σ(y_ik x_iᵀw_k) + λn/2 ‖w_k‖² + b_kᵀw_k], x_i = (Â^K X)_i, b ~ N(0, σ²) (graph track
    recipe ``loss: ovr_logistic``). A request removes edges (the propagation matrix changes, so every x_i may),
    nodes (rows leave the sum and their edges vanish) or node features (rows zeroed, labels dropped). Per request
    and class k (Chien et al. 2022 Alg. 1, reference ``sgc_edge_unlearn.py``):

        Δ_k = H_k⁻¹ (∇L_old(w_k) − ∇L_new(w_k)),  H_k = X_newᵀ D_k X_new + λ n_new I,  w_k ← w_k + Δ_k

    (gradients of the summed loss without the noise term, at the current w, on the old and the new features), the
    Newton step on the new objective when w is its predecessor's optimum. The data-dependent bound on the new
    gradient residual, β = Σ_k γ ‖Δ_k‖ ‖X_new Δ_k‖ ‖X_new‖₂ (γ = 1/4), accumulates over requests; when the sum
    would exceed the budget σε/c·C (c = √(2 log(1.5/δ))), the model is retrained from scratch on the current
    graph with fresh noise and the sum resets — then the (ε, δ) certificate of Guo et al. 2020 holds for every
    released model. ``notes`` record the bound, the budget and the number of retrainings.

    Linear solves use a Cholesky factorisation in float64 (the reference inverts H), in the smaller of d and n
    (Woodbury identity when n < d). ``notes["solver"]`` reports the largest relative residual ‖HΔ − g‖/‖g‖ of the
    Newton steps, checked by Hessian-vector products (``converged`` when ≤ ``NEWTON_TOLERANCE`` = 1e-6), and, when a
    noisy retraining ran, ``notes["retrain_solver"]`` the L-BFGS solution's relative gradient norm (tolerance
    ``RETRAIN_TOLERANCE`` = 1e-5).

    Raises:
        MethodError: a model other than SGC without bias, a recipe other than ``ovr_logistic``, the link task.
    """

    kind: ClassVar[str] = "certified"
    tasks: ClassVar[tuple[str, ...]] = ("node",)
    source: ClassVar[str] = ("Chien, Pan, Milenkovic, Certified Graph Unlearning, 2022, arXiv:2206.09140; Guo et "
                             "al., Certified Data Removal, ICML 2020, arXiv:1911.03030; code thupchnsky/sgc_unlearn")
    #: unlearnkit tune: certified: ε and δ are the user's privacy budget, not a setting to tune
    search_space: ClassVar[dict[str, Any]] = {}
    smoke_params: ClassVar[dict[str, Any]] = {"request_size": 4}

    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:
        from unlearnkit.models.graph import sgc_features

        cfg = self.config
        recipe = context.train_recipe
        if not isinstance(recipe, GraphTrainConfig) or recipe.loss != "ovr_logistic":
            raise MethodError("certified_sgc needs θ_o trained with graph.train.loss: ovr_logistic (the removal-"
                              "enabled objective with noise); got " + str(getattr(recipe, "loss", None)))
        W = sgc_weight(model)
        d = task.data
        C, K, lam = d.num_classes, model.K, recipe.l2
        w = W.detach().t().double().clone()
        budget = certificate_budget(recipe.noise_std, cfg.epsilon, cfg.delta, C)
        order = np.random.default_rng(derive_seed(context.seed, "certified-order")).permutation(task.forget)
        requests = [order[i:i + cfg.request_size] for i in range(0, len(order), cfg.request_size)]
        # the current graph: x rows, undirected training edges, labelled training nodes
        x = d.x.clone()
        edge_alive = np.ones(d.num_edges, bool)
        edge_alive[np.setdiff1d(np.arange(d.num_edges), task.train_edge_ids)] = False
        nodes = task.view("original").train_nodes.copy()
        from unlearnkit.data.graph import edge_index_of

        def features() -> torch.Tensor:
            return sgc_features(x, edge_index_of(d.edges[edge_alive]), K).double()

        X_all = features()
        bound_sum, bounds, retrains = 0.0, [], 0
        residual, retrain_grad = 0.0, 0.0
        for r, req in enumerate(requests):
            X_old, y_old = X_all[torch.from_numpy(nodes)], d.y[torch.from_numpy(nodes)]
            if task.target == "edge":
                edge_alive[req] = False
            else:
                x[torch.from_numpy(req)] = 0.0
                nodes = np.setdiff1d(nodes, req)
                if task.target == "node":
                    e = d.edges
                    edge_alive[np.isin(e[:, 0], req) | np.isin(e[:, 1], req)] = False
            X_all = features()
            idx = torch.from_numpy(nodes)
            X_new, Y_new = X_all[idx], ovr_targets(d.y[idx], C)
            g = ovr_grad(w, X_old, ovr_targets(y_old, C), lam) - ovr_grad(w, X_new, Y_new, lam)
            delta = ovr_hessian_solve(w, X_new, Y_new, lam, g)
            residual = max(residual, newton_residual(w, X_new, Y_new, lam, g, delta))
            w = w + delta
            xn = spectral_norm(X_new, cfg.power_iterations, derive_seed(context.seed, f"power-{r}"))
            beta = float(sum(GAMMA * delta[:, k].norm() * (X_new @ delta[:, k]).norm() * xn for k in range(C)))
            bounds.append(beta)
            if cfg.retrain_on_budget and bound_sum + beta > budget:
                gen = torch.Generator().manual_seed(derive_seed(context.seed, f"certified-noise-{retrains}"))
                b = recipe.noise_std * torch.randn(X_new.shape[1], C, generator=gen, dtype=torch.float64)
                w = ovr_minimise(X_new, Y_new, lam, b, recipe.lbfgs_steps)
                retrain_grad = max(retrain_grad, retrain_gradient_norm(w, X_new, Y_new, lam, b))
                retrains += 1
                bound_sum = 0.0
            else:
                bound_sum += beta
        with torch.no_grad():
            W.copy_(w.t().float())
        notes: dict[str, Any] = {
            "budget": budget, "bound_sum": bound_sum, "bound_total": float(sum(bounds)), "retrains": retrains,
            "requests": len(requests), "certified": bool(cfg.retrain_on_budget or bound_sum <= budget),
            "solver": solver_note("cholesky", residual=residual, iterations=len(requests),
                                  tolerance=NEWTON_TOLERANCE, what="largest ‖HΔ − g‖/‖g‖ over the Newton steps"),
        }
        if retrains:
            notes["retrain_solver"] = solver_note("lbfgs", residual=retrain_grad, iterations=recipe.lbfgs_steps,
                                                  tolerance=RETRAIN_TOLERANCE, what="largest ‖∇L(w)‖/‖∇L(0)‖")
        return UnlearnResult(model, steps=len(requests), notes=notes)

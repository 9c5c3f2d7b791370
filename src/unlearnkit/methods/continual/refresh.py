"""Refresh learning (Wang, Li, Shen & Huang, "A Unified and General Framework for Continual Learning", ICLR 2024,
arXiv:2403.13249; reference code github.com/joey-wang123/CL-refresh-learning ``models/derpp.py``), as a plug-in on
DER++ (:mod:`.replay`), the reference's base learner.

Before every learning step the current batch is *unlearned a little* and then relearned (the DER++ step): with
g = ∇_θ CE(f_θ(x), y) (the gradient-ascent direction on the batch) and, per parameter tensor p,

    u_p = ‖p‖ / (‖g_p‖ + 1e-20) · g_p                          (the ascent direction rescaled to the norm of p)
    p  ← p + δ · (u_p + σ · ξ_p) / (1 + c · F_p),   ξ_p ~ N(0, I)

(elementwise division: the Fisher information F damps the parameters that matter for earlier tasks). At the end of
every Learn, F ← τ·F + F_new with F_new = (1/N) Σ_i p(y_i | x_i) · (∇_θ log p(y_i | x_i))² over the task's N samples
(the reference's ``end_task``). Defaults are the reference's constants: δ = 1e-5 (``self.delta``), c = 0.001, σ = 0.001,
τ = 1e-5 (``self.tau``).

Deviations: the reference computes g with a one-step SGD copy of the net (its step size cancels in u_p) and applies
the unlearning step *after* the DER++ step of the same batch; here it comes *before* it, as the paper's Algorithm 1
(unlearn, then relearn) and issue 17 describe — over a task the sequences differ only at its first and last batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from unlearnkit.methods.base import derive_seed
from unlearnkit.methods.continual.base import LEARNERS, LearnResult, LearnSpec, ModelInfo
from unlearnkit.methods.continual.replay import Derpp, DerppConfig, ReplayModel


class RefreshModel(ReplayModel):
    """A :class:`ReplayModel` with the diagonal Fisher of every parameter of ``net`` as buffers (``fisher_<i>``, in
    the order of ``net.named_parameters()``)."""

    def __init__(self, net: nn.Module, buffer_size: int, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(net, buffer_size, input_shape, num_classes)
        for i, (_, p) in enumerate(net.named_parameters()):
            self.register_buffer(f"fisher_{i}", torch.zeros_like(p))

    def fisher(self) -> list[torch.Tensor]:
        """The Fisher buffers, one per parameter of ``net`` (same order and shapes)."""
        return [getattr(self, f"fisher_{i}") for i, _ in enumerate(self.net.parameters())]


@torch.no_grad()
def _apply(params: list[torch.Tensor], grads: list[torch.Tensor | None], fisher: list[torch.Tensor], delta: float,
           fisher_scale: float, noise: float, gen: torch.Generator | None) -> list[torch.Tensor]:
    steps = []
    for p, g, fi in zip(params, grads, fisher):
        if g is None:
            g = torch.zeros_like(p)
        u = p.norm() / (g.norm() + 1e-20) * g
        if noise:
            u = u + noise * torch.randn(p.shape, generator=gen).to(p)
        step = delta * u / (1.0 + fisher_scale * fi)
        p.add_(step)
        steps.append(step)
    return steps


def refresh_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, fisher: list[torch.Tensor], *, delta: float,
                 fisher_scale: float, noise: float, gen: torch.Generator | None = None) -> list[torch.Tensor]:
    """One unlearning step of refresh learning on the batch ``(x, y)``, in place on ``net``'s parameters.

    Args:
        net: the network (its parameters, in ``parameters()`` order, are updated).
        x: float (b, …) inputs.  y: int64 (b,) labels.  fisher: tensors like the parameters (F ≥ 0).
        delta: δ, the step's size relative to each tensor's norm.  fisher_scale: c.  noise: σ.
        gen: generator of the Gaussian noise (needed when ``noise`` > 0 for reproducibility).

    Returns:
        The applied change of every parameter tensor: δ · (‖p‖/‖g‖ · g + σξ) / (1 + c·F) (so with σ = 0 and F = 0
        each tensor moves by exactly δ·‖p‖, along the gradient-ascent direction of the batch's cross-entropy).
    """
    params = list(net.parameters())
    was = net.training
    net.train()
    with torch.enable_grad():
        loss = F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    net.train(was)
    return _apply(params, list(grads), fisher, delta, fisher_scale, noise, gen)


def empirical_fisher(net: nn.Module, data: Any, engine: Any, batch_size: int = 64) -> list[torch.Tensor]:
    """F_new = (1/N) Σ_i p(y_i|x_i) · (∇ log p(y_i|x_i))² over ``data`` (per-sample gradients, the reference's
    ``end_task``), one tensor per parameter of ``net``."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def logp(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, (p, buffers), (xi.unsqueeze(0),))
        return torch.log_softmax(out, dim=1)[0].gather(0, yi.reshape(1))[0]

    g_fn = vmap(grad(logp), in_dims=(None, 0, 0))
    acc = {k: torch.zeros_like(v) for k, v in params.items()}
    n = 0
    was = net.training
    net.train()
    for x, y, _ in engine.batches(data, batch_size, shuffle=False):
        with torch.no_grad():
            prob = torch.softmax(net(x), dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
        gs = g_fn(params, x, y)
        for k in acc:
            w = prob.view(-1, *([1] * (gs[k].dim() - 1)))
            acc[k] += (w * gs[k] ** 2).sum(0)
        n += len(y)
    net.train(was)
    return [acc[k] / max(n, 1) for k, _ in net.named_parameters()]


class RefreshConfig(DerppConfig):
    """Refresh learning on DER++; the refresh defaults are the reference's constants (``models/derpp.py``)."""

    delta: float = Field(1e-5, ge=0, description="δ: unlearning step relative to each tensor's norm (reference 1e-5)")
    fisher_scale: float = Field(1e-3, ge=0, description="c in 1/(1 + c·F) (reference 0.001)")
    noise: float = Field(1e-3, ge=0, description="σ: Gaussian noise added to the rescaled ascent direction "
                         "(reference 0.001)")
    tau: float = Field(1e-5, ge=0, description="τ: decay of the old Fisher at each new task (reference 1e-5)")


@LEARNERS.register("refresh", config=RefreshConfig)
class Refresh(Derpp):
    """Refresh learning: before each DER++ step, a Fisher-damped, norm-rescaled gradient-ascent step with noise on
    the current batch (unlearn a little, then relearn); the Fisher is re-estimated after every Learn."""

    source = ("Wang et al., ICLR 2024, arXiv:2403.13249; github.com/joey-wang123/CL-refresh-learning "
              "models/derpp.py (on DER++, Buzzega et al. 2020)")
    config: RefreshConfig

    def build(self, base: Callable[[], nn.Module], info: ModelInfo) -> nn.Module:
        return RefreshModel(base(), self.config.buffer_size, info.input_shape, info.num_classes)

    def _hooks(self, model: ReplayModel, spec: LearnSpec, engine: Any) -> dict[str, Any]:
        cfg = self.config
        if not isinstance(model, RefreshModel):
            from unlearnkit.errors import MethodError

            raise MethodError(f"learner refresh needs its own model (a RefreshModel), got {type(model).__name__}")
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, "refresh-noise"))
        fisher = model.fisher()

        def before(x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
            refresh_step(model.net, x, y, fisher, delta=cfg.delta, fisher_scale=cfg.fisher_scale, noise=cfg.noise,
                         gen=gen)

        return {"before_step": before}

    def learn(self, model: nn.Module, spec: LearnSpec, engine: Any) -> LearnResult:
        res = super().learn(model, spec, engine)
        assert isinstance(model, RefreshModel)
        new = empirical_fisher(model.net, spec.data, engine)
        with torch.no_grad():
            for old, f in zip(model.fisher(), new):
                old.mul_(self.config.tau).add_(f.to(old))
        res.notes["fisher_mean"] = float(np.mean([float(f.mean()) for f in model.fisher()]))
        return res


__all__ = ["Refresh", "RefreshConfig", "RefreshModel", "empirical_fisher", "refresh_step"]

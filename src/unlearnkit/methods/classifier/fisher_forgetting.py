"""Fisher forgetting: add Gaussian noise shaped by the inverse Fisher information of the retain set."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import require_trainable
from unlearnkit.models.parts import head_param_names, trainable_parameters
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import LogFloat

#: added to the Fisher before inverting it (reference code: ``1 / (grad2_acc + 1e-8)``)
FISHER_EPS = 1e-8


def _fisher_vmap(model: nn.Module, named: list[tuple[str, nn.Parameter]], x: torch.Tensor,
                 probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Σ_b Σ_c p(c|x_b) (∂ log p(c|x_b)/∂θ)² for one chunk, by per-sample Jacobians (torch.func)."""
    from torch.func import functional_call, jacrev, vmap

    params = {n: p.detach() for n, p in named}

    def log_probs(pdict: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, pdict, (xi.unsqueeze(0),), strict=False)
        return torch.log_softmax(out.squeeze(0), dim=-1)

    jac = vmap(jacrev(log_probs), in_dims=(None, 0))(params, x)  # name -> (b, C, *shape)
    out = {}
    for n, _ in named:
        j = jac[n]
        w = probs.reshape(*probs.shape, *([1] * (j.ndim - 2)))
        out[n] = (w * j.pow(2)).sum(dim=(0, 1)).float()
    return out


def _fisher_loop(model: nn.Module, named: list[tuple[str, nn.Parameter]], x: torch.Tensor,
                 probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Same sum as :func:`_fisher_vmap`, one sample and one class at a time (the reference code's loop)."""
    params = [p for _, p in named]
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for b in range(x.shape[0]):
        out = model(x[b : b + 1])
        n_cls = out.shape[1]
        for c in range(n_cls):
            loss = nn.functional.cross_entropy(out, torch.full((1,), c, device=out.device, dtype=torch.long))
            grads = torch.autograd.grad(loss, params, retain_graph=c < n_cls - 1, allow_unused=True)
            for a, g in zip(acc, grads):
                if g is not None:
                    a += probs[b, c].float() * g.detach().float().pow(2)
    return {n: a for (n, _), a in zip(named, acc)}


def fisher_diagonal(
    model: nn.Module, data: SampleSet, engine: Engine, *, batch_size: int = 16, vectorize: bool = True
) -> tuple[dict[str, torch.Tensor], str]:
    """Diagonal of the (true) Fisher information on ``data``, as in the reference code's ``hessian``:

        F = (1/n) Σ_{x∈data} Σ_{c=1..C} p_θ(c|x) · (∂ CE(f_θ(x), c) / ∂θ)²

    (expectation over the model's own predictive distribution: labels are not read). Model in eval mode.

    Cost: one forward and C backward passes per sample (C = number of classes), i.e. n·C per-sample gradients —
    the reference runs them one by one (batch size 1). ``vectorize=True`` computes the per-sample Jacobians of a
    chunk of ``batch_size`` samples at once with ``torch.func`` (same arithmetic, transient memory
    ≈ batch_size·C·n_params·4 bytes); it falls back to the per-sample loop for models torch.func cannot trace.

    Returns:
        ``(fisher, path)``: parameter name -> float32 CPU tensor of the parameter's shape (trainable parameters
        only), and ``"vmap"`` or ``"loop"``.

    Raises:
        MethodError: ``data`` is empty or the model has no trainable parameters.  DivergenceError: NaN/inf logits.
    """
    if len(data) == 0:
        raise MethodError("cannot compute the Fisher information on an empty set")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    was_training = model.training
    model.to(engine.device).eval()
    named = require_trainable(model)
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
    path = "vmap" if vectorize else "loop"
    try:
        for step, (x, _y, _ids) in enumerate(engine.batches(data, batch_size, shuffle=False)):
            with torch.no_grad():
                logits = model(x)
            engine.check_finite(logits.float().sum(), step=step, desc="fisher information (logits)")
            probs = torch.softmax(logits.float(), dim=1)
            part = None
            if path == "vmap":
                try:
                    part = _fisher_vmap(model, named, x, probs)
                except (RuntimeError, NotImplementedError, TypeError):
                    path = "loop"  # a module torch.func cannot trace: use the reference loop from here on
            if part is None:
                part = _fisher_loop(model, named, x, probs)
            for n in total:
                total[n] += part[n]
    finally:
        model.train(was_training)
    return {n: (t / len(data)).cpu() for n, t in total.items()}, path


class FisherForgettingConfig(Frozen):
    """Fisher forgetting settings. Defaults: the authors' released code (github.com/AdityaGolatkar/SelectiveForgetting,
    notebook section "Fisher Noise in Weights", also reused by the SSD repository's ``FisherForgetting``):
    α = 1e-6, 1/F clamped at 1e3 (1e2 for the classification head), variance averaged over dim 1 of ≥2-D weights,
    ×10 for the head and for 1-D parameters (biases, BatchNorm).

    Fields:
        alpha: α > 0 (dimensionless noise scale; the reference sweeps 1e-8 … 1e-5 and uses 1e-6). In the paper's
            parametrisation (``scale_rule="paper"``) α plays the role of λσ_h².
        scale_rule: ``"reference"`` (variance α·min(1/(F+1e-8), clamp), the released code) or ``"paper"``
            (std (α·min(1/(F+1e-8), clamp))^{1/4}, i.e. Σ = (λσ_h²)^{1/2} F^{-1/2}, Prop. 4 with F in place of the
            Hessian; no averaging or ×10 factors).
        max_inv_fisher: clamp of 1/(F+1e-8) for every parameter (> 0; reference 1e3).
        head_max_inv_fisher: clamp for the head's weight and bias (> 0; reference 1e2).
        row_mean: reference rule only: replace the variance of a ≥2-D weight by its mean over dim 1 (per output
            unit; the reference does this).
        head_scale: reference rule only: variance factor of the head's parameters (≥ 0; reference 10).
        vector_scale: reference rule only: variance factor of other 1-D parameters (biases, norms) (≥ 0; reference 10).
        batch_size: samples per vectorised Fisher chunk (≥ 1). Does not change the result, only speed and transient
            memory (≈ batch_size·C·n_params·4 bytes).
        vectorize: compute per-sample gradients with torch.func (fast) instead of the reference's per-sample loop.
        max_params: refuse models with more trainable parameters than this (≥ 1; memory O(n_params), time
            n_retain·C backward passes).
    """

    alpha: float = Field(1e-6, gt=0, description="noise scale α (reference 1e-6)")
    scale_rule: Literal["reference", "paper"] = Field("reference", description="noise formula: released code or paper")
    max_inv_fisher: float = Field(1e3, gt=0, description="clamp of 1/F (reference 1e3)")
    head_max_inv_fisher: float = Field(1e2, gt=0, description="clamp of 1/F for the head (reference 1e2)")
    row_mean: bool = Field(True, description="average the variance of ≥2-D weights over dim 1 (reference)")
    head_scale: float = Field(10.0, ge=0, description="variance factor of the head (reference 10)")
    vector_scale: float = Field(10.0, ge=0, description="variance factor of 1-D parameters (reference 10)")
    batch_size: int = Field(16, ge=1, description="samples per vectorised Fisher chunk (speed/memory only)")
    vectorize: bool = Field(True, description="per-sample gradients with torch.func (else the reference loop)")
    max_params: int = Field(20_000_000, ge=1, description="refuse models with more trainable parameters")


def noise_variance(model: nn.Module, fisher: dict[str, torch.Tensor], config: FisherForgettingConfig
                   ) -> dict[str, torch.Tensor]:
    """Per-entry noise variance (float32 CPU, parameter shape) of every parameter in ``fisher``.

    reference: v = α·m, m = min(1/(F+1e-8), max_inv_fisher) [and ≤ head_max_inv_fisher for the head];
    then, if ``row_mean`` and ndim ≥ 2, v ← mean of v over dim 1, broadcast back; then ×head_scale for the head's
    parameters, else ×vector_scale for ≤1-D parameters.
    paper: v = (α·m)^{1/2} (std (α·m)^{1/4}).
    The head is the last nn.Linear (the reference detects it as "first dimension = number of classes").
    """
    head = head_param_names(model)
    shapes = dict(model.named_parameters())
    out = {}
    for name, f in fisher.items():
        inv = (1.0 / (f.double() + FISHER_EPS)).clamp(max=config.max_inv_fisher)
        if name in head:
            inv = inv.clamp(max=config.head_max_inv_fisher)
        if config.scale_rule == "paper":
            var = (config.alpha * inv).sqrt()
        else:
            var = config.alpha * inv
            if config.row_mean and var.ndim > 1:
                var = var.mean(dim=1, keepdim=True).expand_as(var).clone()
            if name in head:
                var = var * config.head_scale
            elif var.ndim <= 1:
                var = var * config.vector_scale
        if var.shape != shapes[name].shape:  # pragma: no cover - fisher comes from the same model
            raise MethodError(f"Fisher of '{name}' has shape {tuple(var.shape)}, parameter {tuple(shapes[name].shape)}")
        out[name] = var.float()
    return out


@METHODS.register("fisher_forgetting", config=FisherForgettingConfig)
class FisherForgetting(Unlearner):
    """Fisher forgetting (Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net: Selective Forgetting in
    Deep Networks", CVPR 2020, arXiv:1911.04933).

    Scrub by noise shaped by the retain set's curvature: with F the diagonal of the Fisher information of D_r
    (true Fisher, F = E_x Σ_c p(c|x)(∂CE(x,c)/∂θ)², the paper's stand-in for the Hessian of L_{D_r}),
    θ ← θ + σ ⊙ n, n ~ N(0, I). Directions the retained data barely constrain (small F) get much noise, directions
    it pins down little. Noise formula (see :func:`noise_variance`):

    * paper (Sec. 3.1–3.3): Σ = (λσ_h²)^{1/2} F^{-1/2}, i.e. σ = (λσ_h²)^{1/4} F^{-1/4} (with α = λσ_h²);
    * reference (default, the released code that produced the paper's numbers and that later benchmarks reuse):
      σ² = α·min(1/(F+1e-8), 1e3) (head: ≤ 1e2), averaged over dim 1 of ≥2-D weights, ×10 for the head and 1-D
      parameters, α = 1e-6. Note σ ∝ F^{-1/2} here, not F^{-1/4}.

    Noise is drawn on CPU from a ``torch.Generator`` seeded with ``derive_seed(seed, "fisher_forgetting")``,
    one ``torch.randn(shape)`` per trainable parameter in ``named_parameters`` order (bit-identical under a seed).

    Cost: time ≈ n_retain·C per-sample backward passes (one forward and C backward per retain sample; vectorised
    over chunks with torch.func), memory O(n_params) extra (Fisher and variance) — ``max_params`` refuses larger
    models. D_f is not read; labels are not read (the Fisher is an expectation over the model's predictions).

    Deviations from the reference code: the head is the last nn.Linear (the reference treats every parameter
    whose first dimension equals the number of classes as the head); parameters with ``requires_grad=False`` get
    no noise (the reference gives them the maximal noise α·1e3); the class-forgetting special case (the forgotten
    class's head row set to 0 with variance 1e-4) is not applied, since the method is scenario-agnostic.

    Raises (``unlearn``): MethodError (empty D_f or D_r; more trainable parameters than ``max_params``),
    DivergenceError (NaN/inf logits).
    """

    kind = "approximate"
    needs_retain = True
    needs_labels = False
    smoke_params = {"batch_size": 32}
    source = "Golatkar, Achille, Soatto, CVPR 2020, arXiv:1911.04933"
    #: unlearnkit tune: the noise scale α (reference 1e-6) over six decades
    search_space = {"alpha": LogFloat(1e-9, 1e-3)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        named = trainable_parameters(model)
        n_params = sum(p.numel() for _, p in named)
        if n_params > cfg.max_params:
            raise MethodError(
                f"fisher_forgetting: the model has {n_params:,} trainable parameters, more than max_params="
                f"{cfg.max_params:,}; it needs O(n_params) extra memory and {len(retain)}×C backward passes. Raise "
                "max_params if that is acceptable, or use a cheaper method"
            )
        fisher, path = fisher_diagonal(model, retain, engine, batch_size=cfg.batch_size, vectorize=cfg.vectorize)
        var = noise_variance(model, fisher, cfg)
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "fisher_forgetting"))
        stds = []
        with torch.no_grad():
            for name, p in named:
                z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                std = var[name].sqrt()
                p.add_((std * z).to(device=p.device, dtype=p.dtype))
                stds.append(std.flatten())
        model.eval()
        all_std = torch.cat(stds)
        notes = {"fisher_path": path, "n_params": n_params,
                 "per_sample_backward_passes": len(retain) * retain.num_classes,
                 "noise_std_mean": float(all_std.mean()), "noise_std_max": float(all_std.max()),
                 "scale_rule": cfg.scale_rule}
        return UnlearnResult(model, steps=0, notes=notes, seen_ids=np.sort(retain.ids).astype(np.int64))


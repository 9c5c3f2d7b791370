"""Prune first, then unlearn: one-shot magnitude pruning of θ_o, then a base unlearner on the sparse model."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import parametrize

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat

#: base methods that cannot run on a pruned model: itself, and methods that pick layers structurally (the pruned
#: weight lives in a parametrization child) or re-initialise in place (``reset_parameters`` would write into the
#: computed, masked weight, not into the stored one)
_REFUSED_BASES = {"prune_ft", "eu_k", "cf_k"}


class PruneFTConfig(Frozen):
    """Prune-first-then-unlearn settings (Jia et al., NeurIPS 2023, arXiv:2304.04934; reference code
    OPTML-Group/Unlearn-Sparse, ``pruner/``).

    Attributes:
        sparsity: fraction of the prunable weights set to zero, in [0, 1). Default 0.95 (the paper's OMP setting and
            the reference's ``--rate 0.95``). The number pruned is ``round(sparsity · n)``, n = prunable entries.
        layers: which weights are prunable. ``"conv"``: the ``weight`` of every convolution (the reference prunes
            all ``nn.Conv2d`` weights and nothing else: no linear head, no biases, no norm layers);
            ``"conv_linear"``: convolution and ``nn.Linear`` weights; ``"auto"`` (default): ``"conv"`` when the model
            has a convolution, else ``"conv_linear"`` (so MLPs can be pruned).
        base: registered name of the unlearner run on the pruned model (default ``"finetune"``, the paper's main
            pairing "prune first, then FT"). Any approximate method except ``prune_ft``, ``eu_k`` and ``cf_k``.
        base_params: settings of the base unlearner (validated against its config class); default: its defaults
            (FT: 10 epochs, lr 0.01, SGD momentum 0.9, wd 5e-4, batch 256).
    """

    sparsity: float = Field(0.95, ge=0, lt=1)
    layers: Literal["auto", "conv", "conv_linear"] = "auto"
    base: str = "finetune"
    base_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_base(self) -> PruneFTConfig:
        from unlearnkit.methods import METHODS as registry  # populated registry (import cycle at module load)

        if self.base in _REFUSED_BASES:
            raise ValueError(f"base method '{self.base}' cannot run after pruning; use e.g. finetune, grad_ascent, "
                             "random_label, l1_sparse or salun")
        entry = registry.entry(self.base)
        if getattr(entry.obj, "kind", "approximate") != "approximate":
            raise ValueError(f"base method '{self.base}' is {entry.obj.kind}; prune_ft needs an approximate "
                             "unlearner (pruning before exact retraining is meaningless)")
        registry.validate_config(self.base, self.base_params)
        return self


def prunable_weights(model: nn.Module, layers: Literal["auto", "conv", "conv_linear"] = "auto"
                     ) -> list[tuple[str, nn.Module]]:
    """``(module_name, module)`` of every module whose ``weight`` is prunable under ``layers``, in registration order.

    Raises:
        MethodError: no module qualifies (e.g. ``layers="conv"`` on an MLP).
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if layers == "auto":
        layers = "conv" if convs else "conv_linear"
    kinds: tuple[type, ...] = (nn.modules.conv._ConvNd,) if layers == "conv" else (nn.modules.conv._ConvNd, nn.Linear)
    found = [(n, m) for n, m in model.named_modules()
             if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), nn.Parameter)]
    if not found:
        raise MethodError(f"prune_ft: the model has no prunable {layers!r} weights "
                          f"({type(model).__name__}); use layers: conv_linear or auto")
    return found


@torch.no_grad()
def global_magnitude_masks(weights: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Global one-shot magnitude pruning (OMP): keep-masks removing the ``round(sparsity · n)`` smallest |w|.

    Args:
        weights: float tensors (any shapes), n entries in total.
        sparsity: fraction in [0, 1).

    Returns:
        bool tensors shaped like ``weights``: True = kept. Exactly ``round(sparsity · n)`` entries are False; ties
        in |w| are broken by position (earlier entries pruned first), so the masks are deterministic.
    """
    flat = torch.cat([w.detach().reshape(-1).abs().float().cpu() for w in weights])
    n = flat.numel()
    n_prune = int(round(sparsity * n))
    keep = torch.ones(n, dtype=torch.bool)
    if n_prune:
        keep[torch.sort(flat, stable=True).indices[:n_prune]] = False
    out, start = [], 0
    for w in weights:
        out.append(keep[start:start + w.numel()].reshape(w.shape).to(w.device))
        start += w.numel()
    return out


class _KeepMask(nn.Module):
    """Parametrization ``weight = original ⊙ mask``: every read of ``module.weight`` sees the pruned weight."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask.to(w.dtype)


def _restore_order(module: nn.Module, order: list[str]) -> None:
    """Put ``module``'s own parameters back in their original registration order (removing a parametrization
    re-registers ``weight`` last, which would reorder ``state_dict`` and ``parameters()``)."""
    params = module._parameters
    if list(params) != order and set(params) == set(order):
        ordered = {k: params[k] for k in order}
        params.clear()
        params.update(ordered)


@METHODS.register("prune_ft", config=PruneFTConfig)
class PruneFT(Unlearner):
    """Prune first, then unlearn: OMP to ``sparsity`` (95 %), then the base unlearner (FT) on the sparse model.

    Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023, arXiv:2304.04934 ("prune first,
    then unlearn"). Steps:

    1. One-shot magnitude pruning: m = 1[|θ_o| above the global ``sparsity`` quantile] over the prunable weights
       (global ranking across layers, as the reference's ``prune.global_unstructured(L1Unstructured)``);
       θ ← m ⊙ θ_o.
    2. Unlearning with the base method on the sparse model, with m held fixed: the pruned weights are exactly zero
       at every forward pass and at the end, whatever the base method's optimizer (momentum, weight decay, Adam)
       does — each pruned ``weight`` is re-parametrised as ``original ⊙ m`` (``torch.nn.utils.parametrize``) for the
       duration of the base run, and the mask is applied once more to the final weights.

    Hyperparameters: ``sparsity`` (0.95), ``layers``, ``base`` (``finetune``), ``base_params``.

    Deviations from the reference code: the reference obtains the sparse θ_o by pruning during the *original*
    training (OMP then rewinding to epoch 8 and retraining the sparse network on all of D, 182 epochs). Here θ_o is
    handed over dense and is pruned post hoc without retraining on D (which would need D_f and the full training
    budget); the base unlearner's training on D_r then recovers accuracy under the fixed mask. ``layers: auto`` falls
    back to linear weights for models without convolutions (the reference prunes convolutions only).

    Notes recorded: ``sparsity``, ``pruned`` / ``prunable`` entry counts, the pruned layer names, the base method,
    and the base method's own notes (``base_notes``).

    Raises:
        ConfigError: unknown base, a refused base (``prune_ft``, ``eu_k``, ``cf_k``: they select or re-initialise
            modules structurally, which the re-parametrised pruned layers would defeat), an exact base, or invalid
            ``base_params``.
        MethodError: no prunable weights; the base method returned a model without the pruned layers; whatever the
            base method raises (e.g. empty retain set for FT).
    """

    needs_retain = True
    smoke_params = {"base_params": {"epochs": 1, "batch_size": 32}}
    source = "Jia et al., NeurIPS 2023, arXiv:2304.04934"
    #: unlearnkit tune: the sparsity (paper: OMP 0.5–0.95) and the base FT's lr / epochs
    search_space = {
        "sparsity": Float(0.3, 0.95),
        "base_params.lr": LogFloat(1e-3, 0.1),
        "base_params.epochs": Int(1, 10),
    }

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        targets = prunable_weights(model, cfg.layers)
        masks = global_magnitude_masks([m.weight for _, m in targets], cfg.sparsity)
        with torch.no_grad():
            for (_, module), mask in zip(targets, masks):
                module.weight.mul_(mask.to(module.weight.dtype))
        base = METHODS.build(cfg.base, cfg.base_params)
        orders = [list(module._parameters) for _, module in targets]
        for (_, module), mask in zip(targets, masks):
            parametrize.register_parametrization(module, "weight", _KeepMask(mask))
        try:
            result = base.unlearn(model, forget, retain, engine, context)
        finally:
            for (_, module), order in zip(targets, orders):
                if parametrize.is_parametrized(module, "weight"):
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
                    _restore_order(module, order)
        out = result.model
        if out is not model:  # a base method that returns a new module: apply the mask by name
            modules = dict(out.named_modules())
            missing = [n for n, _ in targets if n not in modules or not hasattr(modules[n], "weight")]
            if missing:
                raise MethodError(f"prune_ft: base method '{cfg.base}' returned a model without the pruned layers "
                                  f"{missing[:5]}; it cannot be combined with pruning")
            targets = [(n, modules[n]) for n, _ in targets]
        with torch.no_grad():
            for (_, module), mask in zip(targets, masks):
                module.weight.mul_(mask.to(device=module.weight.device, dtype=module.weight.dtype))
        pruned = int(sum(int((~m).sum()) for m in masks))
        total = int(sum(m.numel() for m in masks))
        return UnlearnResult(out, steps=result.steps, seen_ids=result.seen_ids, notes={
            "sparsity": cfg.sparsity, "pruned": pruned, "prunable": total, "layers": [n for n, _ in targets],
            "base": cfg.base, "base_notes": result.notes, "base_seconds": result.seconds})

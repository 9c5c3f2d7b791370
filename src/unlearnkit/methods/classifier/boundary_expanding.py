"""Boundary Expanding: add a shadow class to the head, fine-tune D_f into it, then prune the shadow neuron."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.models.parts import find_head, replace_module
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class BoundaryExpandingConfig(OptimConfig):
    """Boundary-Expanding settings. Defaults from ``boundary_unlearning.boundary_expanding`` and ``main.py`` of
    github.com/TY-LEE-KR/Boundary-Unlearning-Code (Chen et al., CVPR 2023):

    Fields:
        epochs: passes over D_f (``finetune_epochs = 10``).
        lr / momentum / weight_decay: SGD lr 1e-5 per step, momentum 0.9, no weight decay.
        batch_size: forget batch size; default 64 (``--batch_size``).
    """

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-5, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)


def widen_head(head: nn.Linear, seed: int) -> nn.Linear:
    """A copy of ``head`` with one extra output (the shadow class, index C).

    Rows 0..C−1 (weights and bias) are copied from ``head``; the new row is Xavier-normal initialised (seeded) with
    a zero bias, as the reference's ``init_params``. Created on ``head``'s device and dtype.

    Returns:
        ``nn.Linear(in_features, C + 1)``.
    """
    c = head.out_features
    wide = nn.Linear(head.in_features, c + 1, bias=head.bias is not None,
                     device=head.weight.device, dtype=head.weight.dtype)
    gen = torch.Generator().manual_seed(seed)
    fan_in, fan_out = head.in_features, c + 1
    std = (2.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        wide.weight.copy_(torch.randn(wide.weight.shape, generator=gen, dtype=wide.weight.dtype) * std)
        wide.weight[:c] = head.weight
        if head.bias is not None:
            wide.bias.zero_()
            wide.bias[:c] = head.bias
    return wide


def prune_head(wide: nn.Linear, num_classes: int) -> nn.Linear:
    """``nn.Linear(in_features, num_classes)`` holding rows 0..num_classes−1 of ``wide`` (drops the shadow neuron)."""
    head = nn.Linear(wide.in_features, num_classes, bias=wide.bias is not None,
                     device=wide.weight.device, dtype=wide.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(wide.weight[:num_classes])
        if wide.bias is not None:
            head.bias.copy_(wide.bias[:num_classes])
    return head


@METHODS.register("boundary_expanding", config=BoundaryExpandingConfig)
class BoundaryExpanding(Unlearner):
    """Boundary Expanding (Min Chen, Weizhuo Gao, Gaoyang Liu, Kai Peng, Chen Wang; "Boundary Unlearning", CVPR 2023;
    arXiv:2303.11570).

    1. Widen the head (the last ``nn.Linear``, C outputs) to C+1 outputs: the old rows are copied, the shadow row C
       is freshly initialised (Xavier normal, zero bias, seeded).
    2. Fine-tune the whole widened network on D_f with every label set to the shadow class:
       θ ← θ − η ∇ CE(f_θ(x), C) for x ∈ D_f (SGD, lr 1e-5, 10 epochs). The forgotten samples' features move into
       the shadow class's region, expanding the decision space.
    3. Prune the shadow neuron: the head goes back to ``nn.Linear(d, C)`` with rows 0..C−1 of the trained head. The
       returned model has the original architecture (same parameter names and shapes).

    A class-forgetting method; on other scenarios it still runs (each forget sample is pushed into the shadow
    class), but the paper evaluates only full-class forgetting. D_r is not used; labels of D_f are not read.

    Deviations from the reference code: the reference hard-codes the AllCNN head (96 features, 10 classes) and
    re-initialises the whole widened classifier before copying the old rows; we work on any model whose last
    ``nn.Linear`` produces the logits (which is checked) and initialise only the shadow row.

    Errors: MethodError (empty D_f, shared ids, no nn.Linear head or the last nn.Linear does not produce the
    logits), DivergenceError.
    """

    needs_labels = False
    smoke_params = {"epochs": 2, "lr": 0.01, "batch_size": 16}
    source = "Chen et al., CVPR 2023, arXiv:2303.11570"
    #: unlearnkit tune: lr (reference 1e-5) widened up, and epochs
    search_space = {"lr": LogFloat(1e-6, 0.1), "epochs": Int(1, 10)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg: BoundaryExpandingConfig = self.config  # type: ignore[assignment]
        name, head = find_head(model, "boundary_expanding")
        c = head.out_features
        wide = widen_head(head, derive_seed(context.seed, "boundary_expanding-shadow"))
        replace_module(model, name, wide)
        try:
            probe = forget.batch(np.arange(min(2, len(forget))))[0]
            try:
                with torch.no_grad():
                    out = model.to(engine.device).eval()(probe.to(engine.device))
            except RuntimeError as err:
                raise MethodError(
                    f"boundary_expanding widened the last nn.Linear ('{name}') and the model no longer runs ({err}); "
                    "the last nn.Linear must be the layer producing the logits"
                ) from err
            if out.ndim != 2 or out.shape[1] != c + 1:
                raise MethodError(
                    f"boundary_expanding widened the last nn.Linear ('{name}') to {c + 1} outputs but the model "
                    f"output has shape {tuple(out.shape)}; the last nn.Linear must be the layer producing the logits"
                )
            shadow = c

            def shadow_loss(m: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
                logits = m(x)
                return nn.functional.cross_entropy(logits, torch.full((len(x),), shadow, device=logits.device))

            fit = engine.fit(model, forget, cfg.recipe(), seed=derive_seed(context.seed, "boundary_expanding-order"),
                             loss_fn=shadow_loss, desc="boundary_expanding")
        finally:
            trained = model.get_submodule(name)
            replace_module(model, name, prune_head(trained, c) if isinstance(trained, nn.Linear) else head)
        model.eval()
        notes = {"samples": fit.samples, "head": name, "num_classes": c,
                 "shadow_row_norm": float(trained.weight[c].detach().norm())}
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes=notes)

"""Gradient ascent (GA) on the forget set."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class GradAscentConfig(OptimConfig):
    """GA settings. Defaults: 5 epochs, SGD (momentum 0.9, wd 5e-4, batch 256, constant lr), lr 1e-4 — the ℓ1-sparse/SalUn protocol
    (Jia et al., NeurIPS 2023, arXiv:2304.04934, App. C.2: GA for 5 epochs, lr tuned in [1e-6, 1e-3])."""

    epochs: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-4, gt=0)


def negative_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−CE(f(x), y): minimising it ascends the training loss on the batch."""
    return -nn.functional.cross_entropy(model(x), y)


@METHODS.register("grad_ascent", config=GradAscentConfig)
class GradAscent(Unlearner):
    """Ascend the cross-entropy loss on D_f: θ ← θ + η ∇_θ E_{(x,y)∈D_f} CE(f_θ(x), y).

    D_r is not used. GA is unbounded: with a large lr or many epochs the loss on D_f grows without limit and the model
    collapses (the engine stops with a typed DivergenceError once the loss is not finite).
    Source: Thudi et al., EuroS&P 2022 (arXiv:2109.13398); Graves et al., AAAI 2021 ("amnesiac" baseline); defaults
    from Jia et al., NeurIPS 2023 (arXiv:2304.04934).
    """

    smoke_params = {"epochs": 1}
    source = "Thudi et al., EuroS&P 2022, arXiv:2109.13398"
    #: unlearnkit tune: lr: the paper's GA range (1e-6–1e-4 on ResNet-18) widened up to 0.1 for small models
    search_space = {"lr": LogFloat(1e-5, 0.1), "epochs": Int(1, 10)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        fit = engine.fit(model, forget, self.config.recipe(), seed=derive_seed(context.seed, "grad_ascent"),
                         loss_fn=negative_cross_entropy, desc="grad_ascent")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes={"samples": fit.samples})

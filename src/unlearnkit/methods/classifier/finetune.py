"""Fine-tuning (FT) on the retain set: catastrophic forgetting of D_f."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class FinetuneConfig(OptimConfig):
    """FT settings. Defaults: 10 epochs, SGD (momentum 0.9, wd 5e-4, batch 256, constant lr), lr 0.01 — the ℓ1-sparse/SalUn protocol for
    CIFAR-10 ResNet-18 (Jia et al., NeurIPS 2023, arXiv:2304.04934, App. C.2: 10 epochs, lr tuned in [0.01, 0.1])."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)


@METHODS.register("finetune", config=FinetuneConfig)
class Finetune(Unlearner):
    """Fine-tune θ_o on D_r with cross-entropy, so that D_f is forgotten through catastrophic forgetting.

    Update: θ ← θ − η ∇_θ E_{(x,y)∈D_r} CE(f_θ(x), y).  D_f is never read.
    Source: Warnecke et al., NDSS 2023 (arXiv:2108.11577) and Golatkar et al., CVPR 2020 (arXiv:1911.04933) as the
    "Fine-tune" baseline; defaults from Jia et al., NeurIPS 2023 (arXiv:2304.04934).
    """

    needs_retain = True
    smoke_params = {"epochs": 1}
    source = "Jia et al., NeurIPS 2023, arXiv:2304.04934"
    #: unlearnkit tune: lr and epochs: the paper's FT sweep (lr 0.01–0.1, ≤ 10 epochs), widened down to 1e-3
    search_space = {"lr": LogFloat(1e-3, 0.2), "epochs": Int(1, 10)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        fit = engine.fit(model, retain, self.config.recipe(), seed=derive_seed(context.seed, "finetune"),
                         desc="finetune")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes={"samples": fit.samples})

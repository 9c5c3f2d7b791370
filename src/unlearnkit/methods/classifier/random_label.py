"""Random labelling (RL): fine-tune on D_f with random wrong labels together with D_r."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class RandomLabelConfig(OptimConfig):
    """RL settings. Defaults: 10 epochs, SGD (momentum 0.9, wd 5e-4, batch 256, constant lr), lr 0.01 (Fan et al., ICLR 2024,
    arXiv:2310.12508, App. C: RL for 10 epochs, lr tuned in [0.01, 0.1]).

    ``use_retain``: train on relabelled D_f ∪ D_r in one shuffled loop (True, as in SalUn's first-release RL) or on
    relabelled D_f only. ``labels``: ``"wrong"`` draws from the K−1 wrong classes (default; every forget sample is
    relabelled); ``"uniform"`` draws from all K classes like the SalUn reference code (1/K keep their true label).
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)
    use_retain: bool = True
    labels: Literal["wrong", "uniform"] = "wrong"


def random_wrong_labels(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """For each label y draw uniformly from the other ``num_classes − 1`` classes: int64 (n,), never equal to y."""
    if num_classes < 2:
        raise MethodError(f"random labels need at least 2 classes, the task has {num_classes}")
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, num_classes, size=len(labels))
    return (labels + shift) % num_classes


@METHODS.register("random_label", config=RandomLabelConfig)
class RandomLabel(Unlearner):
    """Assign each forget sample a random *wrong* label and fine-tune on those together with D_r.

    Update: θ ← θ − η ∇ E_{D_f'∪D_r} CE, where D_f' = {(x, ỹ)} with ỹ ~ Uniform({0..K−1} \\ {y}), drawn once per run
    from the run seed (the SalUn code redraws every epoch; one draw keeps the run a plain fine-tune on a fixed set).
    Drawing from the wrong classes only (not all K, as the SalUn reference code does) guarantees every forget sample
    is actually relabelled; the uniform variant (``labels: uniform``) keeps 1/K of them correct. Note: the
    Unlearn-Sparse RL draws ``randint(0, 9)`` and so never assigns class 9 on CIFAR-10 (an off-by-one we avoid).
    Source: Golatkar et al., CVPR 2020 (arXiv:1911.04933); Graves et al., AAAI 2021 ("amnesiac unlearning");
    protocol and defaults from Fan et al. (SalUn), ICLR 2024, arXiv:2310.12508.
    """

    needs_retain = True  # with the default use_retain: true; see requirements()
    smoke_params = {"epochs": 1}
    source = "Graves et al., AAAI 2021; Fan et al., ICLR 2024, arXiv:2310.12508"
    #: unlearnkit tune: lr / epochs around SalUn's RL sweep (lr 0.01, 10 epochs)
    search_space = {"lr": LogFloat(1e-3, 0.1), "epochs": Int(1, 10)}

    def requirements(self) -> dict[str, bool]:
        """D_r is read exactly when ``use_retain`` (the default)."""
        return {**super().requirements(), "retain": bool(self.config.use_retain)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        label_seed = derive_seed(context.seed, "rl-labels")
        if self.config.labels == "wrong":
            wrong = random_wrong_labels(forget.labels, forget.num_classes, label_seed)
        else:
            wrong = np.random.default_rng(label_seed).integers(0, forget.num_classes, size=len(forget))
        data = forget.relabel(wrong, "forget_random_labels")
        if self.config.use_retain:  # an empty D_r was refused before (requirements): never a silent forget-only run
            data = data.concat(retain, "forget_random_labels+retain")
        fit = engine.fit(model, data, self.config.recipe(), seed=derive_seed(context.seed, "random_label"),
                         desc="random_label")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"samples": fit.samples, "relabelled": int(len(wrong))})

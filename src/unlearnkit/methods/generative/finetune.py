"""Fine-tune a generator on D_r with its own training objective (the "fine-tune" baseline)."""

from __future__ import annotations

from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.generative._common import GenerativeUnlearner
from unlearnkit.models.generative import GenTrainConfig, train_generative
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class GenFinetuneConfig(Frozen):
    """Fine-tuning settings: ``epochs`` passes over D_r at ``lr`` (None = θ_o's learning rate)."""

    epochs: int = Field(5, ge=1, description="passes over D_r")
    batch_size: int = Field(64, ge=2)
    lr: float | None = Field(None, gt=0, description="Adam learning rate; None = the one θ_o was trained with")


@METHODS.register("gen_finetune", config=GenFinetuneConfig)
class GenFinetune(GenerativeUnlearner):
    """Continue training θ_o on D_r only with its own objective (GAN: the adversarial game on D_r's images; DDPM:
    ε-prediction on D_r), relying on catastrophic forgetting to erase D_f.

    Update: ``epochs`` passes of :func:`~unlearnkit.models.generative.train_generative` on D_r (Adam; θ_o's β₁).
    Source: the fine-tuning (FT) baseline of generative unlearning, e.g. Fan et al., SalUn, ICLR 2024,
    arXiv:2310.12508 (§5, DDPM class-wise forgetting); Warnecke et al. / Golatkar et al. for classifiers.
    """

    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"epochs": Int(1, 20), "lr": LogFloat(1e-5, 1e-2)}
    source = "fine-tuning baseline (SalUn arXiv:2310.12508 §5, generation)"
    smoke_params = {"epochs": 1}

    def _unlearn(self, model, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        base = context.train_recipe if isinstance(context.train_recipe, GenTrainConfig) else GenTrainConfig()
        recipe = base.model_copy(update={"epochs": self.config.epochs, "batch_size": self.config.batch_size,
                                         "lr": self.config.lr or base.lr})
        fit = train_generative(model, retain, recipe, engine, seed=derive_seed(context.seed, "gen_finetune"),
                               desc="gen_finetune")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"final_loss": fit.losses[-1] if fit.losses else None})

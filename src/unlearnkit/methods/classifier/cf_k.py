"""CF-k (catastrophic forgetting of the last k layers): fine-tune only the last k layers on D_r."""

from __future__ import annotations

from unlearnkit.methods.classifier.eu_k import EUkConfig, LastKUnlearner
from unlearnkit.methods.search import LogFloat
from unlearnkit.registry import METHODS


class CFkConfig(EUkConfig):
    """CF-k settings: the same fields and defaults as :class:`~unlearnkit.methods.classifier.eu_k.EUkConfig`
    (Goel et al., 2022, arXiv:2201.06640; reference ``cat_forget_finetune`` in shash42/Evaluating-Inexact-Unlearning):
    ``k`` = 1 (the head; reference sweeps k ∈ {1, 2, 3} / {1, 3, 5, 7}), ``layer_unit`` = ``weight_layer``,
    θ_o's recipe by default (the reference fine-tunes with the original schedule, 62 epochs), else 10 epochs,
    lr 0.01, SGD momentum 0.9, wd 5e-4, batch 256.
    """


@METHODS.register("cf_k", config=CFkConfig)
class CFk(LastKUnlearner):
    """CF-k: fine-tune only the last k layers of θ_o on D_r (no re-initialisation); all other layers stay frozen.

    Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", 2022, arXiv:2201.06640. Update:
    θ_last_k ← θ_last_k − η ∇_{θ_last_k} E_{(x,y)∈D_r} CE(f_θ(x), y), θ_front fixed — catastrophic forgetting of D_f
    restricted to the final layers. D_f is never read.

    Hyperparameters: ``k`` (1), ``layer_unit``, the recipe (θ_o's by default).

    Layers ("the last k"): modules that own parameters in forward order; convolutions and linear layers count and a
    BatchNorm goes with the conv it follows (reference rule; ``layer_unit: module`` counts every parametrised module).
    Deviations from the reference code: frozen BatchNorms are kept in eval mode so that the frozen part, running
    statistics included, stays bit-identical (the reference lets their statistics drift in train mode); forward
    order instead of definition order.

    Notes recorded: the selected module names, the number of trained parameter entries.

    Raises:
        MethodError: empty forget/retain set; k larger than the number of layers; the model calls no parametrised
            module.  DivergenceError: the loss became NaN/inf.
    """

    tag = "cf_k"
    reinit = False
    #: unlearnkit tune: as EU-k's, with lr up to 0.5: θ_o fits D_r with near-zero loss, so the frozen-front fine-tune
    #: needs a larger step than a re-initialised head to move at all (digits: nothing below lr 0.1 changed a prediction)
    search_space = {**LastKUnlearner.search_space, "lr": LogFloat(1e-3, 0.5)}

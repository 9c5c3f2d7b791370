"""EU-k (exact unlearning of the last k layers): re-initialise the last k layers and retrain only them on D_r."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._last_k import FrozenPart, reinitialise, select_last_k
from unlearnkit.registry import METHODS


class EUkConfig(OptimConfig):
    """EU-k settings (Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", 2022, arXiv:2201.06640;
    reference code shash42/Evaluating-Inexact-Unlearning, ``src/methods.py``).

    Attributes:
        k: number of final layers re-initialised and retrained (≥ 1; at most the number of layers, else
            MethodError). Default 1 (the head): the lower end of the reference's sweeps (argument parser
            ``--minL-rf 1 --maxL-rf 3``; ``scripts/unlearn.sh``: k ∈ {1, 3, 5, 7} on ResNet-20), and valid for any
            model with a linear head. Larger k moves EU-k towards full retraining (more exact, slower).
        layer_unit: what counts as a layer. ``"weight_layer"`` (default, the reference): convolutions and
            ``nn.Linear``; a BatchNorm (or any other parametrised module) after the k-th-from-last counted layer goes
            with it. ``"module"``: every module that owns parameters counts (a BatchNorm is a layer of its own).
            Layers are ordered by a traced forward pass. Residual blocks are not a unit (count their conv layers).
        use_original_recipe: train with θ_o's recipe (``context.train_recipe``: epochs, lr, optimizer, schedule,
            batch size) when the runner passes one — the reference retrains the last k layers with the original
            training schedule (62 epochs, SGDR). The optimisation fields below apply when it is False or no recipe
            is given (defaults: 10 epochs, lr 0.01, SGD momentum 0.9, wd 5e-4, batch 256, constant lr).
    """

    k: int = Field(1, ge=1)
    layer_unit: Literal["weight_layer", "module"] = "weight_layer"
    use_original_recipe: bool = True
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)


def last_k_recipe(cfg: EUkConfig, context: UnlearnContext) -> TrainConfig:
    """θ_o's recipe when ``cfg.use_original_recipe`` and the context has one, else ``cfg.recipe()``."""
    if cfg.use_original_recipe and context.train_recipe is not None:
        return context.train_recipe
    return cfg.recipe()


@METHODS.register("eu_k", config=EUkConfig)
class EUk(Unlearner):
    """EU-k: re-initialise the last k layers of θ_o and train only them on D_r; all other layers stay frozen.

    Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", 2022, arXiv:2201.06640. With θ = (θ_front,
    θ_last_k): θ_last_k ← init(seed), then θ_last_k ← argmin E_{(x,y)∈D_r} CE(f_{θ_front, θ_last_k}(x), y) by the
    training recipe, θ_front fixed. If the front layers carry no information specific to D_f, the result is an exact
    unlearning of the last k layers; D_f is never read.

    Hyperparameters: ``k`` (1), ``layer_unit`` (``weight_layer``), the recipe (θ_o's by default).

    Layers ("the last k"): modules that own parameters, in forward order, counted as in the reference
    (convolutions and linear layers; the BatchNorm after a counted conv goes with it) — see ``_last_k``.
    The re-initialisation uses each module's ``reset_parameters()`` under ``derive_seed(seed, "eu_k-init")``
    (modules in forward order), so it is reproducible.

    Deviations from the reference code, and why:

    * The reference re-initialises only the conv/linear layers and leaves the BatchNorms attached to them at θ_o's
      values (merely unfreezing them); here every selected module is re-initialised, BatchNorm running statistics
      included, so no selected parameter keeps θ_o's (D_f-dependent) values.
    * Frozen BatchNorms are kept in eval mode, so their running statistics stay bit-identical; the reference trains
      in train mode, so the statistics of "frozen" layers drift towards D_r.
    * Layers follow the forward order (the reference walks modules in definition order; identical for sequential
      nets and ResNets except where a shortcut is defined before the layers it follows).

    Notes recorded: the selected module names, ``reinit_seed``, the number of trained parameter entries.

    Raises:
        MethodError: empty forget/retain set; k larger than the number of layers; a selected module has no
            ``reset_parameters``; the model calls no parametrised module.  DivergenceError: the loss became NaN/inf.
    """

    needs_retain = True
    smoke_params = {"k": 1, "use_original_recipe": False, "epochs": 1, "batch_size": 32, "lr": 0.05}
    source = "Goel et al., 2022, arXiv:2201.06640"

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        selected, frozen = select_last_k(model, retain, engine, cfg.k, cfg.layer_unit)
        seed = derive_seed(context.seed, "eu_k-init")
        reinitialise(selected, seed)
        with FrozenPart(model, selected, frozen) as part:
            fit = engine.fit(model, retain, last_k_recipe(cfg, context), seed=derive_seed(context.seed, "eu_k"),
                             loss_fn=part.loss_fn, params=part.selected_params, desc="eu_k")
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes={
            "samples": fit.samples, "layers": [n for n, _ in selected], "reinit_seed": seed,
            "trained_entries": int(sum(p.numel() for p in part.selected_params))})

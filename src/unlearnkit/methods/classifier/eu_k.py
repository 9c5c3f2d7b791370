"""EU-k (exact unlearning of the last k layers): re-initialise the last k layers and retrain only them on D_r.

Also the "last k layers" machinery shared with CF-k (:mod:`~unlearnkit.methods.classifier.cf_k`): selecting the
layers (:func:`select_last_k`, on top of :func:`~unlearnkit.models.parts.forward_order` and
:func:`~unlearnkit.models.parts.last_k_modules`), seeded re-initialisation, and freezing the rest exactly
(:class:`FrozenPart`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.models.parts import LayerUnit, forward_order, last_k_modules, owns_parameters
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Choice, Int, LogFloat


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


def select_last_k(model: nn.Module, data: SampleSet, engine: Engine, k: int, unit: LayerUnit
                  ) -> tuple[list[tuple[str, nn.Module]], list[nn.Module]]:
    """``(selected, frozen)``: the last-k modules (forward order) and every other parametrised module.

    The forward order is traced on the first two samples of ``data``, on the engine's device (see
    :func:`~unlearnkit.models.parts.last_k_modules` for ``unit``).

    Raises:
        MethodError: k < 1 or larger than the number of layers; the model calls no parametrised module.
    """
    model.to(engine.device)
    x, _, _ = next(engine.batches(data.take(list(range(min(2, len(data))))), 2, shuffle=False))
    order = forward_order(model, x)
    selected = last_k_modules(order, k, unit)
    chosen = {id(m) for _, m in selected}
    frozen = [m for m in model.modules() if id(m) not in chosen and owns_parameters(m)]
    return selected, frozen


def reinitialise(modules: list[tuple[str, nn.Module]], seed: int) -> None:
    """Call ``reset_parameters()`` on each module, in the given order, under ``torch.manual_seed(seed)``.

    The global RNG state is restored afterwards. BatchNorm's ``reset_parameters`` also resets its running statistics.

    Raises:
        MethodError: a module has no ``reset_parameters`` (cannot be re-initialised).
    """
    bad = [n for n, m in modules if not callable(getattr(m, "reset_parameters", None))]
    if bad:
        raise MethodError(f"cannot re-initialise {bad[:5]}: no reset_parameters(); use cf_k (fine-tune without "
                          "re-initialisation) or a smaller k")
    devices = [p.device for _, m in modules for p in m.parameters(recurse=False)]
    with torch.random.fork_rng(devices=[d for d in {*devices} if d.type == "cuda"]):
        torch.manual_seed(seed)
        for _, m in modules:
            m.reset_parameters()


class FrozenPart:
    """Freeze every parameter and buffer outside the selected modules, for the duration of a ``with`` block.

    Parameters of the frozen modules get ``requires_grad=False`` (restored on exit); frozen modules that hold buffers
    (BatchNorm running statistics) are switched to eval mode before every forward by :meth:`loss_fn`, so their
    statistics do not move either. Together the frozen part stays bit-identical.
    """

    def __init__(self, model: nn.Module, selected: list[tuple[str, nn.Module]], frozen: list[nn.Module]) -> None:
        self.model = model
        chosen = {id(m) for _, m in selected}
        self.selected_params = [p for _, m in selected for p in m.parameters(recurse=False)]
        self.frozen_params = [p for m in frozen for p in m.parameters(recurse=False)]
        self.buffer_modules = [m for m in model.modules()
                               if id(m) not in chosen and any(True for _ in m.buffers(recurse=False))]
        self._flags: list[bool] = []

    def __enter__(self) -> FrozenPart:
        self._flags = [p.requires_grad for p in self.frozen_params]
        for p in self.frozen_params:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self.frozen_params, self._flags):
            p.requires_grad_(flag)

    def loss_fn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with the frozen buffer-holding modules in eval mode."""
        for m in self.buffer_modules:
            m.training = False  # this module only: a frozen parent must not switch selected children to eval
        return nn.functional.cross_entropy(model(x), y)


class LastKUnlearner(Unlearner):
    """Base of EU-k and CF-k: train only the last k layers of θ_o on D_r (recipe: :func:`last_k_recipe`), the rest
    frozen bit-identically (:class:`FrozenPart`); EU-k first re-initialises them (``reinit``).

    Subclasses set ``tag`` (the registered name: seeds and progress label) and ``reinit``. Notes recorded: the
    selected module names, ``reinit_seed`` (EU-k only), the number of trained parameter entries.
    """

    needs_retain = True
    smoke_params = {"k": 1, "use_original_recipe": False, "epochs": 1, "batch_size": 32, "lr": 0.05}
    source = "Goel et al., 2022, arXiv:2201.06640"
    #: unlearnkit tune: k (reference sweeps 1–7; capped at 2 so that small models keep a frozen part — k = every layer
    #: is retraining from scratch), θ_o's recipe or its own lr / epochs
    search_space = {
        "k": Int(1, 2),
        "use_original_recipe": Choice((True, False)),
        "lr": LogFloat(1e-3, 0.1),
        "epochs": Int(1, 30),
    }
    tag: ClassVar[str]
    reinit: ClassVar[bool]

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        selected, frozen = select_last_k(model, retain, engine, cfg.k, cfg.layer_unit)
        notes: dict = {}
        if self.reinit:
            seed = derive_seed(context.seed, f"{self.tag}-init")
            reinitialise(selected, seed)
            notes["reinit_seed"] = seed
        with FrozenPart(model, selected, frozen) as part:
            fit = engine.fit(model, retain, last_k_recipe(cfg, context), seed=derive_seed(context.seed, self.tag),
                             loss_fn=part.loss_fn, params=part.selected_params, desc=self.tag)
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes={
            "samples": fit.samples, "layers": [n for n, _ in selected], **notes,
            "trained_entries": int(sum(p.numel() for p in part.selected_params))})


@METHODS.register("eu_k", config=EUkConfig)
class EUk(LastKUnlearner):
    """EU-k: re-initialise the last k layers of θ_o and train only them on D_r; all other layers stay frozen.

    Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", 2022, arXiv:2201.06640. With θ = (θ_front,
    θ_last_k): θ_last_k ← init(seed), then θ_last_k ← argmin E_{(x,y)∈D_r} CE(f_{θ_front, θ_last_k}(x), y) by the
    training recipe, θ_front fixed. If the front layers carry no information specific to D_f, the result is an exact
    unlearning of the last k layers; D_f is never read.

    Hyperparameters: ``k`` (1), ``layer_unit`` (``weight_layer``), the recipe (θ_o's by default).

    Layers ("the last k"): modules that own parameters, in forward order, counted as in the reference
    (convolutions and linear layers; the BatchNorm after a counted conv goes with it) — see
    :func:`~unlearnkit.models.parts.last_k_modules`.
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

    tag = "eu_k"
    reinit = True

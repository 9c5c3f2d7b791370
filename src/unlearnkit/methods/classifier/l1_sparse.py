"""ℓ1-sparse unlearning: fine-tune on D_r with a decaying ℓ1 penalty on the weights (sparsity-aware unlearning)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class L1SparseConfig(OptimConfig):
    """ℓ1-sparse settings (Jia et al., NeurIPS 2023, arXiv:2304.04934; reference code OPTML-Group/Unlearn-Sparse).

    Optimisation defaults follow the reference's ``FT_prune`` command for CIFAR-10 ResNet-18: 10 epochs, SGD
    (momentum 0.9, weight decay 5e-4, batch 256, constant lr — the MultiStepLR milestones 91,136 of the reference are
    never reached in 10 epochs), lr 0.01.

    Attributes:
        alpha: γ, the initial weight of the ℓ1 penalty γ·‖θ‖₁ (dimensionless, per unit of the mean cross-entropy;
            ≥ 0). Default 1e-4: the value in the authors' published run scripts (Unlearn-Sparse fork scripts and
            Unlearn-Saliency's SVHN/CelebA scripts, ``--alpha 1e-4``); the paper tunes γ in about [5e-5, 1e-4]. The
            penalty is the plain sum |θ| over *every* parameter (weights, biases, norm affine), as in the reference,
            so a good γ scales with 1 / (number of parameters).
        schedule: ``"linear"`` (reference code and paper): γ_e = γ·(1 − e / (E − no_l1_epochs)) for
            epoch e = 0 … E − no_l1_epochs − 1, then 0; ``"constant"``: γ_e = γ for the first E − no_l1_epochs epochs,
            then 0. The weight is constant within an epoch (the reference updates it per epoch, not per step).
        no_l1_epochs: final epochs trained without the penalty (reference ``--no-l1-epochs``, default 0);
            0 ≤ no_l1_epochs < epochs.
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.01, gt=0)
    alpha: float = Field(1e-4, ge=0)
    schedule: Literal["linear", "constant"] = "linear"
    no_l1_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_epochs(self) -> L1SparseConfig:
        if self.no_l1_epochs >= self.epochs:
            raise ValueError(
                f"no_l1_epochs={self.no_l1_epochs} leaves no epoch with the ℓ1 penalty (epochs={self.epochs}); "
                "choose no_l1_epochs < epochs (0 = penalty in every epoch)"
            )
        return self


def l1_weight(epoch: int, *, alpha: float, epochs: int, no_l1_epochs: int = 0,
              schedule: Literal["linear", "constant"] = "linear") -> float:
    """The ℓ1 weight γ_e of epoch ``epoch`` (0-based).

    ``linear``: γ·(1 − e / (E − no_l1_epochs)) while e < E − no_l1_epochs, else 0 — so γ_0 = γ and the last
    penalised epoch has γ / (E − no_l1_epochs) (never 0). ``constant``: γ while e < E − no_l1_epochs, else 0.

    Example: alpha=1e-4, epochs=10 → 1e-4, 9e-5, 8e-5, …, 1e-5.
    """
    active = epochs - no_l1_epochs
    if epoch >= active:
        return 0.0
    if schedule == "constant":
        return float(alpha)
    return float(alpha) * (1.0 - epoch / active)


def l1_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """‖θ‖₁ = Σ |θ_i| over all entries of ``params`` (a scalar tensor; its gradient is sign(θ), with sign(0) = 0)."""
    return torch.stack([p.abs().sum() for p in params]).sum()


def l1_penalised_loss(
    weight: Callable[[], float], params: list[torch.nn.Parameter]
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss_fn(model, x, y) = CE(model(x), y) + weight()·‖params‖₁`` for :meth:`Engine.fit`.

    ``weight`` is read at every call (the current γ_t); with γ_t = 0 the penalty is skipped (plain CE).
    """

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        gamma = weight()
        if gamma:
            loss = loss + gamma * l1_norm(params)
        return loss

    return loss_fn


@METHODS.register("l1_sparse", config=L1SparseConfig)
class L1Sparse(Unlearner):
    """ℓ1-sparse MU: fine-tune θ_o on D_r with an ℓ1 penalty whose weight decays linearly to zero.

    Objective at epoch e (Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023,
    arXiv:2304.04934, "sparsity-aware unlearning"):  min_θ  E_{(x,y)∈D_r} CE(f_θ(x), y) + γ_e ‖θ‖₁,
    with γ_e = γ·(1 − e/E) (the paper's linearly decreasing γ scheduler). One SGD step is
    θ ← θ − η (∇ CE + γ_e sign(θ)) (+ momentum / weight decay of the optimizer). The penalty drives weights towards a
    sparse solution early on, when most of the unlearning happens, and lets the retain loss recover accuracy later.
    D_f is never read.

    Hyperparameters: ``alpha`` = γ, ``schedule``, ``no_l1_epochs``; the optimisation fields of
    :class:`L1SparseConfig` (10 epochs, lr 0.01, SGD momentum 0.9, wd 5e-4, batch 256).

    Reference code (``FT_l1`` in ``optim/unlearn/FT.py`` of OPTML-Group/Unlearn-Sparse): the same objective, ‖θ‖₁
    over ``model.parameters()`` (all parameters), γ updated once per epoch. Implemented here on :meth:`Engine.fit`
    with a loss function whose γ is read from a step counter advanced by ``after_step``. No deviation.

    Notes recorded: the γ of each epoch (``l1_weights``), the final ‖θ‖₁ and the fraction of exactly-zero weights.

    Raises:
        MethodError: empty forget set, or no retain set.  DivergenceError: the penalised loss became NaN/inf.
    """

    needs_retain = True
    smoke_params = {"epochs": 2, "batch_size": 32}
    source = "Jia et al., NeurIPS 2023, arXiv:2304.04934"
    #: unlearnkit tune: lr / epochs of FT plus the ℓ1 weight α (paper: 5e-5–5e-4), widened
    search_space = {"lr": LogFloat(1e-3, 0.1), "epochs": Int(1, 10), "alpha": LogFloat(1e-5, 1e-2)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        steps_per_epoch = math.ceil(len(retain) / cfg.batch_size)
        params = [p for p in model.parameters() if p.requires_grad]
        counter = {"step": 0}

        def weight() -> float:
            return l1_weight(counter["step"] // steps_per_epoch, alpha=cfg.alpha, epochs=cfg.epochs,
                             no_l1_epochs=cfg.no_l1_epochs, schedule=cfg.schedule)

        def after_step(step: int) -> None:
            counter["step"] = step + 1

        fit = engine.fit(model, retain, cfg.recipe(), seed=derive_seed(context.seed, "l1_sparse"),
                         loss_fn=l1_penalised_loss(weight, params), params=params, after_step=after_step,
                         desc="l1_sparse")
        with torch.no_grad():
            final_l1 = float(l1_norm(params)) if params else 0.0
            total = sum(p.numel() for p in params)
            zeros = sum(int((p == 0).sum()) for p in params)
        gammas = [l1_weight(e, alpha=cfg.alpha, epochs=cfg.epochs, no_l1_epochs=cfg.no_l1_epochs,
                            schedule=cfg.schedule) for e in range(cfg.epochs)]
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids,
                             notes={"samples": fit.samples, "l1_weights": gammas, "final_l1_norm": final_l1,
                                    "zero_fraction": zeros / max(total, 1)})

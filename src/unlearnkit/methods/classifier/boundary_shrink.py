"""Boundary Shrink: relabel each forget sample with its nearest wrong class (found by FGSM) and fine-tune."""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class BoundaryShrinkConfig(OptimConfig):
    """Boundary-Shrink settings. Defaults from ``boundary_unlearning.boundary_shrink`` and ``main.py`` of
    github.com/TY-LEE-KR/Boundary-Unlearning-Code (Chen et al., CVPR 2023):

    Fields:
        epochs: passes over D_f (``poison_epoch``); default 10.
        lr / momentum / weight_decay: SGD lr 1e-5 per step, momentum 0.9, no weight decay
            (``torch.optim.SGD(lr=0.00001, momentum=0.9)``).
        batch_size: forget batch size; default 64 (``--batch_size``).
        epsilon: L∞ bound ε of the one-step FGSM attack, in the model's input units; default 0.1 (``bound=0.1``;
            in the reference this is in [0, 1] pixel units before normalisation — with CIFAR normalisation,
            std ≈ 0.2, that is ≈ 0.5 in normalised units).
        input_range: optional (low, high) clamp of the attacked input (the reference clamps pixels to [0, 1]);
            None = no clamp (inputs here are usually already normalised).
        fallback: label used when the attack does not change the prediction (argmax of the attacked input is still
            the true label): ``"second_best"`` (default) = the attacked input's highest-scoring *other* class, the
            "nearest but incorrect" class of the paper; ``"keep"`` = the reference behaviour (keep the attack's
            argmax, i.e. the true label — that sample is then trained on its own label).
    """

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-5, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    epsilon: float = Field(0.1, gt=0)
    input_range: tuple[float, float] | None = None
    fallback: Literal["second_best", "keep"] = "second_best"

    @model_validator(mode="after")
    def _check_range(self) -> BoundaryShrinkConfig:
        if self.input_range is not None and not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low < high, got {self.input_range}")
        return self


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float,
         input_range: tuple[float, float] | None = None) -> torch.Tensor:
    """One-step FGSM: ``x + ε · sign(∇_x CE(model(x), y))`` (clamped to ``input_range`` when given).

    Args:
        model: the attacked network (its parameter gradients are not touched). x: float (b, ...). y: int64 (b,).

    Returns:
        float tensor shaped like ``x``, detached.
    """
    x_adv = x.detach().clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x_adv), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    out = x_adv.detach() + epsilon * grad.sign()
    if input_range is not None:
        out = out.clamp(input_range[0], input_range[1])
    return out


@torch.no_grad()
def _argmax_other(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Argmax of ``logits`` (b, C) over the classes ≠ ``y``: int64 (b,)."""
    masked = logits.clone()
    masked[torch.arange(len(y), device=y.device), y] = float("-inf")
    return masked.argmax(dim=1)


def nearest_wrong_labels(model: nn.Module, forget: SampleSet, engine: Engine, *, epsilon: float,
                         input_range: tuple[float, float] | None, fallback: str,
                         batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour search of Boundary Shrink: attack a frozen copy of ``model`` (eval mode) on every forget sample.

    Returns:
        ``(labels, attack_hit)``: int64 (n,) new labels in forget order (argmax of the attacked input, or — with
        ``fallback="second_best"`` where the attack failed — its best class other than the true label); bool (n,)
        True where the attacked input's argmax already differs from the true label.

    Raises:
        MethodError: the task has fewer than 2 classes.
    """
    if forget.num_classes < 2:
        raise MethodError(f"boundary shrink needs at least 2 classes, the task has {forget.num_classes}")
    attacked = copy.deepcopy(model).to(engine.device).eval()
    for p in attacked.parameters():
        p.requires_grad_(False)
    labels, hits = [], []
    for x, y, _ids in engine.batches(forget, batch_size, shuffle=False):
        x_adv = fgsm(attacked, x, y, epsilon, input_range)
        with torch.no_grad():
            logits = attacked(x_adv)
        pred = logits.argmax(dim=1)
        hit = pred != y
        if fallback == "second_best":
            pred = torch.where(hit, pred, _argmax_other(logits, y))
        labels.append(pred.cpu())
        hits.append(hit.cpu())
    return torch.cat(labels).numpy().astype(np.int64), torch.cat(hits).numpy()


@METHODS.register("boundary_shrink", config=BoundaryShrinkConfig)
class BoundaryShrink(Unlearner):
    """Boundary Shrink (Min Chen, Weizhuo Gao, Gaoyang Liu, Kai Peng, Chen Wang; "Boundary Unlearning", CVPR 2023;
    arXiv:2303.11570).

    1. Neighbour search: for each (x, y) ∈ D_f, x' = x + ε·sign(∇_x CE(f_θo(x), y)) (FGSM on a frozen copy of θ_o);
       the nearest-but-incorrect label is y_nbi = argmax f_θo(x') (see ``fallback`` when the attack fails).
    2. Fine-tune θ on {(x, y_nbi)} ⊂ D_f with CE: θ ← θ − η ∇ CE(f_θ(x), y_nbi) (SGD, lr 1e-5, 10 epochs).

    This shrinks the forgotten class's decision region towards its neighbours. It is a class-forgetting method; on
    other scenarios it still runs (every forget sample is pushed to its nearest other class), but the paper only
    evaluates full-class forgetting. D_r is not used.

    Deviations from the reference code: (a) labels are computed once before fine-tuning — the reference recomputes
    them every batch, but from the same frozen model and with a deterministic attack, so they are the same labels
    (its loaders have no augmentation); (b) no [0, 1] clamp / 8-bit discretisation of the attacked input unless
    ``input_range`` is set (our inputs are generic tensors); (c) ``fallback="second_best"`` (default) avoids training
    a sample on its own true label when the one-step attack fails (the reference keeps that label);
    ``fallback: keep`` reproduces the reference.

    Errors: MethodError (empty D_f, shared ids, fewer than 2 classes), DivergenceError.
    """

    smoke_params = {"epochs": 2, "lr": 0.01, "batch_size": 16, "epsilon": 0.5}
    source = "Chen et al., CVPR 2023, arXiv:2303.11570"
    #: unlearnkit tune: lr (reference 1e-5) widened up, epochs and the FGSM bound ε
    search_space = {"lr": LogFloat(1e-6, 0.1), "epochs": Int(1, 10), "epsilon": LogFloat(0.01, 1.0)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg: BoundaryShrinkConfig = self.config  # type: ignore[assignment]
        engine.setup()
        labels, hits = nearest_wrong_labels(model, forget, engine, epsilon=cfg.epsilon, input_range=cfg.input_range,
                                            fallback=cfg.fallback, batch_size=engine.config.eval_batch_size)
        fit = engine.fit(model, forget.relabel(labels, "forget_nearest_wrong"), cfg.recipe(),
                         seed=derive_seed(context.seed, "boundary_shrink-order"), desc="boundary_shrink")
        notes = {"samples": fit.samples, "attack_success_rate": float(hits.mean()),
                 "relabelled": int((labels != forget.labels).sum())}
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes=notes)

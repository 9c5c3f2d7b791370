"""SalUn: saliency unlearning — random labelling restricted to the weights most salient for the forget loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import require_trainable
from unlearnkit.methods.classifier.random_label import random_wrong_labels
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


class SalUnConfig(OptimConfig):
    """SalUn settings (Fan et al., ICLR 2024, arXiv:2310.12508; reference code OPTML-Group/Unlearn-Saliency).

    Optimisation defaults are the reference README's SalUn command for CIFAR-10 ResNet-18 (``main_random.py --unlearn
    RL --unlearn_epochs 10 --unlearn_lr 0.1``) with the reference optimizer: SGD, momentum 0.9, weight decay 5e-4,
    batch 256, constant lr (the MultiStepLR milestones 91,136 are never reached in 10 epochs).

    Attributes:
        mask_ratio: fraction of all trainable parameter entries that are salient (updated), in (0, 1]. Default 0.5
            (the paper's 50 % sparsity; the reference's ``with_0.5.pt`` mask). The threshold is *global* over all
            parameters (weights, biases, norm affine), as in the reference ``generate_mask.py``.
        saliency_batch_size: batch size of the saliency pass over D_f (samples; affects speed only, the gradient is
            the exact mean over D_f).
        use_retain: train on the relabelled D_f together with D_r (True, the paper's objective and the reference)
            or on the relabelled D_f only.
        labels: ``"wrong"`` draws each forget label uniformly from the K − 1 wrong classes (the paper's y' ≠ y);
            ``"uniform"`` draws from all K classes like the reference code (1/K keep their true label).
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.1, gt=0)
    mask_ratio: float = Field(0.5, gt=0, le=1)
    saliency_batch_size: int = Field(256, ge=1)
    use_retain: bool = True
    labels: Literal["wrong", "uniform"] = "wrong"


# -- saliency ---------------------------------------------------------------------------------------------------------
def forget_gradients(model: nn.Module, forget: SampleSet, engine: Engine, batch_size: int = 256,
                     params: Sequence[torch.nn.Parameter] | None = None) -> list[torch.Tensor]:
    """∇_θ ℓ_f(θ) at the current weights, with ℓ_f = mean cross-entropy over all of D_f (true labels).

    The model is evaluated in eval mode (BatchNorm uses its running statistics, dropout off; as the reference's
    ``generate_mask.py``) and restored to its previous mode; the weights are not changed and no optimizer step is
    taken. Per-batch gradients of the summed loss are accumulated and divided by |D_f|, so the result does not depend
    on ``batch_size``.

    Returns:
        one float tensor per parameter of ``params`` (default: all parameters with ``requires_grad``), same shape and
        dtype; zeros for parameters that receive no gradient.

    Raises:
        MethodError: the forget set is empty.
    """
    if len(forget) == 0:
        raise MethodError("cannot compute weight saliency on an empty forget set")
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.to(engine.device).eval()
    grads = [torch.zeros_like(p) for p in params]
    try:
        for x, y, _ in engine.batches(forget, batch_size, shuffle=False):
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
            engine.check_finite(loss, step=0, desc="salun saliency")
            got = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, g in zip(grads, got):
                if g is not None:
                    acc.add_(g)
    finally:
        model.train(was_training)
    for g in grads:
        g.div_(len(forget))
    return grads


def top_fraction_mask(scores: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Global hard mask: True for the ``int(ratio · n)`` entries with the largest score over all tensors.

    Args:
        scores: float tensors of any shapes (e.g. |∇θ|), n entries in total.
        ratio: fraction in (0, 1].

    Returns:
        bool tensors shaped like ``scores``; exactly ``int(ratio · n)`` True entries (ties broken by position, earlier
        first, so the mask is deterministic).

    Raises:
        MethodError: ``ratio`` outside (0, 1], or ``int(ratio · n) == 0`` (nothing would be trainable).
    """
    if not 0 < ratio <= 1:
        raise MethodError(f"mask ratio must be in (0, 1], got {ratio}")
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    n = flat.numel()
    k = int(ratio * n)
    if k == 0:
        raise MethodError(f"mask ratio {ratio} selects 0 of {n} parameter entries; raise mask_ratio to ≥ {1 / n:.2e}")
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    keep[order[:k]] = True
    out, start = [], 0
    for s in scores:
        out.append(keep[start:start + s.numel()].reshape(s.shape).to(s.device))
        start += s.numel()
    return out


# -- exact mask enforcement -------------------------------------------------------------------------------------------
class HardMask:
    """Keep the entries of ``params`` outside ``masks`` bit-identical to their values at construction.

    Enforcement does not rely on the optimizer: gradients of masked-out entries are zeroed by tensor hooks (so
    gradient clipping sees only the trainable gradient), and after every optimizer step :meth:`restore` copies the
    frozen values back with ``torch.where``, undoing whatever weight decay, momentum (including a resumed, non-zero
    momentum buffer) or Adam's moment estimates did to them. This is the fix of KNOWN_FAULTS C24 /
    Unlearn-Saliency#32, where masking only the gradients let weight decay and momentum move "frozen" weights.

    Args:
        params: the parameters to guard.
        masks: bool tensors shaped like ``params``; True = trainable entry.

    Raises:
        MethodError: lengths or shapes of ``params`` and ``masks`` disagree.

    Example::

        with HardMask(params, masks) as hm:
            engine.fit(model, data, recipe, seed=0, params=hm.trainable, after_step=hm.restore)
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], masks: Sequence[torch.Tensor]) -> None:
        params, masks = list(params), list(masks)
        if len(params) != len(masks):
            raise MethodError(f"got {len(masks)} masks for {len(params)} parameters; give one mask per parameter")
        for i, (p, m) in enumerate(zip(params, masks)):
            if tuple(p.shape) != tuple(m.shape):
                raise MethodError(f"mask {i} has shape {tuple(m.shape)}, its parameter has shape {tuple(p.shape)}")
        self.params = params
        self.masks = [m.to(device=p.device, dtype=torch.bool) for p, m in zip(params, masks)]
        self.frozen = [p.detach().clone() for p in params]
        self._hooks: list = []

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        """Parameters with at least one trainable entry (the ones to hand to the optimizer)."""
        return [p for p, m in zip(self.params, self.masks) if bool(m.any())]

    def attach(self) -> HardMask:
        """Register the gradient hooks (idempotent)."""
        if not self._hooks:
            for i, p in enumerate(self.params):
                if p.requires_grad:
                    self._hooks.append(p.register_hook(lambda g, i=i: g * self._mask_on(i, g.device)))
        return self

    def _mask_on(self, i: int, device: torch.device) -> torch.Tensor:
        if self.masks[i].device != device:  # the model was moved after construction: move once, keep
            self.masks[i] = self.masks[i].to(device)
        return self.masks[i]

    def detach(self) -> None:
        """Remove the gradient hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    @torch.no_grad()
    def restore(self, step: int | None = None) -> None:
        """Copy the frozen values back into every masked-out entry (call after each optimizer step)."""
        for i, p in enumerate(self.params):
            if self.frozen[i].device != p.device:  # the model was moved after construction: move once, keep
                self.frozen[i] = self.frozen[i].to(p.device)
            p.copy_(torch.where(self._mask_on(i, p.device), p, self.frozen[i]))

    def __enter__(self) -> HardMask:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()


def salun_training_set(forget: SampleSet, retain: SampleSet, *, labels: str, use_retain: bool, seed: int) -> SampleSet:
    """D_f with random labels (wrong classes, or uniform over all K), concatenated with D_r when ``use_retain``."""
    if labels == "wrong":
        new = random_wrong_labels(forget.labels, forget.num_classes, seed)
    else:
        new = np.random.default_rng(seed).integers(0, forget.num_classes, size=len(forget))
    data = forget.relabel(new, "forget_random_labels")
    if use_retain:  # an empty D_r was refused before (requirements): never a silent forget-only run
        data = data.concat(retain, "forget_random_labels+retain")
    return data


@METHODS.register("salun", config=SalUnConfig)
class SalUn(Unlearner):
    """Saliency unlearning: random-label fine-tuning of only the weights salient for forgetting.

    Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification
    and Generation", ICLR 2024, arXiv:2310.12508.

    1. Weight saliency map: g = ∇_θ ℓ_f(θ_o; D_f) (mean cross-entropy over D_f at θ_o), m = 1[|g| ≥ γ] with γ the
       global threshold that keeps the top ``mask_ratio`` (50 %) entries of |g| over all parameters.
    2. Unlearning: θ_u = m ⊙ (θ_o + Δθ) + (1 − m) ⊙ θ_o, where Δθ minimises
       E_{(x,y)∈D_f, y'≠y} CE(f_θ(x), y') + E_{(x,y)∈D_r} CE(f_θ(x), y)
       (random labels on D_f, true labels on D_r, one shuffled loop over D_f' ∪ D_r).

    Hyperparameters: ``mask_ratio`` (0.5), 10 epochs, lr 0.1, SGD momentum 0.9, wd 5e-4, batch 256.

    The mask holds exactly: entries outside m are bit-identical to θ_o after every step, whatever the optimizer's
    weight decay or momentum do (:class:`HardMask`). Deviations from the reference code, and why:

    * Reference bug fixed (KNOWN_FAULTS C24, Unlearn-Saliency#32, fixed upstream by PR #33): the original release
      multiplied only the gradients by the mask, so weight decay and momentum still moved the masked-out weights.
    * The saliency gradient is the exact mean over D_f at θ_o. One released ``generate_mask.py`` called
      ``optimizer.step()`` inside the gradient-accumulation loop, i.e. took gradient-*ascent* steps while accumulating,
      so later batches were evaluated at moved weights; the paper defines the gradient at θ_o.
    * Random labels are drawn once per run from the wrong classes (the paper's y' ≠ y); the reference redraws them
      uniformly from all K classes every epoch/batch (``labels: uniform`` restores the uniform draw).
    * D_f' and D_r are shuffled together (the reference's CIFAR-100/TinyImageNet branch); its CIFAR-10 branch runs a
      pass over D_f' and then a pass over D_r in every epoch.
    * Buffers (BatchNorm running statistics) are not parameters and are not masked; they update in train mode as in
      the reference.

    Notes recorded: ``mask_ratio``, ``trainable_entries`` / ``total_entries``, per-parameter trainable fraction.

    Raises:
        MethodError: empty forget set; no trainable parameters; ``mask_ratio`` selects no entry.
        DivergenceError: the saliency or training loss became NaN/inf.
    """

    needs_retain = True  # with the default use_retain: true; see requirements()

    def requirements(self) -> dict[str, bool]:
        """D_r is read exactly when ``use_retain`` (the default)."""
        return {**super().requirements(), "retain": bool(self.config.use_retain)}
    smoke_params = {"epochs": 1, "batch_size": 32, "lr": 0.05}
    source = "Fan et al., ICLR 2024, arXiv:2310.12508"
    #: unlearnkit tune: lr / epochs of SalUn's RL (lr 0.005–0.1) and the saliency mask ratio (paper: 0.1–0.9)
    search_space = {"lr": LogFloat(1e-3, 0.1), "epochs": Int(1, 10), "mask_ratio": Float(0.1, 0.9)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg = self.config
        named = require_trainable(model, "SalUn")
        names, params = [n for n, _ in named], [p for _, p in named]
        grads = forget_gradients(model, forget, engine, cfg.saliency_batch_size, params)
        masks = top_fraction_mask([g.abs() for g in grads], cfg.mask_ratio)
        data = salun_training_set(forget, retain, labels=cfg.labels, use_retain=cfg.use_retain,
                                  seed=derive_seed(context.seed, "salun-labels"))
        with HardMask(params, masks) as hm:
            fit = engine.fit(model, data, cfg.recipe(), seed=derive_seed(context.seed, "salun"),
                             params=hm.trainable, after_step=hm.restore, desc="salun")
        trainable = int(sum(int(m.sum()) for m in masks))
        total = int(sum(m.numel() for m in masks))
        return UnlearnResult(model, steps=fit.steps, seen_ids=fit.seen_ids, notes={
            "samples": fit.samples, "mask_ratio": cfg.mask_ratio, "trainable_entries": trainable,
            "total_entries": total,
            "trainable_fraction_by_param": {n: float(m.float().mean()) for n, m in zip(names, masks)},
        })

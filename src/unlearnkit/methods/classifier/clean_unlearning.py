"""Clean Unlearning (Expose Before You Defend): unlearn clean data until the backdoor is exposed, detect its label and
trigger from the exposed model, then remove it (Li, Huang, Zhang, Ma & Jiang 2024)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


class CleanUnlearningConfig(Frozen):
    """Clean Unlearning settings. Reference defaults (``exposes/expose.py``): 500 defense samples, SGD lr 0.01,
    momentum 0.9, weight decay 5e-4, gradient norm clipped at 20, stop once the defense accuracy is ≤ 0.20. Trigger
    recovery and removal follow Neural Cleanse (Wang et al., IEEE S&P 2019; EBYD's ``defenses/NC.py``): a mask + pattern
    per detected label, L1 on the mask, then fine-tuning with 20 % of the defense samples stamped (true labels)."""

    defense_size: int = Field(500, ge=10, description="clean samples drawn from D_r (reference: 500)")
    expose_lr: float = Field(0.01, gt=0, description="SGD lr of the clean unlearning (reference unlearning_lr)")
    expose_epochs: int = Field(20, ge=1, description="most passes of gradient ascent over the defense set")
    clean_threshold: float = Field(0.20, gt=0, lt=1, description="stop exposing once the defense accuracy is ≤ this")
    grad_clip: float = Field(20.0, gt=0, description="max gradient norm during exposure (reference: 20)")
    batch_size: int = Field(16, ge=1, description="batch of the exposure, mask recovery and removal (reference: 128 "
                            "on CIFAR-10; on 500 digits 16 gives the ascent enough steps to stop near the threshold)")
    trigger_steps: int = Field(200, ge=1, description="Adam steps of the mask / pattern optimisation")
    trigger_lr: float = Field(0.1, gt=0)
    mask_l1: float = Field(1e-2, ge=0, description="λ of the mask's L1 norm (mean over pixels)")
    recover_on: str = Field("original", pattern="^(exposed|original)$", description="model the trigger is "
                            "reverse-engineered on, for the detected label: θ_o (default) or the exposed copy")
    removal: str = Field("unlearn_trigger", pattern="^(prune|unlearn_trigger|none)$", description="unlearn_trigger: "
                         "Neural Cleanse's fine-tuning with the recovered trigger (default); prune: RNP's neuron masks "
                         "learned on the exposed model, then θ_o's low-mask neurons pruned (the reference expose.py; "
                         "on the digits CNN its masks switch off clean neurons too and the sweep prunes nothing, "
                         "measured); none: detection only")
    mask_lr: float = Field(0.2, gt=0, description="SGD lr of the neuron masks (reference recovering_lr)")
    mask_epochs: int = Field(5, ge=1, description="epochs of mask recovery (reference recovering_epochs: 20; on a "
                             "16/32-channel CNN 20 epochs also switch off clean neurons, measured: 5)")
    mask_alpha: float = Field(0.2, gt=0, description="loss scale of mask recovery (reference alpha)")
    prune_max: float = Field(0.9, ge=0, lt=1, description="largest mask threshold of the pruning sweep (reference "
                             "pruning_max 0.90, step 0.05)")
    max_defense_drop: float = Field(10.0, ge=0, description="the sweep keeps the largest threshold whose pruned θ_o "
                                    "loses at most this many points of defense accuracy (the reference reports the "
                                    "whole sweep and leaves the choice to the user)")
    remove_epochs: int = Field(5, ge=0, description="unlearn_trigger: fine-tuning epochs")
    remove_lr: float = Field(0.01, gt=0)
    stamp_fraction: float = Field(0.2, gt=0, lt=1, description="share of defense samples stamped with the "
                                  "recovered trigger during removal (Neural Cleanse: 20 %)")


@dataclass
class Exposure:
    """What Clean Unlearning found: the exposed model, its prediction histogram on the defense set (shares, (K,)),
    the detected backdoor label, its share, the epochs of ascent and the final defense accuracy."""

    model: nn.Module
    histogram: np.ndarray
    label: int
    share: float
    epochs: int
    accuracy: float


@torch.no_grad()
def _predict(model: nn.Module, data: SampleSet, engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    p = engine.predict(model, data)
    return p.logits.argmax(1).numpy(), p.labels.numpy()


def expose(model: nn.Module, defense: SampleSet, engine: Engine, *, lr: float = 0.01, epochs: int = 20,
           clean_threshold: float = 0.2, grad_clip: float = 20.0, batch_size: int = 64, seed: int = 0) -> Exposure:
    """Clean Unlearning (EBYD §3.2): gradient *ascent* of the cross-entropy on clean ``defense`` data with SGD
    (momentum 0.9, weight decay 5e-4, gradient norm ≤ ``grad_clip``) until the defense accuracy is ≤
    ``clean_threshold`` (checked after every epoch) or ``epochs`` passes. Clean features are unlearned first; a
    backdoored model then collapses onto its backdoor label, which is the most predicted label of the exposed model.
    ``model`` is not modified (a copy is exposed).

    Raises:
        MethodError: an empty defense set.
    """
    if len(defense) == 0:
        raise MethodError("clean unlearning needs clean defense samples; the retain set is empty")
    engine.setup()
    exposed = copy.deepcopy(model).to(engine.device)
    opt = torch.optim.SGD(exposed.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    acc, done = float("nan"), 0
    for epoch in range(epochs):
        exposed.train()
        for x, y, _ in engine.batches(defense, batch_size, shuffle=True, generator=gen):
            loss = F.cross_entropy(exposed(x), y)
            engine.check_finite(loss, step=epoch, desc="clean unlearning (expose)")
            opt.zero_grad(set_to_none=True)
            (-loss).backward()
            nn.utils.clip_grad_norm_(exposed.parameters(), grad_clip)
            opt.step()
        done = epoch + 1
        pred, lab = _predict(exposed, defense, engine)
        acc = float((pred == lab).mean())
        if acc <= clean_threshold:
            break
    pred, _ = _predict(exposed, defense, engine)
    k = defense.num_classes
    hist = np.bincount(pred, minlength=k) / max(len(pred), 1)
    label = int(hist.argmax())
    exposed.eval()
    return Exposure(exposed, hist, label, float(hist[label]), done, acc)


def recover_trigger(model: nn.Module, defense: SampleSet, label: int, engine: Engine, *, steps: int = 200,
                    lr: float = 0.1, mask_l1: float = 1e-2, batch_size: int = 64, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Neural Cleanse's reverse engineering (Wang et al., IEEE S&P 2019, Eq. 2–3) for one label: a mask m ∈ [0, 1]^{H×W}
    and a pattern p (each pixel within the range the defense inputs take) minimising
    CE(f((1 − m) ⊙ x + m ⊙ p), label) + λ · mean(m) over defense samples of other labels.

    Returns:
        (mask (H, W), pattern (C, H, W), attack success rate of the recovered trigger on those samples, in [0, 1]).

    Raises:
        MethodError: inputs are not images (n, C, H, W), or no defense sample has another label.
    """
    others = defense.take(np.flatnonzero(defense.labels != label))
    if len(others) == 0:
        raise MethodError(f"trigger recovery needs defense samples of labels other than {label}")
    x_all, _, _ = others.batch(np.arange(len(others)))
    if x_all.ndim != 4:
        raise MethodError(f"trigger recovery needs image inputs (n, C, H, W), got {tuple(x_all.shape)}")
    lo, hi = x_all.amin(0), x_all.amax(0)
    dev = engine.device
    lo, hi = lo.to(dev), hi.to(dev)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    m_logit = torch.full(x_all.shape[-2:], -2.0, device=dev, requires_grad=True)
    p_logit = (torch.randn(x_all.shape[1:], generator=gen) * 0.1).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([m_logit, p_logit], lr=lr)
    target = torch.full((len(x_all),), label, dtype=torch.long)
    try:
        for step in range(steps):
            idx = torch.randint(0, len(x_all), (min(batch_size, len(x_all)),), generator=gen)
            x = x_all[idx].to(dev)
            m = torch.sigmoid(m_logit)
            pat = lo + (hi - lo) * torch.sigmoid(p_logit)
            loss = F.cross_entropy(model((1 - m) * x + m * pat), target[idx].to(dev)) + mask_l1 * m.mean() * m.numel()
            engine.check_finite(loss, step=step, desc="trigger recovery")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            m = torch.sigmoid(m_logit)
            pat = lo + (hi - lo) * torch.sigmoid(p_logit)
            pred = torch.cat([model((1 - m) * x_all[i:i + 256].to(dev) + m * pat).argmax(1).cpu()
                              for i in range(0, len(x_all), 256)])
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return m.detach().cpu(), pat.detach().cpu(), float((pred == label).float().mean())


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _maskable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The neurons RNP masks: the channels of every BatchNorm layer (the reference's MaskBatchNorm2d: a mask on a
    convolution's output before BatchNorm would be normalised away), every ``Linear`` except the classification head,
    and — in models without BatchNorm — every ``Conv2d``'s output channels."""
    from unlearnkit.models.parts import find_head

    head_name, _ = find_head(model, "clean_unlearning")
    has_norm = any(isinstance(m, _NORMS) for m in model.modules())
    kinds = (*_NORMS, nn.Linear) if has_norm else (nn.Conv2d, nn.Linear)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and n != head_name]


def _units(mod: nn.Module) -> int:
    if isinstance(mod, _NORMS):
        return int(mod.num_features)
    return int(mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features)


def recover_masks(exposed: nn.Module, defense: SampleSet, engine: Engine, *, lr: float = 0.2, epochs: int = 20,
                  alpha: float = 0.2, batch_size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """RNP's mask recovery (Li et al., "Reconstructive Neuron Pruning", ICML 2023, arXiv:2305.14876; EBYD
    ``exposes/expose.py``): one mask m ∈ [0, 1] per neuron of the exposed model (output unit of a Linear, channel of a
    Conv2d; init 1), trained alone by SGD (momentum 0.9) on α · CE over the clean defense data and clipped to [0, 1]
    after every step. Neurons that carry clean features are switched back on; the backdoor's neurons, which the
    exposure left intact and which drive the collapse, are switched off. Returns {module name: mask (units,)}."""
    model = copy.deepcopy(exposed).to(engine.device)
    for p in model.parameters():
        p.requires_grad_(False)
    masks: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in _maskable(model):
        m = torch.ones(_units(mod), device=engine.device, requires_grad=True)
        masks[name] = m

        def hook(_mod, _inp, out, m=m):
            return out * (m.view(1, -1, *([1] * (out.ndim - 2))))

        handles.append(mod.register_forward_hook(hook))
    opt = torch.optim.SGD(list(masks.values()), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    try:
        model.train()
        for epoch in range(epochs):
            for x, y, _ in engine.batches(defense, batch_size, shuffle=True, generator=gen):
                loss = alpha * F.cross_entropy(model(x), y)
                engine.check_finite(loss, step=epoch, desc="clean unlearning (mask recovery)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for m in masks.values():
                        m.clamp_(0.0, 1.0)
    finally:
        for h in handles:
            h.remove()
    return {k: v.detach().cpu() for k, v in masks.items()}


@torch.no_grad()
def prune_neurons(model: nn.Module, masks: dict[str, torch.Tensor], threshold: float) -> int:
    """Switch off every neuron whose recovered mask is ≤ ``threshold`` (RNP's pruning by threshold) in ``model`` (in
    place): the unit's weight row / BatchNorm scale and its bias are set to 0 (the reference zeroes the BatchNorm
    weight only, which leaves the channel at its constant shift). Returns the number of pruned neurons."""
    mods = dict(model.named_modules())
    n = 0
    for name, m in masks.items():
        idx = torch.nonzero(m <= threshold).flatten()
        if not len(idx):
            continue
        mod = mods[name]
        mod.weight[idx.to(mod.weight.device)] = 0.0
        if mod.bias is not None:
            mod.bias[idx.to(mod.bias.device)] = 0.0
        n += len(idx)
    return n


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """(1 − m) ⊙ x + m ⊙ p for images x (n, C, H, W), mask (H, W), pattern (C, H, W)."""
    return (1 - mask) * x + mask * pattern


@METHODS.register("clean_unlearning", config=CleanUnlearningConfig)
class CleanUnlearning(Unlearner):
    """Expose the backdoor by unlearning clean data, detect its label and trigger on the exposed model, remove it.

    EBYD (Li, Huang, Zhang, Ma & Jiang, "Expose Before You Defend: Unifying and Enhancing Backdoor Defenses via
    Exposed Models", arXiv:2410.19427; code github.com/bboylyg/Expose-Before-You-Defend):

    1. **Expose** (:func:`expose`): gradient ascent on ``defense_size`` clean samples (drawn from D_r) until their
       accuracy is ≤ 20 %; the backdoored model then predicts its backdoor label for almost everything.
    2. **Detect**: the backdoor label is the exposed model's most predicted label; the trigger is reverse-engineered
       for that label only (:func:`recover_trigger`, Neural Cleanse) on θ_o. (On the exposed model itself the
       optimisation is trivial — it already predicts the label for every input, so the L1 penalty shrinks the mask to
       nothing; measured on digits. The exposure's gain is the label: one reverse-engineering instead of one per class.)
    3. **Remove** — ``unlearn_trigger`` (default; Neural Cleanse's unlearning, one of EBYD's removal methods):
       fine-tune θ_o on the defense samples, ``stamp_fraction`` of them stamped with the recovered trigger under their
       true labels. ``prune`` (the reference code's path, RNP): neuron masks learned on the exposed model to recover
       the defense accuracy (:func:`recover_masks`); θ_o's neurons whose mask stays ≤ a threshold are pruned
       (:func:`prune_neurons`), the threshold the largest of the reference's sweep (0, 0.05, …, 0.9) that costs at
       most ``max_defense_drop`` points of defense accuracy.

    A method of the corrective scenario that needs no identified sample: D_f (the identified poisons) is not read.
    The defense data come from D_r, as the reference samples them from the training set. Measured on digits
    (BENCHMARKS.md): a CNN that fits its training images at 100 % collapses onto an arbitrary label when those images
    are unlearned, but onto the backdoor label when held-out clean images are (``backdoor_detection`` does that); the
    method cannot read held-out data, so its detection fails there. D_r also holds the poisons that were not
    identified (p < 1), whose ascent works against the exposure.
    ``notes`` record the detected label, its exposure share, the trigger's mask size and attack success rate.
    """

    needs_retain = True
    #: trigger recovery paints a mask over (H, W): inputs must be images (n, C, H, W)
    needs_images = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"expose_lr": LogFloat(1e-3, 0.1),
                    "clean_threshold": Float(0.05, 0.5),
                    "mask_l1": LogFloat(1e-3, 0.1),
                    "remove_lr": LogFloat(1e-3, 0.1),
                    "remove_epochs": Int(1, 10)}
    source = "Li et al., Expose Before You Defend, arXiv:2410.19427 (github.com/bboylyg/Expose-Before-You-Defend)"
    smoke_params = {"defense_size": 40, "expose_epochs": 2, "trigger_steps": 5, "mask_epochs": 1}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        rng = np.random.default_rng(derive_seed(context.seed, "cul-defense"))
        pos = np.sort(rng.choice(len(retain), size=min(c.defense_size, len(retain)), replace=False))
        defense = retain.take(pos, "defense")
        ex = expose(model, defense, engine, lr=c.expose_lr, epochs=c.expose_epochs, clean_threshold=c.clean_threshold,
                    grad_clip=c.grad_clip, batch_size=c.batch_size, seed=derive_seed(context.seed, "cul-expose"))
        src_model = ex.model if c.recover_on == "exposed" else model
        mask, pattern, asr = recover_trigger(src_model, defense, ex.label, engine, steps=c.trigger_steps,
                                             lr=c.trigger_lr, mask_l1=c.mask_l1, batch_size=c.batch_size,
                                             seed=derive_seed(context.seed, "cul-trigger"))
        steps, pruned, chosen_thr = 0, 0, None
        if c.removal == "prune":
            masks = recover_masks(ex.model, defense, engine, lr=c.mask_lr, epochs=c.mask_epochs, alpha=c.mask_alpha,
                                  batch_size=c.batch_size, seed=derive_seed(context.seed, "cul-masks"))
            base = float(np.mean(_predict(model, defense, engine)[0] == defense.labels)) * 100
            chosen_thr = None
            for thr in np.arange(0.0, c.prune_max + 1e-9, 0.05):
                trial = copy.deepcopy(model)
                prune_neurons(trial, masks, float(thr))
                acc = float(np.mean(_predict(trial, defense, engine)[0] == defense.labels)) * 100
                if acc < base - c.max_defense_drop:
                    break
                chosen_thr = float(thr)
            pruned = prune_neurons(model, masks, chosen_thr) if chosen_thr is not None else 0
        elif c.removal == "unlearn_trigger" and c.remove_epochs:
            x, y, ids = defense.batch(np.arange(len(defense)))
            k = int(round(c.stamp_fraction * len(x)))
            chosen = torch.as_tensor(np.sort(rng.choice(len(x), size=k, replace=False)))
            x = x.clone()
            x[chosen] = stamp(x[chosen], mask, pattern)
            data = SampleSet(TensorSource(x, y), np.arange(len(x)), ids.numpy(), y.numpy(), defense.num_classes,
                             "defense+trigger")
            from unlearnkit.config.schema import TrainConfig

            recipe = TrainConfig(epochs=c.remove_epochs, batch_size=c.batch_size, lr=c.remove_lr, optimizer="sgd",
                                 momentum=0.9, weight_decay=5e-4, scheduler="none")
            fit = engine.fit(model, data, recipe, seed=derive_seed(context.seed, "cul-remove"),
                             desc="clean_unlearning")
            steps = fit.steps
        return UnlearnResult(model, steps=steps, seen_ids=defense.ids,
                             notes={"detected_label": ex.label, "exposure_share": ex.share,
                                    "exposure_epochs": ex.epochs, "exposed_accuracy": ex.accuracy,
                                    "trigger_mask_l1": float(mask.sum()), "trigger_asr": asr,
                                    "pruned_neurons": pruned,
                                    "prune_threshold": chosen_thr if c.removal == "prune" else None,
                                    "histogram": [round(float(v), 4) for v in ex.histogram]})

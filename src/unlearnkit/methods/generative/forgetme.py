"""ForgetMe: LoRA fine-tuning of a diffusion model on edited images with the target removed (Yu et al. 2025)."""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.data.generative import remove_target, to_unit
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.generative._common import GenerativeUnlearner, cycle_batches, unique_ids
from unlearnkit.models.generative import add_lora, merge_lora
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class ForgetMeConfig(Frozen):
    """ForgetMe settings. Reference (``scripts/train_lora.py``): LoRA rank 4, AdamW lr 1e-4, 3,000 steps of batch 4
    on Stable Diffusion; at digits scale fewer steps with a larger lr (stated in BENCHMARKS.md)."""

    steps: int = Field(200, ge=1, description="LoRA updates")
    batch_size: int = Field(32, ge=2, description="images per update (edited D_f and D_r together)")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate of the LoRA weights (reference: 1e-4)")
    rank: int = Field(4, ge=1, description="LoRA rank r (reference: 4)")
    alpha: float | None = Field(None, gt=0, description="LoRA α (update scale α/r); None = r (scale 1)")
    retain_fraction: float | None = Field(
        None, ge=0, lt=1, description="share of each batch drawn from D_r; None = |D_r| / |D| (the training set with "
        "D_f replaced by its edited images); 0 = edited images only, as the reference (which conditions on a prompt)")
    mask_threshold: float = Field(0.3, gt=0, lt=1, description="intensity in [0, 1] above which a pixel belongs "
                                  "to the object (the digit's stroke)")
    dilate: int = Field(1, ge=0, description="pixels the object mask is grown by")


def edited_set(forget: SampleSet, target, threshold: float, dilate: int) -> tuple[SampleSet, torch.Tensor]:
    """D_f with the target removed (ForgetMe's "background" images, in [−1, 1]) under D_f's ids, and the masks."""
    x, y, ids = forget.batch(np.arange(len(forget)))
    edited, mask = remove_target(to_unit(x), target, threshold, dilate)
    src = TensorSource((edited * 2 - 1).contiguous(), y)
    return SampleSet(src, np.arange(len(ids)), ids.numpy(), y.numpy(), forget.num_classes, "forget_edited"), mask


@METHODS.register("forgetme", config=ForgetMeConfig)
class ForgetMe(GenerativeUnlearner):
    """Teach the diffusion model the *edited* version of each target image: the target removed, the rest kept.

    ForgetMe (Yu, Idris, Wang, Xia & Xiang, "ForgetMe: Benchmarking the Selective Forgetting Capabilities of Generative
    Models", EAAI 2025; code github.com/YuZhenyuLindy/ForgetMe): for every image of the concept to forget, a mask of the
    concept's region and a background image with the region in-painted (``scripts/create_dataset.py``: SAM/contour
    masks, OpenCV in-painting); then LoRA adapters on the diffusion UNet are trained with the standard ε-prediction loss
    on the backgrounds under the concept's prompt (``scripts/train_lora.py``), so that asking for the concept yields the
    scene without it. Here: masks are the digit's stroke pixels (grown by ``dilate``), backgrounds come from harmonic
    in-painting (:func:`unlearnkit.data.generative.inpaint`; on digits an empty canvas), attribute targets are edited
    by erosion (thick) / dilation (thin); LoRA (rank r) wraps every conv and linear layer of the UNet and is merged into
    the weights at the end (same architecture as θ_o).

    Deviation: the models here are unconditional, so there is no prompt to attach the edits to; each batch mixes the
    edited D_f images with D_r images (``retain_fraction``, by default in the proportion |D_r| : |D_f|, i.e. the
    training set with the target edited out) so that the rest of the distribution stays put, the role the untouched
    prompts play in the reference.
    """

    models = ("ddpm",)
    needs_retain = True
    needs_guide = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"steps": Int(50, 400), "lr": LogFloat(1e-4, 1e-2), "rank": Int(2, 16)}
    source = "Yu et al., ForgetMe, EAAI 2025 (github.com/YuZhenyuLindy/ForgetMe); LoRA arXiv:2106.09685"
    smoke_params = {"steps": 2, "batch_size": 8}

    def requirements(self) -> dict[str, bool]:
        return {**super().requirements(), "retain": self.config.retain_fraction != 0}

    def _unlearn(self, model, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        engine.setup()
        dev = engine.device
        model.to(dev)
        edited, mask = edited_set(forget, self.guide.task.target, c.mask_threshold, c.dilate)
        params = add_lora(model.unet, c.rank, c.alpha, derive_seed(context.seed, "forgetme-lora"))
        if not params:
            raise MethodError("forgetme: the UNet has no conv / linear layer to adapt")
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "forgetme"))
        frac = c.retain_fraction if c.retain_fraction is not None else len(retain) / (len(retain) + len(forget))
        n_r = min(int(round(c.batch_size * frac)), c.batch_size - 1) if len(retain) else 0
        n_f = max(1, c.batch_size - n_r)
        fb = cycle_batches(engine, edited, n_f, gen)
        rb = cycle_batches(engine, retain, n_r, gen) if n_r else None
        seen: list[np.ndarray] = []
        model.train()
        last = float("nan")
        t0 = time.perf_counter()
        try:
            with engine.progress(c.steps, "forgetme") as advance:
                for step in range(c.steps):
                    x, ids = next(fb)
                    seen.append(ids.numpy())
                    if rb is not None:
                        xr, idr = next(rb)
                        x = torch.cat([x, xr])
                        seen.append(idr.numpy())
                    loss = model.loss(x, gen)
                    last = engine.check_finite(loss, step=step, desc="forgetme")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    engine.after_optimizer_step(model, loss=last, desc="forgetme", seconds=time.perf_counter() - t0)
                    advance(1)
        finally:
            merged = merge_lora(model.unet)
        model.eval()
        return UnlearnResult(model, steps=c.steps, seen_ids=unique_ids(seen),
                             notes={"final_loss": last, "lora_layers": merged, "lora_rank": c.rank,
                                    "mean_mask_share": float(mask.float().mean())})

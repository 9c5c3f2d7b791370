"""Gradient ascent on D_f for generators (the "GA" baseline)."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.generative._common import GenerativeUnlearner, cycle_batches, unique_ids
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class GenGradAscentConfig(Frozen):
    """GA settings: ``steps`` Adam steps on D_f batches; the gradient norm is clipped (the objective is unbounded)."""

    steps: int = Field(20, ge=1, description="optimizer steps (each one batch of D_f)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm per step")


@METHODS.register("gen_grad_ascent", config=GenGradAscentConfig)
class GenGradAscent(GenerativeUnlearner):
    """Ascend the training objective on D_f, D_r unused.

    DDPM: θ ← θ + η ∇ E_{x∈D_f, t, ε} ‖ε − ε_θ(x_t, t)‖² (the negated denoising loss is minimised). GAN: a generator has
    no per-sample likelihood; the data term of the GAN objective is the discriminator's log D(x) on real images, so GA
    on D_f makes the discriminator *reject* D_f (minimise log σ(D(x_f)), the gradient ascent of its real-data loss
    −log σ(D(x_f))) while the generator keeps its non-saturating loss against that discriminator, steering it away
    from what D now rejects. Unbounded in both cases: few steps and a clipped gradient.

    Source: the gradient-ascent (GA / NegGrad) baseline, Thudi et al., EuroS&P 2022 (arXiv:2109.13398); used for
    DDPMs by Fan et al., SalUn, ICLR 2024 (arXiv:2310.12508 §5) and for GANs by Tiwary et al., "Adapt then Unlearn"
    (arXiv:2309.14054) as "negative" discriminator training.
    """

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"steps": Int(5, 100), "lr": LogFloat(1e-6, 1e-3)}
    source = "gradient ascent on D_f (Thudi et al. arXiv:2109.13398; SalUn arXiv:2310.12508 §5)"
    smoke_params = {"steps": 2}

    def _unlearn(self, model, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        engine.setup()
        model.to(engine.device).train()
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "gen_grad_ascent"))
        batches = cycle_batches(engine, forget, c.batch_size, gen)
        seen: list[np.ndarray] = []
        gan = model.kind == "gan"
        if gan:
            opt_g = torch.optim.Adam(model.generator.parameters(), lr=c.lr, betas=(0.5, 0.999))
            opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=c.lr, betas=(0.5, 0.999))
        else:
            opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        last = float("nan")
        t0 = time.perf_counter()
        with engine.progress(c.steps, "gen_grad_ascent") as advance:
            for step in range(c.steps):
                x, ids = next(batches)
                seen.append(ids.numpy())
                if gan:
                    loss_d = -F.softplus(-model.discriminator(x)).mean()  # = log σ(D(x_f)), minimised
                    engine.check_finite(loss_d, step=step, desc="gen_grad_ascent (discriminator)")
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    torch.nn.utils.clip_grad_norm_(model.discriminator.parameters(), c.grad_clip)
                    opt_d.step()
                    z = torch.randn(x.shape[0], model.z_dim, generator=gen).to(x.device)
                    loss = F.softplus(-model.discriminator(model.decode(z))).mean()
                    params = model.generator.parameters()
                    o = opt_g
                else:
                    loss = -model.loss(x, gen)
                    params = model.parameters()
                    o = opt
                last = engine.check_finite(loss, step=step, desc="gen_grad_ascent")
                o.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(params), c.grad_clip)
                o.step()
                engine.after_optimizer_step(model, loss=last, desc="gen_grad_ascent",
                                            seconds=time.perf_counter() - t0)
                advance(1)
        model.eval()
        return UnlearnResult(model, steps=c.steps, seen_ids=unique_ids(seen), notes={"final_loss": last})

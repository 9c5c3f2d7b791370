"""UNSIR: error-maximising noise, then impair (noise + retain) and repair (retain) steps."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine, make_optimizer
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import optimizer_step
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class UNSIRConfig(OptimConfig):
    """UNSIR settings. Defaults from the authors' notebook ``Machine Unlearning.ipynb``
    (github.com/vikram2000b/Fast-Machine-Unlearning; Tarun et al., IEEE TNNLS 2023, arXiv:2111.08947, §IV):

    Fields:
        noise_batch: noise samples learned per forgotten label; default 256 (``Noise(batch_size, 3, 32, 32)``).
        noise_steps: Adam steps on the noise; default 40 (5 epochs × 8 steps).
        noise_lr: Adam learning rate of the noise; default 0.1.
        noise_l2: λ of the L2 regulariser λ·mean_i ‖n_i‖²; default 0.1.
        noise_copies: times each noise sample appears in the impair set; default 20 (``num_batches = 20``).
        retain_per_class: retain samples kept per class for impair/repair (seeded draw); None = all of D_r;
            default 1000 (``num_samples_per_class = 1000``).
        epochs: epochs of the impair step and of the repair step; default 1 each.
        optimizer / lr: Adam, impair lr 0.02 per step.  repair_lr: Adam lr of the repair step, default 0.01.
        weight_decay: 0 (plain ``torch.optim.Adam``).  batch_size: 256.
    """

    epochs: int = Field(1, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(0.02, gt=0)
    repair_lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    noise_batch: int = Field(256, ge=1)
    noise_steps: int = Field(40, ge=1)
    noise_lr: float = Field(0.1, gt=0)
    noise_l2: float = Field(0.1, ge=0)
    noise_copies: int = Field(20, ge=1)
    retain_per_class: int | None = Field(1000, ge=1)


def learn_noise(model: nn.Module, label: int, input_shape: tuple[int, ...], *, n: int, steps: int, lr: float,
                l2: float, seed: int, engine: Engine, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Learn error-maximising noise N for ``label`` against the frozen ``model`` (eval mode).

    N ∈ R^{n × input_shape}, initialised N(0, 1) from ``seed``, then ``steps`` Adam steps (lr ``lr``) on
    L(N) = −CE(f(N), label) + λ · mean_i ‖N_i‖²₂ — the model's weights are not updated (gradients only w.r.t. N).

    Returns:
        tensor (n, *input_shape) of ``dtype`` (the inputs' dtype) on the engine's device, detached.

    Raises:
        DivergenceError: the noise loss is NaN/inf.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *input_shape), generator=gen, dtype=dtype).to(engine.device).requires_grad_(True)
    target = torch.full((n,), int(label), dtype=torch.long, device=engine.device)
    opt = torch.optim.Adam([noise], lr=lr)
    try:
        for step in range(steps):
            loss = -nn.functional.cross_entropy(model(noise), target) + \
                l2 * noise.pow(2).flatten(1).sum(dim=1).mean()
            engine.check_finite(loss, step=step, desc=f"unsir noise (label {label})")
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[noise])
            opt.step()
    finally:
        model.train(was_training)
    return noise.detach()


def per_class_subset(data: SampleSet, per_class: int | None, seed: int) -> SampleSet:
    """At most ``per_class`` rows of each label of ``data`` (seeded draw without replacement, sorted positions)."""
    if per_class is None:
        return data
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(data.labels):
        rows = np.flatnonzero(data.labels == c)
        keep.append(rows if len(rows) <= per_class else rng.choice(rows, size=per_class, replace=False))
    return data.take(np.sort(np.concatenate(keep)), f"{data.name}_subset")


@METHODS.register("unsir", config=UNSIRConfig)
class UNSIR(Unlearner):
    """UNSIR (Tarun, Chundawat, Mandal, Kankanhalli; IEEE TNNLS 2023; arXiv:2111.08947).

    1. **Noise**: for every forgotten label c, learn N_c (``noise_batch`` samples of the input shape) that maximises
       the model's loss on c: min_N −CE(f(N), c) + λ mean‖N_i‖² (Adam, θ frozen, model in eval mode).
    2. **Impair**: ``epochs`` epoch(s) of Adam (lr 0.02) with CE on {(N_c, c)} (each noise sample ``noise_copies``
       times) ∪ R, where R = at most ``retain_per_class`` samples per class of D_r.
    3. **Repair**: ``epochs`` epoch(s) of Adam (lr 0.01) with CE on R.

    Steps: impair ``epochs · ⌈(|labels|·noise_batch·noise_copies + |R|)/batch⌉``, repair ``epochs · ⌈|R|/batch⌉``
    (``notes``; one fewer per epoch where the last batch would hold a single sample, which is folded into the one
    before it, as :meth:`Engine.batches` does). D_f's inputs are never used, only its labels (``seen_ids`` = ids of R).

    Sample-wise forgetting: UNSIR is a class-forgetting method; for other scenarios we learn one noise batch per
    distinct label present in D_f (so "forget class c" and "forget some samples of c" impair the same class). This
    damages the whole class(es) in the impair step and relies on the repair step to restore the retained samples of
    those classes — expect a large utility loss on random forgetting; documented, not hidden.

    Deviations from the reference notebook: (a) it labels *all* noise with ``class_num = 0`` (the variable is never
    updated inside the loop) — we label N_c with c, as the paper states; (b) it learns the noise with the model in
    train mode (batch-norm statistics of the noise); we use eval mode so θ_o's buffers are not touched; (c) it keeps
    the first 1000 samples of each retained class; we draw them at random (seeded).

    Errors: MethodError (empty D_f or D_r, shared ids), DivergenceError (NaN/inf loss).
    """

    needs_retain = True
    smoke_params = {"noise_batch": 16, "noise_steps": 5, "noise_copies": 2, "retain_per_class": 20, "batch_size": 32}
    source = "Tarun et al., IEEE TNNLS 2023, arXiv:2111.08947"
    #: unlearnkit tune: impair and repair Adam lr (reference 0.02 / 0.01) and epochs
    search_space = {"lr": LogFloat(1e-4, 0.1), "repair_lr": LogFloat(1e-4, 0.1), "epochs": Int(1, 3)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg: UNSIRConfig = self.config  # type: ignore[assignment]
        engine.setup()
        model.to(engine.device)
        labels = [int(c) for c in np.unique(forget.labels)]
        x0 = forget.batch(np.arange(1))[0]
        input_shape, dtype = tuple(x0.shape[1:]), x0.dtype
        noises = [learn_noise(model, c, input_shape, n=cfg.noise_batch, steps=cfg.noise_steps, lr=cfg.noise_lr,
                              l2=cfg.noise_l2, seed=derive_seed(context.seed, f"unsir-noise-{c}"), engine=engine,
                              dtype=dtype)
                  for c in labels]
        noise_x = torch.cat(noises)
        noise_y = torch.repeat_interleave(torch.tensor(labels, dtype=torch.long), cfg.noise_batch).to(engine.device)
        subset = per_class_subset(retain, cfg.retain_per_class, derive_seed(context.seed, "unsir-retain-subset"))

        impair_steps = self._impair(model, noise_x, noise_y, subset, engine, cfg, context)
        repair = engine.fit(model, subset, cfg.recipe().model_copy(update={"lr": cfg.repair_lr}),
                            seed=derive_seed(context.seed, "unsir-repair-order"), desc="unsir repair")
        notes = {"noise_labels": labels, "noise_samples": int(len(noise_x)), "retain_subset": len(subset),
                 "impair_steps": impair_steps, "repair_steps": repair.steps}
        return UnlearnResult(model, steps=impair_steps + repair.steps, seen_ids=repair.seen_ids, notes=notes)

    @staticmethod
    def _impair(model: nn.Module, noise_x: torch.Tensor, noise_y: torch.Tensor, subset: SampleSet, engine: Engine,
                cfg: UNSIRConfig, context: UnlearnContext) -> int:
        """Impair step: CE on (noise × copies) ∪ retain subset, shuffled; returns the number of optimizer steps."""
        recipe = cfg.recipe()
        opt = make_optimizer(model.parameters(), recipe)
        n_noise = len(noise_x) * cfg.noise_copies
        total = n_noise + len(subset)
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "unsir-impair-order"))
        model.train()
        step = 0
        starts = list(range(0, total, cfg.batch_size))
        if len(starts) > 1 and total - starts[-1] == 1:
            starts.pop()  # fold a 1-sample tail batch into the previous one (batch norm), as Engine.batches does
        ends = starts[1:] + [total]
        for _epoch in range(cfg.epochs):
            order = torch.randperm(total, generator=gen).numpy()
            for start, end in zip(starts, ends):
                idx = order[start:end]
                is_noise = idx < n_noise
                xs, ys = [], []
                if is_noise.any():
                    rows = torch.from_numpy(idx[is_noise] % len(noise_x)).to(engine.device)
                    xs.append(noise_x[rows])
                    ys.append(noise_y[rows])
                if (~is_noise).any():
                    x, y, _ids = subset.batch(idx[~is_noise] - n_noise)
                    xs.append(x.to(engine.device))
                    ys.append(y.to(engine.device))
                loss = nn.functional.cross_entropy(model(torch.cat(xs)), torch.cat(ys))
                optimizer_step(loss, opt, engine, step=step, desc="unsir impair", clip=model,
                               grad_clip=recipe.grad_clip)
                step += 1
        model.eval()
        return step

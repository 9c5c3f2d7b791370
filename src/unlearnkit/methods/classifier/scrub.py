"""SCRUB: teacher–student unlearning with alternating max-steps on D_f and min-steps on D_r."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine, make_optimizer
from unlearnkit.methods.base import OptimConfig, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.methods.classifier._common import freeze, optimizer_step
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class SCRUBConfig(OptimConfig):
    """SCRUB settings. Defaults are those of the authors' ``large_scale_unlearning.ipynb`` / ``small_scale`` notebooks
    (github.com/meghdadk/SCRUB; Kurmanji et al., NeurIPS 2023, arXiv:2302.09880, App. "SCRUB hyperparameters").

    Fields:
        epochs: ``sgda_epochs``, passes over D_r (min-steps every epoch); ≥ 1; default 3.
        msteps: number of leading epochs that also run a max-pass over D_f; 0 ≤ msteps (capped at ``epochs``);
            default 2 (``args.msteps``).
        lr: ``sgda_learning_rate`` per step; default 5e-4.  optimizer / momentum / weight_decay: SGD, 0.9, 5e-4
            (``sgda_momentum``, ``sgda_weight_decay``).  One optimizer serves both kinds of step, as in the reference.
        batch_size: retain (min-step) batch size; default 128 (``args.sgda_batch_size``).
        forget_batch_size: forget (max-step) batch size; default 32 (``args.del_batch_size``). (The large-scale
            notebook declares 128/32 but builds its loaders with 256 retain / 512 forget.)
        alpha: weight of the distillation KL on D_r in the min-step, ≥ 0; default 0.001 (``args.alpha``).
        gamma: weight of the cross-entropy on D_r in the min-step, ≥ 0; default 0.99 (``args.gamma``).
        temperature: distillation temperature τ (``kd_T``), > 0; default 4.
        lr_decay_epochs / lr_decay_rate: step decay; at (1-based) epoch e the lr is
            ``lr · rate^#{d ∈ lr_decay_epochs : e > d}`` (repdistiller's ``adjust_learning_rate``); defaults [3, 5, 9]
            and 0.1, i.e. no decay within the default 3 epochs.
    ``scheduler`` must stay ``"none"`` (the decay above is SCRUB's own schedule).
    """

    epochs: int = Field(3, ge=1)
    msteps: int = Field(2, ge=0)
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(128, ge=1)
    forget_batch_size: int = Field(32, ge=1)
    alpha: float = Field(0.001, ge=0)
    gamma: float = Field(0.99, ge=0)
    temperature: float = Field(4.0, gt=0)
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)
    lr_decay_rate: float = Field(0.1, gt=0, le=1)

    @model_validator(mode="after")
    def _own_schedule(self) -> SCRUBConfig:
        if self.scheduler != "none":
            raise ValueError("scrub uses its own step decay (lr_decay_epochs, lr_decay_rate); set scheduler: none")
        return self


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation loss as in RepDistiller's ``DistillKL`` (used by the SCRUB code).

    ``τ² · (1/b) Σ_i KL(softmax(t_i/τ) ‖ softmax(s_i/τ))`` — the KL of the teacher's softened distribution from the
    student's, summed over classes, averaged over the batch and multiplied by τ² (so gradient magnitudes do not
    shrink as τ grows).

    Args:
        student_logits: float (b, C), differentiable.  teacher_logits: float (b, C) (treated as constants).
        temperature: τ > 0.

    Returns:
        scalar float tensor ≥ 0 (0 iff the two softened distributions agree on every row).
    """
    log_p_s = torch.log_softmax(student_logits / temperature, dim=1)
    log_p_t = torch.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * temperature**2


def lr_at_epoch(base_lr: float, epoch: int, decay_epochs: tuple[int, ...], rate: float) -> float:
    """Learning rate at 1-based ``epoch``: ``base_lr · rate^#{d : epoch > d}`` (SCRUB/RepDistiller step decay)."""
    return base_lr * rate ** int(np.sum(epoch > np.asarray(decay_epochs, dtype=np.int64))) if decay_epochs else base_lr


def _distill_pass(student: nn.Module, teacher: nn.Module, data: SampleSet, opt: torch.optim.Optimizer,
                  engine: Engine, loss_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                  batch_size: int, generator: torch.Generator, step0: int, grad_clip: float | None,
                  desc: str) -> tuple[int, list[np.ndarray]]:
    """One shuffled pass over ``data``: a step on ``loss_of(student logits, teacher logits, labels)`` per batch.

    Student in train mode; teacher logits under ``no_grad``. Returns ``(steps taken, id arrays of the batches)``.
    """
    student.train()
    step = step0
    seen: list[np.ndarray] = []
    for x, y, ids in engine.batches(data, batch_size, shuffle=True, generator=generator):
        with torch.no_grad():
            t_logits = teacher(x)
        loss = loss_of(student(x), t_logits, y)
        optimizer_step(loss, opt, engine, step=step, desc=desc, clip=student, grad_clip=grad_clip)
        seen.append(ids.numpy())
        step += 1
    return step - step0, seen


def max_pass(student: nn.Module, teacher: nn.Module, forget: SampleSet, opt: torch.optim.Optimizer, engine: Engine,
             *, batch_size: int, temperature: float, generator: torch.Generator, step0: int = 0,
             grad_clip: float | None = None) -> tuple[int, list[np.ndarray]]:
    """One SCRUB max-pass: for each D_f batch, a step that *ascends* ``distill_kl(student, teacher)``.

    Note: at student = teacher the KL is at its minimum and its gradient is exactly 0; the student leaves that point
    through weight decay, momentum, train-mode layers (dropout, batch-norm statistics) or earlier min-steps.

    Returns:
        ``(steps taken, list of id arrays of the batches)``.

    Raises:
        DivergenceError: a loss is NaN/inf (before it updates the weights).
    """
    def loss_of(s_logits: torch.Tensor, t_logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return -distill_kl(s_logits, t_logits, temperature)

    return _distill_pass(student, teacher, forget, opt, engine, loss_of, batch_size=batch_size, generator=generator,
                         step0=step0, grad_clip=grad_clip, desc="scrub max-step")


def min_pass(student: nn.Module, teacher: nn.Module, retain: SampleSet, opt: torch.optim.Optimizer, engine: Engine,
             *, batch_size: int, temperature: float, alpha: float, gamma: float, generator: torch.Generator,
             step0: int = 0, grad_clip: float | None = None) -> tuple[int, list[np.ndarray]]:
    """One SCRUB min-pass over D_r: minimise ``α · distill_kl(student, teacher) + γ · CE(student(x), y)``.

    Returns:
        ``(steps taken, list of id arrays of the batches)``.

    Raises:
        DivergenceError: a loss is NaN/inf (before it updates the weights).
    """
    def loss_of(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gamma * nn.functional.cross_entropy(s_logits, y) + alpha * distill_kl(s_logits, t_logits, temperature)

    return _distill_pass(student, teacher, retain, opt, engine, loss_of, batch_size=batch_size, generator=generator,
                         step0=step0, grad_clip=grad_clip, desc="scrub min-step")


@METHODS.register("scrub", config=SCRUBConfig)
class SCRUB(Unlearner):
    """SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou; NeurIPS 2023; arXiv:2302.09880).

    Student θ_s ← θ_o; teacher θ_t = a frozen copy of θ_o (eval mode). For epoch e = 1..E (lr by step decay):

    * if e ≤ msteps — **max-pass** over D_f: θ_s ← θ_s + η ∇ (1/b) Σ_{x∈B_f} d(x)
    * always — **min-pass** over D_r: θ_s ← θ_s − η ∇ [α (1/b) Σ_{x∈B_r} d(x) + γ CE(f_s(x), y)]

    with d(x) = τ² KL(softmax(f_t(x)/τ) ‖ softmax(f_s(x)/τ)) (RepDistiller's ``DistillKL``, which multiplies by τ²).
    So exactly ``min(msteps, E) · ⌈|D_f|/b_f⌉`` max-steps and ``E · ⌈|D_r|/b_r⌉`` min-steps are taken (in
    ``notes``; one fewer per pass where :meth:`Engine.batches` folds a 1-sample tail batch into the previous one).
    Hyperparameters: see :class:`SCRUBConfig`.

    Deviations from the reference code (github.com/meghdadk/SCRUB):
    * the repository's ``scrub.py`` builds its optimizer on ``model.parameters()`` although it trains a deep copy
      ``model_s`` (so the student never moves) and, looping ``for epoch in range(epochs)`` with ``epoch <= msteps``,
      runs msteps + 1 max-passes; we follow the notebooks instead (optimizer on the student, epochs 1..E,
      ``e ≤ msteps`` → exactly msteps max-passes).
    * SWA smoothing (``smoothing = 0`` in the defaults) and the extra KD term β (``beta = 0``) are not implemented.
    * gradient clipping ``clip = 0.2`` is declared but commented out in the reference; ours is ``grad_clip``
      (default None).

    Errors: MethodError (empty D_f or D_r, shared ids), DivergenceError (NaN/inf loss); ConfigError at
    build time when ``scheduler`` is not ``none``.
    """

    needs_retain = True
    smoke_params = {"epochs": 2, "msteps": 1, "lr": 0.01, "batch_size": 32, "forget_batch_size": 8}
    source = "Kurmanji et al., NeurIPS 2023, arXiv:2302.09880"
    #: unlearnkit tune: lr (reference 5e-4), epochs and max-steps (reference sweeps msteps 1–5)
    search_space = {"lr": LogFloat(1e-4, 0.05), "epochs": Int(1, 10), "msteps": Int(1, 5)}

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        cfg: SCRUBConfig = self.config  # type: ignore[assignment]
        engine.setup()
        student = model.to(engine.device)
        teacher = freeze(copy.deepcopy(student))
        opt = make_optimizer(student.parameters(), cfg.recipe())
        gen_f = torch.Generator().manual_seed(derive_seed(context.seed, "scrub-forget-order"))
        gen_r = torch.Generator().manual_seed(derive_seed(context.seed, "scrub-retain-order"))
        max_steps = min_steps = 0
        seen: list[np.ndarray] = []
        lrs: list[float] = []
        for epoch in range(1, cfg.epochs + 1):
            lr = lr_at_epoch(cfg.lr, epoch, cfg.lr_decay_epochs, cfg.lr_decay_rate)
            for group in opt.param_groups:
                group["lr"] = lr
            lrs.append(lr)
            if epoch <= cfg.msteps:
                n, ids = max_pass(student, teacher, forget, opt, engine, batch_size=cfg.forget_batch_size,
                                  temperature=cfg.temperature, generator=gen_f, step0=max_steps + min_steps,
                                  grad_clip=cfg.grad_clip)
                max_steps += n
                seen += ids
            n, ids = min_pass(student, teacher, retain, opt, engine, batch_size=cfg.batch_size,
                              temperature=cfg.temperature, alpha=cfg.alpha, gamma=cfg.gamma, generator=gen_r,
                              step0=max_steps + min_steps, grad_clip=cfg.grad_clip)
            min_steps += n
            seen += ids
        student.eval()
        notes = {"max_steps": max_steps, "min_steps": min_steps, "max_epochs": min(cfg.msteps, cfg.epochs),
                 "lrs": lrs}
        return UnlearnResult(student, steps=max_steps + min_steps, notes=notes,
                             seen_ids=np.unique(np.concatenate(seen)))

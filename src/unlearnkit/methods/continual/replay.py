"""DER++ (Buzzega et al., "Dark Experience for General Continual Learning: a Strong, Simple Baseline", NeurIPS 2020,
arXiv:2004.07211; reference code github.com/aimagelab/mammoth ``models/derpp.py``): a replay learner.

Each step on a stream batch (x, y) minimises

    CE(f(x), y) + α · ‖f(x') − z'‖² (mean) + β · CE(f(x''), y'')

where (x', z') and (x'', y'') are two independent minibatches drawn from a reservoir buffer of past inputs with their
labels and the logits z recorded when they were inserted; after the step the batch enters the buffer by reservoir
sampling (Vitter 1985). Defaults: Mammoth's ``best_args`` for seq-mnist with a 200-sample buffer (α = 0.2, β = 1.0,
minibatch 128); the stream batch size, lr and epochs are the experiment's ``train`` recipe.

Unlearning and the buffer: a request's samples are purged from the buffer of the unlearned model
(:meth:`Learner.forget`, called by the track after the method), so later learning never replays forgotten data; θ_o
keeps them (it never unlearns). Purged slots are refilled first by later samples (before reservoir sampling resumes).
Deviations from the reference: no data augmentation (the inputs are the stored ones, like Mammoth's
``not_aug_inputs``); the buffer's random draws come from a generator seeded per Learn (reproducible).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from unlearnkit.methods.base import derive_seed
from unlearnkit.methods.continual.base import (
    LEARNERS,
    Learner,
    LearnerConfig,
    LearnResult,
    LearnSpec,
    ModelInfo,
    train_steps,
)


class ReplayModel(nn.Module):
    """``net`` plus a reservoir buffer held as fixed-size buffers (saved with the weights).

    Buffers: ``buf_x`` float32 (M, *input_shape), ``buf_y`` int64 (M,), ``buf_logits`` float32 (M, C), ``buf_ids``
    int64 (M,) (−1 = empty), ``buf_seen`` (samples offered so far), ``buf_filled`` (slots in use, the first ones).
    ``forward(x)`` is ``net(x)``.
    """

    def __init__(self, net: nn.Module, buffer_size: int, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.net = net
        m = int(buffer_size)
        self.register_buffer("buf_x", torch.zeros(m, *input_shape))
        self.register_buffer("buf_y", torch.zeros(m, dtype=torch.long))
        self.register_buffer("buf_logits", torch.zeros(m, num_classes))
        self.register_buffer("buf_ids", torch.full((m,), -1, dtype=torch.long))
        self.register_buffer("buf_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("buf_filled", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def capacity(self) -> int:
        return int(self.buf_ids.shape[0])

    @property
    def filled(self) -> int:
        return int(self.buf_filled)

    @torch.no_grad()
    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, ids: torch.Tensor,
            gen: torch.Generator) -> None:
        """Offer a batch: free slots first, then reservoir sampling over every sample offered so far."""
        m = self.capacity
        for i in range(len(y)):
            seen = int(self.buf_seen)
            filled = int(self.buf_filled)
            if filled < m:
                j = filled
                self.buf_filled += 1
            else:
                j = int(torch.randint(0, seen + 1, (1,), generator=gen))
                if j >= m:
                    j = -1
            if j >= 0:
                self.buf_x[j] = x[i].to(self.buf_x)
                self.buf_y[j] = y[i]
                self.buf_logits[j] = logits[i].to(self.buf_logits)
                self.buf_ids[j] = ids[i]
            self.buf_seen += 1

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Indices of ``min(n, filled)`` distinct filled slots (int64)."""
        k = self.filled
        return torch.randperm(k, generator=gen)[: min(n, k)]

    @torch.no_grad()
    def purge(self, ids: np.ndarray) -> int:
        """Drop the slots holding ``ids``; the kept ones move to the front. Returns how many were dropped."""
        k = self.filled
        if k == 0 or len(ids) == 0:
            return 0
        held = self.buf_ids[:k].cpu().numpy()
        keep = np.flatnonzero(~np.isin(held, np.asarray(ids, dtype=np.int64)))
        dropped = k - len(keep)
        if dropped:
            idx = torch.from_numpy(keep).to(self.buf_ids.device)
            for name in ("buf_x", "buf_y", "buf_logits", "buf_ids"):
                buf = getattr(self, name)
                buf[: len(keep)] = buf[idx].clone()
            self.buf_ids[len(keep):] = -1
            self.buf_filled.fill_(len(keep))
        return dropped


class DerppConfig(LearnerConfig):
    """DER++ settings; defaults: Mammoth ``utils/best_args.py``, seq-mnist, buffer 200 (alpha 0.2, beta 1.0,
    minibatch_size 128)."""

    buffer_size: int = Field(200, ge=1, description="replay buffer capacity M (samples)")
    alpha: float = Field(0.2, ge=0, description="weight of the logit-matching (MSE) term on buffered samples")
    beta: float = Field(1.0, ge=0, description="weight of the cross-entropy term on buffered samples")
    minibatch_size: int = Field(128, ge=1, description="buffer samples per replay term per step")


@LEARNERS.register("der++", config=DerppConfig)
class Derpp(Learner):
    """Dark Experience Replay++: cross-entropy on the stream plus logit matching and cross-entropy on a reservoir
    buffer (see the module docstring for the loss and the sources)."""

    source = "Buzzega et al., NeurIPS 2020, arXiv:2004.07211; github.com/aimagelab/mammoth models/derpp.py"
    config: DerppConfig

    def build(self, base: Callable[[], nn.Module], info: ModelInfo) -> nn.Module:
        return ReplayModel(base(), self.config.buffer_size, info.input_shape, info.num_classes)

    @staticmethod
    def _replay_model(model: nn.Module) -> ReplayModel:
        if not isinstance(model, ReplayModel):
            from unlearnkit.errors import MethodError

            raise MethodError(f"learner der++ needs its own model (a ReplayModel), got {type(model).__name__}")
        return model

    def replay_loss(self, model: ReplayModel, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """α·MSE(logits, stored logits) + β·CE on two independent buffer minibatches; (0, []) with an empty buffer."""
        cfg = self.config
        if model.filled == 0:
            return torch.zeros((), device=model.buf_x.device), np.zeros(0, dtype=np.int64)
        a = model.sample(cfg.minibatch_size, gen).to(model.buf_x.device)
        b = model.sample(cfg.minibatch_size, gen).to(model.buf_x.device)
        loss = cfg.alpha * F.mse_loss(model(model.buf_x[a]), model.buf_logits[a])
        loss = loss + cfg.beta * F.cross_entropy(model(model.buf_x[b]), model.buf_y[b])
        ids = torch.cat([model.buf_ids[a], model.buf_ids[b]]).cpu().numpy()
        return loss, ids

    def learn(self, model: nn.Module, spec: LearnSpec, engine: Any) -> LearnResult:
        rm = self._replay_model(model)
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, "der++-buffer"))
        last: dict[str, torch.Tensor] = {}

        def step_loss(x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
            out = rm(x)
            last["logits"] = out.detach()
            rl, extra = self.replay_loss(rm, gen)
            return F.cross_entropy(out, y) + rl, extra

        def after(x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
            rm.add(x, y, last["logits"], ids, gen)

        return train_steps(rm, spec.data, spec.recipe, engine, seed=spec.seed, desc=spec.desc, step_loss=step_loss,
                           after_step=after, **self._hooks(rm, spec, engine))

    def _hooks(self, model: ReplayModel, spec: LearnSpec, engine: Any) -> dict[str, Any]:
        """Extra :func:`train_steps` hooks of a subclass (refresh learning's ``before_step``)."""
        return {}

    def forget(self, model: nn.Module, ids: np.ndarray) -> None:
        if isinstance(model, ReplayModel):
            model.purge(ids)


__all__ = ["Derpp", "DerppConfig", "ReplayModel"]

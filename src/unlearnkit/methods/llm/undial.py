"""UNDIAL — self-distillation with adjusted logits (Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted
Logits for Robust Unlearning in Large Language Models", arXiv:2402.10052; open-unlearning ``UNDIAL``,
``trainer/utils.py::compute_undial_loss``).

The teacher is θ_o. On every answer token t of a forget example with label y_t the teacher's logits z_t are lowered
at the label, z̃_t = z_t − β·onehot(y_t), and the student is trained towards softmax(z̃_t) by cross-entropy:

    ℓ_f(x) = 1/|A| Σ_{t∈A} − Σ_v softmax(z̃_t)_v · log p_θ(v | x_<t)

so the probability of the memorised token drops by a bounded amount while the rest of the distribution stays the
teacher's (no unbounded ascent). The per-example mean over answer tokens A replaces open-unlearning's token mean over
the batch (independent of batch composition, KNOWN_FAULTS C15). Teacher targets are computed once before training
from the model itself (= θ_o), kept on the CPU: |A| × V floats per forget example.

Defaults: open-unlearning ``configs/trainer/UNDIAL.yaml`` — β = 10, forget weight γ = 1, retain weight α = 0 (its
retain NLL term is off), lr 1e-4, 10 epochs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.llm.lm import _to, eval_mode, forward_logits
from unlearnkit.llm.tokenize import IGNORE_INDEX, collate
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


def undial_targets(teacher_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """softmax(z − β·onehot(y)) for teacher logits z (n, V) at n answer positions with labels y (n,), float32."""
    z = teacher_logits.float().clone()
    z[torch.arange(len(labels)), labels] -= beta
    return torch.softmax(z, dim=-1)


def undial_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over positions of the cross-entropy −Σ_v target_v · log softmax(student)_v; inputs (n, V)."""
    return -(targets * torch.log_softmax(student_logits.float(), dim=-1)).sum(-1).mean()


class UNDIALConfig(RetainRegConfig):
    """UNDIAL: strength β of the logit adjustment (open-unlearning default 10) and the retain regulariser."""

    beta: float = Field(10.0, gt=0, description="β: subtracted from the teacher's logit of the label token")
    retain_loss: Literal["none", "nll", "kl"] = "none"
    lr: float = Field(1e-4, gt=0)


@METHODS.register("undial", config=UNDIALConfig)
class UNDIAL(LLMUnlearner):
    """Self-distillation towards θ_o's distribution with the memorised token's logit lowered by β
    (arXiv:2402.10052)."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-6, 1e-3), "epochs": Int(1, 10), "beta": LogFloat(1.0, 30.0)}
    source = "Dong et al. 2024, UNDIAL, arXiv:2402.10052; open-unlearning compute_undial_loss"
    intent: ClassVar[str] = "removal"

    def prepare(self, model, forget, ctx, engine) -> dict[str, Any]:
        state = super().prepare(model, forget, ctx, engine)
        enc, pad = state["forget"], state["pad"]
        targets: list[torch.Tensor | None] = [None] * len(enc)
        order = np.argsort([len(e) for e in enc], kind="stable")
        with eval_mode(model):
            for i in range(0, len(order), 16):
                idx = order[i:i + 16]
                b = _to(collate([enc[j] for j in idx], pad), engine.device)
                logits = forward_logits(model, b)[:, :-1]
                lab = b["labels"][:, 1:]
                for r, j in enumerate(idx):
                    m = lab[r] != IGNORE_INDEX
                    targets[j] = undial_targets(logits[r][m], lab[r][m], self.config.beta).cpu()
        state["targets"] = targets
        state["_notes"] = {"reference": "θ_o's adjusted next-token distributions precomputed (CPU)"}
        return state

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        b = self.batch(state, "forget", pos, engine)
        logits = forward_logits(model, b)[:, :-1]
        lab = b["labels"][:, 1:]
        total = logits.new_zeros((), dtype=torch.float32)
        for r, j in enumerate(pos):
            m = lab[r] != IGNORE_INDEX
            total = total + undial_loss(logits[r][m], state["targets"][int(j)].to(logits.device))
        return total

"""Negative Preference Optimization (Zhang et al. 2024, arXiv:2404.05868, Eq. 3):

    L_NPO(θ) = (2/β) · E_{D_f}[ log(1 + (π_θ(y|x) / π_ref(y|x))^β) ]
             = −(2/β) · E[ log σ(β · (log π_ref(y|x) − log π_θ(y|x))) ]

with log π(y|x) the *sum* of answer-token log-probabilities and π_ref = θ_o frozen. The sign convention is explicit:
the loss grows with log π_θ − log π_ref ("current − reference" inside softplus), so descending it lowers π_θ on D_f.
At π_θ = π_ref every example contributes (2/β)·ln 2, and d loss / d log π_θ = 2σ(0) = 1: NPO's first gradient equals
gradient ascent's on sequence log-probs (KNOWN_FAULTS C10, C12).

Reference: log π_ref of every forget example is computed once before training with θ_o itself (adapters included) —
the reference never changes, so nothing else is needed (KNOWN_FAULTS C53). Not the adapter-disabled base: when θ_o is
base + LoRA adapters fine-tuned on D (the LLM track's LoRA setting), that base is the pretrained model, not θ_o.
Defaults: β = 0.1 (paper, TOFU), retain NLL with α = 1 and γ = 1 as open-unlearning ``configs/trainer/NPO.yaml``
(the paper's plain NPO is ``retain_loss: none``; NPO-RT is ``nll``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.llm.lm import sequence_logprobs
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig, reference_logprobs
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-example NPO loss (2/β)·softplus(β·(log π_θ − log π_ref)), float (b,); inputs: summed log-probs (b,)."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp))


class NPOConfig(RetainRegConfig):
    """NPO: inverse temperature β (paper default 0.1) and the retain regulariser (default NLL, α = 1)."""

    beta: float = Field(0.1, gt=0, description="β of NPO (arXiv:2404.05868 uses 0.1 on TOFU)")
    retain_loss: Literal["none", "nll", "kl"] = "nll"


@METHODS.register("npo", config=NPOConfig)
class NPO(LLMUnlearner):
    """Negative Preference Optimization (arXiv:2404.05868)."""

    source = "Zhang et al. 2024, arXiv:2404.05868, Eq. 3"
    #: unlearnkit tune: lr, epochs and β (NPO: 0.1)
    search_space = {"lr": LogFloat(1e-5, 5e-3), "epochs": Int(1, 10), "beta": LogFloat(0.01, 1.0)}

    def prepare(self, model, forget, ctx, engine) -> dict[str, Any]:
        state = super().prepare(model, forget, ctx, engine)
        state["ref"] = reference_logprobs(model, state["forget"], state["pad"], engine)
        state["_notes"] = {"reference": "θ_o log-probs precomputed (no copy)"}
        return state

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        lp, _ = sequence_logprobs(model, batch)
        ref = state["ref"][torch.as_tensor(pos)].to(lp.device)
        return npo_loss(lp, ref, self.config.beta).sum()

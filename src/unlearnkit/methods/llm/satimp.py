"""SatImp — saturation × importance reweighting (Yang et al. 2025, "Exploring Criteria of Loss Reweighting to
Enhance LLM Unlearning", arXiv:2505.11953; open-unlearning ``SatImp``).

Weighted gradient ascent like WGA with two factors per answer token, both detached: *saturation* p^{β₁} (tokens the
model is sure of) and *importance* (1 − p)^{β₂} (tokens not yet pushed away), p = p_θ(y_t | x_<t):

    ℓ_f(x) = − 1/|A| Σ_{t∈A} p_t^{β₁} (1 − p_t)^{β₂} · CE_t

Defaults: open-unlearning ``configs/trainer/SatImp.yaml`` — β₁ = 5, β₂ = 1, forget weight γ = 0.1, retain NLL with
α = 1 (lr 1e-5, 5 epochs). Per-example token mean as :mod:`unlearnkit.methods.llm.wga`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.llm.lm import forward_logits, token_logprobs_from_logits
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig
from unlearnkit.methods.llm.wga import weighted_ascent_loss
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


def satimp_weight(p: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """p^{β₁} · (1 − p)^{β₂}, detached."""
    p = p.detach()
    return p ** beta1 * (1 - p) ** beta2


class SatImpConfig(RetainRegConfig):
    """SatImp: saturation exponent β₁, importance exponent β₂ and the retain regulariser (open-unlearning
    defaults)."""

    beta1: float = Field(5.0, ge=0, description="β₁: saturation weight p^β₁")
    beta2: float = Field(1.0, ge=0, description="β₂: importance weight (1 − p)^β₂")
    forget_weight: float = Field(0.1, gt=0)
    retain_loss: Literal["none", "nll", "kl"] = "nll"


@METHODS.register("satimp", config=SatImpConfig)
class SatImp(LLMUnlearner):
    """Gradient ascent with saturation × importance token weights (arXiv:2505.11953)."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-6, 1e-3),
                    "epochs": Int(1, 10),
                    "beta1": Float(1.0, 10.0),
                    "beta2": Float(0.5, 5.0)}
    source = "Yang et al. 2025, arXiv:2505.11953 (SatImp); open-unlearning trainer/unlearn/satimp.py"
    intent: ClassVar[str] = "removal"

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        b = self.batch(state, "forget", pos, engine)
        logp, mask = token_logprobs_from_logits(forward_logits(model, b), b["labels"])
        w = satimp_weight(logp.detach().exp(), self.config.beta1, self.config.beta2)
        return weighted_ascent_loss(logp, mask, w).sum()

"""WGA — weighted gradient ascent (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective
and Go Beyond", arXiv:2502.19301; open-unlearning ``WGA``).

Gradient ascent whose token terms are weighted by the model's own confidence, w_t = p_θ(y_t | x_<t)^β with the
weight detached (no gradient through it):

    ℓ_f(x) = − 1/|A| Σ_{t∈A} w_t · CE_t,      CE_t = −log p_θ(y_t | x_<t)

so tokens the model already finds unlikely stop driving the ascent (GA's unbounded push on them is what destroys
utility). β = 0 is plain gradient ascent. The per-example mean over answer tokens replaces open-unlearning's token
mean over the batch (batch-composition independent, KNOWN_FAULTS C15). Defaults: open-unlearning
``configs/trainer/WGA.yaml`` — β = 1, retain NLL with α = 1, γ = 1 (lr 1e-5, 5 epochs).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.llm.lm import forward_logits, token_logprobs_from_logits
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


def weighted_ascent_loss(logp: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-example −(1/|A|) Σ_t w_t · CE_t = (1/|A|) Σ_t w_t · log p_t, float (b,): ``logp`` (b, T) token
    log-probs, ``mask`` (b, T) answer positions, ``weight`` (b, T) detached weights."""
    m = mask.to(logp.dtype)
    return (weight.detach() * logp * m).sum(1) / m.sum(1).clamp_min(1)


class WGAConfig(RetainRegConfig):
    """WGA: the confidence exponent β and the retain regulariser (open-unlearning defaults)."""

    beta: float = Field(1.0, ge=0, description="β: weight p^β of each token's ascent term (0 = gradient ascent)")
    retain_loss: Literal["none", "nll", "kl"] = "nll"


@METHODS.register("wga", config=WGAConfig)
class WGA(LLMUnlearner):
    """Weighted gradient ascent: token terms weighted by p^β (arXiv:2502.19301)."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-6, 1e-3), "epochs": Int(1, 10), "beta": LogFloat(0.1, 10.0)}
    source = "Wang et al. 2025, arXiv:2502.19301 (WGA); open-unlearning trainer/unlearn/wga.py"
    intent: ClassVar[str] = "removal"

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        b = self.batch(state, "forget", pos, engine)
        logp, mask = token_logprobs_from_logits(forward_logits(model, b), b["labels"])
        return weighted_ascent_loss(logp, mask, logp.detach().exp() ** self.config.beta).sum()

"""SimNPO (Fan et al. 2024, "Simplicity prevails: rethinking negative preference optimization for LLM unlearning",
arXiv:2410.07163, Eq. 4): NPO without a reference model, with length normalisation and a reward margin γ:

    L_SimNPO(θ) = −(2/β) · E_{D_f}[ log σ( −(β/|y|) · log π_θ(y|x) − γ ) ]

|y| = number of answer tokens (incl. EOS). Defaults from open-unlearning ``configs/trainer/SimNPO.yaml``: β = 4.5,
margin 0 (its ``delta`` = γ/β), forget weight 0.125, retain NLL with weight 1 — the authors' TOFU forget10 run
(OPTML-Group/Unlearn-Simple ``TOFU/README.md``: ``npo_coeff=0.125 beta=4.5``, ``grad_diff_coeff`` 1, ``gamma`` 0);
their forget05 run uses β = 2.5 and forget weight 0.1375.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.llm.lm import sequence_logprobs
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int, LogFloat


def simnpo_loss(logp: torch.Tensor, n_tokens: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Per-example SimNPO loss −(2/β)·log σ(−(β/|y|)·log π_θ − γ) = (2/β)·softplus((β/|y|)·log π_θ + γ), (b,)."""
    return (2.0 / beta) * F.softplus(beta * logp / n_tokens.clamp_min(1).to(logp.dtype) + gamma)


class SimNPOConfig(RetainRegConfig):
    """SimNPO: β, margin γ, forget weight and retain regulariser (open-unlearning defaults)."""

    beta: float = Field(4.5, gt=0)
    gamma: float = Field(0.0, ge=0, description="reward margin γ of arXiv:2410.07163 Eq. 4")
    forget_weight: float = Field(0.125, gt=0)
    retain_loss: Literal["none", "nll", "kl"] = "nll"


@METHODS.register("simnpo", config=SimNPOConfig)
class SimNPO(LLMUnlearner):
    """Simple NPO: length-normalised, reference-free (arXiv:2410.07163)."""

    source = "Fan et al. 2024, arXiv:2410.07163, Eq. 4"
    #: unlearnkit tune: lr, epochs, β (SimNPO: 2.5–4.5) and the margin γ
    search_space = {
        "lr": LogFloat(1e-5, 5e-3),
        "epochs": Int(1, 10),
        "beta": LogFloat(0.5, 10.0),
        "gamma": Float(0.0, 2.0),
    }


    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        lp, n = sequence_logprobs(model, batch)
        return simnpo_loss(lp, n, self.config.beta, self.config.gamma).sum()

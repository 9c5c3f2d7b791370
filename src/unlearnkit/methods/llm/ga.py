"""Gradient Ascent on the forget set (the TOFU baseline; Maini et al. 2024, arXiv:2401.06121, §5; also Jang et al.
2023, arXiv:2210.01504): maximise the NLL of D_f answers, i.e. minimise mean log p(answer | question).

The forget loss of an example is its mean log-probability per answer token (so the descent direction lowers p);
the batch loss is the mean over examples (open-unlearning's ``GradAscent`` uses the token mean over the batch, which
weights long answers more).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from unlearnkit.llm.lm import mean_token_nll
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


def ga_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example GA loss = mean log p of the answer tokens, float32 (b,) (minimising it ascends the NLL)."""
    return -mean_token_nll(model, batch)


class GAConfig(RetainRegConfig):
    """Gradient ascent (no retain term by default: ``retain_loss: none``; ``nll`` makes it GradDiff, ``kl`` the TOFU
    "KL" baseline)."""


@METHODS.register("ga", config=GAConfig)
class GradientAscent(LLMUnlearner):
    """Gradient ascent on D_f for causal LMs (TOFU baseline, arXiv:2401.06121)."""

    source = "Maini et al. 2024, arXiv:2401.06121 (TOFU), gradient ascent baseline"
    #: unlearnkit tune: lr (TOFU: 1e-5 on 7B models) widened for small models, and epochs
    search_space = {"lr": LogFloat(1e-5, 5e-3), "epochs": Int(1, 10)}


    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        return ga_loss(model, batch).sum()

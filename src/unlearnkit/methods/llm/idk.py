"""Preference-style unlearning with "I don't know" alternatives.

- ``idk_po`` — TOFU's "Preference Optimization" baseline (Maini et al. 2024, arXiv:2401.06121, §5): fine-tune on
  (forget question, "I don't know"-style answer) with NLL, plus NLL on D_r (open-unlearning calls it IdkNLL).
- ``dpo`` / ``idk_dpo`` — DPO (Rafailov et al. 2023, arXiv:2305.18290) with chosen = the IdK answer, rejected = the
  original answer, reference θ_o: −(2/β)·log σ(β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]).
  The 2/β scale follows open-unlearning's ``compute_dpo_loss`` (NPO is its rejected-only special case); it rescales
  the gradient by 2/β relative to the DPO paper. Defaults β = 0.1, α = γ = 1 as open-unlearning's IdkDPO.

Every forget item must have ``idk_answer`` (``dpo`` may use ``paraphrased_answer`` instead); the check runs before any
forward pass and names the method, the field and the data set (KNOWN_FAULTS C13).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.llm.lm import encode_pairs, mean_token_nll, sequence_logprobs
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig, reference_logprobs
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


def dpo_loss(lp_w: torch.Tensor, ref_w: torch.Tensor, lp_l: torch.Tensor, ref_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Per-example −(2/β)·log σ(β·((lp_w − ref_w) − (lp_l − ref_l))), (b,); inputs are summed log-probs (b,)."""
    return (2.0 / beta) * F.softplus(-beta * ((lp_w - ref_w) - (lp_l - ref_l)))


class IdkPOConfig(RetainRegConfig):
    """TOFU preference optimisation: NLL on IdK answers for D_f questions + retain NLL (α = 1)."""

    retain_loss: Literal["none", "nll", "kl"] = "nll"


@METHODS.register("idk_po", config=IdkPOConfig)
class IdkPO(LLMUnlearner):
    """Fine-tune D_f questions towards "I don't know" answers (TOFU, arXiv:2401.06121)."""

    source = "Maini et al. 2024, arXiv:2401.06121 (TOFU), preference optimisation baseline"
    #: unlearnkit tune: lr and epochs
    search_space = {"lr": LogFloat(1e-5, 5e-3), "epochs": Int(1, 10)}
    intent = "suppression"  # SoK (arXiv:2506.09227): refusal training keeps the model from answering
    required_fields: ClassVar[tuple[str, ...]] = ("idk_answer",)

    def prepare(self, model, forget, ctx, engine) -> dict[str, Any]:
        state = super().prepare(model, forget, ctx, engine)
        state["idk"] = encode_pairs(ctx.tokenizer, forget.pairs("idk_answer"), ctx.fmt, ctx.max_len)
        return state

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "idk", pos, engine)
        return mean_token_nll(model, batch).sum()


class DPOConfig(RetainRegConfig):
    """DPO on D_f: chosen = ``chosen_field`` (IdK by default), rejected = the original answer; β = 0.1."""

    beta: float = Field(0.1, gt=0)
    chosen_field: Literal["idk_answer", "paraphrased_answer"] = "idk_answer"


class IdkDPOConfig(DPOConfig):
    """IdkDPO = DPO with IdK chosen answers and retain NLL (α = 1), as open-unlearning's IdkDPO."""

    chosen_field: Literal["idk_answer"] = "idk_answer"
    retain_loss: Literal["none", "nll", "kl"] = "nll"


@METHODS.register("dpo", config=DPOConfig)
class DPO(LLMUnlearner):
    """DPO with alternative answers as the preferred response (arXiv:2305.18290)."""

    source = "Rafailov et al. 2023, arXiv:2305.18290; TOFU/open-unlearning IdkDPO"
    #: unlearnkit tune: lr, epochs and β (DPO / TOFU: 0.1)
    search_space = {"lr": LogFloat(1e-5, 5e-3), "epochs": Int(1, 10), "beta": LogFloat(0.01, 1.0)}
    intent = "suppression"  # preferred alternative answers (IdK by default): a refusal / rewrite objective

    def fields_needed(self) -> tuple[str, ...]:
        return (self.config.chosen_field,)

    def prepare(self, model, forget, ctx, engine) -> dict[str, Any]:
        state = super().prepare(model, forget, ctx, engine)  # state["forget"] = rejected (original answers)
        pad = state["pad"]
        state["chosen"] = encode_pairs(ctx.tokenizer, forget.pairs(self.config.chosen_field), ctx.fmt, ctx.max_len)
        state["ref_l"] = reference_logprobs(model, state["forget"], pad, engine)
        state["ref_w"] = reference_logprobs(model, state["chosen"], pad, engine)
        state["_notes"] = {"reference": "θ_o log-probs precomputed (no copy)"}
        return state

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        dev = engine.device
        bl = self.batch(state, "forget", pos, engine)
        bw = self.batch(state, "chosen", pos, engine)
        lp_l, _ = sequence_logprobs(model, bl)
        lp_w, _ = sequence_logprobs(model, bw)
        p = torch.as_tensor(pos)
        return dpo_loss(lp_w, state["ref_w"][p].to(dev), lp_l, state["ref_l"][p].to(dev), self.config.beta).sum()


@METHODS.register("idk_dpo", config=IdkDPOConfig)
class IdkDPO(DPO):
    """DPO towards "I don't know" answers with a retain NLL term (open-unlearning IdkDPO)."""

    required_fields: ClassVar[tuple[str, ...]] = ("idk_answer",)

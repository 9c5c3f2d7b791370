"""CodeEraser (Chu et al., ICSE 2026, "Scrub It Out! Erasing Sensitive Memorization in Code Language Models via
Machine Unlearning"; reference code CGCL-codes/naturalcc, ``examples/code-unlearning/unlearning/model.py``, class
``SensitivitySelectiveCU``, mode ``SSCU``).

Gradient ascent on a whole file also erases the code around a secret, which the model should keep. CodeEraser
splits each forget file's tokens into the secret tokens S (the spans the detector found) and the context C (the rest
of the file) and minimises, per file,

    L_f = − CE_S(θ) + γ · CE_C(θ) − λ · KL_S(θ_o ‖ θ)

(mean cross-entropy over S — ascent —, mean cross-entropy over C — descent —, and the KL from θ_o's next-token
distributions on S, maximised so the secret positions move away from θ_o), plus on retain files ("control set")
λ·α · KL(θ_o ‖ θ) over their tokens. The reference takes the mean of each term over the micro-batch's tokens; here
each file's terms are averaged over its own tokens and files are summed (then divided by the window, as every LLM
method), so a long file does not weigh more. Defaults: γ = 0.1 (``select_gamma``), λ = 0.1 (``control_lambda``), α = 1
(``control_alpha``) — the reference's command-line defaults; the retain term is the shared ``retain_loss: kl`` with
weight λ·α = 0.1 (a frozen copy of θ_o, as the reference's control model). The reference stops when the mean secret MA
falls below the unseen-data threshold; here the budget is fixed (``epochs``), and the ``code_secrets`` metric reports
where the secrets ended relative to that threshold.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unlearnkit.data.text.code import CodeFile, secret_token_mask
from unlearnkit.data.text.qa import QASet
from unlearnkit.errors import DataError
from unlearnkit.llm.lm import _to, eval_mode, forward_logits
from unlearnkit.llm.tokenize import IGNORE_INDEX, collate
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class CodeEraserConfig(RetainRegConfig):
    """CodeEraser: γ (context descent), λ (KL on secret positions), the retain KL (λ·α); optimisation as every LLM
    method."""

    context_weight: float = Field(0.1, ge=0, description="γ: weight of the descent on the file's non-secret tokens "
                                  "(reference select_gamma = 0.1)")
    secret_kl_weight: float = Field(0.1, ge=0, description="λ: weight of −KL(θ_o ‖ θ) on secret positions "
                                    "(reference control_lambda = 0.1)")
    retain_loss: Literal["none", "nll", "kl"] = Field("kl", description="retain term on D_r files (reference: KL to "
                                                      "θ_o on the control set)")
    retain_weight: float = Field(0.1, ge=0, description="λ·α (reference control_lambda × control_alpha = 0.1 × 1)")


def codeeraser_losses(logits: torch.Tensor, labels: torch.Tensor, secret: torch.Tensor,
                      ref_logprobs: list[torch.Tensor] | None, context_weight: float,
                      secret_kl_weight: float) -> torch.Tensor:
    """Per-file CodeEraser forget loss −CE_S + γ·CE_C − λ·KL_S(θ_o ‖ θ), float32 (b,).

    Args:
        logits: (b, T, V) of the current model.  labels: (b, T) int64, −100 where not scored (prompt, padding).
        secret: (b, T) bool, True at secret token positions (HF label convention: position t holds the token
            predicted from the tokens before it).
        ref_logprobs: per file, θ_o's log-softmax (n_secret_i, V) at its secret positions in order; None = no KL
            term.
        context_weight: γ.  secret_kl_weight: λ.

    Returns:
        the per-file loss (a file without secret tokens contributes only γ·CE_C).
    """
    lg = logits[:, :-1].float()
    tgt = labels[:, 1:]
    valid = tgt != IGNORE_INDEX
    sec = secret[:, 1:] & valid
    ctx = ~secret[:, 1:] & valid
    b, t, v = lg.shape
    nll = F.cross_entropy(lg.reshape(b * t, v), tgt.reshape(b * t), ignore_index=IGNORE_INDEX,
                          reduction="none").view(b, t)
    ce_s = (nll * sec).sum(1) / sec.sum(1).clamp_min(1)
    ce_c = (nll * ctx).sum(1) / ctx.sum(1).clamp_min(1)
    loss = -ce_s + context_weight * ce_c
    if ref_logprobs is not None and secret_kl_weight > 0:
        lsm = torch.log_softmax(lg, -1)
        kls = []
        for i in range(b):
            cur = lsm[i][sec[i]]
            if cur.shape[0] == 0:
                kls.append(lsm.new_zeros(()))
                continue
            ref = ref_logprobs[i].to(cur.device)
            kls.append((ref.exp() * (ref - cur)).sum(-1).mean())
        loss = loss - secret_kl_weight * torch.stack(kls)
    return loss


@METHODS.register("codeeraser", config=CodeEraserConfig)
class CodeEraser(LLMUnlearner):
    """CodeEraser / SSCU (Chu et al., ICSE 2026): gradient ascent on the secret tokens of each forget file only,
    gradient descent on the rest of the file, −KL to θ_o on the secret positions, and KL to θ_o on retain files."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-6, 1e-3),
                    "epochs": Int(1, 10),
                    "context_weight": LogFloat(0.01, 1.0),
                    "secret_kl_weight": LogFloat(0.01, 1.0)}
    source = ("Chu et al., 'Scrub It Out! Erasing Sensitive Memorization in Code Language Models via Machine "
              "Unlearning', ICSE 2026; code CGCL-codes/naturalcc examples/code-unlearning (SensitivitySelectiveCU)")
    smoke_params = {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}
    conformance = {"llm": {"data": {"source": "code", "code": {"n_files": 16, "secret_files": 4,
                                                               "unseen_secret_files": 4, "heldout_files": 4,
                                                               "eval_retain": 4}},
                           "model": {"kind": "tiny_gpt2", "max_len": 160},
                           "train": {"max_len": 160}, "eval": {"max_items": 4}},
                   "metrics": ["code_secrets"]}

    def check_data(self, forget: QASet, retain: QASet | None = None) -> None:
        """Every forget item must be a code file with at least one secret span.

        Raises:
            DataError: an item is not a :class:`CodeFile` or has no secret (names the item and the fix).
        """
        for it in getattr(forget, "items", ()):
            if not isinstance(it, CodeFile):
                raise DataError(f"codeeraser unlearns secrets inside code files; item {it.id} of '{forget.name}' is a "
                                f"{type(it).__name__}, not a code file: use llm.data.source: code")
            if not it.secrets:
                raise DataError(f"codeeraser: forget file {it.id} ({it.path or 'in memory'}) has no secret span; the "
                                "forget set must be files in which llm.data.code.secret_patterns found a secret")
        super().check_data(forget, retain)

    def prepare(self, model: nn.Module, forget: QASet, ctx: Any, engine: Any) -> dict[str, Any]:
        state = super().prepare(model, forget, ctx, engine)
        enc = state["forget"]
        masks = [torch.tensor(secret_token_mask(ctx.tokenizer, it, e.prompt_len, len(e)), dtype=torch.bool)
                 for it, e in zip(forget, enc)]
        n_sec = [int(m[1:].sum()) for m in masks]
        if any(n == 0 for n in n_sec):
            bad = [int(it.id) for it, n in zip(forget, n_sec) if n == 0][:5]
            raise DataError(f"codeeraser: the secrets of forget files {bad} fall outside the first "
                            f"{ctx.max_len} tokens (cut by max_len); raise the method's / llm.train.max_len")
        state["secret"] = masks
        ref: list[torch.Tensor] | None = None
        if self.config.secret_kl_weight > 0:  # θ_o's next-token distributions at each file's secret positions
            ref = []
            with eval_mode(model):
                for e, m in zip(enc, masks):
                    b = _to(collate([e], state["pad"]), engine.device)
                    lsm = torch.log_softmax(forward_logits(model, b)[0, :-1].float(), -1)
                    ref.append(lsm[m[1:].to(lsm.device)].cpu())
        state["ref"] = ref
        state["_notes"] = {"secret_tokens": int(sum(n_sec)), "context_tokens": int(sum(
            len(e) - e.prompt_len - n for e, n in zip(enc, n_sec)))}
        return state

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        t = batch["input_ids"].shape[1]
        secret = torch.zeros_like(batch["labels"], dtype=torch.bool)
        for r, i in enumerate(pos):
            m = state["secret"][i]
            secret[r, :len(m)] = m.to(secret.device)
        ref = [state["ref"][i] for i in pos] if state["ref"] is not None else None
        logits = forward_logits(model, batch)
        assert logits.shape[1] == t
        return codeeraser_losses(logits, batch["labels"], secret, ref, self.config.context_weight,
                                 self.config.secret_kl_weight).sum()


__all__ = ["CodeEraser", "CodeEraserConfig", "codeeraser_losses"]

"""Token suppression: the simplest inference-time "unlearning" — ban the forget set's characteristic tokens at
decoding time, leave the weights alone.

A baseline of the inference-time family (the logits-processor seam that GUARD's forbidden-token filtering and ULD's
logit difference also use): it changes *generations only*. Likelihood metrics (truth ratio, forget quality, MIAs)
read the unchanged weights, so they show θ_o's memorisation — the honest reading of a method that hides rather than
removes (Liu et al., "Rethinking Machine Unlearning for LLMs", arXiv:2402.08787 §4 on output filtering).

Token choice: ``words`` when given (each word's tokens, with and without a leading space); otherwise the ``top_k``
answer tokens of D_f most over-represented against D_r's answers, by (count in D_f + 1) / (count in D_r + 1)
(add-one smoothed), ignoring special tokens and tokens shorter than ``min_chars`` characters after decoding.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import Unlearned, Unlearner
from unlearnkit.models.policy import POLICIES, InferencePolicy
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int


@POLICIES.register("suppress_tokens")
class TokenSuppression(InferencePolicy):
    """Sets the logits of ``token_ids`` to −inf at every decoding step (they are never generated).

    Args:
        token_ids: vocabulary ids to ban (non-empty list of ints ≥ 0).
    """

    kind = "suppress_tokens"
    affects = frozenset({"generations"})

    def __init__(self, token_ids: list[int]) -> None:
        ids = sorted({int(t) for t in token_ids})
        if not ids or ids[0] < 0:
            raise MethodError(f"token suppression needs non-negative token ids, got {token_ids[:5]}")
        self.token_ids = ids

    def logits_processor(self, tokenizer: Any) -> Any:
        ids = torch.tensor(self.token_ids, dtype=torch.long)

        def ban(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            keep = ids[ids < scores.shape[-1]].to(scores.device)
            scores = scores.clone()
            scores[:, keep] = float("-inf")
            return scores

        return ban

    def config(self) -> dict[str, Any]:
        return {"token_ids": list(self.token_ids)}


class SuppressTokensConfig(Frozen):
    """Which tokens to ban (``words``, or the ``top_k`` most D_f-specific answer tokens)."""

    words: list[str] | None = Field(None, description="strings whose tokens are banned; None = chosen from D_f")
    top_k: int = Field(32, ge=1, le=100000, description="tokens chosen from D_f's answers when words is None")
    min_chars: int = Field(2, ge=1, le=64, description="ignore tokens shorter than this (decoded, stripped)")


@METHODS.register("suppress_tokens", config=SuppressTokensConfig)
class SuppressTokens(Unlearner):
    """Ban D_f's characteristic tokens in decoding (an inference-time policy; weights unchanged)."""

    kind = "inference"
    intent = "suppression"
    track = "llm"
    needs_labels = False
    source = "token-suppression logits processor (baseline of the inference-time family; see module docstring)"
    #: unlearnkit tune: how many characteristic tokens are banned
    search_space = {"top_k": Int(4, 128, log=True)}
    smoke_params: ClassVar[dict[str, Any]] = {"top_k": 4}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        tok = getattr(context, "tokenizer", None)
        if tok is None:
            raise MethodError("suppress_tokens needs the tokenizer (an LLMContext); run it through the llm track")
        special = set(getattr(tok, "all_special_ids", []) or [])
        c = self.config
        if c.words:
            ids: set[int] = set()
            for w in c.words:
                for variant in (w, " " + w):
                    ids.update(tok(variant, add_special_tokens=False)["input_ids"])
            chosen = sorted(ids - special)
        else:
            f_counts = Counter(t for it in forget for t in tok(it.answer, add_special_tokens=False)["input_ids"])
            r_counts = Counter(t for it in (retain or []) for t in tok(it.answer, add_special_tokens=False)["input_ids"])

            def usable(t: int) -> bool:
                return t not in special and len(tok.decode([t]).strip()) >= c.min_chars

            ranked = sorted((t for t in f_counts if usable(t)),
                            key=lambda t: (-(f_counts[t] + 1) / (r_counts.get(t, 0) + 1), t))
            chosen = ranked[:c.top_k]
        if not chosen:
            raise MethodError("suppress_tokens found no token to ban (words tokenise to special tokens only, or D_f's "
                              "answers have no token of min_chars characters); give words or lower min_chars")
        return Unlearned(model, steps=0, policy=TokenSuppression(chosen),
                         notes={"n_tokens": len(chosen), "tokens": [tok.decode([t]) for t in chosen[:50]]})

"""GUARD: generation-time unlearning by adaptive restriction and detection (Deng et al., "GUARD: Generation-time LLM
Unlearning via Adaptive Restriction and Detection", 2025, arXiv:2505.13312).

No reference code is public; every choice below is derived from the paper's description (a prompt classifier detects
the unlearning target, forbidden tokens are extracted for it, and decoding penalises or filters candidate tokens by
token matching and semantic similarity) and is ours where the paper leaves it open:

1. **Detection**: the shared prompt classifier (:mod:`unlearnkit.methods.llm.prompt_gate`, D_f's questions against
   D_r's) flags a prompt when the calibrated P(forget scope) exceeds ``threshold`` (0.5: the classifier's decision
   boundary; the paper states no value).
2. **Forbidden tokens**: a flagged prompt is matched to its ``top_k`` nearest D_f questions (cosine similarity of the
   classifier's standardised features); the forbidden set is the union of those items' answer tokens that are
   characteristic of D_f — (count in D_f answers + 1) / (count in D_r answers + 1) ≥ ``min_ratio``, at least
   ``min_chars`` characters once decoded, never a special token (EOS stays allowed, so an answer can always end).
3. **Restriction** at every decoding step of a flagged prompt (a logits processor): exact matches are filtered
   (logit −∞: a forbidden token is never emitted), and tokens whose input embedding has cosine similarity ≥
   ``sim_threshold`` with a forbidden token's are penalised by ``sim_penalty`` logits (semantic matching).
   Unflagged prompts decode exactly as θ_o does.

It changes generations only: teacher-forced likelihoods (truth ratios, forget quality, MIAs) read θ_o's weights.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.errors import MethodError
from unlearnkit.methods.base import Unlearned, Unlearner
from unlearnkit.methods.llm.base import LLMUnlearner
from unlearnkit.methods.llm.prompt_gate import GateConfig, PromptGate, fit_gate, prompt_ids, prompt_rows
from unlearnkit.models.policy import POLICIES, InferencePolicy
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, LogFloat


def answer_ids(tokenizer: Any, answer: str, fmt: str) -> list[int]:
    """Token ids of ``answer`` as it follows a prompt in format ``fmt`` (``qa`` answers start with a space)."""
    return [int(t) for t in tokenizer(f" {answer}" if fmt == "qa" else answer, add_special_tokens=False)["input_ids"]]


@POLICIES.register("guard")
class GUARDPolicy(InferencePolicy):
    """Gated forbidden-token restriction at decoding (see the module docstring).

    Args:
        gate: the prompt classifier.  keys: float64 (n_f, d) standardised classifier features of D_f's prompts.
        forbidden: per D_f item, its forbidden token ids.  top_k: D_f items matched per flagged prompt.
        sim_threshold: cosine similarity of input embeddings from which a token is penalised (> 1 disables).
        sim_penalty: logits subtracted from such tokens.  special: token ids never forbidden.
    """

    kind = "guard"
    affects = frozenset({"generations"})

    def __init__(self, gate: PromptGate, keys: torch.Tensor, forbidden: list[list[int]], top_k: int = 3,
                 sim_threshold: float = 0.9, sim_penalty: float = 5.0, special: list[int] | None = None) -> None:
        if keys.shape[0] != len(forbidden) or not forbidden:
            raise MethodError(f"GUARD needs one forbidden-token list per D_f key ({keys.shape[0]} keys, "
                              f"{len(forbidden)} lists)")
        self.gate, self.keys = gate, keys.double()
        self.forbidden = [sorted({int(t) for t in f}) for f in forbidden]
        self.top_k, self.sim_threshold, self.sim_penalty = int(top_k), float(sim_threshold), float(sim_penalty)
        self.special = sorted({int(t) for t in (special or [])})
        self._penalty: torch.Tensor | None = None
        #: the last batch's flags and forbidden sets (per row), for tests and notes
        self.last_flags: np.ndarray | None = None
        self.last_forbidden: list[set[int]] = []

    def forbidden_for(self, feats: torch.Tensor) -> list[set[int]]:
        """Forbidden token ids for prompts with raw classifier features ``feats`` (n, d)."""
        z = (feats.double() - self.gate.mu) / self.gate.sd
        zn = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        kn = self.keys / self.keys.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sims = zn @ kn.T
        k = min(self.top_k, kn.shape[0])
        top = sims.topk(k, dim=1).indices
        return [set().union(*(self.forbidden[int(j)] for j in row)) - set(self.special) for row in top]

    @contextmanager
    def forward_hooks(self, model: Any, tokenizer: Any, batch: dict[str, torch.Tensor]):  # type: ignore[override]
        rows = prompt_rows(batch)
        feats = self.gate.featurise(model, tokenizer, rows)
        flags = self.gate.probs_of(feats) > self.gate.threshold
        self.last_flags = flags
        self.last_forbidden = [set() for _ in rows]
        if not flags.any():
            self._penalty = None
            yield
            return
        emb = model.get_input_embeddings().weight.detach().float()
        v = emb.shape[0]
        en = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
        pen = torch.zeros((len(rows), v), dtype=torch.float32)
        sets = self.forbidden_for(feats[torch.as_tensor(np.flatnonzero(flags))])
        for r, fs in zip(np.flatnonzero(flags), sets):
            ids = torch.as_tensor(sorted(t for t in fs if t < v), dtype=torch.long)
            self.last_forbidden[r] = set(ids.tolist())
            if len(ids) == 0:
                continue
            if self.sim_threshold <= 1.0:
                near = (en[ids.to(en.device)] @ en.T).max(dim=0).values.cpu() >= self.sim_threshold
                near[torch.as_tensor(self.special, dtype=torch.long)] = False
                pen[r, near] = -self.sim_penalty
            pen[r, ids] = float("-inf")
        self._penalty = pen
        try:
            yield
        finally:
            self._penalty = None

    def logits_processor(self, tokenizer: Any) -> Any:
        def restrict(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            pen = self._penalty
            if pen is None or pen.shape[0] != scores.shape[0]:
                return scores
            v = min(pen.shape[1], scores.shape[1])
            out = scores.clone()
            out[:, :v] = out[:, :v] + pen[:, :v].to(scores.device, scores.dtype)
            return out

        return restrict

    def config(self) -> dict[str, Any]:
        return {"gate": self.gate.config(), "forbidden": self.forbidden, "top_k": self.top_k,
                "sim_threshold": self.sim_threshold, "sim_penalty": self.sim_penalty, "special": self.special}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.gate.tensors(), "keys": self.keys.clone()}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
        return cls(PromptGate.from_saved(config["gate"], tensors), tensors["keys"], config["forbidden"],
                   config["top_k"], config["sim_threshold"], config["sim_penalty"], config.get("special"))


class GUARDConfig(GateConfig):
    """GUARD (arXiv:2505.13312); no public code: every default is ours (module docstring)."""

    top_k: int = Field(3, ge=1, description="nearest D_f questions whose answers give a flagged prompt's forbidden "
                       "tokens")
    min_ratio: float = Field(2.0, ge=1, description="a token is forbidden when (D_f count + 1) / (D_r count + 1) ≥ this")
    min_chars: int = Field(2, ge=1, description="ignore tokens shorter than this once decoded and stripped")
    sim_threshold: float = Field(0.9, gt=0, description="penalise tokens whose input embedding has cosine ≥ this with a "
                                 "forbidden token's (> 1: off)")
    sim_penalty: float = Field(5.0, ge=0, description="logits subtracted from such semantically close tokens")


@METHODS.register("guard", config=GUARDConfig)
class GUARD(Unlearner):
    """GUARD: a prompt classifier detects the forget target; decoding filters its forbidden tokens and penalises
    semantically close ones (Deng et al. 2025, arXiv:2505.13312; no public code, choices derived from the paper)."""

    kind = "inference"
    intent = "suppression"  # the weights are left alone: an inference-time policy keeps D_f from being expressed
    track = "llm"
    needs_labels = False
    needs_retain = True
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"threshold": Float(0.2, 0.9), "sim_threshold": Float(0.7, 0.99), "sim_penalty": LogFloat(0.5, 20.0)}
    source = ("Deng et al., GUARD: Generation-time LLM Unlearning via Adaptive Restriction and Detection, 2025, "
              "arXiv:2505.13312 (no public code; every choice derived from the paper, see the module docstring)")
    smoke_params: ClassVar[dict[str, Any]] = {"gate_features": "lm"}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        ctx = LLMUnlearner.context_of(context)
        c: GUARDConfig = self.config  # type: ignore[assignment]
        tok, fmt = ctx.tokenizer, ctx.fmt
        gate = fit_gate(c, model, tok, fmt, forget, retain, context.seed)
        special = set(getattr(tok, "all_special_ids", []) or [])
        f_ans = [answer_ids(tok, it.answer, fmt) for it in forget]
        f_counts = Counter(t for a in f_ans for t in a)
        r_counts = Counter(t for it in (retain or []) for t in answer_ids(tok, it.answer, fmt))

        def characteristic(t: int) -> bool:
            return (t not in special and len(tok.decode([t]).strip()) >= c.min_chars
                    and (f_counts[t] + 1) / (r_counts.get(t, 0) + 1) >= c.min_ratio)

        forbidden = [[t for t in dict.fromkeys(a) if characteristic(t)] for a in f_ans]
        if not any(forbidden):
            raise MethodError("GUARD found no forbidden token in D_f's answers (every token is as frequent in D_r, "
                              "or shorter than min_chars); lower min_ratio or min_chars")
        feats = gate.featurise(model, tok, prompt_ids(tok, [it.question for it in forget], fmt))
        keys = (feats - gate.mu) / gate.sd
        pol = GUARDPolicy(gate, keys, forbidden, c.top_k, c.sim_threshold, c.sim_penalty, sorted(special))
        sizes = [len(f) for f in forbidden]
        return Unlearned(model, steps=0, policy=pol,
                         notes={**gate.notes(), "forbidden_per_item_mean": float(np.mean(sizes)),
                                "forbidden_tokens": len(set().union(*map(set, forbidden)))})

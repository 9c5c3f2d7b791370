"""ALU: agentic LLM unlearning (Sanyal and Mandal, "Agents Are All You Need for LLM Unlearning", COLM 2025,
arXiv:2502.00406; reference code respailab/agentic-llm-unlearning ``src/unlearning-agent/agent.py``).

The model answers; agents then **audit** the query and answer for unlearning targets, and only when a target is found
write ``k`` **rewrites**, a **critic** scores them, and the answer becomes the **merge** of the best-rated rewrites — or
a refusal when their mean rating is below the threshold. No weight changes; the pipeline runs after generation
(``revise``), so it changes generations only.

The agents are pluggable callables (:class:`Agents`); the reference's are GPT-4o prompts. Built in, deterministic and
CPU-sized:

- ``auditor``: ``string`` — targets matched as whole-word sequences through a first-word hash index, so the work per
  query depends on the query and answer lengths, not on the number of targets (ALU's claim of a cost constant in the
  target count); ``embedding`` — additionally flags a target whose sentence embedding (all-MiniLM-L6-v2, extra
  ``[minilm]``) has cosine ≥ ``sim_threshold`` with the query's (one matrix-vector product per query).
- ``rewriter``: ``redact`` — ``k`` candidates: the answer with target mentions replaced ("that person" /
  "someone"), the answer without the sentences that mention a target, and deflections ("I don't have information
  about that." …); ``model`` — first the model itself answering again with the found targets' tokens banned (the
  reference's rewriter is an LLM), then the ``redact`` candidates.
- ``critic``: a rating in [1, 5]: 1 + 4·(1 − leak), where leak = 1 if a target is still mentioned, else — when the
  query itself is about a target, so every fact of the original answer is about it — the share of the original
  answer's content words (≥ 4 letters, not in the query) the candidate keeps; an empty candidate rates 1.
- ``merger``: the best-rated candidate (ties: the first) — the reference asks GPT-4o to fuse the top 3.

Reference defaults: k = 5 rewrites, the top 3 ratings averaged, refusal below 4.0, the refusal text of the reference.
Targets: ``targets`` (strings) or, by default, the subjects (person names) of D_f. ``stats`` counts agent calls per
query (answer, audit, rewrite, critic, merge): ≤ 5, whatever the number of targets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import CheckpointError, MethodError
from unlearnkit.methods.base import Unlearned, Unlearner
from unlearnkit.methods.llm.base import LLMUnlearner
from unlearnkit.methods.llm.eco import subjects_in_texts
from unlearnkit.models.policy import POLICIES, InferencePolicy
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int

REFUSAL = "I'm sorry, but I cannot provide a reliable answer on this topic while adhering to my safety guidelines."
DEFLECTIONS = ("I don't have information about that.", "I cannot help with that question.",
               "That is not something I can answer.")
_WORD = re.compile(r"[A-Za-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``."""
    return [w.lower() for w in _WORD.findall(text)]


class TargetIndex:
    """Whole-word target matching through a first-word hash index (cost per text ∝ its words × the few targets that
    share a first word, not the number of targets)."""

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = [t for t in dict.fromkeys(targets) if words(t)]
        self.index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for t in self.targets:
            w = tuple(words(t))
            self.index.setdefault(w[0], []).append((w, t))
        #: word comparisons made by the last :meth:`find` (the work per query)
        self.last_work = 0

    def find(self, text: str) -> list[str]:
        ws = words(text)
        found: dict[str, None] = {}
        work = 0
        for i, w in enumerate(ws):
            for seq, t in self.index.get(w, ()):
                work += 1
                if tuple(ws[i:i + len(seq)]) == seq:
                    found[t] = None
        self.last_work = work + len(ws)
        return list(found)


@dataclass
class Agents:
    """The pluggable agents of ALU (callables).

    Attributes:
        auditor: ``(query, answer) -> targets found`` (list of strings).
        rewriter: ``(query, answer, found, k) -> k candidate answers``.
        critic: ``(query, answer, candidates, found) -> ratings in [1, 5]``.
        merger: ``(candidates, ratings) -> final answer``.
    """

    auditor: Callable[[str, str], list[str]]
    rewriter: Callable[[str, str, list[str], int], list[str]]
    critic: Callable[[str, str, list[str], list[str]], list[float]]
    merger: Callable[[list[str], list[float]], str]


def _replace(text: str, targets: Sequence[str], by: str) -> str:
    for t in sorted(targets, key=len, reverse=True):
        text = re.sub(r"\b" + r"\s+".join(re.escape(w) for w in t.split()) + r"\b", by, text, flags=re.IGNORECASE)
    return text


def redact_rewriter(query: str, answer: str, found: list[str], k: int) -> list[str]:
    """``k`` candidates: target mentions replaced, target sentences dropped, deflections (module docstring)."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer) if s]
    idx = TargetIndex(found)
    kept = " ".join(s for s in sentences if not idx.find(s))
    cands = [_replace(answer, found, "that person"), _replace(answer, found, "someone"), kept, *DEFLECTIONS]
    return (cands * (k // len(cands) + 1))[:k]


def leak_critic(query: str, answer: str, candidates: list[str], found: list[str]) -> list[float]:
    """Ratings 1 + 4·(1 − leak) (module docstring)."""
    idx = TargetIndex(found)
    about_target = bool(idx.find(query))
    qw = set(words(query))
    content = {w for w in words(answer) if len(w) >= 4 and w not in qw} - {w for t in found for w in words(t)}
    out = []
    for c in candidates:
        if not c.strip():
            out.append(1.0)
            continue
        if idx.find(c):
            leak = 1.0
        elif about_target and content:
            leak = len(content & set(words(c))) / len(content)
        else:
            leak = 0.0
        out.append(1.0 + 4.0 * (1.0 - leak))
    return out


def best_merger(candidates: list[str], ratings: list[float]) -> str:
    """The best-rated candidate (ties: the first)."""
    return candidates[int(np.argmax(ratings))]


@POLICIES.register("alu")
class ALUPolicy(InferencePolicy):
    """Answer → audit → k rewrites → critic → refuse or merge, after generation.

    Args:
        targets: strings to unlearn.  auditor: ``string`` | ``embedding`` | ``custom``.  k, top, threshold: rewrites,
        ratings averaged, refusal threshold (reference 5, 3, 4.0).  sim_threshold: embedding auditor's cosine.
        agents: custom agents (not saved; a policy saved with ``auditor: custom`` cannot be reloaded).
    """

    kind = "alu"
    affects = frozenset({"generations"})
    abstentions = (REFUSAL, *DEFLECTIONS)

    def __init__(self, targets: Sequence[str], auditor: str = "string", k: int = 5, top: int = 3,
                 threshold: float = 4.0, sim_threshold: float = 0.6, rewriter: str = "redact",
                 max_new_tokens: int = 32, agents: Agents | None = None) -> None:
        if not targets:
            raise MethodError("ALU needs at least one unlearning target (a string)")
        if auditor not in ("string", "embedding", "custom"):
            raise MethodError(f"ALU auditor must be string, embedding or custom, got {auditor!r}")
        self.targets = [str(t) for t in targets]
        self.auditor, self.k, self.top, self.threshold = auditor, int(k), int(top), float(threshold)
        self.sim_threshold = float(sim_threshold)
        if rewriter not in ("redact", "model"):
            raise MethodError(f"ALU rewriter must be redact or model, got {rewriter!r}")
        self.rewriter, self.max_new_tokens = rewriter, int(max_new_tokens)
        self._model: tuple[Any, Any, str] | None = None
        self.index = TargetIndex(self.targets)
        self._target_emb: torch.Tensor | None = None
        if agents is None:
            if auditor == "custom":
                raise CheckpointError("an ALU policy with custom agents cannot be rebuilt from its saved form; pass "
                                      "the agents again")
            agents = Agents(self._audit, self._model_rewriter if rewriter == "model" else redact_rewriter,
                            leak_critic, best_merger)
        self.agents = agents
        #: agent calls and audit work so far (``queries``, ``calls``, ``audit_work``); reset with :meth:`reset_stats`
        self.stats: dict[str, int] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"queries": 0, "calls": 0, "audit_work": 0, "rewritten": 0, "refused": 0}

    def _audit(self, query: str, answer: str) -> list[str]:
        found = self.index.find(query + " \n " + answer)
        self.stats["audit_work"] += self.index.last_work
        if self.auditor == "embedding":
            from unlearnkit.methods.llm.prompt_gate import text_features

            if self._target_emb is None:
                self._target_emb = text_features(self.targets)
            q = text_features([query])[0]
            sims = self._target_emb @ q
            self.stats["audit_work"] += int(sims.numel())
            found += [self.targets[i] for i in np.flatnonzero(sims.numpy() >= self.sim_threshold)
                      if self.targets[i] not in found]
        return found

    def answer(self, query: str, answer: str) -> str:
        """The pipeline on one (query, model answer)."""
        a = self.agents
        self.stats["queries"] += 1
        self.stats["calls"] += 2  # the model's answer, the audit
        found = a.auditor(query, answer)
        if not found:
            return answer
        cands = a.rewriter(query, answer, found, self.k)
        ratings = [float(r) for r in a.critic(query, answer, cands, found)]
        self.stats["calls"] += 2
        self.stats["rewritten"] += 1
        top = sorted(ratings, reverse=True)[:self.top]
        if not top or float(np.mean(top)) < self.threshold:
            self.stats["refused"] += 1
            return REFUSAL
        self.stats["calls"] += 1
        return a.merger(cands, ratings)

    def revise(self, prompts: Sequence[str], answers: Sequence[str]) -> list[str]:
        return [self.answer(q, a) for q, a in zip(prompts, answers)]

    @contextmanager
    def attach(self, model: Any, tokenizer: Any, fmt: str):  # type: ignore[override]
        """The ``model`` rewriter asks the model itself: kept for the duration of one generate call."""
        self._model = (model, tokenizer, fmt)
        try:
            yield
        finally:
            self._model = None

    def _model_rewriter(self, query: str, answer: str, found: list[str], k: int) -> list[str]:
        """The model's own answer regenerated with the found targets' tokens banned, then the redaction candidates."""
        cands = redact_rewriter(query, answer, found, k)
        if self._model is None:
            return cands
        from unlearnkit.llm.lm import generate
        from unlearnkit.methods.llm.suppress_tokens import TokenSuppression

        model, tok, fmt = self._model
        special = set(getattr(tok, "all_special_ids", []) or [])
        ban = {int(t) for f in found for v in (f, " " + f) for t in tok(v, add_special_tokens=False)["input_ids"]}
        ban -= special
        if not ban:
            return cands
        again = generate(model, tok, [query], fmt, max_new_tokens=self.max_new_tokens,
                         policy=TokenSuppression(sorted(ban)))
        return ([str(again[0])] + cands)[:k]

    def config(self) -> dict[str, Any]:
        return {"targets": self.targets, "auditor": self.auditor, "k": self.k, "top": self.top,
                "threshold": self.threshold, "sim_threshold": self.sim_threshold, "rewriter": self.rewriter,
                "max_new_tokens": self.max_new_tokens}


class ALUConfig(Frozen):
    """ALU (arXiv:2502.00406); reference defaults k = 5, top 3, threshold 4.0."""

    targets: list[str] | None = Field(None, description="strings to unlearn; None = the subjects of D_f")
    auditor: Literal["string", "embedding"] = Field("string", description="string: whole-word matching; embedding: "
                                                    "also MiniLM similarity of query and target (extra [minilm])")
    k: int = Field(5, ge=1, description="rewrites per flagged answer (reference 5)")
    top: int = Field(3, ge=1, description="best ratings averaged (reference 3)")
    threshold: float = Field(4.0, ge=1, le=5, description="refuse when the mean top rating is below it (reference 4)")
    sim_threshold: float = Field(0.6, gt=0, le=1, description="embedding auditor: cosine similarity that flags")
    rewriter: Literal["redact", "model"] = Field("redact", description="redact: string rewrites and deflections; "
                                                 "model: also the model's own answer with the targets' tokens banned")
    max_new_tokens: int = Field(32, ge=1, description="model rewriter: tokens generated")


@METHODS.register("alu", config=ALUConfig)
class ALU(Unlearner):
    """ALU: after the model answers, agents audit the query and answer for targets, rewrite k times, rate the
    rewrites and refuse or merge (Sanyal and Mandal, COLM 2025, arXiv:2502.00406); weights unchanged."""

    kind = "inference"
    intent = "suppression"  # the weights are left alone: an inference-time policy keeps D_f from being expressed
    track = "llm"
    needs_labels = False
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"k": Int(1, 10), "threshold": Float(1.0, 5.0), "sim_threshold": Float(0.3, 0.9)}
    source = ("Sanyal and Mandal, Agents Are All You Need for LLM Unlearning, COLM 2025, arXiv:2502.00406; code "
              "github.com/respailab/agentic-llm-unlearning")
    smoke_params: ClassVar[dict[str, Any]] = {}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        LLMUnlearner.context_of(context)
        c: ALUConfig = self.config  # type: ignore[assignment]
        targets = list(c.targets) if c.targets else sorted({it.subject for it in forget if it.subject})
        if not targets:
            raise MethodError("ALU found no unlearning target: D_f's items have no subject; give targets: [...]")
        if not c.targets and not subjects_in_texts(targets, forget):
            raise MethodError(f"ALU's default targets are D_f's subjects ({', '.join(targets[:3])}, …), but none occurs "
                              "in D_f's questions or answers: they are labels, not names (real TOFU labels its "
                              "authors by index), so the auditor would never find one; give targets: [the names]")
        pol = ALUPolicy(targets, c.auditor, c.k, c.top, c.threshold, c.sim_threshold, c.rewriter, c.max_new_tokens)
        return Unlearned(model, steps=0, policy=pol, notes={"n_targets": len(targets), "targets": targets[:20]})

"""ICUL: in-context unlearning (Pawelczyk, Neel and Lakkaraju, "In-Context Unlearning: Language Models as Few Shot
Unlearners", ICML 2024, arXiv:2310.07579; reference code MartinPawel/In-Context-Unlearning).

The simplest inference-time baseline: the weights stay θ_o's and the *prompt* changes. ICUL builds, for a query, a
context of the points to forget with **flipped labels** followed by ``n_retain`` correctly labelled training points,
then the query (the paper's three steps; context lengths L ∈ {2, 4, 6}). For question answering a flipped label is a
wrong answer: the item's first perturbed answer (TOFU), else another D_f item's answer.

Which forget points go into a query's context (``max_forget`` of them): the paper builds one context per deletion
request of a classifier; with a QA forget set of dozens of items and a model of a few hundred positions, the context
takes the D_f items relevant to the query — the item whose question *is* the query, then the items about a subject the
query names — and, for a query unrelated to D_f, the first ``max_forget`` D_f items (seeded order). The retain points
are the same ``n_retain`` seeded draws from D_r for every query. Deviation: retrieval of the relevant forget points
(the classifier setting needs none).

The context is laid out in the prompt format of the track (``qa``: ``Question: …\\nAnswer: …`` blocks), so scoring
and generation both see it: every metric can move, likelihood ones included.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import MethodError
from unlearnkit.methods.base import Unlearned, Unlearner
from unlearnkit.methods.llm.base import LLMUnlearner
from unlearnkit.models.policy import POLICIES, InferencePolicy
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int


def context_block(examples: list[tuple[str, str]], fmt: str) -> str:
    """The in-context examples as text that precedes a question in format ``fmt`` (see :meth:`ICULPolicy.rewrite`)."""
    if fmt == "qa":  # format_prompt wraps the rewritten question as "Question: {q'}\nAnswer:"
        return "".join(f"{q}\nAnswer: {a}\n\nQuestion: " for q, a in examples)
    if fmt == "raw":
        return "".join(f"{q} {a}\n\n" for q, a in examples)
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in examples) + ("Question: " if examples else "")


@POLICIES.register("icul")
class ICULPolicy(InferencePolicy):
    """Prepends flipped-label forget examples and correct retain examples to every question.

    Args:
        forget: ``[question, flipped answer, subject]`` per D_f item (seeded order).
        retain: ``[question, answer]`` of the retain examples.  max_forget: forget examples per context.
    """

    kind = "icul"
    affects = frozenset({"logits", "generations"})

    def __init__(self, forget: list[list[Any]], retain: list[list[str]], max_forget: int = 2) -> None:
        if not forget:
            raise MethodError("ICUL needs at least one forget example")
        self.forget = [[str(q), str(a), s if s is None else str(s)] for q, a, s in forget]
        self.retain = [[str(q), str(a)] for q, a in retain]
        self.max_forget = int(max_forget)
        self._by_q = {q: i for i, (q, _, _) in enumerate(self.forget)}
        self._subjects = sorted({s for _, _, s in self.forget if s}, key=len, reverse=True)

    def examples_for(self, question: str) -> list[tuple[str, str]]:
        """The in-context examples of ``question``: relevant flipped forget examples, then the retain examples."""
        picked: list[int] = []
        if question in self._by_q:
            picked.append(self._by_q[question])
        named = [s for s in self._subjects if s in question]
        for i, (_, _, s) in enumerate(self.forget):
            if len(picked) >= self.max_forget:
                break
            if s in named and i not in picked:
                picked.append(i)
        if not picked:
            picked = list(range(min(self.max_forget, len(self.forget))))
        ex = [(self.forget[i][0], self.forget[i][1]) for i in picked[:self.max_forget]]
        return ex + [(q, a) for q, a in self.retain]

    def rewrite_questions(self, questions: Any, fmt: str) -> list[str]:
        return [context_block(self.examples_for(q), fmt) + q for q in questions]

    def config(self) -> dict[str, Any]:
        return {"forget": self.forget, "retain": self.retain, "max_forget": self.max_forget}


class ICULConfig(Frozen):
    """ICUL (arXiv:2310.07579): the context's composition."""

    max_forget: int = Field(1, ge=1, description="flipped-label forget examples per context (the query's own first)")
    n_retain: int = Field(2, ge=0, description="correctly labelled D_r examples per context (paper: L ∈ {2, 4, 6})")


@METHODS.register("icul", config=ICULConfig)
class ICUL(Unlearner):
    """ICUL: in-context unlearning — flipped-label forget examples and correct retain examples are prepended to every
    prompt; the weights stay θ_o's (Pawelczyk et al., ICML 2024, arXiv:2310.07579)."""

    kind = "inference"
    intent = "suppression"  # the weights are left alone: an inference-time policy keeps D_f from being expressed
    track = "llm"
    needs_labels = False
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"max_forget": Int(1, 4), "n_retain": Int(1, 6)}
    source = ("Pawelczyk, Neel, Lakkaraju, In-Context Unlearning: Language Models as Few Shot Unlearners, ICML 2024, "
              "arXiv:2310.07579; code github.com/MartinPawel/In-Context-Unlearning")
    smoke_params: ClassVar[dict[str, Any]] = {"max_forget": 1, "n_retain": 1}

    def requirements(self) -> dict[str, bool]:
        return {**super().requirements(), "retain": self.config.n_retain > 0}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any, context: Any) -> Unlearned:
        LLMUnlearner.context_of(context)
        c: ICULConfig = self.config  # type: ignore[assignment]
        rng = np.random.default_rng([context.seed, 0x1C])
        items = list(forget)
        order = rng.permutation(len(items))
        answers = [it.answer for it in items]
        flipped = []
        for i in order:
            it = items[i]
            wrong = it.perturbed_answers[0] if it.perturbed_answers else next(
                (a for a in answers[int(i) + 1:] + answers[:int(i)] if a != it.answer), None)
            if wrong is None:
                raise MethodError("ICUL needs a wrong answer per forget item: perturbed answers, or two D_f items "
                                  "with different answers")
            flipped.append([it.question, wrong, it.subject])
        r_items = list(retain or [])
        pick = rng.permutation(len(r_items))[:c.n_retain] if r_items else []
        ret = [[r_items[int(j)].question, r_items[int(j)].answer] for j in pick]
        return Unlearned(model, steps=0, policy=ICULPolicy(flipped, ret, c.max_forget),
                         notes={"n_forget_examples": len(flipped), "n_retain_examples": len(ret)})

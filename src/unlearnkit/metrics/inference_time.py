"""Metrics for inference-time unlearning (issue 16): abstention, gate accuracy, fluency and skill accuracy.

All four read greedy generations through the evaluation context (:class:`~unlearnkit.metrics.llm_context.
LLMEvalContext`), so they see a policy's guard, logits processor, prompt rewriting and post-generation revision, and
share the generations the ``tofu`` metric makes for the same splits (same cache tags).

- ``abstention`` — share of answers that abstain, per evaluation split: an answer equal to an abstention text the
  policy declares (``policy.abstentions``: KSD's "Sorry, your query is not valid", ALU's refusal), or matching a refusal
  phrase ("I don't know", "I cannot", "Sorry", …; the IdK answers of TOFU's IdK methods count too). An inference-time
  method that refuses on D_f and answers elsewhere shows abstain.forget ≈ 1 and abstain.retain ≈ 0 (ECO, Liu et al.
  2024 report refusal-free outputs; KSD, Li et al. 2025 abstain by design).
- ``gate_accuracy`` — the prompt classifier of a gated policy (ECO, GUARD) on the evaluation prompts: share of D_f
  prompts flagged (true-positive rate) and of every other split's prompts flagged (false-positive rates), and the
  balanced accuracy. Policies without a gate give NaN.
- ``fluency`` — perplexity under θ_o of the greedy answers that are not abstentions (a refusal θ_o never learned
  would read as gibberish to it; refusals are the abstention metric's), exp of the mean per-token NLL (answer given
  question; the
  ECO paper's and the MUSE utility's concern that corrupted or filtered generations be gibberish), and the mean ratio
  of unique words to words (ECO's ``unique_token_ratio`` evaluator; near 0 = repetitive degenerate text).
- ``skill_accuracy`` — per skill (evaluation sets ``skill:<name>`` of the ``skills`` data source, else the TOFU
  ``forget`` / ``retain`` splits) the share of answers containing the gold answer (normalised: lower case, no
  punctuation), θ_o's, and the relative drop (θ_o − θ_u) / θ_o — the quantity of Li et al. 2025 (KSD: ≥ 80 % on the
  forgotten skill, < 10 % on the others).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS

#: splits read when present (the TOFU splits, the MIA holdout, and the skills task's extra sets)
BASE_SPLITS = ("forget", "retain", "real_authors", "world_facts")
REFUSAL = re.compile(
    r"(i don'?t know|i do not know|i'?m not sure|i am not sure|i cannot|i can'?t|i am unable|i'?m unable|"
    r"no information|not something i|\bsorry\b|i have no idea|unknown to me|don'?t have (an answer|that information|"
    r"information)|not valid|unable to say|no answer)", re.IGNORECASE)
_PUNCT = re.compile(r"[^\w\s]")


def policy_parts(policy: Any) -> list[Any]:
    """The policy and, for a composed one, its parts (flattened)."""
    if policy is None:
        return []
    parts = getattr(policy, "policies", None)
    return [q for p in parts for q in policy_parts(p)] if parts else [policy]


def abstention_texts(policy: Any) -> set[str]:
    """Abstention texts the policy declares (``abstentions`` attributes)."""
    return {str(t).strip() for p in policy_parts(policy) for t in getattr(p, "abstentions", ())}


def is_abstention(text: str, declared: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    """True when ``text`` is a declared abstention or reads as a refusal / "I don't know"."""
    t = text.strip()
    return t in declared or bool(REFUSAL.search(t))


def normalise(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _splits(ctx: Any, extra_prefixes: tuple[str, ...] = ()) -> list[str]:
    sets = getattr(ctx.task, "eval_sets", {})
    out = [s for s in BASE_SPLITS if s in sets]
    out += sorted(s for s in sets if s.startswith(extra_prefixes)) if extra_prefixes else []
    return out


def _generations(ctx: Any, split: str) -> tuple[list[str], list[str], list[str]]:
    qs = ctx.eval_set(split)
    return list(qs.questions), list(qs.answers), ctx.generations(list(qs.questions), (split,))


@METRICS.register("abstention")
class Abstention(Metric):
    """Share of greedy answers that abstain, per evaluation split (see the module docstring)."""

    track = "llm"
    reads = frozenset({"generations"})
    source = ("abstention of inference-time unlearning: Li et al. 2025 (arXiv:2503.21730, KSD abstains), Sanyal and "
              "Mandal 2025 (arXiv:2502.00406, ALU refuses)")
    keys = {"abstain.<split>": "share of answers on <split> that abstain (forget: higher = refuses D_f; retain, "
                               "real_authors, world_facts: lower = keeps answering)"}

    def compute(self, ctx: Any) -> MetricOutput:
        declared = abstention_texts(ctx.policy)
        values, per = {}, {}
        for s in _splits(ctx, ("unseen:", "skill:")):
            _, _, gens = _generations(ctx, s)
            flags = np.array([is_abstention(g, declared) for g in gens], dtype=bool)
            values[f"abstain.{s}"] = float(flags.mean()) if len(flags) else float("nan")
            per[f"abstain.{s}"] = flags
        return MetricOutput(values, per)


def gates_of(policy: Any) -> list[Any]:
    """Prompt classifiers (``gate`` attributes) of a policy and its parts."""
    return [g for p in policy_parts(policy) if (g := getattr(p, "gate", None)) is not None]


@METRICS.register("gate_accuracy")
class GateAccuracy(Metric):
    """The gated policy's prompt classifier on the evaluation prompts (see the module docstring)."""

    track = "llm"
    reads = frozenset({"generations"})
    source = "prompt classifier of ECO (Liu et al. 2024, arXiv:2406.07933) and GUARD (Deng et al. 2025, arXiv:2505.13312)"
    keys = {"gate.tpr": "share of D_f prompts flagged (higher = better; NaN without a gate)",
            "gate.fpr.<split>": "share of <split>'s prompts flagged (lower = better)",
            "gate.fpr": "share of all non-forget prompts flagged (lower = better)",
            "gate.balanced_accuracy": "(tpr + 1 − fpr) / 2 (higher = better)"}

    def compute(self, ctx: Any) -> MetricOutput:
        from unlearnkit.llm.tokenize import encode_prompt

        gates = gates_of(ctx.policy)
        splits = _splits(ctx)
        if not gates:
            nan = float("nan")
            return MetricOutput({"gate.tpr": nan, "gate.fpr": nan, "gate.balanced_accuracy": nan,
                                 **{f"gate.fpr.{s}": nan for s in splits if s != "forget"}})
        fmt = ctx.settings.fmt
        values, per, neg = {}, {}, []
        for s in splits:
            qs = ctx.eval_set(s)
            ids = [list(encode_prompt(ctx.tokenizer, q, fmt)) for q in qs.questions]
            flags = np.zeros(len(ids), dtype=bool)
            for g in gates:  # a composed policy: flagged by any gate
                flags |= np.asarray(g.flags(ctx.model, ctx.tokenizer, ids), dtype=bool)
            per[f"gate.{s}"] = flags
            if s == "forget":
                values["gate.tpr"] = float(flags.mean())
            else:
                values[f"gate.fpr.{s}"] = float(flags.mean())
                neg.append(flags)
        fpr = float(np.concatenate(neg).mean()) if neg else float("nan")
        values["gate.fpr"] = fpr
        values.setdefault("gate.tpr", float("nan"))
        values["gate.balanced_accuracy"] = (values["gate.tpr"] + 1.0 - fpr) / 2.0
        return MetricOutput(values, per)


@METRICS.register("fluency")
class Fluency(Metric):
    """Perplexity under θ_o and unique-word ratio of the greedy answers (see the module docstring)."""

    track = "llm"
    reads = frozenset({"generations"})
    source = ("generation fluency: perplexity under the original model (Liu et al. 2024, arXiv:2406.07933 §5; ECO's "
              "unique_token_ratio evaluator, chrisliu298/llm-unlearn-eco eco/evaluator/unique_token_ratio.py)")
    keys = {"fluency.<split>.ppl": "exp of the mean per-token NLL under θ_o of the answers that are neither empty "
                                   "nor abstentions (those are counted by `empty` and the abstention metric; lower = "
                                   "more fluent; NaN when none is left)",
            "fluency.<split>.unique_ratio": "mean unique words / words of the answers (near 0 = degenerate "
                                            "repetition)",
            "fluency.<split>.empty": "share of empty answers"}

    def compute(self, ctx: Any) -> MetricOutput:
        theta_o = ctx.reference("original_model", "the fluency metric (perplexity under θ_o)")
        sub = ctx.with_model(theta_o)
        declared = abstention_texts(ctx.policy)
        values, per = {}, {}
        for s in _splits(ctx):
            qs, _, gens = _generations(ctx, s)
            values[f"fluency.{s}.empty"] = sum(not g.strip() for g in gens) / max(len(gens), 1)
            keep = [i for i, g in enumerate(gens) if g.strip() and not is_abstention(g, declared)]
            if not keep:
                values[f"fluency.{s}.ppl"] = float("nan")
                values[f"fluency.{s}.unique_ratio"] = float("nan")
                continue
            pairs = [(qs[i], gens[i]) for i in keep]
            lp = sub.mean_logprobs(pairs, ("fluency", s))
            values[f"fluency.{s}.ppl"] = float(np.exp(-np.mean(lp)))
            ratios = []
            for i in keep:
                w = normalise(gens[i]).split()
                ratios.append(len(set(w)) / len(w) if w else 0.0)
            values[f"fluency.{s}.unique_ratio"] = float(np.mean(ratios))
            per[f"fluency.{s}.nll"] = -np.asarray(lp, dtype=np.float64)
        return MetricOutput(values, per)


def answer_accuracy(gens: list[str], golds: list[str]) -> np.ndarray:
    """bool (n,): the normalised gold answer occurs in the normalised generation."""
    return np.array([bool(normalise(a)) and f" {normalise(a)} " in f" {normalise(g)} " for g, a in zip(gens, golds)],
                    dtype=bool)


@METRICS.register("skill_accuracy")
class SkillAccuracy(Metric):
    """Per-skill answer accuracy, θ_o's, and the relative drop (see the module docstring)."""

    track = "llm"
    reads = frozenset({"generations"})
    source = "Li, Sun and Weng, Effective Skill Unlearning through Intervention and Abstention, arXiv:2503.21730"
    keys = {"skill.<name>.acc": "share of answers containing the gold answer (forget skill: lower = forgotten)",
            "skill.<name>.acc_original": "the same for θ_o",
            "skill.<name>.rel_drop": "(θ_o − θ_u) / θ_o (forget skill: ≥ 0.8 in Li et al.; others: < 0.1)"}

    def compute(self, ctx: Any) -> MetricOutput:
        sets = getattr(ctx.task, "eval_sets", {})
        named = sorted(s for s in sets if s.startswith("skill:"))
        splits = named or [s for s in ("forget", "retain") if s in sets]
        values, per = {}, {}

        def acc(c: Any, s: str) -> np.ndarray:
            _, golds, gens = _generations(c, s)
            return answer_accuracy(gens, golds)

        for s in splits:
            name = s.split(":", 1)[1] if s.startswith("skill:") else s
            mine = acc(ctx, s)
            orig = ctx.for_reference("original", ("skill_accuracy", s), lambda c, s=s: acc(c, s))
            a, o = float(mine.mean()), float(orig.mean())
            values[f"skill.{name}.acc"] = a
            values[f"skill.{name}.acc_original"] = o
            values[f"skill.{name}.rel_drop"] = (o - a) / o if o > 0 else float("nan")
            per[f"skill.{name}.correct"] = mine
        return MetricOutput(values, per)


__all__ = ["Abstention", "Fluency", "GateAccuracy", "SkillAccuracy", "abstention_texts", "answer_accuracy",
           "is_abstention"]

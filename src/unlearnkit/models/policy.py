"""Inference-time policies: what an unlearning method may put *beside* the weights.

An inference-time method (ECO, ULD, GUARD, in-context unlearning, ...) leaves the weights alone, or trains a small side
model, and changes what the model does when it answers. Its ``unlearn()`` returns
``Unlearned(model, policy=SomePolicy(...))``; the track's one generate / score path applies the policy:

- ``guard(prompts)``: an input guard or classifier gate; returns, per prompt, ``None`` (answer normally) or a fixed
  response (an abstention, a refusal) — the model is not asked;
- ``logits_processor(tokenizer)``: a Hugging Face ``LogitsProcessor`` applied at every decoding step (suppressing
  tokens, subtracting an assistant's logits, ...);
- ``score_logits(batch, logits)``: the same change for teacher-forced scoring (log-likelihoods, truth ratios,
  MIAs) — only for policies whose ``affects`` includes ``"logits"``;
- ``process_logits(logits)``: a classifier's output post-processing (abstention, class masking);
- ``rewrite_questions(questions, fmt)``: prompt-side policies (in-context unlearning) change the questions the model
  receives, in generation and (when ``affects`` includes ``logits``) in scoring;
- ``attach(model, tokenizer, fmt)``: a context entered around a whole generate call (guard, decoding, revision): a
  guard or a reviser that reads the model itself (a classifier on its hidden states, the model as an agent);
- ``forward_hooks(model, tokenizer, batch)``: a context entered around the model's forward passes on one batch
  (teacher-forced scoring, or one ``generate`` call on left-padded prompts): hooks that change hidden states
  (corrupted input embeddings, shifted activations) or per-batch state a logits processor needs;
- ``revise(prompts, answers)``: post-generation agents (audit, rewrite, refuse) replace answers.

``affects`` declares which model outputs the policy changes (a subset of ``logits``, ``generations``,
``hidden_states``); metrics declare which they read (``Metric.reads``), so a policy that only changes generations
cannot make a likelihood metric look forgotten, and the row says which metrics the policy could not affect.

Policies are serialisable: ``config()`` (JSON) plus ``tensors()`` (safetensors) go into the checkpoint beside the
weights, and ``POLICIES.get(kind).from_saved(config, tensors)`` rebuilds them. A chained request (sequential
scenarios) composes the previous policy with the new one (:class:`ComposedPolicy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, ClassVar

import torch

from unlearnkit.errors import CheckpointError, ConfigError
from unlearnkit.registry import Registry

#: policy kind → policy class (for loading a saved policy)
POLICIES: Registry[type["InferencePolicy"]] = Registry("inference policy")


class InferencePolicy:
    """Base class of inference-time policies; every hook defaults to "no change".

    Class attributes:
        kind: the registered name (``@POLICIES.register(kind)``), stored with a saved policy.
        affects: the model outputs the policy changes: ``logits`` (scoring and generation), ``generations``
            (decoding and guarded answers only), ``hidden_states``.
    """

    kind: ClassVar[str] = ""
    affects: ClassVar[frozenset[str]] = frozenset()

    # -- hooks --------------------------------------------------------------------------------------------------------
    def guard(self, prompts: Sequence[str]) -> list[str | None]:
        """Per prompt: ``None`` to let the model answer, or the fixed text returned instead (an abstention)."""
        return [None] * len(prompts)

    def logits_processor(self, tokenizer: Any) -> Any:
        """A ``transformers.LogitsProcessor`` applied at every decoding step, or None."""
        return None

    def score_logits(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits float (b, T, V) after the policy (called only if ``"logits" in affects``)."""
        return logits

    def process_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """A classifier's logits float (n, C) after the policy (called only if ``"logits" in affects``)."""
        return logits

    def rewrite_questions(self, questions: Sequence[str], fmt: str) -> list[str]:
        """The questions as the model receives them (in-context unlearning prepends a context); ``fmt`` is the prompt
        format (``qa``, ``chat``, ``raw``). Applied to generation prompts, and to scored pairs when ``"logits" in
        affects``. Default: unchanged."""
        return list(questions)

    def attach(self, model: Any, tokenizer: Any, fmt: str) -> AbstractContextManager[None]:
        """A context entered by the generate path around a whole call (guard, decoding, :meth:`revise`): inside, the
        policy may read ``model`` (a guard that classifies prompts by the model's hidden states; the model as an
        agent). Default: nothing."""
        return nullcontext()

    def forward_hooks(self, model: Any, tokenizer: Any, batch: dict[str, torch.Tensor]) -> AbstractContextManager[None]:
        """A context entered around the forward passes of ``model`` on one batch: teacher-forced scoring
        (``input_ids``, ``attention_mask``, ``labels`` int64 (b, T), right-padded, labels −100 on prompt and padding
        positions) or one ``generate`` call (left-padded prompts: ``input_ids``, ``attention_mask``, ``position_ids``,
        ``labels`` −100 everywhere). Either way, the prompt of a row is where ``attention_mask == 1`` and
        ``labels == -100``.
        Inside, the policy may hook the model (corrupt input embeddings, shift activations) or keep what its logits
        processor needs. Must leave the model as it was on exit. Default: nothing."""
        return nullcontext()

    def revise(self, prompts: Sequence[str], answers: Sequence[str]) -> list[str]:
        """Answers after post-generation agents (audit, rewrite, refuse), one per prompt. Default: unchanged."""
        return list(answers)

    # -- persistence ------------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (saved as ``policy.json`` in the checkpoint)."""
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensors of the policy (saved as ``policy.safetensors``), e.g. a side model's weights."""
        return {}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
        """Rebuild a policy from :meth:`config` and :meth:`tensors`.

        Raises:
            CheckpointError: the saved settings do not fit this policy.
        """
        try:
            return cls(**config)  # type: ignore[call-arg]
        except TypeError as err:
            raise CheckpointError(f"saved policy of kind '{cls.kind}' has settings it does not take: {err}") from err

    def describe(self) -> dict[str, Any]:
        """What the result row records: kind, what it changes, and its settings."""
        return {"kind": self.kind, "affects": sorted(self.affects), "config": self.config()}


@POLICIES.register("composed")
class ComposedPolicy(InferencePolicy):
    """Policies applied one after another (the guard of the first that answers wins; logits pass through all)."""

    kind = "composed"

    def __init__(self, policies: Sequence[InferencePolicy]) -> None:
        flat: list[InferencePolicy] = []
        for p in policies:
            flat.extend(p.policies if isinstance(p, ComposedPolicy) else [p])
        if not flat:
            raise ConfigError("a composed policy needs at least one policy")
        self.policies = flat

    @property
    def affects(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset().union(*(p.affects for p in self.policies))

    def guard(self, prompts: Sequence[str]) -> list[str | None]:
        out: list[str | None] = [None] * len(prompts)
        for p in self.policies:
            for i, ans in enumerate(p.guard(prompts)):
                if out[i] is None and ans is not None:
                    out[i] = ans
        return out

    def logits_processor(self, tokenizer: Any) -> Any:
        procs = [q for q in (p.logits_processor(tokenizer) for p in self.policies) if q is not None]
        if not procs:
            return None
        if len(procs) == 1:
            return procs[0]

        def chain(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            for q in procs:
                scores = q(input_ids, scores)
            return scores

        return chain

    def score_logits(self, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        for p in self.policies:
            if "logits" in p.affects:
                logits = p.score_logits(batch, logits)
        return logits

    def process_logits(self, logits: torch.Tensor) -> torch.Tensor:
        for p in self.policies:
            if "logits" in p.affects:
                logits = p.process_logits(logits)
        return logits

    def rewrite_questions(self, questions: Sequence[str], fmt: str) -> list[str]:
        out = list(questions)
        for p in self.policies:
            out = p.rewrite_questions(out, fmt)
        return out

    @contextmanager
    def attach(self, model: Any, tokenizer: Any, fmt: str):  # type: ignore[override]
        with ExitStack() as stack:
            for p in self.policies:
                stack.enter_context(p.attach(model, tokenizer, fmt))
            yield

    @contextmanager
    def forward_hooks(self, model: Any, tokenizer: Any, batch: dict[str, torch.Tensor]):  # type: ignore[override]
        with ExitStack() as stack:
            for p in self.policies:
                stack.enter_context(p.forward_hooks(model, tokenizer, batch))
            yield

    def revise(self, prompts: Sequence[str], answers: Sequence[str]) -> list[str]:
        out = list(answers)
        for p in self.policies:
            out = p.revise(prompts, out)
        return out

    def config(self) -> dict[str, Any]:
        return {"policies": [{"kind": p.kind, "config": p.config()} for p in self.policies]}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, p in enumerate(self.policies) for k, v in p.tensors().items()}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
        parts = []
        for i, sub in enumerate(config.get("policies", [])):
            mine = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}
            parts.append(policy_from_saved(sub["kind"], sub.get("config", {}), mine))
        return cls(parts)


def compose(first: InferencePolicy | None, second: InferencePolicy | None) -> InferencePolicy | None:
    """``first`` then ``second`` (either may be None)."""
    if first is None:
        return second
    if second is None:
        return first
    return ComposedPolicy([first, second])


def policy_from_saved(kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InferencePolicy:
    """Rebuild a saved policy of ``kind``.

    Raises:
        CheckpointError: no policy of that kind is registered (install the package that provides it).
    """
    if kind not in POLICIES:
        raise CheckpointError(f"the checkpoint holds an inference-time policy of kind '{kind}', which is not "
                              f"registered (known: {', '.join(POLICIES.names()) or 'none'}); install the package "
                              "that provides it")
    return POLICIES.get(kind).from_saved(config, tensors)


__all__ = ["POLICIES", "ComposedPolicy", "InferencePolicy", "compose", "policy_from_saved"]

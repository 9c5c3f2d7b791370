"""The evaluation context of LLM-track metrics (``tofu``, ``muse``, ``mia_text``, ``extraction``).

:class:`LLMEvalContext` holds one model under evaluation, its tokenizer, the :class:`~unlearnkit.data.text.TextTask`
and the settings of the track's ``eval:`` section, and computes model outputs once per (model, split) so that metrics
share them. Statistics of *reference* models (θ_r's forget-set truth ratios for forget quality, θ_r's Min-K% AUC for
PrivLeak) are cached across evaluations in a dict owned by the track and keyed by the SHA-256 of the reference
model's weights (:func:`unlearnkit.engine.checkpoint.state_sha256`), never by a path or a name, so a changed
checkpoint can never be answered from a stale entry (KNOWN_FAULTS C05).

Metrics never train and never read files (DESIGN §4); every model call runs in eval mode without gradients (the
``unlearnkit.llm.lm`` functions restore the training flag, C21).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics.base import EvaluationContext


@dataclass(frozen=True)
class LLMEvalSettings:
    """How LLM metrics evaluate (from the track's ``eval:`` section).

    Attributes:
        fmt: prompt format (``qa``, ``chat``, ``raw``) of :mod:`unlearnkit.llm.tokenize`.
        batch_size: evaluation batch (sequences per forward pass).
        max_items: at most this many items per evaluation split (the first ones, in set order); None = all.
        max_new_tokens: greedy tokens generated per TOFU answer.
        truth_ratio_variant: ``tofu`` (default), ``arith_prob`` or ``normalised`` (C03).
        mink_k: fraction k of the Min-K% / Min-K%++ attacks (Shi et al. default 0.2).
        mia_reference: model used by the ``ref`` attack: ``oracle`` (θ_r), ``original`` (θ_o) or ``none``.
        knowmem_rouge: MUSE KnowMem ROUGE-L kind (``f1`` as MUSE's eval.py, or ``recall``).
        verbmem_max_new_tokens, knowmem_max_new_tokens: MUSE generation lengths (128 and 32 in MUSE).
        privleak_k: Min-K% fraction of PrivLeak (MUSE: 0.4).
        max_context: token positions the model may read; None = the model's own (``model.config``, see
            :func:`unlearnkit.llm.tokenize.context_length`), and no truncation when the model does not say.
    """

    fmt: str = "qa"
    batch_size: int = 16
    max_items: int | None = None
    max_new_tokens: int = 32
    truth_ratio_variant: str = "tofu"
    mink_k: float = 0.2
    mia_reference: str = "oracle"
    knowmem_rouge: str = "f1"
    verbmem_max_new_tokens: int = 128
    knowmem_max_new_tokens: int = 32
    privleak_k: float = 0.4
    max_context: int | None = None


class LLMEvalContext(EvaluationContext):
    """One language model under evaluation on one :class:`TextTask` (the LLM track's evaluation context).

    Inputs longer than the model's context are never fed whole (issue 13): scored sequences keep their first
    ``context`` tokens (answers lose their tails, a raw text its end), generation prompts their last
    ``context − max_new_tokens`` tokens (see :mod:`unlearnkit.llm.tokenize`), and when the context cannot hold
    ``max_new_tokens`` plus a prompt of as many tokens, generation is shortened to half the context
    (:meth:`generation_budget`). Every cut is counted in :attr:`truncation` (per call tag) and metrics report the
    counts (:meth:`truncated_inputs`).

    Args:
        model: the causal LM (θ_u, θ_o or θ_r).  tokenizer: its tokenizer (pad token set).
        task: the text task (``eval_sets``, ``extras``).  engine: the run's engine (device).
        seed: the run seed.  references: ``original_model`` (θ_o) and ``oracle_model`` (θ_r), when available.
        settings: :class:`LLMEvalSettings`.
        shared: the cache of reference-model statistics for this evaluation point (keyed by weight SHA-256);
            ``ref_cache`` is its former name.
        policy: the model's inference-time policy: its guard and logits processor act on every generation, and on
            teacher-forced scoring when it ``affects`` logits.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, task: Any, engine: Any = None, *, seed: int = 0,
                 references: dict[str, nn.Module] | None = None, settings: LLMEvalSettings | None = None,
                 shared: dict[Any, Any] | None = None, ref_cache: dict[Any, Any] | None = None,
                 policy: Any = None) -> None:
        super().__init__(model, task, engine, seed=seed, references=references,
                         shared=shared if shared is not None else ref_cache, policy=policy)
        self.tokenizer = tokenizer
        self.settings = settings or LLMEvalSettings()
        self._cache: dict[tuple, Any] = {}
        #: per call tag: {"n": inputs, "truncated": inputs cut, "tokens_dropped": ..., "budget": tokens allowed}
        self.truncation: dict[tuple, dict[str, int]] = {}

    # -- context length -------------------------------------------------------------------------------------------
    @property
    def max_context(self) -> int | None:
        """Token positions the model reads: ``settings.max_context`` or the model's own; None = unknown."""
        from unlearnkit.llm.tokenize import context_length

        return self.settings.max_context or context_length(self.model)

    def generation_budget(self, max_new_tokens: int) -> tuple[int, int | None]:
        """``(new tokens, prompt tokens allowed)`` for a generation of ``max_new_tokens`` within the context.

        With context C: ``(max_new_tokens, C − max_new_tokens)`` when that leaves at least ``max_new_tokens`` for the
        prompt, else ``(C // 2, C − C // 2)`` (half for the prompt, half for the continuation; MUSE's VerbMem also
        cuts its reference to the tokens generated). ``(max_new_tokens, None)`` when C is unknown.

        Raises:
            ConfigError: C < 2.
        """
        c = self.max_context
        if c is None:
            return max_new_tokens, None
        if c < 2:
            raise ConfigError(f"a context of {c} token(s) cannot hold a prompt and a continuation")
        if c - max_new_tokens >= max_new_tokens:
            return max_new_tokens, c - max_new_tokens
        return c // 2, c - c // 2

    def _count(self, tag: tuple, enc: list, budget: int | None, n: int | None = None) -> None:
        from unlearnkit.llm.tokenize import truncation_count

        cut, dropped = truncation_count(enc)
        self.truncation[tag] = {"n": len(enc) if n is None else n, "truncated": cut, "tokens_dropped": dropped,
                                "budget": -1 if budget is None else int(budget)}

    def truncated_inputs(self, *splits: str) -> int:
        """Inputs cut to fit the context so far, over the calls whose tag starts with one of ``splits`` (e.g.
        ``"verbmem"``, ``"forget"``; all calls when none is given)."""
        return sum(v["truncated"] for k, v in self.truncation.items() if not splits or k[1] in splits)

    @property
    def ref_cache(self) -> dict[Any, Any]:
        """The reference-statistics cache (:attr:`shared`)."""
        return self.shared

    def _reset(self) -> None:
        super()._reset()
        self._cache = {}
        self.truncation = {}

    def reference(self, name: str, who: str = "this metric") -> nn.Module:  # noqa: D102 - see EvaluationContext
        return super().reference(name, who)

    def cached(self, key: tuple, fn: Callable[[], Any]) -> Any:
        """``fn()`` once per context (the model does not change during one evaluation)."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _scoring_policy(self) -> Any:
        """The policy where it changes teacher-forced logits, else None (scoring reads the weights alone)."""
        p = self.policy
        return p if p is not None and "logits" in getattr(p, "affects", ()) else None

    def _policy_pairs(self, pairs: list[tuple[str, str]], fmt: str) -> list[tuple[str, str]]:
        """``pairs`` with their questions as a prompt-side scoring policy rewrites them (in-context unlearning)."""
        p = self._scoring_policy()
        if p is None or not pairs:
            return list(pairs)
        from unlearnkit.llm.lm import policy_questions

        return list(zip(policy_questions(p, [q for q, _ in pairs], fmt), [a for _, a in pairs]))

    # -- data -------------------------------------------------------------------------------------------------------
    def eval_set(self, name: str) -> Any:
        """Evaluation split ``name`` of the task, cut to ``max_items`` (first items in set order).

        Raises:
            DataError: the task has no such split, or it is empty.
        """
        sets = getattr(self.task, "eval_sets", {})
        if name not in sets:
            raise DataError(f"evaluation split '{name}' is not in task '{getattr(self.task, 'name', '?')}' "
                            f"(it has: {', '.join(sorted(sets)) or 'none'})")
        qs = sets[name]
        if len(qs) == 0:
            raise DataError(f"evaluation split '{name}' is empty")
        n = self.settings.max_items
        if n is not None and len(qs) > n:
            qs = qs.select_ids(qs.ids[:n])
        return qs

    # -- model outputs (cached) -------------------------------------------------------------------------------------
    def _lm(self):
        try:
            from unlearnkit.llm import lm
        except ImportError as err:  # pragma: no cover - part of the package; transformers needed
            raise ConfigError("LLM metrics need transformers: pip install 'unlearnkit[llm]'") from err
        return lm

    def mean_logprobs(self, pairs: list[tuple[str, str]], tag: tuple) -> np.ndarray:
        """Length-normalised answer log-probs, float64 (n,) (nats per token, answer tokens incl. EOS)."""
        from unlearnkit.metrics.tofu import mean_logprob

        def run() -> np.ndarray:
            from unlearnkit.llm.tokenize import encode_qa

            ml = self.max_context
            counted = self._policy_pairs(pairs, self.settings.fmt)
            self._count(("mlp",) + tag, [encode_qa(self.tokenizer, q, a, self.settings.fmt, ml) for q, a in counted]
                        if ml is not None else [], ml, n=len(pairs))
            with _quiet():
                s, t = self._lm().answer_logprobs(self.model, self.tokenizer, pairs, fmt=self.settings.fmt,
                                                  batch_size=self.settings.batch_size, engine=self.engine,
                                                  max_len=ml, policy=self._scoring_policy())
            return mean_logprob(s, t)

        return self.cached(("mlp",) + tag, run)

    def generations(self, prompts: list[str], tag: tuple, *, fmt: str | None = None,
                    max_new_tokens: int | None = None) -> list[str]:
        """Greedy continuations (left padding, per-row slicing: C58) of ``prompts``, within the context: at most
        :meth:`generation_budget` new tokens, prompts cut to their last tokens (counted under ``("gen",) + tag``)."""
        def run() -> list[str]:
            import time

            from unlearnkit.llm.tokenize import Encoded, encode_prompt

            f = fmt or self.settings.fmt
            new, budget = self.generation_budget(max_new_tokens or self.settings.max_new_tokens)
            lens = [len(encode_prompt(self.tokenizer, p, f)) for p in prompts] if budget is not None else []
            self._count(("gen",) + tag, [Encoded((), (), 0, max(n - budget, 0)) for n in lens], budget,
                        n=len(prompts))
            self.truncation[("gen",) + tag]["max_new_tokens"] = new
            t0 = time.perf_counter()
            out, n_tokens = self._lm().generate(self.model, self.tokenizer, prompts, fmt=f, max_new_tokens=new,
                                                batch_size=self.settings.batch_size, engine=self.engine,
                                                max_prompt_tokens=budget, policy=self.policy, count_tokens=True)
            self.timed_query(time.perf_counter() - t0, max(1, n_tokens), unit="token")
            return list(out)

        return self.cached(("gen",) + tag, run)

    def token_scores(self, pairs: list[tuple[str, str]], tag: tuple, *, fmt: str | None = None) -> list[Any]:
        """Per-answer-token scores (log p, arg-max, μ, σ) of ``pairs`` (``TokenScores`` of :mod:`unlearnkit.llm.lm`)."""
        def run() -> list[Any]:
            from unlearnkit.llm.tokenize import encode_qa, pad_id_of

            ml = self.max_context
            f = fmt or self.settings.fmt
            enc = [encode_qa(self.tokenizer, q, a, f, ml) for q, a in self._policy_pairs(pairs, f)]
            self._count(("tok",) + tag, enc, ml)
            return list(self._lm().score_encoded(self.model, enc, pad_id=pad_id_of(self.tokenizer),
                                                 batch_size=self.settings.batch_size, engine=self.engine,
                                                 stats=True, policy=self._scoring_policy(), tokenizer=self.tokenizer))

        return self.cached(("tok",) + tag, run)

    def text_token_scores(self, texts: list[str], tag: tuple) -> list[Any]:
        """Per-token scores of raw texts (every token after BOS), each cut to its first ``max_context`` tokens
        (counted under ``("txt",) + tag``)."""
        def run() -> list[Any]:
            from unlearnkit.llm.tokenize import encode_qa, pad_id_of

            ml = self.max_context
            enc = [encode_qa(self.tokenizer, h, t, "raw", ml, add_eos=False)
                   for h, t in self._policy_pairs([("", t) for t in texts], "raw")]
            self._count(("txt",) + tag, enc, ml)
            return list(self._lm().score_encoded(self.model, enc, pad_id=pad_id_of(self.tokenizer),
                                                 batch_size=self.settings.batch_size, engine=self.engine,
                                                 stats=True, policy=self._scoring_policy(), tokenizer=self.tokenizer))

        return self.cached(("txt",) + tag, run)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence :class:`~unlearnkit.llm.tokenize.TruncationWarning` (the context counts cuts itself)."""
    from unlearnkit.llm.tokenize import TruncationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        yield

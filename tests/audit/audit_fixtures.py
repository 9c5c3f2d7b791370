"""Tiny objects for the audit tests: the llm-core fixtures (a 2-block Llama trained a few epochs on 10 synthetic
persons) and an LLM evaluation context with θ_o / θ_r references."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))

pytest.importorskip("transformers")  # noqa: E402

import core_fixtures as cf  # noqa: E402


def make_ctx(model, *, original=None, oracle=None, task=None, max_items=10, **settings):
    from unlearnkit.metrics.llm_context import LLMEvalContext, LLMEvalSettings

    refs = {}
    if original is not None:
        refs["original_model"] = original
    if oracle is not None:
        refs["oracle_model"] = oracle
    return LLMEvalContext(model, cf.tokenizer(), task or cf.task(), cf.engine(), seed=0, references=refs,
                          settings=LLMEvalSettings(max_items=max_items, batch_size=32, **settings), shared={})

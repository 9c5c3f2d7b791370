"""Shared tiny objects for the inference-time tests (cached per process; seconds on one CPU thread): the synthetic
skills data, a tokenizer, and a tiny Llama trained a few epochs on D (all three skills)."""

from __future__ import annotations

import copy
from functools import lru_cache

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.text.skills import build_skills_task
from unlearnkit.engine.loop import Engine
from unlearnkit.llm.lm import LMTrainConfig, train_lm
from unlearnkit.llm.tokenize import corpus_texts
from unlearnkit.methods.llm import LLMContext
from unlearnkit.models.llm import build_tiny_llama, train_tokenizer

MAX_LEN = 96


def engine() -> Engine:
    return Engine(EngineConfig(device="cpu", progress=False, deterministic=True))


@lru_cache(maxsize=None)
def task(forget_skill: str = "qa"):
    """D = 24 items of each skill (+ utility items); D_f = ``forget_skill``'s."""
    return build_skills_task(forget_skill, n_per_skill=24, n_unseen_per_skill=6, seed=0)


@lru_cache(maxsize=None)
def tokenizer():
    t = task("qa")
    return train_tokenizer(corpus_texts([t.full, *t.eval_sets.values()]), vocab_size=400)


@lru_cache(maxsize=None)
def _trained():
    m = build_tiny_llama(tokenizer(), hidden_size=64, layers=2, heads=2, max_len=MAX_LEN, seed=0)
    train_lm(m, tokenizer(), task("qa").full, LMTrainConfig(epochs=30, batch_size=16, grad_accum=1, lr=5e-3,
                                                              max_len=MAX_LEN), engine(), seed=0)
    return m.eval()


def model():
    """θ_o: a fresh copy of the tiny model trained on D."""
    return copy.deepcopy(_trained())


def context(seed: int = 0) -> LLMContext:
    return LLMContext(seed=seed, tokenizer=tokenizer(), fmt="qa", max_len=MAX_LEN)


def unlearn(name: str, params: dict, forget_skill: str = "qa", m=None):
    """``METHODS.build(name, params).unlearn`` on the tiny world; returns (model, Unlearned)."""
    from unlearnkit.methods import METHODS

    t = task(forget_skill)
    m = model() if m is None else m
    return m, METHODS.build(name, params).unlearn(m, t.forget, t.retain, engine(), context())

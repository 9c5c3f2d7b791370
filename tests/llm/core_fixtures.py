"""Shared tiny LLM objects for the llm-core tests (cached per process; seconds on one CPU thread)."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.text.synthetic import build_synthetic_task
from unlearnkit.engine.loop import Engine
from unlearnkit.llm.lm import LMTrainConfig, train_lm
from unlearnkit.llm.tokenize import corpus_texts
from unlearnkit.models.llm import build_tiny_llama, train_tokenizer


def engine() -> Engine:
    return Engine(EngineConfig(device="cpu", progress=False, deterministic=True))


@lru_cache(maxsize=None)
def task():
    return build_synthetic_task("forget10", n_persons=10, qa_per_person=10, seed=0)


@lru_cache(maxsize=None)
def tokenizer():
    t = task()
    return train_tokenizer(corpus_texts([t.full, *t.eval_sets.values()]), vocab_size=400)


def tiny_model(seed: int = 0, layers: int = 2, hidden: int = 32, **kw):
    return build_tiny_llama(tokenizer(), hidden_size=hidden, layers=layers, heads=2, max_len=128, seed=seed, **kw)


@lru_cache(maxsize=None)
def _trained():
    m = tiny_model(0)
    train_lm(m, tokenizer(), task().full, LMTrainConfig(epochs=6, batch_size=16, grad_accum=1, lr=5e-3,
                                                          max_len=64), engine(), seed=0)
    return m


def trained_model():
    """θ_o: the tiny model trained a few epochs on the synthetic D (a fresh copy each call)."""
    return copy.deepcopy(_trained())


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

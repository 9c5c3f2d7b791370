"""Tiny objects shared by the issue-18 tests (cached per process; seconds on one CPU thread)."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.text.synthetic import build_synthetic_task
from unlearnkit.engine.loop import Engine
from unlearnkit.llm.lm import LMTrainConfig, train_lm
from unlearnkit.llm.tokenize import corpus_texts
from unlearnkit.models.llm import train_tokenizer
from unlearnkit.models.moe import build_tiny_moe


def engine() -> Engine:
    return Engine(EngineConfig(device="cpu", progress=False, deterministic=True, threads=1))


@lru_cache(maxsize=None)
def task():
    return build_synthetic_task("forget10", n_persons=10, qa_per_person=10, seed=0)


@lru_cache(maxsize=None)
def tokenizer():
    t = task()
    return train_tokenizer(corpus_texts([t.full, *t.eval_sets.values()]), vocab_size=400)


@lru_cache(maxsize=None)
def _moe(arch: str):
    m = build_tiny_moe(tokenizer(), arch=arch, hidden_size=32, layers=2, heads=2, experts=4, top_k=2,
                       intermediate_size=32, max_len=96, seed=0)
    train_lm(m, tokenizer(), task().full, LMTrainConfig(epochs=3, batch_size=16, grad_accum=1, lr=5e-3, max_len=64),
             engine(), seed=0)
    return m


def moe_model(arch: str = "mixtral"):
    """A tiny MoE trained 3 epochs on the synthetic D (a fresh copy each call)."""
    return copy.deepcopy(_moe(arch))


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

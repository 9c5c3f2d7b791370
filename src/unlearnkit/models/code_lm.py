"""A tiny GPT-2-style code language model trained from scratch (the CPU stand-in for CodeParrot / CodeGen).

CodeEraser (Chu et al., ICSE 2026, "Scrub It Out! Erasing Sensitive Memorization in Code Language Models via Machine
Unlearning"; code CGCL-codes/naturalcc, examples/code-unlearning) unlearns CodeParrot (a GPT-2 architecture) and
CodeGen; this builder uses transformers' own ``GPT2LMHeadModel`` with a small configuration. Real code checkpoints
(``codeparrot/codeparrot-small``, ``Salesforce/codegen-350M-mono``, ``Qwen/Qwen2.5-Coder-7B``) load through the LLM
track's ``model: {kind: hf, path: ...}``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from unlearnkit.errors import ConfigError


def build_tiny_gpt2(
    tokenizer: Any,
    *,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 4,
    max_len: int = 256,
    seed: int = 0,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` (learned absolute positions, GELU MLP of width 4 × hidden).

    Args:
        tokenizer: vocabulary size and bos / eos / pad ids.
        hidden_size, layers, heads: ``n_embd``, ``n_layer``, ``n_head`` (``hidden_size % heads == 0``).
        max_len: ``n_positions``.  seed: initialisation seed (global RNG untouched).  dtype: weight dtype.

    Returns:
        the model in eval mode; dropout 0 (deterministic training); untied input / output embeddings (safetensors
        refuses shared tensors).

    Raises:
        ConfigError: inconsistent sizes.
    """
    if min(hidden_size, layers, heads, max_len) < 1 or hidden_size % heads:
        raise ConfigError(f"tiny GPT-2: hidden_size ({hidden_size}) must be a positive multiple of heads ({heads}), "
                          "layers ≥ 1, max_len ≥ 1")
    import transformers as tf

    cfg = tf.GPT2Config(vocab_size=len(tokenizer), n_positions=max_len, n_embd=hidden_size, n_layer=layers,
                        n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, initializer_range=0.02)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.GPT2LMHeadModel(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(getattr(torch, dtype)).eval()


__all__ = ["build_tiny_gpt2"]

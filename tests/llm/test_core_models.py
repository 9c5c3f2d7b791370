"""Model loading and building: tiny Llama, offline tokenizer, HF loading errors, LoRA."""

from __future__ import annotations

import pytest
import torch

from core_fixtures import tiny_model, tokenizer
from unlearnkit.errors import ConfigError
from unlearnkit.models.llm import LoraSpec, apply_lora, build_tiny_llama, count_parameters, load_causal_lm


def test_tokenizer_specials_and_roundtrip():
    tok = tokenizer()
    assert tok.pad_token_id != tok.eos_token_id and tok.bos_token_id is not None
    text = "Zöe wrote \"The Iron Clock\" in 1987!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: any string encodes and decodes exactly
    assert tok(text)["input_ids"][0] == tok.bos_token_id


def test_tiny_llama_size_seed_and_untied():
    tok = tokenizer()
    m = build_tiny_llama(tok, hidden_size=128, layers=4, heads=4)
    n = count_parameters(m)
    assert 0.5e6 < n < 10e6
    assert m.lm_head.weight.data_ptr() != m.model.embed_tokens.weight.data_ptr()
    a, b, c = tiny_model(7), tiny_model(7), tiny_model(8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    with pytest.raises(ConfigError, match="multiple of heads"):
        build_tiny_llama(tok, hidden_size=30, heads=4)


def test_load_missing_path():
    with pytest.raises(ConfigError, match="does not exist"):
        load_causal_lm("/nonexistent/model/dir")
    with pytest.raises(ConfigError, match="does not exist"):
        load_causal_lm("someorg/somemodel")  # a hub id while offline (local_files_only)


def test_load_tokenizer_without_pad_token(tmp_path):
    tok = tokenizer()
    m = tiny_model(0)
    m.save_pretrained(tmp_path)
    nopad = tok.__class__(tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    nopad.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="no pad token; set pad_token: eos"):
        load_causal_lm(str(tmp_path))
    model, t2 = load_causal_lm(str(tmp_path), pad_token="eos")
    assert t2.pad_token_id == t2.eos_token_id
    assert torch.equal(model.lm_head.weight, m.lm_head.weight)


def test_lora_targets_checked_and_b_zero():
    with pytest.raises(ConfigError, match="match no Linear module"):
        apply_lora(tiny_model(0), LoraSpec(target_modules=["qkv"]))
    m = apply_lora(tiny_model(0), LoraSpec(r=2, dropout=0.0))
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.abs().max() == 0 for n, p in m.named_parameters() if "lora_B" in n)

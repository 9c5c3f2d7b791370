"""ULD (arXiv:2406.08607): the combined logits are z_target − w·z_assistant on the tokens the target keeps and
z_target elsewhere — in teacher-forced scoring and at every decoding step (with left padding and the assistant's KV
cache); the assistant travels in the policy's tensors; a depth beyond the model is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

import world  # noqa: E402
from unlearnkit.errors import ConfigError, MethodError  # noqa: E402
from unlearnkit.llm.lm import forward_logits, generate_ids, score_encoded  # noqa: E402
from unlearnkit.llm.tokenize import collate, encode_prompt, encode_qa, pad_id_of  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.methods.llm.uld import logit_difference  # noqa: E402
from unlearnkit.models.policy import policy_from_saved  # noqa: E402


def expected(zt: np.ndarray, za: np.ndarray, w: float, tau: float) -> np.ndarray:
    """The rule computed independently (float64, sorting): keep v iff log p_t(v) ≥ min(max + log τ, ⌊τV⌋-th)."""
    out = zt.astype(np.float64).copy()
    flat_t, flat_a, flat_o = zt.reshape(-1, zt.shape[-1]), za.reshape(-1, za.shape[-1]), out.reshape(-1, zt.shape[-1])
    v = zt.shape[-1]
    k = max(int(tau * v), 1)
    for i in range(flat_t.shape[0]):
        z = flat_t[i].astype(np.float64)
        lp = z - (np.log(np.exp(z - z.max()).sum()) + z.max())
        thr = min(lp.max() + np.log(tau), np.sort(lp)[::-1][k - 1])
        keep = lp >= thr
        flat_o[i, keep] = z[keep] - w * flat_a[i, keep]
    return out


def test_logit_difference_golden_by_hand():
    # V = 4, τ = 0.5: p = softmax(log [4, 2, 1, 1]) = [.5, .25, .125, .125]; max·τ = .25 → keep tokens 0, 1;
    # ⌊τV⌋ = 2 → the 2nd largest (.25) also gives .25: keep {0, 1}
    zt = torch.log(torch.tensor([[4.0, 2.0, 1.0, 1.0]]))
    za = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    out = logit_difference(zt, za, 0.8, 0.5)
    want = zt.clone()
    want[0, 0] -= 8.0
    want[0, 1] -= 16.0
    assert torch.allclose(out, want, atol=1e-6)


def test_logit_difference_equals_the_independent_rule():
    g = torch.Generator().manual_seed(0)
    zt = torch.randn(3, 5, 97, generator=g) * 3
    za = torch.randn(3, 5, 97, generator=g) * 3
    for w, tau in [(0.8, 0.01), (0.5, 0.1), (1.0, 0.3)]:
        got = logit_difference(zt, za, w, tau).numpy()
        np.testing.assert_allclose(got, expected(zt.numpy(), za.numpy(), w, tau), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def fitted():
    m, res = world.unlearn("uld", {"num_layers": 1, "epochs": 2, "batch_size": 8, "grad_accum": 1,
                                   "max_retain": 48})
    return m, res.policy


def test_scoring_equals_target_minus_w_assistant_on_kept_tokens(fitted):
    model, pol = fitted
    tok = world.tokenizer()
    t = world.task("qa")
    items = list(t.forget)[:3] + list(t.eval_sets["skill:code"])[:3]
    enc = [encode_qa(tok, it.question, it.answer, "qa", world.MAX_LEN) for it in items]
    batch = collate(enc, pad_id_of(tok))
    with torch.no_grad():
        zt = forward_logits(model, batch)
        za = forward_logits(pol.assistant, batch)
    want = expected(zt.numpy(), za.numpy(), pol.weight, pol.tau)
    # through the track's score path (sorted batches, log-softmax, gather)
    scores = score_encoded(model, enc, pad_id=pad_id_of(tok), batch_size=4, policy=pol, tokenizer=tok)
    for r, (e, s) in enumerate(zip(enc, scores)):
        n = len(e)
        lg = want[r, :n - 1]
        lsm = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
        tgt = np.asarray(e.labels[1:])
        m = tgt != -100
        np.testing.assert_allclose(s.logp, lsm[np.arange(n - 1)[m], tgt[m]], atol=1e-4)
    # the assistant changes something (a test that could fail): θ_o's own scores differ
    plain = score_encoded(model, enc, pad_id=pad_id_of(tok), batch_size=4)
    assert any(not np.allclose(a.logp, b.logp) for a, b in zip(plain, scores))


def test_decoding_applies_the_same_rule_each_step(fitted):
    """Greedy decoding with the policy equals a step-by-step reference decoder that recomputes both models on the
    whole (left-padded) sequence and applies the rule — so the KV-cached assistant and the padding are right."""
    model, pol = fitted
    tok = world.tokenizer()
    t = world.task("qa")
    prompts = [t.forget[0].question, t.eval_sets["skill:arithmetic"][0].question]
    got = generate_ids(model, tok, prompts, "qa", max_new_tokens=6, batch_size=2, policy=pol)
    eos = tok.eos_token_id
    for p, ids in zip(prompts, got):
        seq = list(encode_prompt(tok, p, "qa"))
        out: list[int] = []
        for _ in range(6):
            x = torch.tensor([seq])
            b = {"input_ids": x, "attention_mask": torch.ones_like(x)}
            with torch.no_grad():
                z = expected(forward_logits(model, b)[:, -1].numpy(), forward_logits(pol.assistant, b)[:, -1].numpy(),
                             pol.weight, pol.tau)
            nxt = int(np.argmax(z[0]))
            if nxt == eos:
                break
            out.append(nxt)
            seq.append(nxt)
        assert ids == out


def test_policy_round_trips_through_its_saved_form(fitted):
    model, pol = fitted
    back = policy_from_saved("uld", pol.config(), pol.tensors())
    tok = world.tokenizer()
    enc = [encode_qa(tok, it.question, it.answer, "qa", world.MAX_LEN) for it in list(world.task("qa").forget)[:2]]
    batch = collate(enc, pad_id_of(tok))
    with torch.no_grad():
        z = forward_logits(model, batch)
    assert torch.equal(pol.score_logits(batch, z), back.score_logits(batch, z))
    assert back.config() == pol.config()


def test_assistant_deeper_than_the_model_is_refused():
    with pytest.raises(MethodError, match="exceeds the model's 2 blocks"):
        world.unlearn("uld", {"num_layers": 3, "epochs": 1})
    with pytest.raises(ConfigError):
        METHODS.build("uld", {"tau": 0.0})
    with pytest.raises(ConfigError):
        METHODS.build("uld", {"weight": -1.0})


def test_assistant_of_a_lora_target_merges_its_adapters():
    """θ_o = base + trained LoRA (the track's hf+lora models): the assistant of full depth computes θ_o itself."""
    from unlearnkit.methods.llm.uld import build_assistant
    from unlearnkit.models.llm import LoraSpec, apply_lora

    m = apply_lora(world.model(), LoraSpec(r=4)).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    tok = world.tokenizer()
    batch = collate([encode_qa(tok, "What is 2 plus 2?", "4", "qa")], pad_id_of(tok))
    a = build_assistant(m, 2)
    with torch.no_grad():
        assert torch.allclose(forward_logits(a, batch), forward_logits(m, batch), atol=1e-4)
    assert len(a.model.layers) == 2 and a.config.num_hidden_layers == 2
    assert len(build_assistant(m, 1).model.layers) == 1

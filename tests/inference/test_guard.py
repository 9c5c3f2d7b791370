"""GUARD (arXiv:2505.13312, choices derived from the paper): a flagged prompt never emits one of its forbidden tokens
(which θ_o, unrestricted, does emit); unflagged prompts decode exactly as θ_o; semantic neighbours are penalised."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import world  # noqa: E402
from unlearnkit.llm.lm import generate_ids  # noqa: E402
from unlearnkit.methods.llm.prompt_gate import prompt_ids  # noqa: E402
from unlearnkit.models.policy import policy_from_saved  # noqa: E402


@pytest.fixture(scope="module")
def guard():
    m, res = world.unlearn("guard", {"gate_features": "lm", "sim_threshold": 0.95})
    return m, res.policy


def test_flagged_prompts_never_emit_a_forbidden_token(guard):
    model, pol = guard
    tok = world.tokenizer()
    t = world.task("qa")
    qs = list(t.forget.questions)
    feats = pol.gate.featurise(model, tok, prompt_ids(tok, qs, "qa"))
    flags = pol.gate.probs_of(feats) > pol.gate.threshold
    forbidden = pol.forbidden_for(feats)
    assert flags.mean() > 0.9
    restricted = generate_ids(model, tok, qs, "qa", max_new_tokens=16, batch_size=32, policy=pol)
    free = generate_ids(model, tok, qs, "qa", max_new_tokens=16, batch_size=32)
    leaked = 0
    for f, fs, r, o in zip(flags, forbidden, restricted, free):
        if f:
            assert not set(r) & fs, "a forbidden token was emitted"
            leaked += bool(set(o) & fs)
    assert leaked >= len(qs) // 2  # θ_o does emit them: the restriction is what removes them


def test_unflagged_prompts_decode_as_theta_o(guard):
    model, pol = guard
    tok = world.tokenizer()
    qs = list(world.task("qa").eval_sets["skill:arithmetic"].questions[:6])
    assert generate_ids(model, tok, qs, "qa", max_new_tokens=10, batch_size=8, policy=pol) == \
        generate_ids(model, tok, qs, "qa", max_new_tokens=10, batch_size=8)
    assert not pol.last_flags.any()


def test_semantic_neighbours_are_penalised_not_banned(guard):
    model, pol = guard
    tok = world.tokenizer()
    q = world.task("qa").forget[0].question
    ids = prompt_ids(tok, [q], "qa")[0]
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
             "labels": torch.full((1, len(ids)), -100)}
    proc = pol.logits_processor(tok)
    with pol.forward_hooks(model, tok, batch):
        pen = pol._penalty[0].clone()
        out = proc(batch["input_ids"], torch.zeros(1, pen.shape[0]))
    fs = pol.last_forbidden[0]
    assert fs and all(torch.isinf(out[0, t]) for t in fs)
    emb = model.get_input_embeddings().weight.detach()
    en = emb / emb.norm(dim=1, keepdim=True)
    near = (en[sorted(fs)] @ en.T).max(0).values >= pol.sim_threshold
    for t in torch.nonzero(near).flatten().tolist():
        if t not in fs and t not in pol.special:
            assert out[0, t] == -pol.sim_penalty
    assert pol._penalty is None  # cleared on exit


def test_round_trip(guard):
    _, pol = guard
    back = policy_from_saved("guard", pol.config(), pol.tensors())
    assert back.config() == pol.config()
    assert back.forbidden == pol.forbidden

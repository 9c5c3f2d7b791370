"""ECO (arXiv:2406.07933): prompts the classifier does not flag are computed bit for bit as θ_o computes them, in
scoring and generation; flagged prompts get noise on the selected (subject) tokens only, reproducibly; the σ search
moves the forget likelihood toward its target; a threshold outside (0, 1) is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import world  # noqa: E402
from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.llm.lm import _policy_logits, forward_logits, generate, generate_ids  # noqa: E402
from unlearnkit.llm.tokenize import collate, encode_qa, pad_id_of  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.methods.llm.eco import match_positions  # noqa: E402


@pytest.fixture(scope="module")
def eco():
    m, res = world.unlearn("eco", {"sigma": 5.0, "gate_features": "lm", "threshold": 0.5})
    return m, res.policy, res.notes


def _batch(items):
    tok = world.tokenizer()
    enc = [encode_qa(tok, it.question, it.answer, "qa", world.MAX_LEN) for it in items]
    return enc, collate(enc, pad_id_of(tok))


def test_unflagged_prompts_are_bit_identical_in_scoring(eco):
    model, pol, _ = eco
    t = world.task("qa")
    items = list(t.forget)[:4] + list(t.eval_sets["skill:code"])[:3] + list(t.eval_sets["skill:arithmetic"])[:3]
    _, batch = _batch(items)
    with torch.no_grad():
        plain = forward_logits(model, batch)
        with_p = _policy_logits(model, batch, pol, world.tokenizer())
    flags = pol.last_flags
    assert flags[:4].all() and not flags[4:].any()  # the gate separates the skills
    for r in range(len(items)):
        if flags[r]:
            assert not torch.equal(with_p[r], plain[r])
        else:
            assert torch.equal(with_p[r], plain[r])  # bit for bit


def test_unflagged_prompts_generate_exactly_as_theta_o(eco):
    model, pol, _ = eco
    t = world.task("qa")
    qs = list(t.eval_sets["skill:code"].questions[:4]) + list(t.forget.questions[:2])
    tok = world.tokenizer()
    a = generate_ids(model, tok, qs, "qa", max_new_tokens=12, batch_size=8, policy=pol)
    b = generate_ids(model, tok, qs, "qa", max_new_tokens=12, batch_size=8)
    assert a[:4] == b[:4]
    assert a[4:] != b[4:]  # the flagged forget prompts change


def test_noise_lands_on_subject_tokens_only_and_is_reproducible(eco):
    model, pol, _ = eco
    t = world.task("qa")
    items = list(t.forget)[:2]
    enc, batch = _batch(items)
    emb = model.get_input_embeddings()
    seen = []
    h = emb.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            forward_logits(model, batch)
            with pol.forward_hooks(model, world.tokenizer(), batch):
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        h.remove()
    clean = seen[0]
    plain = emb(batch["input_ids"]).detach()
    with torch.no_grad():
        with pol.forward_hooks(model, world.tokenizer(), batch):
            after = []
            h2 = emb.register_forward_hook(lambda m, i, o: after.append(o.detach().clone()))
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            h2.remove()
    changed = (after[0] != plain).any(-1)
    for r, e in enumerate(enc):
        want = set(match_positions(list(e.input_ids), pol.patterns))
        assert want, "a forget item mentions its subject"
        assert set(torch.nonzero(changed[r]).flatten().tolist()) == want
    assert torch.equal(clean, plain)
    # the same prompt in another batch gets the same noise on its prompt tokens
    _, single = _batch(items[:1])
    with torch.no_grad():
        a = _policy_logits(model, single, pol, world.tokenizer())
        b = _policy_logits(model, batch, pol, world.tokenizer())
    n = int(single["attention_mask"].sum())
    assert torch.allclose(a[0, :n], b[0, :n], atol=1e-4)


def test_sigma_search_moves_forget_likelihood_toward_its_target():
    _, res = world.unlearn("eco", {"gate_features": "lm", "threshold": 0.5, "search_steps": 4})
    s = res.notes["search"]
    assert res.notes["sigma"] > 0
    assert abs(s["final_mean_logprob"] - s["target_mean_logprob"]) < abs(
        s["theta_o_mean_logprob"] - s["target_mean_logprob"])


def test_generation_with_the_policy_through_generate(eco):
    model, pol, notes = eco
    assert notes["gate_fnr"] == 0.0 and notes["gate_fpr"] == 0.0
    out = generate(model, world.tokenizer(), [world.task("qa").forget[0].question], "qa", max_new_tokens=8,
                   policy=pol)
    assert isinstance(out[0], str)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5])
def test_threshold_outside_the_unit_interval_is_refused(bad):
    with pytest.raises(ConfigError):
        METHODS.build("eco", {"threshold": bad})
    with pytest.raises(ConfigError):
        METHODS.build("guard", {"threshold": bad})
    from unlearnkit.methods.llm.prompt_gate import check_threshold

    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        check_threshold(bad)


def test_subject_tokens_required_for_subject_mode():
    from dataclasses import replace

    from unlearnkit.data.text.qa import QASet
    from unlearnkit.errors import MethodError

    t = world.task("qa")
    forget = QASet("forget", [replace(it, subject=None) for it in t.forget], "test")
    with pytest.raises(MethodError, match="all_but_last"):
        METHODS.build("eco", {"sigma": 1.0, "gate_features": "lm"}).unlearn(
            world.model(), forget, t.retain, world.engine(), world.context())


def test_match_positions_golden():
    assert match_positions([5, 1, 2, 3, 1, 2], [[1, 2]]) == [1, 2, 4, 5]
    assert match_positions([1, 2, 3], [[2, 3, 4]]) == []
    assert np.array_equal(match_positions([7, 7], [[7]]), [0, 1])

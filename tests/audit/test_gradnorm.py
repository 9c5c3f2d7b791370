"""GradNorm MIA: scores equal an independent backward-pass computation, the model is left untouched (no .grad,
requires_grad flags restored), the mia_text option adds the attack, a bad norm is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit_fixtures import cf, make_ctx
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.llm.lm import mean_token_nll
from unlearnkit.llm.tokenize import collate, encode_qa, pad_id_of
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.mia_text import grad_norm_scores


def test_scores_match_a_manual_backward_and_leave_the_model_alone(theta_o):
    tok = cf.tokenizer()
    items = list(cf.task().forget)[:3]
    enc = [encode_qa(tok, it.question, it.answer, "qa") for it in items]
    theta_o.model.embed_tokens.weight.requires_grad_(False)  # a frozen tensor must come back frozen
    flags = {n: p.requires_grad for n, p in theta_o.named_parameters()}
    got = grad_norm_scores(theta_o, enc, pad_id_of(tok), p=2)
    assert {n: p.requires_grad for n, p in theta_o.named_parameters()} == flags
    assert all(p.grad is None for p in theta_o.parameters())
    ref = cf.trained_model()
    ref.eval()
    want = []
    for e in enc:
        ref.zero_grad(set_to_none=True)
        mean_token_nll(ref, collate([e], pad_id_of(tok))).sum().backward()
        want.append(-float(torch.stack([q.grad.double().norm() for q in ref.parameters()
                                        if q.grad is not None]).mean()))
    assert got == pytest.approx(np.array(want), rel=1e-6)
    assert (got < 0).all()
    with pytest.raises(DataError, match="p must be"):
        grad_norm_scores(theta_o, enc, pad_id_of(tok), p=3)


def test_mia_text_option_adds_the_attack(theta_o):
    from unlearnkit.bench.tracks.llm import _holdout_split

    ctx = make_ctx(theta_o, oracle=cf.tiny_model(3), task=_holdout_split(cf.task(), 1))
    out = METRICS.build("mia_text", {"grad_norm": True}).compute(ctx)
    assert "mia.grad_norm.auc" in out.values and 0 <= out.values["mia.grad_norm.auc"] <= 1
    assert out.per_sample["mia.grad_norm.forget"].shape == (len(ctx.eval_set("forget")),)
    plain = METRICS.build("mia_text", {}).compute(ctx)
    assert "mia.grad_norm.auc" not in plain.values
    with pytest.raises(ConfigError):
        METRICS.validate_config("mia_text", {"grad_norm": True, "grad_norm_p": 3})

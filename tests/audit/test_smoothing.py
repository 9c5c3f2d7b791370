"""Smoothness options of the LLM loop (arXiv:2502.05374): SAM / GNP / weight averaging against hand-computed steps
on a quadratic, RS → the plain step as σ → 0, invariance to micro-batching (the one-process face of C15), the
default path unchanged, and the refused combinations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audit_fixtures import cf
from unlearnkit.errors import ConfigError
from unlearnkit.llm.lm import LMTrainConfig, SmoothingConfig, optimize

A = torch.tensor([1.0, -2.0, 0.5])
B = torch.tensor([0.5, 0.5, 0.5])


class Quad(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64))


def _parts(rows: int):
    """forget f(w) = Σ_i ½‖w − a‖² (one per example), retain r(w) = Σ_i ½‖w − b‖²."""
    def part(m, pos, gpos, epoch, which):
        t = A if which == "forget" else B
        return 0.5 * ((m.w - t.double()) ** 2).sum() * len(pos)

    def micro(m, pos, gpos, epoch):
        return part(m, pos, gpos, epoch, "forget") + part(m, pos, gpos, epoch, "retain")

    return micro, part


def _run(smoothing=None, *, n=4, batch_size=4, grad_accum=1, epochs=1, lr=0.1):
    m = Quad()
    micro, part = _parts(n)
    rec = LMTrainConfig(epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, optimizer="sgd",
                        scheduler="none", warmup_ratio=0.0, smoothing=smoothing)
    optimize(m, n_items=n, micro_loss=micro, recipe=rec, engine=cf.engine(), seed=0, micro_parts=part,
             check_grads=False)
    return m.w.detach().clone()


def test_sam_step_golden():
    w0, a, b, rho, lr = torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64), A.double(), B.double(), 0.2, 0.1
    g0 = w0 - a  # window mean of the forget gradient
    eps = rho * g0 / g0.norm()
    want = w0 - lr * ((w0 + eps - a) + (w0 - b))
    assert torch.allclose(_run(SmoothingConfig(kind="sam", rho=rho)), want, atol=1e-12)
    plain = w0 - lr * ((w0 - a) + (w0 - b))
    assert torch.allclose(_run(None), plain, atol=1e-12)


def test_gnp_step_golden():
    w0, a, b, rho, lam, lr = torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64), A.double(), B.double(), 0.2, \
        0.05, 0.1
    g0 = w0 - a
    g1 = w0 + rho * g0 / g0.norm() - a
    alpha = lam / rho
    want = w0 - lr * ((1 - alpha) * g0 + alpha * g1 + (w0 - b))
    assert torch.allclose(_run(SmoothingConfig(kind="gnp", rho=rho, lam=lam)), want, atol=1e-12)


def test_rs_tends_to_the_plain_step_and_is_seeded():
    plain = _run(None)
    tiny = _run(SmoothingConfig(kind="rs", sigma=1e-9, samples=3))
    assert torch.allclose(tiny, plain, atol=1e-7)
    big_a, big_b = _run(SmoothingConfig(kind="rs", sigma=0.5)), _run(SmoothingConfig(kind="rs", sigma=0.5))
    assert torch.equal(big_a, big_b)  # the noise is a function of (seed, step, draw)
    assert not torch.allclose(big_a, plain, atol=1e-3)  # one draw of σ = 0.5 moves the forget gradient


def test_uniform_weight_averaging_golden():
    lr = 0.1
    w = torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64)
    iterates = []
    for _ in range(2):  # two windows of 2 examples
        w = w - lr * ((w - A.double()) + (w - B.double()))
        iterates.append(w)
    got = _run(SmoothingConfig(averaging="uniform"), batch_size=2, lr=lr)
    assert torch.allclose(got, (iterates[0] + iterates[1]) / 2, atol=1e-12)
    ema = _run(SmoothingConfig(averaging="ema", ema_decay=0.5), batch_size=2, lr=lr)
    assert torch.allclose(ema, 0.5 * iterates[0] + 0.5 * iterates[1], atol=1e-12)


def test_sam_on_an_lm_does_not_depend_on_micro_batching():
    """The window's SAM gradient is the same however the window is cut into micro-batches (SGD, so the weights show
    the gradients; AdamW's g / (√v + ε) magnifies float round-off on coordinates with gradients near ε)."""
    from unlearnkit.methods import METHODS
    from unlearnkit.methods.llm import LLMContext

    task, tok = cf.task(), cf.tokenizer()
    out = []
    for bs, ga in ((4, 1), (2, 2), (1, 4)):
        m = cf.trained_model()
        METHODS.build("npo", {"epochs": 1, "batch_size": bs, "grad_accum": ga, "lr": 1e-2, "optimizer": "sgd",
                              "smoothing": {"kind": "sam", "rho": 0.5}}).unlearn(
            m, task.forget, task.retain, cf.engine(), LLMContext(seed=0, tokenizer=tok, fmt="qa"))
        out.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    for other in out[1:]:
        for k in out[0]:
            assert torch.allclose(out[0][k], other[k], atol=1e-6), k


def test_no_smoothing_is_the_plain_loop_bit_for_bit():
    from unlearnkit.methods import METHODS
    from unlearnkit.methods.llm import LLMContext

    task, tok = cf.task(), cf.tokenizer()
    res = []
    for extra in ({}, {"smoothing": {"kind": "none"}}):
        m = cf.trained_model()
        METHODS.build("npo", {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3, **extra}).unlearn(
            m, task.forget, task.retain, cf.engine(), LLMContext(seed=0, tokenizer=tok, fmt="qa"))
        res.append(m.state_dict())
    for k in res[0]:
        assert torch.equal(res[0][k], res[1][k]), k


def test_refused_combinations():
    with pytest.raises(ValueError, match="lam ≤ rho"):
        SmoothingConfig(kind="gnp", rho=0.01, lam=0.1)
    with pytest.raises(ValueError, match="fp16"):
        LMTrainConfig(mixed_precision="fp16", smoothing={"kind": "sam"})
    with pytest.raises(ValueError, match="sharding"):
        LMTrainConfig(sharding={"fsdp": {"fsdp_version": 2}}, smoothing={"averaging": "ema"})
    from unlearnkit.methods import METHODS

    with pytest.raises(ConfigError):
        METHODS.validate_config("npo", {"smoothing": {"kind": "sharp"}})
    assert LMTrainConfig(smoothing={"kind": "none"}).smoothing.active is False
    _ = np

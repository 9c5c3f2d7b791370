"""Quantization attack: round-to-nearest goldens and error bound, 16 bits changes (almost) nothing, unsupported bit
widths are clear errors, the evaluated model is untouched."""

from __future__ import annotations

import pytest
import torch

from audit_fixtures import make_ctx
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import METRICS
from unlearnkit.metrics.audit_probes import SUPPORTED_BITS, check_bits, quantize_rtn, quantized_copy


def test_rtn_golden():
    w = torch.tensor([[0.7, -0.33, 0.16, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float32)
    q = quantize_rtn(w, 4)
    assert torch.allclose(q, torch.tensor([[0.7, -0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]]), atol=1e-7)
    # groups of two columns: scales 0.7/7 and 0.16/7
    g = quantize_rtn(w[:1], 4, group_size=2)
    assert torch.allclose(g, torch.tensor([[0.7, -0.3, 0.16, 0.0]]), atol=1e-7)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_rtn_error_is_at_most_half_a_step(bits):
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    q = quantize_rtn(w, bits)
    step = w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
    assert ((q - w).abs() <= step / 2 + 1e-12).all()
    assert len(torch.unique(q[0])) <= 2 ** bits - 1


def test_sixteen_bits_changes_nothing_measurable(theta_o):
    before = {k: v.clone() for k, v in theta_o.state_dict().items()}
    q, n = quantized_copy(theta_o, 16)
    assert n > 0
    for (name, a), b in zip(q.state_dict().items(), before.values()):
        assert (a - b).abs().max() <= b.abs().max() / (2 * 32767) + 1e-12, name
    out = METRICS.build("quantization", {"bits": [16, 4]}).compute(make_ctx(theta_o)).values
    assert out["quant.prob@16bit"] == pytest.approx(out["quant.base_prob"], abs=1e-4)
    assert abs(out["quant.shift@4bit"]) > abs(out["quant.shift@16bit"])
    for k, v in theta_o.state_dict().items():  # the metric quantized copies only
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("bits", [1, 9, 32, 0, 4.5, True])
def test_unsupported_bit_widths_are_clear_errors(bits):
    with pytest.raises(ConfigError, match="not supported"):
        check_bits(bits)
    with pytest.raises(ConfigError):
        METRICS.validate_config("quantization", {"bits": [bits]})
    assert 4 in SUPPORTED_BITS and 16 in SUPPORTED_BITS


def test_bad_group_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="group_size"):
        quantize_rtn(torch.ones(2, 6), 4, group_size=4)

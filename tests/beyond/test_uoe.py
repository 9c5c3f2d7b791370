"""UOE on a tiny MoE (issue 18): only the chosen expert and its router move, the affinity and anchor loss match
independent computations, dense models are refused; the MoE metrics' golden values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from unlearnkit.errors import ConfigError, MethodError  # noqa: E402
from unlearnkit.llm.lm import encode_pairs  # noqa: E402
from unlearnkit.llm.tokenize import pad_id_of  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.methods.llm import LLMContext  # noqa: E402
from unlearnkit.methods.llm.uoe import anchor_loss, expert_affinity  # noqa: E402
from unlearnkit.metrics.moe import params_changed_share, topk_sets, total_variation, utilisation_entropy  # noqa: E402
from unlearnkit.models.moe import moe_layers  # noqa: E402

from beyond_fixtures import engine, moe_model, state, task, tokenizer  # noqa: E402


def _run_uoe(model, **params):
    cfg = {"epochs": 2, "batch_size": 4, "grad_accum": 1, "lr": 5e-3, **params}
    method = METHODS.build("uoe", cfg)
    ctx = LLMContext(seed=0, tokenizer=tokenizer(), fmt="qa", max_len=64)
    return method.unlearn(model, task().forget, task().retain, engine(), ctx)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
@pytest.mark.parametrize("base", ["ga", "npo"])
def test_uoe_updates_only_the_chosen_expert_and_its_router(arch, base):
    model = moe_model(arch)
    before = state(model)
    out = _run_uoe(model, base=base, retain_loss="kl" if base == "npo" else "none")
    li, ei = out.notes["uoe_layer"], out.notes["uoe_expert"]
    block = moe_layers(out.model)[li].name
    after = state(out.model)
    moved = []
    for k, v in before.items():
        if k == f"{block}.gate.weight":
            assert not torch.equal(v, after[k]), "the router of the chosen block must move"
            moved.append(k)
        elif k in (f"{block}.experts.gate_up_proj", f"{block}.experts.down_proj"):
            others = [e for e in range(v.shape[0]) if e != ei]
            assert torch.equal(v[others], after[k][others]), f"{k}: another expert's slice changed"
            assert not torch.equal(v[ei], after[k][ei]), f"{k}: the chosen expert did not move"
            moved.append(k)
        else:
            assert torch.equal(v, after[k]), f"{k} changed, but UOE freezes everything but one expert and its router"
    assert len(moved) == 3
    # the share of updated elements the method reports is what actually changed
    changed = sum(int((before[k] != after[k]).sum()) for k in before) / sum(v.numel() for v in before.values())
    assert changed <= out.notes["params_updated_share"] + 1e-12
    assert all(p.requires_grad for p in out.model.parameters()), "requires_grad flags must be restored"


def test_expert_affinity_matches_the_models_own_router_logits():
    """expert_affinity (forward hooks) against transformers' own output_router_logits path."""
    model = moe_model("mixtral")
    tok = tokenizer()
    enc = encode_pairs(tok, task().forget.pairs(), "qa", 64)
    aff = expert_affinity(model, enc, pad_id_of(tok), engine(), batch_size=5)
    from unlearnkit.llm.tokenize import collate

    sums = np.zeros_like(aff)
    count = 0
    with torch.no_grad():
        for e in enc:  # one example at a time: no padding at all
            b = collate([e], pad_id_of(tok))
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_router_logits=True)
            for layer, logits in enumerate(out.router_logits):
                sums[layer] += torch.softmax(logits.double(), -1).sum(0).numpy()
            count += len(e)
    np.testing.assert_allclose(aff, sums / count, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(aff.sum(1), 1.0, atol=1e-9)


def test_anchor_loss_golden():
    # 1 example, 2 tokens (second one padding), 3 experts; softmax(0, ln 2, 0) = (0.25, 0.5, 0.25)
    logits = torch.tensor([[0.0, float(np.log(2.0)), 0.0], [5.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 0]])
    got = anchor_loss(logits, mask, expert=1)
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(0.25**2 + 0.5**2 + 0.25**2)
    assert float(anchor_loss(torch.tensor([[-50.0, 50.0, -50.0]]), torch.tensor([[1]]), 1)[0]) == pytest.approx(0.0)


def test_uoe_refuses_a_dense_model():
    from unlearnkit.models.llm import build_tiny_llama

    dense = build_tiny_llama(tokenizer(), hidden_size=16, layers=1, heads=2, max_len=96, seed=0)
    method = METHODS.build("uoe", {"epochs": 1, "batch_size": 4, "grad_accum": 1})
    ctx = LLMContext(seed=0, tokenizer=tokenizer(), fmt="qa", max_len=64)
    with pytest.raises(MethodError, match="mixture-of-experts"):
        method.unlearn(dense, task().forget, task().retain, engine(), ctx)


def test_track_refuses_uoe_on_a_dense_model_before_training():
    from unlearnkit.bench.resolve import resolve
    from unlearnkit.bench.runner import Runner

    cfg = resolve({"track": "llm", "llm": {"model": {"kind": "tiny"}}, "methods": ["uoe"], "metrics": ["tofu"],
                   "output_dir": "/tmp/unused-uoe-dense"})
    r = Runner(cfg)
    op = next(o for o in r.plan[0].ops if type(o).__name__ == "Forget")
    with pytest.raises(ConfigError, match="dense model"):
        r.track.check_method(METHODS.build("uoe", {}), "uoe", op.task)


def test_uoe_refuses_weight_decay_and_a_missing_layer():
    with pytest.raises(ConfigError, match="weight_decay"):
        METHODS.build("uoe", {"weight_decay": 0.01})
    method = METHODS.build("uoe", {"layer": 7, "epochs": 1, "batch_size": 4, "grad_accum": 1})
    ctx = LLMContext(seed=0, tokenizer=tokenizer(), fmt="qa", max_len=64)
    with pytest.raises(MethodError, match="routed blocks"):
        method.unlearn(moe_model(), task().forget, task().retain, engine(), ctx)


# -- the moe metric's pieces: golden values ---------------------------------------------------------------------------
def test_total_variation_and_topk_golden():
    p = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    q = np.array([[0.2, 0.3, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(total_variation(p, q), [0.3, 0.0])
    np.testing.assert_array_equal(topk_sets(p, 2), [[True, True, False, False], [True, True, False, False]])


def test_utilisation_entropy_golden():
    uniform = np.tile(np.eye(4), (5, 1)) * 0.7 + 0.1  # each expert is the top-1 of a quarter of the tokens
    assert utilisation_entropy(uniform, 1) == pytest.approx(1.0)
    one = np.tile([[0.7, 0.1, 0.1, 0.1]], (10, 1))
    assert utilisation_entropy(one, 1) == pytest.approx(0.0)
    # top-2 of [0.4, 0.3, 0.2, 0.1] always {0, 1}: two experts share the slots equally → ln 2 / ln 4 = 0.5
    assert utilisation_entropy(np.tile([[0.4, 0.3, 0.2, 0.1]], (6, 1)), 2) == pytest.approx(0.5)


def test_params_changed_share_counts_elements():
    a = moe_model()
    b = moe_model()
    with torch.no_grad():
        w = dict(b.named_parameters())["model.layers.0.mlp.gate.weight"]
        w[0, :3] += 1.0
    total = sum(p.numel() for p in a.parameters())
    assert params_changed_share(b, a) == pytest.approx(3 / total)
    assert params_changed_share(a, a) == 0.0


def test_moe_metric_refuses_a_dense_model():
    from unlearnkit.metrics.llm_context import LLMEvalContext
    from unlearnkit.metrics.moe import MoEMetric
    from unlearnkit.models.llm import build_tiny_llama

    dense = build_tiny_llama(tokenizer(), hidden_size=16, layers=1, heads=2, max_len=96, seed=0)
    ctx = LLMEvalContext(dense, tokenizer(), task(), engine(), references={"original_model": dense})
    with pytest.raises(ConfigError, match="metric 'moe' needs a mixture-of-experts model"):
        MoEMetric().compute(ctx)


def test_moe_metric_on_an_unchanged_model_reads_zero_shift():
    from unlearnkit.metrics.llm_context import LLMEvalContext, LLMEvalSettings
    from unlearnkit.metrics.moe import MoEMetric

    m = moe_model()
    ctx = LLMEvalContext(m, tokenizer(), task(), engine(), references={"original_model": moe_model()},
                         settings=LLMEvalSettings(max_items=5))
    v = MoEMetric().compute(ctx).values
    assert v["moe.routing_shift"] == 0.0 and v["moe.topk_changed_forget"] == 0.0 and v["moe.params_updated"] == 0.0
    assert 0.0 < v["moe.util_entropy"] <= 1.0

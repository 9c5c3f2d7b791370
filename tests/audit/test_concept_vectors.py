"""Concept vectors: logit-lens and Jaccard goldens; θ_o scores 1 / 1 / 0; a concept vector ablated by hand drops
its Jaccard to the ablation value, and Needle does the same; a model without down_proj is a clear error."""

from __future__ import annotations

import copy

import pytest
import torch

from audit_fixtures import cf, make_ctx
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS
from unlearnkit.methods.llm import LLMContext
from unlearnkit.methods.llm.needle import (
    ablation_vector,
    concept_tokens,
    down_proj_weights,
    find_concept_vectors,
    jaccard,
    logit_lens_topk,
    subject_texts,
)
from unlearnkit.metrics import METRICS

PARAMS = {"per_concept": 3, "top_k": 10}


def test_goldens():
    E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    assert logit_lens_topk(E, torch.tensor([[1.0], [0.2]]), 2).tolist() == [[2, 0]]
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert jaccard([], []) == 1.0
    v = torch.tensor([3.0, 4.0])
    a = ablation_vector(v, (0, 1, 2))
    assert a.norm().item() == pytest.approx(5.0) and torch.equal(a, ablation_vector(v, (0, 1, 2)))


def test_concept_tokens_are_specific():
    tok = cf.tokenizer()
    t = concept_tokens(tok, ["Zorblax Quimby wrote books", "Zorblax Quimby lives far"], ["wrote books", "lives"])
    words = {tok.decode([i]).strip() for i in t}
    assert "books" not in words and any(w and w in "Zorblax Quimby" for w in words)


def test_theta_o_is_intact_and_hand_ablation_hits_the_ablation_value(theta_o):
    out = METRICS.build("concept_vectors", PARAMS).compute(make_ctx(theta_o, original=theta_o)).values
    assert (out["cv.jaccard"], out["cv.cosine"], out["cv.l2"]) == (pytest.approx(1.0), pytest.approx(1.0), 0.0)
    task = cf.task()
    concepts, others = subject_texts(task.forget, task.retain)
    vecs = find_concept_vectors(theta_o, cf.tokenizer(), concepts, others, top_k=10, per_concept=3)
    assert len(vecs) == out["cv.n_vectors"] == 3
    ablated = copy.deepcopy(theta_o)
    blocks = ablated.model.layers
    with torch.no_grad():
        for v in vecs:
            w = blocks[v.layer].mlp.down_proj.weight
            w[:, v.index] = ablation_vector(w[:, v.index].clone(), (0, v.layer, v.index))
    res = METRICS.build("concept_vectors", PARAMS).compute(make_ctx(ablated, original=theta_o)).values
    assert res["cv.jaccard"] == pytest.approx(out["cv.jaccard_ablated"], abs=1e-12)
    assert res["cv.jaccard_ablated"] == out["cv.jaccard_ablated"]
    assert res["cv.jaccard"] < 0.5 and abs(res["cv.cosine"]) < 0.9


def test_needle_ablates_the_same_vectors(theta_o):
    task = cf.task()
    m = copy.deepcopy(theta_o)
    res = METHODS.build("needle", {"per_concept": 3, "top_k": 10}).unlearn(
        m, task.forget, task.retain, cf.engine(), LLMContext(seed=0, tokenizer=cf.tokenizer(), fmt="qa"))
    assert res.steps == 0 and len(res.notes["vectors"]) == 3
    out = METRICS.build("concept_vectors", PARAMS).compute(make_ctx(m, original=theta_o)).values
    assert out["cv.jaccard"] == pytest.approx(out["cv.jaccard_ablated"], abs=1e-12)
    # only those columns changed
    changed = {(v["layer"], v["index"]) for v in res.notes["vectors"]}
    for layer, w in down_proj_weights(m).items():
        w0 = down_proj_weights(theta_o)[layer]
        diff = (w - w0).abs().sum(0).nonzero().flatten().tolist()
        assert {(layer, j) for j in diff} <= changed


def test_a_model_without_down_proj_is_a_clear_error():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = torch.nn.Module()

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.layers = torch.nn.ModuleList([Block()])

    with pytest.raises(MethodError, match="down_proj"):
        down_proj_weights(Fake())

"""Concept-based class unlearning (Chang et al. 2024): the concept step on a constructed case, integrated gradients'
completeness, and the poisoning on a real class-unlearning task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.methods.classifier.concept_poison import (
    ConceptBottleneck,
    class_concepts,
    concept_bank,
    fit_bottleneck,
    integrated_gradients,
)


def constructed(n_per=60, seed=0):
    """Three classes in a 6-d feature space: class c expresses concepts 2c and 2c+1 (score ≈ 3), others ≈ 0."""
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for c in range(3):
        x = rng.normal(0, 0.3, size=(n_per, 6))
        x[:, 2 * c] += 3.0
        x[:, 2 * c + 1] += 3.0
        feats.append(x)
        labels += [c] * n_per
    return torch.as_tensor(np.concatenate(feats)), np.asarray(labels)


@pytest.mark.parametrize("target", [0, 1, 2])
def test_the_concept_step_picks_the_concepts_of_the_target_class(target):
    feats, labels = constructed()
    bn = ConceptBottleneck(torch.eye(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64),
                           torch.zeros(0), torch.zeros(0))
    scores = bn.scores(feats)
    bn.weight, bn.bias = fit_bottleneck(scores, labels, 3, l1=1e-3, steps=300, seed=0)
    chosen, attr = class_concepts(bn, scores, labels, target, top_k=2)
    assert set(chosen.tolist()) == {2 * target, 2 * target + 1}
    others = [k for k in range(6) if k not in (2 * target, 2 * target + 1)]
    assert attr[2 * target] > 0 and attr[2 * target + 1] > 0
    assert max(attr[others]) < min(attr[2 * target], attr[2 * target + 1])


def test_top_k_keeps_only_positive_attributions():
    feats, labels = constructed()
    bn = ConceptBottleneck(torch.eye(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64),
                           torch.zeros(0), torch.zeros(0))
    scores = bn.scores(feats)
    bn.weight, bn.bias = fit_bottleneck(scores, labels, 3, l1=1e-3, steps=300, seed=0)
    chosen, attr = class_concepts(bn, scores, labels, 0, top_k=6)
    assert (attr[chosen] > 0).all() and len(chosen) < 6


def test_integrated_gradients_linear_and_completeness():
    w = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]], dtype=torch.float64)
    base = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    lin = integrated_gradients(lambda c: c @ w, x, base, steps=4)
    assert torch.allclose(lin, (x - base) * w)  # exact for a linear function
    f = lambda c: (c ** 2).sum(1) + torch.sin(c[:, 0])  # noqa: E731
    attr = integrated_gradients(f, x, base, steps=2000)
    assert torch.allclose(attr.sum(1), f(x) - f(base[None]), atol=2e-2)


def test_concept_bank_recovers_cluster_directions():
    feats, labels = constructed(seed=1)
    concepts, mu = concept_bank(feats, 3, seed=0)
    # each class mean direction (minus the global mean) is one of the concept vectors
    for c in range(3):
        d = torch.nn.functional.normalize(feats[torch.as_tensor(labels == c)].mean(0) - mu, dim=0)
        assert float((concepts @ d).max()) > 0.99


def test_concept_poison_relabels_the_class_away(engine):
    from unlearnkit.config.schema import DataConfig, ScenarioConfig, TrainConfig
    from unlearnkit.data.scenarios import build_task, load_data
    from unlearnkit.methods import METHODS, UnlearnContext
    from unlearnkit.models import build_model
    from unlearnkit.config.schema import ModelSpec

    task = build_task(load_data(DataConfig(name="digits", train_subset=500, test_subset=200)),
                      ScenarioConfig(kind="class", classes=[3]))
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="mlp", params={"hidden": [64]}), task.train.input_shape, 10, seed=0)
    engine.fit(model, task.train, TrainConfig(epochs=20, batch_size=32, lr=0.05, scheduler="none"), seed=0)
    assert engine.predict(model, task.forget).accuracy() > 90
    res = METHODS.build("concept_poison", {"epochs": 10, "batch_size": 32, "n_concepts": 12}).unlearn(
        model, task.forget, task.retain, engine, UnlearnContext(seed=0))
    hist = np.asarray(res.notes["label_histogram"])
    assert hist[3] == 0 and res.notes["relabelled"] == len(task.forget)
    assert len(res.notes["concepts"]["3"]) >= 1
    assert engine.predict(res.model, task.forget).accuracy() < 20
    assert engine.predict(res.model, task.retain).accuracy() > 85

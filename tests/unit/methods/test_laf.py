"""LAF: label-free (shuffled labels give bit-identical weights), forget embeddings drift more than retain ones,
the loss terms against hand formulas, optional head-only repair."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.models.parts import find_head, forward_with_features
from unlearnkit.methods.classifier.laf import alignment_loss, bounded_reconstruction_error, vae_loss

CFG = {"epochs": 3, "vae_epochs": 3, "batch_size": 16, "lr": 1e-3, "ra_lr": 1e-3}


def test_bounded_reconstruction_error_by_hand():
    e = torch.zeros(3, 2, dtype=torch.float64)
    rec = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)  # m = 0, 1, 2
    expected = np.exp(0.0) + np.exp(1 / 2) + np.exp(2 / 3)
    assert float(bounded_reconstruction_error(rec, e)) == pytest.approx(expected, rel=1e-12)
    huge = torch.full((1, 2), 1e6, dtype=torch.float64)
    assert float(bounded_reconstruction_error(huge, torch.zeros(1, 2, dtype=torch.float64))) < np.e


def test_alignment_loss_by_hand():
    g = np.random.default_rng(0)
    e_r, t_r, e_f, t_f = (g.normal(size=(n, 4)) for n in (3, 3, 2, 2))

    def one_minus_cos(a, b):
        return 1 - np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    c_r, c_f = one_minus_cos(e_r, t_r), one_minus_cos(e_f, t_f)
    tau = 5.0
    expected = np.sum(np.log(np.exp(c_r) / np.sum(np.exp(c_f / tau))))
    got = alignment_loss(*(torch.tensor(a) for a in (e_r, t_r, e_f, t_f)), tau)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_vae_loss_by_hand():
    rec, e = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    mu, sigma = torch.tensor([[1.0]]), torch.tensor([[1.0]])
    # MSE sum 5; KL = −½(log 1 + 1 − 1 − 1) = 0.5
    assert float(vae_loss(rec, e, mu, sigma, 0.025)) == pytest.approx(5 + 0.025 * 0.5, rel=1e-5)


def _run(model, forget, retain, engine, cfg=CFG, seed=0):
    return METHODS.build("laf", cfg).unlearn(copy.deepcopy(model), forget, retain, engine, UnlearnContext(seed=seed))


def test_label_free_shuffled_labels_give_identical_weights(trained_model, tiny_task, engine):
    a = _run(trained_model, tiny_task.forget, tiny_task.retain, engine)
    g = np.random.default_rng(1)
    f2 = tiny_task.forget.relabel(g.permutation(tiny_task.forget.labels)[::-1].copy())
    r2 = tiny_task.retain.relabel(g.integers(0, 3, size=len(tiny_task.retain)))
    assert not np.array_equal(r2.labels, tiny_task.retain.labels)
    b = _run(trained_model, f2, r2, engine)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.notes == b.notes


def _drift(model, original, data):
    """Mean 1 − cos between the current and the original penultimate features of ``data``."""
    x = data.batch(np.arange(len(data)))[0]
    with torch.no_grad():
        e = forward_with_features(model.eval(), find_head(model)[1], x)[1]
        t = forward_with_features(original.eval(), find_head(original)[1], x)[1]
    return float((1 - nn.functional.cosine_similarity(e, t, dim=1)).mean())


def test_forget_embeddings_move_away_more_than_retain(trained_model, blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    res = _run(trained_model, task.forget, task.retain, engine, {**CFG, "epochs": 5, "lr": 1e-2, "ra_lr": 1e-2})
    d_f, d_r = _drift(res.model, trained_model, task.forget), _drift(res.model, trained_model, task.retain)
    assert d_f > 0.003
    assert d_f > 5 * d_r  # ≈ 19× here
    assert engine.predict(res.model, task.retain).accuracy() > 90.0


def test_steps_and_seen_ids(trained_model, tiny_task, engine):
    res = _run(trained_model, tiny_task.forget, tiny_task.retain, engine)
    pairs = int(np.ceil(min(len(tiny_task.forget), len(tiny_task.retain)) / 16))  # zip of the two loaders
    assert res.steps == res.notes["extractor_steps"] == 3 * pairs * 2  # a UE and an RA step per pair
    assert set(tiny_task.forget.ids.tolist()) <= set(res.seen_ids.tolist())
    assert len(res.notes["ue_loss_per_epoch"]) == 3


def test_optional_repair_moves_only_the_head(trained_model, tiny_task, engine):
    cfg = {**CFG, "batch_size": 15}  # 81 retain samples: 5 × 15 + 6, no 1-sample tail batch
    base = _run(trained_model, tiny_task.forget, tiny_task.retain, engine, cfg)
    rep = _run(trained_model, tiny_task.forget, tiny_task.retain, engine,
               {**cfg, "repair_epochs": 2, "repair_lr": 1e-2})
    sb, sr = base.model.state_dict(), rep.model.state_dict()
    assert torch.equal(sb["0.weight"], sr["0.weight"]) and torch.equal(sb["0.bias"], sr["0.bias"])
    assert not torch.equal(sb["2.weight"], sr["2.weight"])
    assert rep.notes["repair_steps"] == 2 * int(np.ceil(len(tiny_task.retain) / 15))


def test_model_without_linear_head_raises(tiny_task, engine):
    class NoLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 3))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(MethodError, match="nn.Linear"):
        _run(NoLinear(), tiny_task.forget, tiny_task.retain, engine)

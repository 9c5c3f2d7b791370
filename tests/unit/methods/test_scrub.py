"""SCRUB: the τ²-scaled distillation KL, step counts of the max/min schedule, the max-step's effect, lr decay."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import ConfigError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.scrub import distill_kl, lr_at_epoch, max_pass


def _np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_distill_kl_matches_hand_formula_with_tau_squared():
    g = np.random.default_rng(0)
    s, t = g.normal(size=(5, 4)) * 3, g.normal(size=(5, 4)) * 3
    for tau in (1.0, 4.0):
        ps, pt = _np_softmax(s / tau), _np_softmax(t / tau)
        expected = tau**2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
        got = float(distill_kl(torch.tensor(s), torch.tensor(t), tau))
        assert got == pytest.approx(expected, rel=1e-10)
    # the τ² factor: at τ = 4 the value is 16 × the plain batch-mean KL of the softened distributions
    plain = float(torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(s) / 4, 1),
                                             torch.softmax(torch.tensor(t) / 4, 1), reduction="batchmean"))
    assert float(distill_kl(torch.tensor(s), torch.tensor(t), 4.0)) == pytest.approx(16 * plain, rel=1e-10)
    assert float(distill_kl(torch.tensor(s), torch.tensor(s), 4.0)) == pytest.approx(0.0, abs=1e-12)


def test_lr_step_decay_like_repdistiller():
    got = [lr_at_epoch(0.1, e, (3, 5, 9), 0.1) for e in (1, 2, 3, 4, 5, 6, 9, 10)]
    assert got == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 1e-4])


@pytest.mark.parametrize("epochs,msteps", [(3, 2), (2, 5), (2, 0)])
def test_runs_configured_number_of_max_and_min_steps(epochs, msteps, trained_model, tiny_task, engine, monkeypatch):
    calls = {"n": 0}
    real_step = torch.optim.SGD.step

    def counting_step(self, *a, **k):
        calls["n"] += 1
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", counting_step)
    # sizes chosen so no epoch ends in a 1-sample batch (the engine folds those into the previous batch)
    cfg = {"epochs": epochs, "msteps": msteps, "batch_size": 32, "forget_batch_size": 5, "lr": 0.01}
    res = METHODS.build("scrub", cfg).unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain,
                                              engine, UnlearnContext(seed=0))
    n_f, n_r = len(tiny_task.forget), len(tiny_task.retain)
    assert (n_f % 5, n_r % 32) == (4, 17)
    exp_max = min(msteps, epochs) * math.ceil(n_f / 5)
    exp_min = epochs * math.ceil(n_r / 32)
    assert (res.notes["max_steps"], res.notes["min_steps"]) == (exp_max, exp_min)
    assert res.steps == calls["n"] == exp_max + exp_min
    forget_seen = set(tiny_task.forget.ids.tolist()) & set(res.seen_ids.tolist())
    assert forget_seen == (set(tiny_task.forget.ids.tolist()) if msteps else set())


def _forget_kl(student, teacher, data, tau):
    x = data.batch(np.arange(len(data)))[0]
    with torch.no_grad():
        return float(distill_kl(student(x), teacher(x), tau))


def test_max_step_increases_forget_kl(trained_model, tiny_task, engine):
    teacher = copy.deepcopy(trained_model).eval()
    student = copy.deepcopy(trained_model)
    with torch.no_grad():  # leave the KL minimum (where its gradient is exactly zero)
        g = torch.Generator().manual_seed(1)
        for p in student.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    before = _forget_kl(student, teacher, tiny_task.forget, 4.0)
    opt = torch.optim.SGD(student.parameters(), lr=0.05)
    n, _ = max_pass(student, teacher, tiny_task.forget, opt, engine, batch_size=5, temperature=4.0,
                    generator=torch.Generator().manual_seed(0))
    after = _forget_kl(student, teacher, tiny_task.forget, 4.0)
    assert n == math.ceil(len(tiny_task.forget) / 5)
    assert before > 0 and after > 2 * before


def test_max_step_at_the_teacher_has_zero_gradient(trained_model, tiny_task, engine):
    teacher = copy.deepcopy(trained_model).eval()
    student = copy.deepcopy(trained_model)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)  # no momentum, no weight decay
    max_pass(student, teacher, tiny_task.forget, opt, engine, batch_size=4, temperature=4.0,
             generator=torch.Generator().manual_seed(0))
    for p, q in zip(student.parameters(), teacher.parameters()):
        assert torch.allclose(p, q, atol=1e-7)


def test_scrub_forgets_a_class_and_keeps_the_rest(trained_model, blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    cfg = {"epochs": 6, "msteps": 3, "lr": 0.03, "batch_size": 16, "forget_batch_size": 8}
    res = METHODS.build("scrub", cfg).unlearn(copy.deepcopy(trained_model), task.forget, task.retain, engine,
                                              UnlearnContext(seed=0))
    assert engine.predict(trained_model, task.forget).accuracy() == 100.0
    assert engine.predict(res.model, task.forget).accuracy() < 50.0
    assert engine.predict(res.model, task.retain).accuracy() > 90.0


def test_scheduler_must_be_none():
    with pytest.raises(ConfigError, match="scheduler"):
        METHODS.build("scrub", {"scheduler": "cosine"})

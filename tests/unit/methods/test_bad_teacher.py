"""Bad Teacher: the KD loss (zero exactly at the mixed target), the seeded incompetent teacher, label-freeness."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from unlearnkit.methods.classifier.bad_teacher import bad_teacher_loss, make_incompetent_teacher


def _logits(seed, shape=(6, 4)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_loss_is_zero_when_student_matches_each_sets_teacher():
    comp, incomp = _logits(0), _logits(1)
    flag = torch.tensor([1, 0, 1, 0, 0, 1])
    student = torch.where(flag.bool().unsqueeze(1), incomp, comp)
    for tau in (1.0, 3.0):
        assert float(bad_teacher_loss(student, comp, incomp, flag, tau)) == pytest.approx(0.0, abs=1e-12)
        # softmax is shift-invariant: adding a per-row constant to the student changes nothing
        shifted = student + torch.arange(6, dtype=torch.float64).unsqueeze(1)
        assert float(bad_teacher_loss(shifted, comp, incomp, flag, tau)) == pytest.approx(0.0, abs=1e-12)
    # the competent teacher's outputs on a forget row are wrong for the student → positive loss
    assert float(bad_teacher_loss(comp, comp, incomp, flag, 1.0)) > 0.01
    assert float(bad_teacher_loss(incomp, comp, incomp, flag, 1.0)) > 0.01


def test_loss_value_against_numpy():
    comp, incomp, stud = _logits(0).numpy(), _logits(1).numpy(), _logits(2).numpy()
    flag = np.array([1, 0, 1, 0, 0, 1])
    tau = 2.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    target = np.where(flag[:, None] == 1, softmax(incomp / tau), softmax(comp / tau))
    kl_rows = np.sum(target * (np.log(target) - np.log(softmax(stud / tau))), axis=1)
    args = (torch.tensor(stud), torch.tensor(comp), torch.tensor(incomp), torch.tensor(flag), tau)
    assert float(bad_teacher_loss(*args)) == pytest.approx(kl_rows.mean(), rel=1e-10)
    # the reference's reduction='mean' also divides by the number of classes (4)
    assert float(bad_teacher_loss(*args, reduction="mean")) == pytest.approx(kl_rows.mean() / 4, rel=1e-10)


def test_incompetent_teacher_is_random_and_seeded(trained_model):
    a = make_incompetent_teacher(trained_model, UnlearnContext(), 7)
    b = make_incompetent_teacher(trained_model, UnlearnContext(), 7)
    c = make_incompetent_teacher(trained_model, UnlearnContext(), 8)
    for (k, va), vb, vc, vo in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(),
                                   trained_model.state_dict().values()):
        assert torch.equal(va, vb), k
        assert not torch.equal(va, vc), k
        assert not torch.equal(va, vo), k
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert all(p.requires_grad for p in trained_model.parameters())  # θ_o itself is untouched


def test_incompetent_teacher_uses_the_model_factory(trained_model):
    from testkit import tiny_model

    seeds = []

    def factory(seed):
        seeds.append(seed)
        return tiny_model(seed)

    t = make_incompetent_teacher(trained_model, UnlearnContext(model_factory=factory), 123)
    assert seeds == [123]
    assert torch.equal(t.state_dict()["0.weight"], tiny_model(123).state_dict()["0.weight"])


def test_module_without_reset_parameters_raises_method_error():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(8, 3))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(MethodError, match="model_factory"):
        make_incompetent_teacher(Odd(), UnlearnContext(), 0)


def test_label_free_and_retain_subset(trained_model, tiny_task, engine):
    method = METHODS.build("bad_teacher", {"epochs": 2, "batch_size": 10, "lr": 1e-3})
    res = method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.retain, engine,
                         UnlearnContext(seed=3))
    g = np.random.default_rng(0)
    shuffled_f = tiny_task.forget.relabel(np.full(len(tiny_task.forget), 2))
    shuffled_r = tiny_task.retain.relabel(g.permutation(tiny_task.retain.labels))
    res2 = method.unlearn(copy.deepcopy(trained_model), shuffled_f, shuffled_r, engine, UnlearnContext(seed=3))
    for (k, v), v2 in zip(res.model.state_dict().items(), res2.model.state_dict().values()):
        assert torch.equal(v, v2), k
    n_sub = int(0.3 * len(tiny_task.retain))
    assert res.notes["retain_subset"] == n_sub
    assert len(res.seen_ids) == len(tiny_task.forget) + n_sub
    assert set(tiny_task.forget.ids.tolist()) <= set(res.seen_ids.tolist())
    assert (len(tiny_task.forget) + n_sub) % 10 == 3  # no 1-sample tail batch (the engine would fold it)
    assert res.steps == 2 * int(np.ceil((len(tiny_task.forget) + n_sub) / 10))


def test_bad_teacher_forgets_a_class(trained_model, blobs, engine):
    task = build_task(blobs, ScenarioConfig(kind="class", classes=[1]))
    res = METHODS.build("bad_teacher", {"epochs": 10, "batch_size": 16, "lr": 1e-2}).unlearn(
        copy.deepcopy(trained_model), task.forget, task.retain, engine, UnlearnContext(seed=0))
    assert engine.predict(res.model, task.forget).accuracy() < 50.0
    assert engine.predict(res.model, task.retain).accuracy() > 90.0

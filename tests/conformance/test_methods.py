"""Conformance suite: every registered method, on a tiny task, in seconds.

Checks: config round-trip and typo rejection; runs and returns a finite model of the same architecture;
deterministic under a seed (bit-identical weights); the forget ids are honoured (the recorded training ids never
include ids outside D, retrain never sees D_f, and a different forget set gives a different model); typed errors for
an empty forget set, a missing retain set and an unknown parameter; +inf inputs stop a method with a typed error
before a weight becomes non-finite (KNOWN_FAULTS C43).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import ScenarioConfig, TrainConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.data.scenarios import build_task
from unlearnkit.errors import ConfigError, DataError, DivergenceError, MethodError
from unlearnkit.methods import METHODS, UnlearnContext
from testkit import make_blobs, tiny_model

# this suite runs classifier methods on a plain model; other tracks (llm, graph, ...) have their own conformance
# tests, and so have methods that declare a setting of their own (``conformance``: ACU's analytic learner, UnCLe's
# hypernetwork), which tests/conformance/test_all_components.py runs through the track
ALL = [n for n in METHODS.names() if getattr(METHODS.get(n), "track", "classifier") == "classifier"
       and not getattr(METHODS.get(n), "conformance", None)]
CTX = UnlearnContext(seed=0, train_recipe=TrainConfig(epochs=2, batch_size=16, lr=0.05, scheduler="none"))


def _needs_images(request) -> bool:
    name = getattr(getattr(request.node, "callspec", None), "params", {}).get("name")
    return bool(name) and bool(getattr(METHODS.get(name), "needs_images", False))


@pytest.fixture
def blobs(request):
    """The blobs; as images (n, 2, 2, 2) for a method that needs image inputs (``needs_images``)."""
    data = make_blobs()
    if not _needs_images(request):
        return data
    src = data.train.source
    img = TensorSource(src.x.reshape(len(src.x), 2, 2, 2), src.y)
    sets = [SampleSet(img, s.positions, s.ids, s.labels, s.num_classes, s.name) for s in (data.train, data.test)]
    return dataclasses.replace(data, train=sets[0], test=sets[1])


@pytest.fixture
def trained_model(request, tiny_task, engine):
    model = tiny_model(0)
    if _needs_images(request):
        model = nn.Sequential(nn.Flatten(), *model)
    engine.fit(model, tiny_task.train, TrainConfig(epochs=15, batch_size=16, lr=0.05, scheduler="none"), seed=0)
    return model


def build(name: str):
    entry = METHODS.entry(name)
    return METHODS.build(name, dict(entry.obj.smoke_params))


def run(name, model, task, engine, ctx=CTX):
    return build(name).unlearn(copy.deepcopy(model), task.forget, task.retain, engine, ctx)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ALL)
def test_config_round_trip_and_typo(name):
    entry = METHODS.entry(name)
    assert entry.config is not None, f"{name} must register a config class"
    cfg = entry.config()
    again = entry.config.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        METHODS.validate_config(name, {"definitely_not_a_field": 1})
    with pytest.raises(ValueError):  # frozen (pydantic's ValidationError)
        cfg.__setattr__(next(iter(entry.config.model_fields)), None)
    assert entry.obj.source, f"{name} must name its source (paper, arXiv id)"
    assert entry.obj.__doc__ and len(entry.obj.__doc__) > 80, f"{name} needs a docstring with update rule and source"


@pytest.mark.parametrize("name", ALL)
def test_runs_finite_and_deterministic(name, trained_model, tiny_task, engine):
    a = run(name, trained_model, tiny_task, engine)
    b = run(name, trained_model, tiny_task, engine)
    sa, sb = state(a.model), state(b.model)
    if not getattr(METHODS.get(name), "returns_ensemble", False):  # SISA / S3T return an ensemble of shard models
        assert sa.keys() == state(trained_model).keys()
    for k in sa:
        assert torch.isfinite(sa[k].float()).all(), f"{name}: {k} not finite"
        assert torch.equal(sa[k], sb[k]), f"{name}: not deterministic under a fixed seed ({k})"
    assert a.seconds > 0
    out = a.model(tiny_task.test.batch(np.arange(4))[0])
    assert out.shape == (4, tiny_task.num_classes)


@pytest.mark.parametrize("name", ALL)
def test_forget_ids_honoured(name, trained_model, tiny_task, blobs, engine):
    res = run(name, trained_model, tiny_task, engine)
    if res.seen_ids is not None:
        assert set(res.seen_ids.tolist()) <= set(tiny_task.train.ids.tolist())
        if METHODS.get(name).kind == "exact":
            assert not set(res.seen_ids.tolist()) & set(tiny_task.forget.ids.tolist())
    other = build_task(blobs, ScenarioConfig(kind="random", fraction=0.1, seed=1))
    assert not np.array_equal(np.sort(other.forget.ids), np.sort(tiny_task.forget.ids))
    res2 = run(name, trained_model, other, engine)
    differs = any(not torch.equal(v, state(res2.model)[k]) for k, v in state(res.model).items())
    assert differs, f"{name}: the result does not depend on which samples are forgotten"


@pytest.mark.parametrize("name", ALL)
def test_typed_errors(name, trained_model, tiny_task, engine):
    method = build(name)
    empty = tiny_task.forget.take(np.zeros(0, dtype=np.int64))
    with pytest.raises(MethodError, match="forget set is empty"):
        method.unlearn(copy.deepcopy(trained_model), empty, tiny_task.retain, engine, CTX)
    if METHODS.get(name).needs_retain:
        no_retain = tiny_task.retain.take(np.zeros(0, dtype=np.int64))
        with pytest.raises(MethodError, match="retain"):
            method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, no_retain, engine, CTX)
    with pytest.raises(MethodError, match="share"):
        method.unlearn(copy.deepcopy(trained_model), tiny_task.forget, tiny_task.train, engine, CTX)


# How every registered method must react to +inf in the inputs of D_f ("forget") or of D_r ("retain"): the typed
# error it must raise, per set. A set that a method does not read inputs from is absent from its entry: the method
# must then run to the end as usual. In every case the model's parameters must still be finite afterwards.
_DIVERGES_ON_BOTH = {"forget": DivergenceError, "retain": DivergenceError}
INF_INPUTS: dict[str, dict[str, type[Exception]]] = {
    # -- methods that train: every optimizer step checks its loss first (Engine.check_finite), so a NaN/inf loss
    #    raises DivergenceError before it can update a weight.
    "bad_teacher": _DIVERGES_ON_BOTH,  # distils on D_f ∪ a sample of D_r
    "laf": _DIVERGES_ON_BOTH,  # the VAEs are trained on θ_o's embeddings of D_r and of D_f
    "random_label": _DIVERGES_ON_BOTH,  # relabelled D_f ∪ D_r in one loop
    "salun": _DIVERGES_ON_BOTH,  # saliency pass over D_f, then relabelled D_f ∪ D_r
    "salun_soft": _DIVERGES_ON_BOTH,  # relabelled D_f ∪ D_r
    "scrub": _DIVERGES_ON_BOTH,  # max-steps on D_f, min-steps on D_r
    "boundary_expanding": {"forget": DivergenceError},  # trains on D_f only
    "boundary_shrink": {"forget": DivergenceError},  # trains on D_f only
    "grad_ascent": {"forget": DivergenceError},  # trains on D_f only
    "cf_k": {"retain": DivergenceError},  # trains on D_r only
    "eu_k": {"retain": DivergenceError},  # trains on D_r only
    "finetune": {"retain": DivergenceError},  # trains on D_r only
    "l1_sparse": {"retain": DivergenceError},  # trains on D_r only
    "prune_ft": {"retain": DivergenceError},  # prunes by weight magnitude, then fine-tunes on D_r
    "retrain": {"retain": DivergenceError},  # trains on D_r only
    # exact sharded methods train their own ensemble on D = D_f ∪ D_r before deleting D_f
    "sisa": _DIVERGES_ON_BOTH,
    "s3t": _DIVERGES_ON_BOTH,
    "unsir": {"retain": DivergenceError},  # reads only D_f's labels; impair/repair train on D_r (noise is learned)
    # -- closed-form methods (no optimizer step); each refuses non-finite inputs rather than writing NaN weights:
    # SSD / LFSSD: the importance pass over D = D_r ∪ D_f checks every batch loss; a NaN importance would select and
    # dampen arbitrary weights, so it raises DivergenceError before dampening.
    "ssd": _DIVERGES_ON_BOTH,
    "lfssd": _DIVERGES_ON_BOTH,
    # Fisher forgetting: the Fisher pass checks the logits of D_r (DivergenceError) before any noise is added;
    # D_f is never read.
    "fisher_forgetting": {"retain": DivergenceError},
    # Analytic head: a least-squares fit on non-finite features has no meaning; the ridge fit (on D_r ∪ D_f) refuses
    # them with DataError before the head is replaced.
    "analytic_head": {"forget": DataError, "retain": DataError},
    # Clean Unlearning exposes the backdoor by ascent on defense samples drawn from D_r (the loss check stops it);
    # D_f's inputs are never read.
    "clean_unlearning": {"retain": DivergenceError},
    # Concept poisoning: the concept bank (k-means on θ_o's features of D) refuses non-finite features.
    "concept_poison": {"forget": DataError, "retain": DataError},
}


def _with_inf_inputs(task, which: str) -> tuple[SampleSet, SampleSet]:
    """(forget, retain) over a copy of the source in which the inputs of ``which`` are +inf."""
    src = task.train.source
    x = src.x.clone()
    target = task.forget if which == "forget" else task.retain
    x[torch.from_numpy(target.positions)] = float("inf")
    new = TensorSource(x, src.y)
    f, r = task.forget, task.retain
    return (SampleSet(new, f.positions, f.ids, f.labels, f.num_classes, "forget"),
            SampleSet(new, r.positions, r.ids, r.labels, r.num_classes, "retain"))


def test_every_method_declares_its_reaction_to_inf_inputs():
    assert sorted(INF_INPUTS) == sorted(ALL), "declare each registered method's reaction to +inf inputs in INF_INPUTS"


@pytest.mark.parametrize("which", ["forget", "retain"])
@pytest.mark.parametrize("name", ALL)
def test_inf_inputs_raise_typed_error_and_weights_stay_finite(name, which, trained_model, tiny_task, engine):
    forget, retain = _with_inf_inputs(tiny_task, which)
    model = copy.deepcopy(trained_model)
    error = INF_INPUTS.get(name, {}).get(which)
    if error is None:
        build(name).unlearn(model, forget, retain, engine, CTX)
    else:
        with pytest.raises(error):
            build(name).unlearn(model, forget, retain, engine, CTX)
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{name}: non-finite weights ({which} = inf)"

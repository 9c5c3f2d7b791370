"""S3T (Chowdhury et al., ICLR 2025): cyclic orderings, deactivation and the served ordering, exactness of the served
configuration versus from-scratch training, background retraining, parameter isolation of the frozen backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.errors import ConfigError, NotFittedError
from unlearnkit.methods import METHODS
from unlearnkit.methods.exact.s3t import S3T, S3TConfig, S3TModel, cyclic_orderings

RECIPE = TrainConfig(epochs=3, batch_size=16, lr=0.05, scheduler="none")


def factory(seed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cyclic_orderings_are_the_rotations():
    assert cyclic_orderings(4, 4) == [(0, 1, 2, 3), (1, 2, 3, 0), (2, 3, 0, 1), (3, 0, 1, 2)]
    assert cyclic_orderings(3, 1) == [(0, 1, 2)]
    with pytest.raises(ValueError, match="orderings"):
        S3TConfig(slices=3, orderings=4)
    with pytest.raises(ConfigError, match="unknown key"):
        METHODS.validate_config("s3t", {"layers": 3})


def test_slots_are_assigned_top_down_and_start_as_identity():
    torch.manual_seed(0)
    wrapped = S3TModel(factory(0), n_slots=3, rank=2, alpha=4.0, seed=0)
    # slot 0 → last linear (head), slot 1 → first linear, slot 2 cycles back to the head
    assert sorted(wrapped.backbone[3].slots) == ["0", "2"] and sorted(wrapped.backbone[0].slots) == ["1"]
    torch.manual_seed(0)
    ref = factory(0).eval()
    x = torch.randn(5, 8)
    wrapped.eval().set_active(3)
    torch.testing.assert_close(wrapped(x), ref(x), rtol=0, atol=0)  # B = 0: an untrained slot changes nothing
    slot_ids = {id(p) for i in range(3) for p in wrapped.slot(i).parameters()}
    assert all(not p.requires_grad for p in wrapped.parameters() if id(p) not in slot_ids)
    with pytest.raises(ConfigError, match="nn.Linear"):
        S3TModel(nn.Sequential(nn.ReLU()), 2, 2, 4.0, 0)


@pytest.fixture
def fitted(blobs, tmp_path):
    cfg = S3TConfig(shards=2, slices=3, rank=2, train=RECIPE, seed=1)
    s3t = S3T(cfg, factory, tmp_path / "a")
    rep = s3t.fit(blobs.train)
    return s3t, rep, cfg


def test_delete_deactivates_and_serves_the_ordering_with_most_layers(fitted, blobs, tmp_path):
    s3t, rep, cfg = fitted
    assert rep.served == {0: (0, 3), 1: (0, 3)}
    assign = s3t.assignment()
    victim = next(i for i, (s, r) in sorted(assign.items()) if (s, r) == (0, 0))
    d = s3t.delete([victim])
    # orderings (0,1,2), (1,2,0), (2,0,1): slice 0 sits at positions 0, 2, 1 → 0, 2, 1 layers survive
    assert [s3t._valid[(0, b)] for b in range(3)] == [0, 2, 1]
    assert d.served == {0: (1, 2), 1: (0, 3)} and d.affected == {0: [0]} and d.sample_epochs == 0
    # a second deletion in slice 1 of shard 0: positions in the orderings 1, 0, 2 → min with before: 0, 0, 1
    victim2 = next(i for i, (s, r) in sorted(assign.items()) if (s, r) == (0, 1))
    d2 = s3t.delete([victim2, victim])
    assert d2.already_deleted == [victim] and d2.served[0] == (2, 1)
    # the served configuration equals S3T trained from scratch without the two ids, read at the same (b, k)
    ref = S3T(cfg, factory, tmp_path / "ref")
    ref_fit = ref.fit(blobs.train.exclude_ids([victim, victim2]), assignment=s3t.assignment())
    assert ref_fit.sample_epochs > 0
    for s, (b, k) in d2.served.items():
        assert same(s3t._models[s], ref.model_at(s, b, k)), s
    # background retraining restores full depth and then equals the from-scratch ensemble exactly
    rr = s3t.retrain()
    assert rr.served == {0: (0, 3), 1: (0, 3)} and rr.sample_epochs > 0
    assert sorted(rr.trained) == [(0, 0), (0, 1), (0, 2)]  # only shard 0's orderings needed retraining
    assert rr.trained[(0, 2)] == [1, 2]  # ordering (2,0,1) kept its first layer (trained on slice 2 only)
    assert s3t.model_digest == ref.model_digest
    x = blobs.test.batch(np.arange(len(blobs.test)))[0]
    torch.testing.assert_close(s3t.predict_proba(x), ref.predict_proba(x), rtol=0, atol=0)


def test_backbone_is_frozen_and_its_batchnorm_statistics_never_move(fitted):
    s3t, _, _ = fitted
    fresh = s3t.model_at(0, 0, 0)
    trained = s3t.model_at(0, 0, 3)
    base_keys = [k for k in trained.state_dict() if ".slots." not in k]
    for k in base_keys:
        assert torch.equal(trained.state_dict()[k], fresh.state_dict()[k]), k  # weights and BN running stats
    assert any(not torch.equal(trained.state_dict()[k], fresh.state_dict()[k]) for k in trained.state_dict()
               if k.endswith(".B"))
    assert "backbone.1.running_mean" in base_keys


def test_given_backbone_is_used_and_served_accuracy(blobs, tmp_path):
    pre = factory(123)
    with torch.no_grad():
        pre[3].weight.mul_(0.5)
    s3t = S3T(S3TConfig(shards=1, slices=2, rank=2, train=RECIPE), factory, tmp_path, backbone=pre)
    s3t.fit(blobs.train)
    m = s3t.model_at(0, 0, 2)
    torch.testing.assert_close(m.backbone[3].base.weight, pre[3].weight, rtol=0, atol=0)
    x, y, _ = blobs.test.batch(np.arange(len(blobs.test)))
    assert (s3t.predict(x) == y).float().mean() > 0.85  # well-separated blobs


def test_not_fitted_and_runner_notes(tmp_path, blobs):
    with pytest.raises(NotFittedError):
        S3T(S3TConfig(), factory, tmp_path).delete([1])
    from unlearnkit.config.schema import ScenarioConfig
    from unlearnkit.data.scenarios import build_task
    from unlearnkit.engine.loop import Engine
    from unlearnkit.methods import UnlearnContext

    task = build_task(blobs, ScenarioConfig(kind="ids", ids=[int(blobs.train.ids[0])]))
    method = METHODS.build("s3t", {"slices": 3, "retrain": "never"})
    res = method.unlearn(factory(0), task.forget, task.retain, Engine(), UnlearnContext(seed=0, train_recipe=RECIPE))
    served = res.notes["served_after_delete"]["0"]
    assert served[1] == 2 and res.notes["retrain_sample_epochs"] == 0  # one deletion costs one layer, no training
    assert int(blobs.train.ids[0]) not in set(res.seen_ids.tolist())
    assert isinstance(blobs.train, SampleSet)


def test_load_resumes_the_committed_state_and_refuses_edits(fitted, blobs, tmp_path):
    import json

    from unlearnkit.errors import CheckpointError, DataError

    s3t, _, cfg = fitted
    victim = next(i for i, (s, r) in sorted(s3t.assignment().items()) if (s, r) == (0, 0))
    s3t.delete([victim])
    again = S3T.load(s3t.store, factory, blobs.train)
    assert again.version == s3t.version and again.model_digest == s3t.model_digest
    assert again.served() == s3t.served() and again.deleted_ids.tolist() == [victim]
    x = blobs.test.batch(np.arange(len(blobs.test)))[0]
    torch.testing.assert_close(again.predict_proba(x), s3t.predict_proba(x), rtol=0, atol=0)
    # the resumed ensemble goes on exactly as the original: the same next deletion, the same served models
    nxt = next(i for i, (s, r) in sorted(s3t.assignment().items()) if s == 1)
    a, b = s3t.delete([nxt]), again.delete([nxt])
    assert a.served == b.served and s3t.model_digest == again.model_digest
    with pytest.raises(DataError, match="lacks"):
        S3T.load(s3t.store, factory, blobs.train.exclude_ids(blobs.train.ids[:3]))
    state = s3t.store / "state.json"
    doc = json.loads(state.read_text())
    doc["deleted"] = []  # an edited state: its seal no longer matches
    state.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError):
        S3T.load(s3t.store, factory, blobs.train)

"""SISA (Bourtoule et al., S&P 2021): schedule, partition, exactness of deletion, shard isolation (KNOWN_FAULTS C38),
batch planning, idempotency and crash-resume, tamper detection, aggregation, a real-data accuracy floor (C35)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import DataConfig, EngineConfig, TrainConfig
from unlearnkit.data import load_data
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.checkpoint import MODEL_FILE
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, DataError, MethodError, NotFittedError
from unlearnkit.methods import METHODS
from unlearnkit.methods.exact.sisa import (
    CHECKPOINT_MEMO, SISA, CheckpointMemo, SISAConfig, ShardOutcome, make_partition, seed_torch, slice_epochs,
)

RECIPE = TrainConfig(epochs=2, batch_size=32, lr=0.05, scheduler="none")


@pytest.fixture(scope="module")
def digits300() -> SampleSet:
    data = load_data(DataConfig(name="digits", train_subset=300, split_seed=0))
    return data.train


def mlp_factory(seed: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def states(sisa: SISA) -> list[dict[str, torch.Tensor]]:
    return [m.state_dict() for m in sisa.members()]


def assert_same_weights(a: SISA, b: SISA) -> None:
    sa, sb = states(a), states(b)
    assert len(sa) == len(sb)
    for x, y in zip(sa, sb):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k  # bit-identical (stronger than the required 1e-6)


# -- schedule and partition -----------------------------------------------------------------------------------------
def test_slice_epochs_follow_the_reference_schedule():
    # reference: avg = 2R/(R+1)·E/R = 2E/(R+1); slice r gets int((r+1)avg) − int(r·avg)
    # E=20, R=5: avg = 6.67 → bounds 0, 6, 13, 20, 26, 33
    assert slice_epochs(20, 5) == [6, 7, 7, 6, 7]
    assert slice_epochs(7, 1) == [7]
    assert slice_epochs(1, 4) == [0, 0, 1, 0]  # bounds ⌊2r/5⌋ = 0, 0, 0, 1, 1
    for e in range(1, 12):
        for r in range(1, 9):
            assert sum(slice_epochs(e, r)) == (2 * e * r) // (r + 1)


@pytest.mark.parametrize("kind", ["uniform", "class_balanced"])
def test_partition_is_balanced_disjoint_and_independent_of_row_order(kind):
    rng = np.random.default_rng(0)
    ids = rng.choice(10_000, size=203, replace=False)
    labels = rng.integers(0, 4, size=203)
    shard, slc = make_partition(ids, labels, 5, 3, kind, seed=7)
    sizes = np.bincount(shard, minlength=5)
    assert sizes.sum() == 203 and sizes.max() - sizes.min() <= 1
    for s in range(5):
        per_slice = np.bincount(slc[shard == s], minlength=3)
        assert per_slice.max() - per_slice.min() <= 1
    if kind == "class_balanced":
        for c in range(4):
            per_shard = np.bincount(shard[labels == c], minlength=5)
            assert per_shard.max() - per_shard.min() <= 1
    perm = rng.permutation(203)
    shard2, slc2 = make_partition(ids[perm], labels[perm], 5, 3, kind, seed=7)
    assert np.array_equal(shard2, shard[perm]) and np.array_equal(slc2, slc[perm])
    shard3, _ = make_partition(ids, labels, 5, 3, kind, seed=8)
    assert not np.array_equal(shard3, shard)


# -- exactness and isolation (C38) --------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregation,partition", [("vote", "uniform"), ("softmax", "class_balanced")])
def test_delete_retrains_only_the_affected_shard_and_equals_training_from_scratch(
        digits300, tmp_path, aggregation, partition):
    cfg = SISAConfig(shards=3, slices=2, aggregation=aggregation, partition=partition, train=RECIPE, seed=3)
    sisa = SISA(cfg, mlp_factory, tmp_path / "a")
    fit = sisa.fit(digits300)
    assert fit.trained_slices == {0: [0, 1], 1: [0, 1], 2: [0, 1]}
    chains_before = {s: list(c) for s, c in sisa._chains.items()}
    digests_before = dict(sisa._digests)
    # one point of shard 1, slice 2 (0-based slice 1)
    assign = sisa.assignment()
    victim = next(i for i, (s, r) in sorted(assign.items()) if (s, r) == (1, 1))
    plan = sisa.plan([victim])
    assert plan.affected == {1: 1}
    rep = sisa.delete([victim])
    assert rep.trained_slices == {1: [1]}  # restarted from the checkpoint after slice 1, not from scratch
    assert sisa._chains[1][0] == chains_before[1][0] and sisa._chains[1][1] != chains_before[1][1]
    for s in (0, 2):
        assert sisa._chains[s] == chains_before[s] and rep.shard_digests[s] == digests_before[s]
    assert rep.shard_digests[1] != digests_before[1]
    assert rep.sample_epochs == plan.expected_sample_epochs
    # from scratch, same partition and seeds, without the point
    ref = SISA(cfg, mlp_factory, tmp_path / "b")
    ref_fit = ref.fit(digits300.exclude_ids([victim]), assignment=sisa.assignment())
    assert ref_fit.trained_slices == {0: [0, 1], 1: [0, 1], 2: [0, 1]}  # really retrained, separate store
    assert_same_weights(sisa, ref)
    assert ref.model_digest == sisa.model_digest
    assert victim not in sisa.active_ids and victim in sisa.deleted_ids


def test_deleting_from_the_first_slice_retrains_the_whole_shard(digits300, tmp_path):
    cfg = SISAConfig(shards=2, slices=3, train=RECIPE)
    sisa = SISA(cfg, mlp_factory, tmp_path)
    sisa.fit(digits300)
    victim = next(i for i, (s, r) in sorted(sisa.assignment().items()) if r == 0)
    rep = sisa.delete([victim])
    assert rep.trained_slices == {sisa.shard_of(victim): [0, 1, 2]}


def test_unknown_optimizer_is_a_value_error_with_a_message():
    with pytest.raises(ValueError, match="optimizer"):
        SISAConfig(train={"optimizer": "adamax"})
    with pytest.raises(ConfigError, match="optimizer"):
        METHODS.validate_config("sisa", {"recipe": {"optimizer": "adamax"}})


# -- batch planning, idempotency, crash-resume ------------------------------------------------------------------------
def test_a_batch_plans_the_union_of_affected_shards_once(digits300, tmp_path):
    sisa = SISA(SISAConfig(shards=4, slices=3, train=RECIPE), mlp_factory, tmp_path)
    sisa.fit(digits300)
    assign = sisa.assignment()
    in0 = [i for i, (s, r) in sorted(assign.items()) if s == 0]
    a = next(i for i in in0 if assign[i][1] == 2)
    b = next(i for i in in0 if assign[i][1] == 1)
    c = next(i for i, (s, r) in sorted(assign.items()) if s == 2 and r == 2)
    plan = sisa.plan([a, b, c, a, 10**9])
    assert plan.requested == [a, b, c, 10**9] and plan.unknown == [10**9]
    assert plan.affected == {0: 1, 2: 2}
    # expected cost by hand: shard 0 retrains slices 1, 2; shard 2 retrains slice 2 (sizes after the deletion)
    ep = slice_epochs(RECIPE.epochs, 3)
    size = {s: np.cumsum([sum(1 for i, (t, r) in assign.items() if t == s and r == q and i not in (a, b, c))
                          for q in range(3)]) for s in (0, 2)}
    want = ep[1] * size[0][1] + ep[2] * size[0][2] + ep[2] * size[2][2]
    assert plan.expected_sample_epochs == want
    rep = sisa.delete([a, b, c, 10**9])
    assert rep.sample_epochs == want and sorted(rep.trained_slices) == [0, 2]
    again = sisa.delete([a, b])
    assert again.plan.already_deleted == [a, b] and again.plan.deletable == []
    assert again.version == rep.version and again.sample_epochs == 0


def test_crash_before_commit_keeps_old_state_and_rerun_reuses_checkpoints(digits300, tmp_path, monkeypatch):
    cfg = SISAConfig(shards=3, slices=2, train=RECIPE)
    sisa = SISA(cfg, mlp_factory, tmp_path)
    sisa.fit(digits300)
    old_digest, victims = sisa.model_digest, [int(digits300.ids[5]), int(digits300.ids[50])]

    def boom(self):
        raise KeyboardInterrupt("simulated crash before the state is committed")

    monkeypatch.setattr(SISA, "_commit", boom)
    with pytest.raises(KeyboardInterrupt):
        sisa.delete(victims)
    monkeypatch.undo()
    resumed = SISA.load(tmp_path, mlp_factory, digits300)
    assert resumed.version == 1 and resumed.model_digest == old_digest and len(resumed.deleted_ids) == 0
    rep = resumed.delete(victims)
    assert rep.sample_epochs == 0 and rep.trained_slices and all(not t for t in rep.trained_slices.values())
    clean = SISA(cfg, mlp_factory, tmp_path / "clean")
    clean.fit(digits300)
    assert clean.delete(victims).model_digest == rep.model_digest
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 2
    assert (tmp_path / "states" / "v1.json").is_file() and (tmp_path / "states" / "v2.json").is_file()


def test_load_detects_tampering_and_missing_data(digits300, tmp_path):
    sisa = SISA(SISAConfig(shards=2, slices=1, train=RECIPE), mlp_factory, tmp_path)
    sisa.fit(digits300)
    with pytest.raises(DataError, match="lacks"):
        SISA.load(tmp_path, mlp_factory, digits300.take(np.arange(10)))
    state = json.loads((tmp_path / "state.json").read_text())
    state["deleted"] = [int(digits300.ids[0])]
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="digest"):
        SISA.load(tmp_path, mlp_factory, digits300)
    (tmp_path / "state.json").write_text((tmp_path / "states" / "v1.json").read_text())
    part = next((tmp_path / "partitions").glob("*.json"))
    original = part.read_text()
    part.write_text(original.replace('"shard":[0', '"shard":[1', 1))
    with pytest.raises(CheckpointError, match="partition"):
        SISA.load(tmp_path, mlp_factory, digits300)
    part.write_text(original)
    assert SISA.load(tmp_path, mlp_factory, digits300).model_digest == sisa.model_digest
    key = sisa._chains[0][-1]
    weights = tmp_path / "checkpoints" / key / MODEL_FILE
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        SISA.load(tmp_path, mlp_factory, digits300)


# -- in-memory resumption (no re-read, no re-hash) versus the verified load from disk ------------------------------
def test_resuming_from_memory_or_from_the_verified_file_gives_the_same_weights(digits300, tmp_path):
    cfg = SISAConfig(shards=2, slices=3, train=RECIPE, seed=1)
    mem = SISA(cfg, mlp_factory, tmp_path / "mem")
    mem.fit(digits300)
    assert len(CHECKPOINT_MEMO) > 0  # the fit remembered the checkpoints it wrote
    victim = next(i for i, (s, r) in sorted(mem.assignment().items()) if (s, r) == (0, 2))
    disk = SISA(cfg, mlp_factory, tmp_path / "disk")
    disk.fit(digits300)
    bad = SISA(cfg, mlp_factory, tmp_path / "bad")
    bad.fit(digits300)
    rep_mem = mem.delete([victim])  # resumes shard 0 from its step-1 checkpoint held in memory
    CHECKPOINT_MEMO.clear()
    rep_disk = disk.delete([victim])  # the same checkpoint read from disk and verified
    assert rep_mem.trained_slices == rep_disk.trained_slices == {0: [2]}
    assert rep_mem.model_digest == rep_disk.model_digest
    assert_same_weights(mem, disk)
    # the members built from the job's in-memory weights equal those SISA.load reads (and verifies) from disk
    assert_same_weights(mem, SISA.load(tmp_path / "mem", mlp_factory, digits300))
    # a checkpoint read from disk is verified: a flipped byte in the resumed-from checkpoint is caught
    CHECKPOINT_MEMO.clear()
    weights = tmp_path / "bad" / "checkpoints" / bad._chains[0][1] / MODEL_FILE
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        bad.delete([victim])
    assert bad.version == 1  # nothing committed


def test_checkpoint_memo_is_a_bounded_lru(tmp_path):
    memo = CheckpointMemo(max_bytes=2 * 4 * 10)  # room for two 10-float32 states
    for k in "abc":
        memo.put(tmp_path, k, {"w": torch.full((10,), float(ord(k)))}, f"digest-{k}")
    assert memo.get(tmp_path, "a") is None and len(memo) == 2  # oldest evicted
    state, digest = memo.get(tmp_path, "b")
    assert digest == "digest-b" and torch.equal(state["w"], torch.full((10,), float(ord("b"))))
    memo.put(tmp_path, "d", {"w": torch.zeros(10)}, "digest-d")  # "b" was used last: "c" goes
    assert memo.get(tmp_path, "c") is None and memo.get(tmp_path, "b") is not None
    memo.put(tmp_path, "huge", {"w": torch.zeros(100)}, "x")  # larger than the bound: not kept
    assert memo.get(tmp_path, "huge") is None
    assert memo.get(tmp_path / "other", "b") is None  # keyed by store as well as by key


def test_shard_outcome_pickles_its_weights_as_safetensors_bytes():
    state = {"w": torch.randn(3, 4), "b": torch.arange(4, dtype=torch.bfloat16), "n": torch.tensor(7)}
    out = ShardOutcome(0, ["k"], "i", "d", [0], 12, 3, 0.5, state)
    payload = pickle.dumps(out)
    assert b"torch._utils" not in payload  # no torch tensor reduction (shared-memory handles in a process pool)
    back = pickle.loads(payload)
    assert back.keys == ["k"] and back.sample_epochs == 12 and back.state.keys() == state.keys()
    for k in state:
        assert back.state[k].dtype == state[k].dtype and torch.equal(back.state[k], state[k])
    assert pickle.loads(pickle.dumps(ShardOutcome(1, [], "i", "i", [], 0, 0, 0.0))).state is None


def test_seed_torch_draws_exactly_like_manual_seed():
    torch.manual_seed(123)
    want = (torch.rand(5), torch.randn(3), torch.randperm(9))
    seed_torch(123)
    got = (torch.rand(5), torch.randn(3), torch.randperm(9))
    for a, b in zip(want, got):
        assert torch.equal(a, b)


# -- aggregation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregation", ["vote", "softmax"])
def test_aggregation_matches_hand_computation(digits300, tmp_path, aggregation):
    sisa = SISA(SISAConfig(shards=3, slices=1, aggregation=aggregation, train=RECIPE), mlp_factory, tmp_path)
    sisa.fit(digits300)
    x = digits300.batch(np.arange(40))[0]
    with torch.no_grad():
        logits = [m(x) for m in sisa.members()]
    if aggregation == "vote":
        want = torch.zeros(40, 10)
        for lg in logits:
            want[torch.arange(40), lg.argmax(1)] += 1 / 3
    else:
        want = sum(torch.softmax(lg, 1) for lg in logits) / 3
    probs = sisa.predict_proba(x)
    assert probs.dtype == torch.float32 and probs.shape == (40, 10)
    torch.testing.assert_close(probs, want, rtol=0, atol=1e-6)
    assert torch.equal(sisa.predict(x), want.argmax(1))
    out = sisa.as_module()(x)
    torch.testing.assert_close(out.exp(), want.clamp_min(1e-12), rtol=1e-5, atol=1e-7)
    assert torch.isfinite(out).all()


# -- errors --------------------------------------------------------------------------------------------------------
def test_typed_errors(digits300, tmp_path):
    with pytest.raises(NotFittedError):
        SISA(SISAConfig(), mlp_factory, tmp_path).plan([1])
    with pytest.raises(ConfigError, match="cannot fill"):
        SISA(SISAConfig(shards=5, slices=5), mlp_factory, tmp_path).fit(digits300.take(np.arange(20)))
    small = digits300.take(np.arange(6))
    sisa = SISA(SISAConfig(shards=2, slices=1, train=RECIPE), mlp_factory, tmp_path / "s")
    sisa.fit(small)
    with pytest.raises(DataError, match="integers"):
        sisa.plan(["a"])
    with pytest.raises(MethodError, match="every remaining"):
        sisa.delete(small.ids)
    with pytest.raises(DataError, match="never"):
        sisa.shard_of(10**9)
    # deleting one shard completely drops it from the ensemble
    whole = [i for i, (s, _) in sisa.assignment().items() if s == 0]
    rep = sisa.delete(whole)
    assert sorted(rep.shard_digests) == [1] and len(sisa.members()) == 1


# -- a real-data accuracy floor (C35: never a silently degenerate fit) ----------------------------------------------
def test_iris_accuracy_floor(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    train = SampleSet.from_tensors(torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr))
    recipe = TrainConfig(epochs=60, batch_size=16, lr=0.05, scheduler="none")
    for aggregation in ("vote", "softmax"):
        sisa = SISA(SISAConfig(shards=3, slices=2, aggregation=aggregation, train=recipe),
                    lambda s: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)), tmp_path / aggregation,
                    Engine(EngineConfig(progress=False)))
        sisa.fit(train)
        acc = (sisa.predict(torch.tensor(xte, dtype=torch.float32)) == torch.tensor(yte)).float().mean().item()
        assert acc > 0.85, (aggregation, acc)

"""Split invariants as properties over scenarios and seeds: D_f ∩ D_r = ∅, D_f ∪ D_r = D, D_t held out."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from unlearnkit.config.schema import DataConfig, ScenarioConfig
from unlearnkit.data import build_task, load_data


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits", train_subset=400, test_subset=120))


def scenarios(data) -> list[ScenarioConfig]:
    ids = data.train.ids
    out = []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        out += [
            ScenarioConfig(kind="random", fraction=f, seed=seed) for f in (0.01, 0.1, 0.5, 0.9)
        ]
        out.append(ScenarioConfig(kind="random", count=int(rng.integers(1, len(ids))), seed=seed))
        out.append(ScenarioConfig(kind="class", classes=sorted(rng.choice(10, size=seed + 1, replace=False).tolist()),
                                  seed=seed))
        out.append(ScenarioConfig(kind="ids", ids=rng.choice(ids, size=7 * (seed + 1), replace=False).tolist(),
                                  seed=seed))
    return out


def test_split_invariants_hold_for_every_scenario_and_seed(digits):
    train_ids = digits.train.ids
    label_of = dict(zip(train_ids.tolist(), digits.train.labels.tolist()))
    for sc in scenarios(digits):
        task = build_task(digits, sc)
        f, r = task.forget.ids, task.retain.ids
        assert len(np.unique(f)) == len(f) and len(np.unique(r)) == len(r), sc
        assert len(np.intersect1d(f, r)) == 0, sc  # D_f ∩ D_r = ∅
        assert np.array_equal(np.union1d(f, r), np.sort(train_ids)), sc  # D_f ∪ D_r = D
        assert len(f) + len(r) == len(train_ids)
        assert len(np.intersect1d(task.test.ids, train_ids)) == 0, sc  # D_t ∩ D = ∅ (same id namespace)
        assert len(np.intersect1d(task.test.positions, task.train.positions)) == 0, sc
        # labels travel with the samples, unchanged
        assert [label_of[i] for i in f.tolist()] == task.forget.labels.tolist()
        # the recorded digest is the SHA-256 of the sorted int64 ids, recomputed here
        want = hashlib.sha256(np.sort(f).astype("<i8").tobytes()).hexdigest()
        assert task.scenario["forget_ids_sha256"] == want, sc
        assert (task.scenario["n_forget"], task.scenario["n_retain"]) == (len(f), len(r))
        assert task.scenario["kind"] == sc.kind
        if sc.kind == "random":
            assert len(f) == (sc.count if sc.count is not None else round(sc.fraction * len(train_ids)))
        elif sc.kind == "class":
            assert set(task.forget.labels.tolist()) == set(sc.classes)
            assert not set(task.retain.labels.tolist()) & set(sc.classes)
            assert set(task.test_forgotten.labels.tolist()) == set(sc.classes)
            assert len(task.eval_test) + len(task.test_forgotten) == len(task.test)
        else:
            assert sorted(f.tolist()) == sorted(sc.ids)


def test_random_draw_is_seeded(digits):
    a = build_task(digits, ScenarioConfig(kind="random", fraction=0.1, seed=0)).forget.ids
    b = build_task(digits, ScenarioConfig(kind="random", fraction=0.1, seed=0)).forget.ids
    c = build_task(digits, ScenarioConfig(kind="random", fraction=0.1, seed=1)).forget.ids
    assert np.array_equal(a, b) and not np.array_equal(np.sort(a), np.sort(c))


def test_blob_splits_hold_too(blobs):
    for seed in range(5):
        task = build_task(blobs, ScenarioConfig(kind="random", fraction=0.2, seed=seed))
        f, r, d = set(task.forget.ids), set(task.retain.ids), set(blobs.train.ids)
        assert not f & r and f | r == d and not d & set(blobs.test.ids)

"""DeletionService over a fake SISA: states, windows, reporting of unknown/deleted ids, audit, in-process crashes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from service_fakes import make_fake_service
from service_fakes import FakeSISA
from unlearnkit.errors import DataError
from unlearnkit.service.deletion import SimulatedCrash
from unlearnkit.service.ledger import verify_ledger


def _events(svc, rid):
    return [e["event"] for e in svc.status(rid)["events"]]


def test_request_life_and_audit(fake_service):
    svc = fake_service
    r = svc.submit([1, 2, 999])
    assert r.created and r.unknown_ids == [999]
    assert svc.status(r.request_id)["state"] == "received"
    assert svc.run_pending() == 1
    st = svc.status(r.request_id)
    assert st["state"] == "done"
    assert _events(svc, r.request_id) == ["received", "planned", "retraining", "done"]
    assert (st["deleted_ids"], st["unknown_ids"], st["already_deleted_ids"]) == ([1, 2], [999], [])
    assert st["shards"] == [1, 2]  # fake shard_of = id % 3
    audit = st["audit"]
    assert audit["model_version"] == 2 and audit["model_digest"] == svc.manager.model_digest
    assert audit["shards_retrained"] == [1, 2] and audit["retrain_seconds"] >= 0
    # the membership check, recomputed independently: ln p_y of the deleted samples vs the test samples
    module = svc.manager.as_module()

    def scores(data):  # ln p_y = −log1p(Σ_{j≠y} exp(l_j − l_y)), float64, no cancellation near p_y = 1
        x, y, _ = data.batch(np.arange(len(data)))
        lg = module(x).double().numpy()
        rel = np.exp(lg - lg[np.arange(len(y)), y.numpy()][:, None])
        rel[np.arange(len(y)), y.numpy()] = 0.0
        return -np.log1p(rel.sum(axis=1))

    d = scores(svc.train.select_ids([1, 2]))
    h = scores(svc.holdout)
    m = audit["membership"]
    assert (m["n_deleted"], m["n_holdout"], m["n_retained"]) == (2, len(svc.holdout), 10)
    want = roc_auc_score(np.r_[np.ones(2), np.zeros(len(h))], np.r_[d, h])
    assert m["auc_deleted_vs_holdout"] == pytest.approx(want, abs=1e-12)
    assert m["mean_loss_deleted"] == pytest.approx(-d.mean(), rel=1e-9)
    # the serving model is the new one
    assert svc.serving().version == 2
    assert verify_ledger(svc.ledger.path).ok


def test_one_window_plans_the_union_once(fake_service):
    svc = fake_service
    rids = [svc.submit(ids).request_id for ids in ([1, 5], [5, 6], [7])]
    assert svc.run_pending() == 1
    assert svc.manager.delete_calls == [[1, 5, 6, 7]]
    windows = {svc.status(r)["window"] for r in rids}
    assert len(windows) == 1
    assert [svc.status(r)["deleted_ids"] for r in rids] == [[1, 5], [5, 6], [7]]
    assert svc.manager.version == 2  # one retrain for the three requests


def test_unknown_and_already_deleted_ids_are_reported(fake_service):
    svc = fake_service
    a = svc.submit([1, 2]).request_id
    svc.run_pending()
    b = svc.submit([2, 3, 5000]).request_id
    svc.run_pending()
    st = svc.status(b)
    assert (st["deleted_ids"], st["unknown_ids"], st["already_deleted_ids"]) == ([3], [5000], [2])
    c = svc.submit([5000, 1]).request_id  # nothing deletable: no retrain, still done and reported
    svc.run_pending()
    st = svc.status(c)
    assert st["state"] == "done" and st["deleted_ids"] == [] and st["audit"]["model_version"] == 3
    assert st["audit"]["membership"]["auc_deleted_vs_holdout"] is None
    assert svc.manager.delete_calls == [[1, 2], [3]]
    assert svc.status(a)["state"] == "done"


@pytest.mark.parametrize("ids, match", [
    ([], "empty"), ([1, 1], "duplicates"), ([-3], "non-negative"), (list(range(21)), "at most 20"),
    ([True], "integers"), ([1.5], "integers"), ("12", "list of integers"),
])
def test_invalid_requests_are_refused_before_the_ledger(fake_service, ids, match):
    with pytest.raises(DataError, match=match):
        fake_service.submit(ids)
    assert fake_service.ledger.head()[0] == 0


def test_requests_arriving_during_a_retrain_wait_for_the_next_window(tmp_path):
    gate = threading.Event()  # the first window's retrain waits here: b and c surely arrive while it runs
    svc = make_fake_service(tmp_path / "store", window_s=0.0, gate=gate).start()
    try:
        a = svc.submit([1, 2]).request_id
        deadline = time.monotonic() + 60
        while "retraining" not in _events(svc, a) or not svc.manager.delete_calls:
            assert time.monotonic() < deadline, "the first window never started"
            time.sleep(0.01)
        b = svc.submit([6]).request_id
        c = svc.submit([5, 7]).request_id
        gate.set()
        out = svc.wait([a, b, c], timeout=60)
        assert [s["state"] for s in out.values()] == ["done"] * 3
        assert svc.manager.delete_calls == [[1, 2], [5, 6, 7]]
        assert out[b]["window"] == out[c]["window"] != out[a]["window"]
    finally:
        svc.close()


def test_failure_is_recorded_with_its_reason(fake_service):
    svc = fake_service

    def boom(ids, executor=None):
        raise DataError("shard 2 lost its data")

    svc.manager.delete = boom
    r = svc.submit([1]).request_id
    svc.run_pending()
    st = svc.status(r)
    assert st["state"] == "failed" and "shard 2 lost its data" in st["reason"]
    assert verify_ledger(svc.ledger.path).ok


def _crash_at(stage):
    def hook(s, window):
        if s == stage:
            raise SimulatedCrash(stage)
    return hook


@pytest.mark.parametrize("stage", ["planned", "retraining", "retrained"])
def test_resume_after_a_crash_finishes_every_request_once(tmp_path, stage):
    store = tmp_path / "store"
    svc = make_fake_service(store, fault_hook=_crash_at(stage))
    rids = [svc.submit(ids).request_id for ids in ([1, 2], [2, 6])]
    with pytest.raises(SimulatedCrash):
        svc.run_pending()
    svc.ledger.close()  # the process "dies": nothing else is written
    late = None
    svc2 = make_fake_service(store)  # restart: reads the ledger and the committed fake state
    try:
        late = svc2.submit([7]).request_id  # a new request arriving after the restart
        svc2.run_pending()
        for rid in rids:
            st = svc2.status(rid)
            assert st["state"] == "done", st
            assert [e for e in _events(svc2, rid)].count("done") == 1
        # the crashed window keeps its classification, even where the fake had already committed (stage retrained)
        assert svc2.status(rids[0])["deleted_ids"] == [1, 2] and svc2.status(rids[1])["deleted_ids"] == [2, 6]
        assert svc2.status(late)["deleted_ids"] == [7] and svc2.status(late)["window"] != svc2.status(rids[0])["window"]
        assert sorted(svc2.manager.deleted_ids.tolist()) == [1, 2, 6, 7]
        assert svc2.manager.version == 3  # one retrain for the crashed window, one for the late request
        if stage != "planned":
            assert svc2.status(rids[0])["audit"]["attempts"] == 2
        # the serving model is the exact "retrain" of the remaining data
        fresh = FakeSISA(svc2.train.exclude_ids([1, 2, 6, 7]), tmp_path / "fresh")
        x, _, _ = svc2.holdout.batch(np.arange(len(svc2.holdout)))
        torch.testing.assert_close(svc2.serving().module(x), fresh.as_module()(x))
        assert verify_ledger(svc2.ledger.path).ok
    finally:
        svc2.close()


def test_closed_service_refuses_requests(tmp_path):
    svc = make_fake_service(tmp_path / "store")
    svc.close()
    svc.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        svc.submit([1])


def test_guarded_executor_lowers_only_the_worker_processes_priority():
    import os

    from unlearnkit.service.deletion import GuardedExecutor
    from unlearnkit.service.executors import build_executor

    here = os.nice(0)
    with GuardedExecutor(build_executor("process", max_workers=1), 7) as ex:
        # os.nice(0) returns the niceness of the process that runs the job
        assert ex.map(os.nice, [0, 0]) == [min(here + 7, 19)] * 2
    assert os.nice(0) == here


def test_auc_by_binary_search_matches_sklearn():
    from unlearnkit.service.deletion import auc_vs_sorted

    rng = np.random.default_rng(0)
    for m, n in [(1, 5), (7, 40), (50, 3)]:
        a = rng.integers(0, 6, size=m).astype(float)  # many ties
        b = rng.integers(0, 6, size=n).astype(float)
        want = roc_auc_score(np.r_[np.ones(m), np.zeros(n)], np.r_[a, b])
        assert auc_vs_sorted(a, np.sort(b)) == pytest.approx(want, abs=1e-12)

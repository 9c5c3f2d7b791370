"""Crash safety with the real SISA on digits: every request reaches ``done`` exactly once after a crash, and the
model equals SISA's from-scratch ensemble on the remaining data.

* in-process: the worker is stopped (as by SIGKILL: nothing more is written) after the ``retraining`` event, or in
  the middle of a window's shard jobs after one shard's checkpoints were written;
* subprocess: ``unlearnkit serve`` is SIGKILLed while a shard retrains, restarted, and driven over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service_fakes import TOKEN
from unlearnkit.methods.exact.sisa import SISA
from unlearnkit.service.config import load_service_config
from unlearnkit.service.deletion import DeletionService, SimulatedCrash
from unlearnkit.service.executors import SequentialExecutor
from unlearnkit.service.ledger import verify_ledger

SMALL = ["sisa.shards=3", "sisa.slices=2", "sisa.train.epochs=4", "model.hidden=[16]", "batch_window_s=0.3",
         "executor=sequential", "executor_params={}"]


def _config(store: Path, extra=()):
    return load_service_config("service_digits", [f"store={store}", *SMALL, *extra])


def _exact_retrain_digest(svc_or_sisa, train, where: Path) -> str:
    """SISA's from-scratch ensemble on D minus the deleted ids, on the same partition: its model digest."""
    sisa = svc_or_sisa
    fresh = SISA(sisa.config, sisa.model_factory, where, engine=sisa.engine)
    fresh.fit(train.exclude_ids(sisa.deleted_ids), assignment=sisa.assignment())
    return fresh.model_digest


def _checkpoints(store: Path) -> set[str]:
    root = store / "checkpoints"
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else set()


class CrashAfterFirstShard(SequentialExecutor):
    """Runs the first shard job of a window, then dies (when armed)."""

    armed = False

    def map(self, fn, jobs):
        if not self.armed or len(jobs) < 2:
            return super().map(fn, jobs)
        fn(jobs[0])
        raise SimulatedCrash("killed after the first shard job")


def _train_ids(svc, k: int, start: int = 0) -> list[int]:
    return svc.train.ids[start:start + k].tolist()


@pytest.mark.parametrize("where", ["after_retraining_event", "between_shard_jobs"])
def test_in_process_crash_resumes_to_the_exact_retrain(tmp_path, where):
    store = tmp_path / "store"
    cfg = _config(store)
    ex = CrashAfterFirstShard()

    def hook(stage, window):
        if where == "after_retraining_event" and stage == "retraining":
            raise SimulatedCrash(stage)

    svc = DeletionService.from_config(cfg, executor=ex, fault_hook=hook)
    ex.armed = where == "between_shard_jobs"
    before = _checkpoints(store)
    # ids spread over the sorted training ids: every shard is affected
    requests = [_train_ids(svc, 3, 0), _train_ids(svc, 2, 400), _train_ids(svc, 4, 900) + [1_000_000]]
    rids = [svc.submit(ids).request_id for ids in requests]
    with pytest.raises(SimulatedCrash):
        svc.run_pending()
    written = _checkpoints(store) - before
    mtimes = {k: (store / "checkpoints" / k / "manifest.json").stat().st_mtime_ns for k in written}
    assert (len(written) > 0) == (where == "between_shard_jobs")
    svc.close()  # the process is gone: close only releases files, it writes no event
    db = sqlite3.connect(f"file:{cfg.ledger_path}?mode=ro", uri=True)
    last = dict(db.execute("SELECT request_id, event FROM events ORDER BY seq").fetchall())
    db.close()
    assert [last[r] for r in rids] == ["retraining"] * 3
    # restart: recovers the interrupted window from the ledger and finishes it
    svc2 = DeletionService.from_config(cfg)
    try:
        assert svc2.serving().version == 1  # nothing was committed before the crash
        late = svc2.submit(_train_ids(svc2, 2, 1200)).request_id  # arrives after the restart: its own window
        svc2.run_pending()
        for rid, ids in zip(rids, requests):
            st = svc2.status(rid)
            assert st["state"] == "done", st
            assert [e["event"] for e in st["events"]].count("done") == 1
            assert st["deleted_ids"] == [i for i in ids if i != 1_000_000]
            assert st["audit"]["attempts"] == 2
        assert svc2.status(rids[2])["unknown_ids"] == [1_000_000]
        assert svc2.status(late)["state"] == "done"
        sisa = svc2.manager
        assert sisa.version == 3  # the resumed window, then the late request
        want = sorted({i for ids in requests for i in ids if i != 1_000_000} | set(svc2.status(late)["deleted_ids"]))
        assert sorted(sisa.deleted_ids.tolist()) == want
        assert svc2.status(late)["audit"]["model_digest"] == sisa.model_digest
        assert _exact_retrain_digest(sisa, svc2.train, tmp_path / "fresh") == sisa.model_digest
        rep = verify_ledger(cfg.ledger_path)
        assert rep.ok, rep
    finally:
        svc2.close()
    if where == "between_shard_jobs":
        # the first shard's checkpoints written before the crash are in the committed chain, and were found, not
        # rewritten, by the resumed window (content-addressed reuse)
        history = [json.loads(p.read_text()) for p in (store / "states").glob("v*.json")]
        used = {k for st in history for chain in st["chains"].values() for k in chain}
        assert written <= used
        assert {k: (store / "checkpoints" / k / "manifest.json").stat().st_mtime_ns for k in written} == mtimes


# -- SIGKILL of a real server process ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(store: Path, port: int, log: Path, extra=(), env=None) -> subprocess.Popen:
    env = {**os.environ, "UNLEARNKIT_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    args = [sys.executable, "-m", "unlearnkit.cli", "serve", "service_digits", "--port", str(port),
            "--set", f"store={store}"]
    for kv in (*SMALL, *extra):
        args += ["--set", kv]
    return subprocess.Popen(args, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def _ledger_events(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return db.execute("SELECT request_id, event FROM events ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # the schema is not created yet
        return []
    finally:
        db.close()


@pytest.mark.parametrize("executor", ["sequential", pytest.param("process", marks=pytest.mark.slow)])
def test_sigkill_during_a_shard_retrain_then_restart(tmp_path, executor):
    """Deterministic: the four requests are in the ledger before the server starts (recovery queues them as one
    window), and the test-only hook (UNLEARNKIT_TEST_HOLD_RETRAIN) holds that window after its first shard job until
    the SIGKILL — no timer decides where the kill lands."""
    from unlearnkit.service.deletion import HOLD_ENV
    from unlearnkit.service.ledger import Ledger

    store, log = tmp_path / "store", tmp_path / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # process: shard jobs run in worker processes that outlive the SIGKILLed server for a moment (slow: spawning
    # the workers costs seconds per start)
    extra = ["sisa.train.epochs=8"]
    if executor == "process":
        extra += ["executor=process", "executor_params={max_workers: 2}"]
    from unlearnkit.config.schema import DataConfig
    from unlearnkit.data import load_data

    train = load_data(DataConfig()).train
    ids = train.ids.tolist()
    requests = [ids[0:3], ids[500:502], ids[1000:1004], [5_000_000]]  # every shard is affected
    with Ledger(store / "ledger.sqlite3") as ledger:  # accepted before the crash
        rids = [ledger.receive(req, f"k{k}")[0].request_id for k, req in enumerate(requests)]
    marker = tmp_path / "held"
    proc = _start_server(store, port, log, extra, env={HOLD_ENV: str(marker)})
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():  # first fit, then the window: held after its first shard job
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        events = _ledger_events(store / "ledger.sqlite3")
        assert set(rids) <= {r for r, e in events if e == "retraining"}
        committed = json.loads((store / "state.json").read_text())
        first_ckpts = _checkpoints(store) - {k for chain in committed["chains"].values() for k in chain}
        assert first_ckpts, "the first shard job wrote no checkpoint before the hold"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        events = _ledger_events(store / "ledger.sqlite3")
        assert not any(e in ("done", "failed") for _, e in events)
        # restart: the unfinished window is resumed from the ledger
        proc = _start_server(store, port, log, extra)
        _wait_healthy(url, proc, log)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # an idempotent retry of an accepted request after the restart: same request, not a new one
        again = httpx.post(f"{url}/v1/deletions", json={"sample_ids": requests[1], "idempotency_key": "k1"},
                           headers=auth)
        assert again.status_code == 202 and again.json()["request_id"] == rids[1]
        # an id beyond int64 is refused before the ledger (it used to make every later restart fail)
        rows = len(_ledger_events(store / "ledger.sqlite3"))
        huge = httpx.post(f"{url}/v1/deletions", json={"sample_ids": [2**63]}, headers=auth)
        assert huge.status_code == 422 and len(_ledger_events(store / "ledger.sqlite3")) == rows
        deadline = time.monotonic() + 120
        while True:
            states = [httpx.get(f"{url}/v1/deletions/{r}", headers=auth).json() for r in rids]
            if all(s["state"] in ("done", "failed") for s in states):
                break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert [s["state"] for s in states] == ["done"] * 4
        assert states[3]["unknown_ids"] == [5_000_000] and states[3]["deleted_ids"] == []
        assert all(s["audit"]["attempts"] == 2 for s in states)
        model = httpx.get(f"{url}/v1/models/current").json()
        assert model["version"] == 2 and model["n_deleted"] == 9
        verify = httpx.get(f"{url}/v1/ledger/verify").json()
        assert verify["ok"], verify
        proc.send_signal(signal.SIGTERM)  # graceful stop: the worker and the store lock are released
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    events = _ledger_events(store / "ledger.sqlite3")
    for r in rids:  # one request each, finished exactly once
        mine = [e for rid, e in events if rid == r]
        assert mine.count("received") == 1 and mine.count("done") == 1
    assert len({rid for rid, _ in events}) == 4
    # the served model is SISA's exact from-scratch ensemble without the deleted ids
    cfg = _config(store, extra)
    from unlearnkit.data import load_data
    from unlearnkit.service.deletion import ModelFactory

    data = load_data(cfg.data)
    factory = ModelFactory(cfg.model.name, dict(cfg.model.params), tuple(data.train.input_shape), data.num_classes)
    sisa = SISA.load(store, factory, data.train)  # verifies every checkpoint digest
    assert sisa.model_digest == model["model_digest"]
    assert sorted(sisa.deleted_ids.tolist()) == sorted(i for req in requests[:3] for i in req)
    assert _exact_retrain_digest(sisa, data.train, tmp_path / "fresh") == sisa.model_digest
    assert verify_ledger(store / "ledger.sqlite3").ok


# -- restarts after hostile input, a rolled-back state file, a damaged ledger (issue 14) ----------------------------
def _two_windows(store: Path) -> tuple[list[str], list[list[int]]]:
    """A real service that completes two windows (model versions 2 and 3); closed afterwards."""
    svc = DeletionService.from_config(_config(store))
    try:
        reqs = [_train_ids(svc, 3, 0), _train_ids(svc, 2, 700)]
        rids = []
        for ids in reqs:
            rids.append(svc.submit(ids).request_id)
            svc.run_pending()
        assert svc.manager.version == 3
        return rids, reqs
    finally:
        svc.close()


def test_an_oversized_id_left_in_the_ledger_does_not_block_restarts(tmp_path):
    """A ``received`` row with an id ≥ 2**63 (what the old version wrote before its 500) is marked failed at the
    next start; the other unfinished request is applied; the start after that is clean."""
    from unlearnkit.service.ledger import Ledger, id_digest

    store = tmp_path / "store"
    cfg = _config(store)
    DeletionService.from_config(cfg).close()  # first start: fit
    with Ledger(cfg.ledger_path) as ledger:
        ok_rid = ledger.receive([int(i) for i in _config_train_ids(cfg)[:2]])[0].request_id
        bad_rid = "e" * 32
        ids = [2**63, 5]
        ledger.append(bad_rid, "received", {"sample_ids": ids, "id_digests": [id_digest(ledger.salt, i) for i in ids],
                                            "idempotency_key": None})
    svc = DeletionService.from_config(cfg)  # the old code: OverflowError here, at every restart
    try:
        assert svc.status(bad_rid)["state"] == "failed" and "recovery" in svc.status(bad_rid)["reason"]
        svc.run_pending()
        assert svc.status(ok_rid)["state"] == "done" and len(svc.status(ok_rid)["deleted_ids"]) == 2
        with pytest.raises(Exception, match="int64"):
            svc.submit([2**63])
    finally:
        svc.close()
    rep = verify_ledger(cfg.ledger_path)  # the forged row is reported, not raised
    assert not rep.ok and rep.first_broken_seq == 2 and "not a list of integers" in rep.reason
    DeletionService.from_config(cfg).close()


def _config_train_ids(cfg):
    from unlearnkit.data import load_data

    return load_data(cfg.data).train.ids.tolist()


def test_a_rolled_back_state_file_is_refused_until_the_newest_is_restored(tmp_path):
    import shutil

    from unlearnkit.errors import CheckpointError

    store = tmp_path / "store"
    rids, reqs = _two_windows(store)
    shutil.copy(store / "states" / "v2.json", store / "state.json")  # the older state: a valid seal, model v2
    with pytest.raises(CheckpointError, match="behind the deletion ledger") as err:
        DeletionService.from_config(_config(store))
    assert "states/v<N>.json with the highest N (≥ 3)" in str(err.value)
    assert verify_ledger(store / "ledger.sqlite3").ok  # the ledger itself is intact: the state is what is wrong
    shutil.copy(store / "states" / "v3.json", store / "state.json")
    svc = DeletionService.from_config(_config(store))  # the newest state starts (the lock was released)
    try:
        assert sorted(svc.manager.deleted_ids.tolist()) == sorted(i for r in reqs for i in r)
        assert svc.serving().model_digest == svc.status(rids[1])["audit"]["model_digest"]
    finally:
        svc.close()


def test_a_store_without_state_under_a_ledger_with_deletions_is_not_fitted_afresh(tmp_path):
    import shutil

    from unlearnkit.errors import CheckpointError

    store = tmp_path / "store"
    _two_windows(store)
    for name in ("state.json", "states", "checkpoints", "partitions"):
        p = store / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    with pytest.raises(CheckpointError, match="fitting afresh would bring the deleted samples back"):
        DeletionService.from_config(_config(store))
    assert not (store / "state.json").exists()  # refused before fitting


def test_a_corrupt_ledger_page_stops_the_start_until_it_is_repaired(tmp_path):
    from test_service_hardening import _corrupt_index_page
    from unlearnkit.errors import LedgerError

    store = tmp_path / "store"
    _two_windows(store)
    ledger = store / "ledger.sqlite3"
    _corrupt_index_page(ledger)
    rep = verify_ledger(ledger)
    assert not rep.ok and "integrity_check" in rep.reason
    with pytest.raises(LedgerError, match="damaged"):
        DeletionService.from_config(_config(store))
    db = sqlite3.connect(str(ledger))
    db.execute("REINDEX")  # what the error message says to do when only an index is damaged
    db.close()
    assert verify_ledger(ledger).ok
    DeletionService.from_config(_config(store)).close()


def test_store_and_ledger_files_are_private(tmp_path):
    import stat as st

    old = os.umask(0o022)
    try:
        store = tmp_path / "store"
        _two_windows(store)
    finally:
        os.umask(old)

    def mode(p):
        return st.S_IMODE(p.stat().st_mode)

    assert mode(store) == 0o700
    assert mode(store / "ledger.sqlite3") == 0o600 and mode(store / "state.json") == 0o600
    assert {mode(p) for p in (store / "states").iterdir()} == {0o600}
    assert {mode(p) for p in (store / "partitions").iterdir()} == {0o600}
    assert mode(store / "ledger.sqlite3.heads.jsonl") == 0o600


def test_a_tampered_checkpoint_stops_the_service_from_starting(tmp_path):
    from unlearnkit.errors import CheckpointError

    store = tmp_path / "store"
    cfg = _config(store)
    DeletionService.from_config(cfg).close()  # first start: fits and commits version 1
    victim = sorted((store / "checkpoints").glob("*/model.safetensors"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the weights
    victim.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        DeletionService.from_config(cfg)
    victim.write_bytes(bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF])))  # restored: starts again (lock was released)
    DeletionService.from_config(cfg).close()


def test_a_store_refuses_other_sisa_settings(tmp_path):
    from unlearnkit.errors import ConfigError

    store = tmp_path / "store"
    DeletionService.from_config(_config(store)).close()
    with pytest.raises(ConfigError, match="differing: shards"):
        DeletionService.from_config(_config(store, ["sisa.shards=2"]))
    DeletionService.from_config(_config(store)).close()  # the failed start released the store


def test_process_workers_exit_when_the_service_is_killed(tmp_path):
    """A SIGKILLed service must not leave its shard-training worker processes behind."""
    worker_pid_file = tmp_path / "worker.pid"
    prog = (
        "import os, signal\n"
        "from unlearnkit.service.deletion import GuardedExecutor\n"
        "from unlearnkit.service.executors import build_executor\n"
        "ex = GuardedExecutor(build_executor('process', max_workers=1), 0)\n"
        f"ex.map(lambda _: open({str(worker_pid_file)!r}, 'w').write(str(os.getpid())), [0])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", prog], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    worker = int(worker_pid_file.read_text())
    deadline = time.monotonic() + 20
    while Path(f"/proc/{worker}").exists():
        status = Path(f"/proc/{worker}/status").read_text() if Path(f"/proc/{worker}/status").exists() else ""
        if "State:\tZ" in status:  # exited, not yet reaped by init
            break
        assert time.monotonic() < deadline, "the worker process outlived the killed service"
        time.sleep(0.1)

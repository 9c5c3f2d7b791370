"""The deletion service under hostile input (issue 14, items 1–6), over the fake SISA and a real uvicorn server.

1. an id beyond int64 is refused at every entry point before the ledger is written; recovery never stops on one
   bad event (it is marked failed);
2. a state file older than the ledger's last completed deletion is refused;
3. the token is checked before the body is read; bodies are capped;
4. ``ledger verify`` reports a damaged SQLite page and a row with non-integer ids as broken (no traceback); the
   head is recorded beside the ledger and checked;
5. ledger, state and head files are 0600, their folders 0700;
6. the Host header is checked, short tokens are refused, no page loads scripts from a CDN.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import stat

import httpx
import pytest
from typer.testing import CliRunner

from service_fakes import TOKEN, make_fake_service
from test_service_ledger import _attacker
from unlearnkit.cli import app
from unlearnkit.errors import CheckpointError, ConfigError, DataError, LedgerError
from unlearnkit.service.cli import parse_ids
from unlearnkit.service.ledger import Ledger, id_digest, verify_ledger

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOO_BIG = 2**63  # one past int64
runner = CliRunner()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- 1. ids beyond int64 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids", [[TOO_BIG], [5, 2**64 + 7], [10**30]])
def test_an_id_beyond_int64_is_refused_by_the_python_api_before_the_ledger(fake_service, ids):
    with pytest.raises(DataError, match="int64"):
        fake_service.submit(ids)
    with pytest.raises(DataError, match="int64"):
        fake_service.ledger.receive(ids)  # the ledger's own API checks too
    assert fake_service.ledger.head()[0] == 0


def test_an_id_beyond_int64_is_refused_over_http_and_the_service_keeps_working(live_server):
    url, svc = live_server
    with httpx.Client(base_url=url, timeout=10.0) as c:
        r = c.post("/v1/deletions", json={"sample_ids": [TOO_BIG]}, headers=AUTH)
        assert r.status_code == 422, r.text
        assert "less than or equal to 9223372036854775807" in r.json()["detail"]
        assert svc.ledger.head()[0] == 0
        ok = c.post("/v1/deletions", json={"sample_ids": [2**63 - 1, 3]}, headers=AUTH)  # the largest id is fine
        assert ok.status_code == 202 and ok.json()["unknown_ids"] == [2**63 - 1]


def test_the_cli_refuses_ids_beyond_int64_and_odd_digits():
    assert parse_ids("9223372036854775807") == [2**63 - 1]
    for bad in ("9223372036854775808", "1" * 5000, "²", "٣", "1e3"):
        with pytest.raises(ConfigError, match="int64"):
            parse_ids(bad)
    r = runner.invoke(app, ["delete", "--ids", str(TOO_BIG), "--token", TOKEN, "--url", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "int64" in r.output and "Traceback" not in r.output


def _forge_received(ledger: Ledger, ids) -> str:
    """A ``received`` row as the old version wrote it (ids unchecked), through the chain: verify sees a valid link."""
    rid = "f" * 32
    ledger.append(rid, "received", {"sample_ids": ids, "id_digests": [id_digest(ledger.salt, int(i)) for i in ids],
                                    "idempotency_key": None})
    return rid


def test_recovery_marks_an_unreadable_request_failed_and_goes_on(tmp_path):
    store = tmp_path / "store"
    svc = make_fake_service(store)
    good = svc.submit([1, 2]).request_id
    bad = _forge_received(svc.ledger, [3, TOO_BIG])
    svc.close()  # "crash" with both requests unfinished
    svc2 = make_fake_service(store)  # the old code died here with OverflowError, at every restart
    try:
        assert svc2.status(bad)["state"] == "failed"
        assert svc2.status(bad)["reason"].startswith("recovery:")
        assert "not integers in [0, 9223372036854775807]" in svc2.status(bad)["reason"]
        svc2.run_pending()
        assert svc2.status(good)["state"] == "done" and svc2.status(good)["deleted_ids"] == [1, 2]
        assert sorted(svc2.manager.deleted_ids.tolist()) == [1, 2]  # id 3 of the bad request was not applied
    finally:
        svc2.close()
    svc3 = make_fake_service(store)  # and the next restart is clean
    assert svc3.pending_count == 0
    svc3.close()


def test_recovery_survives_a_row_whose_payload_is_not_json(tmp_path):
    store = tmp_path / "store"
    svc = make_fake_service(store)
    rid = svc.submit([4]).request_id
    svc.close()
    _attacker(store / "ledger.sqlite3", f"UPDATE events SET payload = '{{not json' WHERE request_id = '{rid}'")
    svc2 = make_fake_service(store)
    try:
        st = svc2.status(rid)
        assert st["state"] == "failed" and "cannot be read" in st["reason"]
        assert svc2.manager.deleted_ids.tolist() == []
    finally:
        svc2.close()
    rep = verify_ledger(store / "ledger.sqlite3")
    assert not rep.ok and rep.first_broken_seq == 1


# -- 2. a rolled-back state file ------------------------------------------------------------------------------------
def test_a_state_file_older_than_the_ledger_is_refused(tmp_path):
    store = tmp_path / "store"
    svc = make_fake_service(store)
    svc.submit([1, 2])
    svc.run_pending()
    svc.submit([5])
    svc.run_pending()
    assert svc.manager.version == 3
    svc.close()
    shutil.copy(store / "states" / "v2.json", store / "state.json")  # an older backup copied back
    with pytest.raises(CheckpointError, match="behind the deletion ledger") as err:
        make_fake_service(store)
    msg = str(err.value)
    assert "version 2" in msg and "model version 3" in msg and "never an older state file" in msg
    assert "highest N" in msg
    shutil.copy(store / "states" / "v3.json", store / "state.json")  # the newest one: starts again
    svc2 = make_fake_service(store)
    assert sorted(svc2.manager.deleted_ids.tolist()) == [1, 2, 5]
    svc2.close()


def test_a_state_that_lost_deleted_ids_is_refused_even_at_a_higher_version(tmp_path):
    store = tmp_path / "store"
    svc = make_fake_service(store)
    svc.submit([1, 2])
    svc.run_pending()
    svc.close()
    (store / "state.json").write_text(json.dumps({"version": 9, "deleted": [2]}))  # id 1 is back
    with pytest.raises(CheckpointError, match=r"1 sample id\(s\) that the deletion ledger reports as deleted"):
        make_fake_service(store)


def test_the_sisa_state_error_no_longer_says_restore_an_older_version(tmp_path):
    from unlearnkit.methods.exact.sisa import read_sealed

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": "unlearnkit-sisa-state/1", "version": 3, "state_sha256": "0" * 64}))
    with pytest.raises(CheckpointError) as err:
        read_sealed(path, "unlearnkit-sisa-state/1")
    assert "newest states/v<N>.json" in str(err.value) and "never an older version" in str(err.value)


# -- 3. token before body, body cap ---------------------------------------------------------------------------------
def _raw(url: str, head: str, body_chunks=(), timeout: float = 20.0) -> bytes:
    """Send a raw HTTP/1.1 request (headers, then optional chunks) and return the first bytes of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.encode())
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: what we want
        return s.recv(4096)  # socket.timeout (a failure) when the server waits for the body instead of answering


def test_the_token_is_checked_before_the_body_is_read(live_server):
    url, svc = live_server
    host = url.removeprefix("http://")
    # a 60 MB body is announced but never sent: the 401 must come without reading it
    head = (f"POST /v1/deletions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 62914560\r\n\r\n")
    answer = _raw(url, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"www-authenticate: bearer" in answer.lower()
    assert svc.ledger.head()[0] == 0


def test_bodies_over_the_cap_get_413_without_being_read(live_server):
    url, svc = live_server
    host = url.removeprefix("http://")
    declared = (f"POST /v1/deletions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 62914560\r\n\r\n")
    assert _raw(url, declared).startswith(b"HTTP/1.1 413")
    # chunked, no Content-Length: refused once the cap (4 MiB by default) is passed
    chunked = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")
    mib = b"%x\r\n" % (1 << 20) + b"[" * (1 << 20) + b"\r\n"
    answer = _raw(url, chunked, [mib] * 6)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    with httpx.Client(base_url=url, timeout=10.0) as c:
        assert c.get("/healthz").status_code == 200  # still serving
        small = c.post("/v1/deletions", json={"sample_ids": [1]}, headers=AUTH)
        assert small.status_code == 202


def test_the_body_cap_is_configurable(tmp_path):
    from unlearnkit.service.http import BackgroundServer, create_app

    svc = make_fake_service(tmp_path / "store")
    with BackgroundServer(create_app(svc, TOKEN, max_body_bytes=2048)) as srv, \
            httpx.Client(base_url=srv.url, timeout=10.0) as c:
        r = c.post("/v1/deletions", content=b'{"sample_ids": [' + b"1, " * 1000 + b"1]}", headers=AUTH)
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]
        assert c.post("/v1/deletions", json={"sample_ids": [1]}, headers=AUTH).status_code == 202


# -- 4. ledger verify: damaged page, non-integer ids, recorded head -------------------------------------------------
def _corrupt_index_page(path, index: str = "events_request") -> None:
    """Garble the cells of an index's root page (the rows themselves still read back in seq order)."""
    db = sqlite3.connect(str(path))
    page = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    off = (root - 1) * page
    for k in range(page - 300, page - 100):
        data[off + k] ^= 0x5A
    path.write_bytes(bytes(data))


def _ledger_with_rows(path, n: int = 30) -> None:
    with Ledger(path) as ledger:
        for i in range(n):
            ev, _ = ledger.receive([i, i + 1000])
            ledger.append(ev.request_id, "planned", {"window": "w", "deleted_ids": [i]})


def test_verify_reports_a_damaged_sqlite_page(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    _ledger_with_rows(path)
    assert verify_ledger(path).ok
    _corrupt_index_page(path)
    rep = verify_ledger(path)  # every row of the chain still reads back: only integrity_check sees it
    assert rep.rows == 60
    assert not rep.ok and "integrity_check" in rep.reason and rep.integrity != "ok"
    out = runner.invoke(app, ["ledger", "verify", str(path)])
    assert out.exit_code == 1 and "ledger BROKEN" in out.output and "damaged" in out.output
    with Ledger(path) as ledger, pytest.raises(LedgerError, match="REINDEX"):
        ledger.check_integrity()


def test_verify_reports_rows_with_non_integer_ids_as_broken(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        ledger.receive([1])
        for ids in (["abc"], [None], [1.5], [True], [TOO_BIG], "12"):
            ledger.append(uuid_hex(), "received", {"sample_ids": ids, "id_digests": [], "idempotency_key": None})
    rep = verify_ledger(path)
    assert not rep.ok and rep.first_broken_seq == 2 and "not a list of integers" in rep.reason
    out = runner.invoke(app, ["ledger", "verify", str(path), "--json"])
    assert out.exit_code == 1 and json.loads(out.stdout)["first_broken_seq"] == 2


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex


def test_the_head_is_recorded_and_a_truncation_against_it_is_reported(tmp_path):
    from unlearnkit.service.ledger import heads_path

    path = tmp_path / "ledger.sqlite3"
    _ledger_with_rows(path, 3)
    with Ledger(path) as ledger:
        rec = ledger.record_head("start")
    assert rec["head_seq"] == 6 and len(rec["head_hash"]) == 64
    line = json.loads(heads_path(path).read_text().splitlines()[-1])
    assert line["head_hash"] == rec["head_hash"] and _mode(heads_path(path)) == 0o600
    ok = runner.invoke(app, ["ledger", "verify", str(path)])
    assert ok.exit_code == 0 and rec["head_hash"] in ok.output
    _attacker(path, "DELETE FROM events WHERE seq = 6")  # the last row removed: the chain alone still verifies
    assert verify_ledger(path).ok
    bad = runner.invoke(app, ["ledger", "verify", str(path)])
    assert bad.exit_code == 1 and "recorded" in bad.output and "not in the chain" in bad.output
    # --expected-head keeps working as documented
    anchored = runner.invoke(app, ["ledger", "verify", str(path), "--expected-head", rec["head_hash"]])
    assert anchored.exit_code == 1


def test_every_window_records_the_head(fake_service):
    from unlearnkit.service.ledger import heads_path

    fake_service.submit([1])
    fake_service.run_pending()
    lines = heads_path(fake_service.ledger.path).read_text().splitlines()
    assert json.loads(lines[-1])["head_hash"] == fake_service.ledger.head()[1]


# -- 5. file modes --------------------------------------------------------------------------------------------------
def test_ledger_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "ledger.sqlite3"
        with Ledger(path) as ledger:
            ledger.receive([1, 2])
            assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
            for side in ("-wal", "-shm"):
                if path.with_name(path.name + side).exists():
                    assert _mode(path.with_name(path.name + side)) == 0o600
        legacy = tmp_path / "legacy.sqlite3"
        Ledger(legacy).close()
        os.chmod(legacy, 0o644)  # written by an older version
        Ledger(legacy).close()
        assert _mode(legacy) == 0o600
    finally:
        os.umask(old)


# -- 6. Host header, token length, no CDN ---------------------------------------------------------------------------
def test_the_host_header_is_checked(live_server):
    url, _ = live_server
    port = url.rsplit(":", 1)[1]
    with httpx.Client(base_url=url, timeout=10.0) as c:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
            r = c.get("/healthz", headers={"Host": host})
            assert r.status_code == 400 and "invalid Host header" in r.json()["detail"], host
            assert c.post("/v1/deletions", json={"sample_ids": [1]}, headers={**AUTH, "Host": host}
                          ).status_code == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_extend_the_list(tmp_path):
    from unlearnkit.service.http import BackgroundServer, create_app

    svc = make_fake_service(tmp_path / "store")
    with BackgroundServer(create_app(svc, TOKEN, allowed_hosts=["unlearn.example.org"])) as srv, \
            httpx.Client(base_url=srv.url, timeout=10.0) as c:
        assert c.get("/healthz", headers={"Host": "unlearn.example.org"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "other.example.org"}).status_code == 400


@pytest.mark.parametrize("token", ["x", "short-token", "a" * 15, "sixteen chars!!!"])
def test_short_or_spaced_tokens_are_refused(fake_service, token):
    from unlearnkit.service.http import create_app

    with pytest.raises(ConfigError, match="at least 16"):
        create_app(fake_service, token)


def test_serve_refuses_a_short_token_before_fitting(tmp_path, monkeypatch):
    import uvicorn

    def must_not_serve(*a, **k):
        raise AssertionError("the server started with a 3-character token")

    monkeypatch.setattr(uvicorn, "run", must_not_serve)
    monkeypatch.setenv("UNLEARNKIT_TOKEN", "abc")
    r = runner.invoke(app, ["serve", "service_digits", "--set", f"store={tmp_path / 'store'}"])
    assert r.exit_code == 2 and "at least 16" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "store" / "state.json").exists()  # refused before the first fit


def test_no_page_loads_scripts_from_a_cdn(live_server):
    url, _ = live_server
    with httpx.Client(base_url=url, timeout=10.0) as c:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            r = c.get(path)
            assert r.status_code == 404 and "cdn" not in r.text.lower()
        spec = c.get("/openapi.json")
        assert spec.status_code == 200 and "cdn" not in spec.text.lower()

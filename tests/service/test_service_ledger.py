"""The deletion ledger: hash chain recomputed independently, append-only triggers, tamper detection, idempotency."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import threading

import pytest

from unlearnkit.errors import LedgerError
from unlearnkit.service.ledger import IdempotencyConflict, Ledger, id_digest, verify_ledger


def _fill(ledger: Ledger) -> list[str]:
    """Two requests through their whole life: 8 rows (seq 1..8)."""
    a, _ = ledger.receive([1, 2, 3], "key-a")
    b, _ = ledger.receive([7], None)
    for rid in (a.request_id, b.request_id):
        ledger.append(rid, "planned", {"window": "w1", "deleted_ids": [1]})
    ledger.append_many([(a.request_id, "retraining", {"window": "w1"}), (b.request_id, "retraining", {"window": "w1"})])
    ledger.append_many([(a.request_id, "done", {"v": 2}), (b.request_id, "done", {"v": 2})])
    return [a.request_id, b.request_id]


def _attacker(path, *sql: str) -> None:
    """Edit the file as someone with write access would: drop the triggers, then run ``sql``."""
    script = ";\n".join(["DROP TRIGGER IF EXISTS events_no_update", "DROP TRIGGER IF EXISTS events_no_delete",
                         "DROP TRIGGER IF EXISTS meta_no_update", "DROP TRIGGER IF EXISTS meta_no_delete", *sql]) + ";"
    if shutil.which("sqlite3"):
        subprocess.run(["sqlite3", str(path)], input=script, text=True, check=True)
    else:  # pragma: no cover - the sqlite3 shell is missing; the Python module does the same
        db = sqlite3.connect(str(path))
        db.executescript(script)
        db.close()


def test_row_hash_matches_an_independent_recomputation(tmp_path):
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        _fill(ledger)
        salt, lid = ledger.salt, ledger.ledger_id
    db = sqlite3.connect(str(tmp_path / "l.sqlite3"))
    rows = db.execute("SELECT seq, time, request_id, event, idem_key, payload, prev_hash, row_hash FROM events "
                      "ORDER BY seq").fetchall()
    prev = hashlib.sha256(f"unlearnkit-ledger/1|{lid}|{salt}".encode()).hexdigest()
    assert len(rows) == 8
    for seq, time, rid, ev, idem, payload, prev_hash, row_hash in rows:
        body = json.dumps([seq, time, rid, ev, idem, payload], sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
        assert prev_hash == prev
        assert row_hash == hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()
        prev = row_hash
    # ids are stored with their salted digests, never any record content
    first = json.loads(rows[0][5])
    assert first["sample_ids"] == [1, 2, 3]
    assert first["id_digests"] == [hashlib.sha256(bytes.fromhex(salt) + str(i).encode()).hexdigest()
                                   for i in (1, 2, 3)]
    assert set(first) == {"sample_ids", "id_digests", "idempotency_key"}


def test_triggers_refuse_update_and_delete(tmp_path):
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        _fill(ledger)
    db = sqlite3.connect(str(tmp_path / "l.sqlite3"))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE events SET payload = '{}' WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM events WHERE seq = 8")
    with pytest.raises(sqlite3.DatabaseError, match="write-once"):
        db.execute("UPDATE meta SET value = 'x' WHERE key = 'salt'")
    db.close()
    rep = verify_ledger(tmp_path / "l.sqlite3")
    assert rep.ok and rep.rows == 8 and rep.head_seq == 8 and rep.warnings == []


def test_clean_ledger_verifies_and_reopens_with_the_same_salt(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
        salt, head = ledger.salt, ledger.head()
    with Ledger(path) as again:
        assert again.salt == salt and again.head() == head
        again.receive([9], "k9")
        assert again.head()[0] == 9
    rep = verify_ledger(path, expected_head=head[1])
    assert rep.ok and rep.rows == 9


def test_edited_row_is_named(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
    # the attacker changes which ids request 1's planning recorded (row 3)
    _attacker(path, "UPDATE events SET payload = '{\"deleted_ids\":[],\"window\":\"w1\"}' WHERE seq = 3")
    rep = verify_ledger(path)
    assert not rep.ok
    assert rep.first_broken_seq == 3
    assert "edited" in rep.reason
    assert any("triggers missing" in w for w in rep.warnings)


def test_edit_with_recomputed_row_hash_breaks_the_next_link(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
    db = sqlite3.connect(str(path))
    seq, time, rid, ev, idem, payload, prev = db.execute(
        "SELECT seq, time, request_id, event, idem_key, payload, prev_hash FROM events WHERE seq = 5").fetchone()
    db.close()
    forged = '{"window":"w2"}'
    body = json.dumps([seq, time, rid, ev, idem, forged], sort_keys=True, separators=(",", ":")).encode()
    new_hash = hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()
    _attacker(path, f"UPDATE events SET payload = '{forged}', row_hash = '{new_hash}' WHERE seq = 5")
    rep = verify_ledger(path)
    assert (rep.ok, rep.first_broken_seq) == (False, 6)
    assert "prev_hash" in rep.reason


def test_deleted_row_is_a_seq_gap(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
    _attacker(path, "DELETE FROM events WHERE seq = 4")
    rep = verify_ledger(path)
    assert (rep.ok, rep.first_broken_seq, rep.rows) == (False, 5, 7)
    assert "4..4 were deleted" in rep.reason


def test_truncation_needs_an_anchored_head(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
        head = ledger.head()[1]
    _attacker(path, "DELETE FROM events WHERE seq >= 7")
    assert verify_ledger(path).ok  # a clean prefix is a valid chain ...
    rep = verify_ledger(path, expected_head=head)  # ... but no longer extends the head kept elsewhere
    assert (rep.ok, rep.first_broken_seq) == (False, 7)


def test_altered_salt_breaks_row_one(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        _fill(ledger)
    _attacker(path, "UPDATE meta SET value = '00' || substr(value, 3) WHERE key = 'salt'")
    rep = verify_ledger(path)
    assert (rep.ok, rep.first_broken_seq) == (False, 1)


def test_second_terminal_event_is_flagged(tmp_path):
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        a, _ = _fill(ledger)
        ledger.append(a, "done", {"v": 3})  # a request applied twice
    rep = verify_ledger(path)
    assert (rep.ok, rep.first_broken_seq) == (False, 9)
    assert "cannot follow 'done'" in rep.reason


def test_idempotency(tmp_path):
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        e1, c1 = ledger.receive([5, 6], "k")
        e2, c2 = ledger.receive([6, 5], "k")  # same ids, other order: the same request
        assert (c1, c2) == (True, False) and e1.request_id == e2.request_id and e1.seq == e2.seq
        with pytest.raises(IdempotencyConflict) as info:
            ledger.receive([5], "k")
        assert info.value.request_id == e1.request_id
        assert ledger.head()[0] == 1  # neither the retry nor the conflict wrote a row
        n1, _ = ledger.receive([5, 6], None)
        n2, _ = ledger.receive([5, 6], None)  # without a key, two requests
        assert n1.request_id != n2.request_id


def test_salted_digests_differ_between_ledgers(tmp_path):
    a = Ledger(tmp_path / "a.sqlite3")
    b = Ledger(tmp_path / "b.sqlite3")
    assert a.salt != b.salt
    assert id_digest(a.salt, 42) != id_digest(b.salt, 42)
    assert id_digest(a.salt, 42) == hashlib.sha256(bytes.fromhex(a.salt) + b"42").hexdigest()
    a.close()
    b.close()


def test_concurrent_appends_keep_one_chain(tmp_path):
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path, synchronous="normal")

    def client(k: int) -> None:
        for i in range(40):
            ledger.receive([k * 1000 + i], f"c{k}-{i}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.counts() == {"received": 320}
    ledger.close()
    rep = verify_ledger(path)
    assert rep.ok and rep.rows == 320 and rep.head_seq == 320


def test_bad_files_raise_ledger_error(tmp_path):
    with pytest.raises(LedgerError, match="not found"):
        verify_ledger(tmp_path / "missing.sqlite3")
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError):
        verify_ledger(junk)
    with pytest.raises(LedgerError):
        Ledger(junk)
    with pytest.raises(LedgerError, match="synchronous"):
        Ledger(tmp_path / "x.sqlite3", synchronous="off")  # type: ignore[arg-type]


def test_sqlite_file_without_ledger_tables_says_how_to_fix(tmp_path):
    """An empty file or another SQLite database (e.g. a copy without its -wal file) names the fix, not just the
    sqlite error."""
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (a)")
    db.commit()
    db.close()
    for f in (empty, other):
        with pytest.raises(LedgerError, match=r"not a readable unlearnkit ledger .*ledger\.sqlite3-wal"):
            verify_ledger(f)

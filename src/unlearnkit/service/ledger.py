"""The deletion ledger: an append-only, hash-chained event log in SQLite (WAL mode).

Every state change of a deletion request is one row of the ``events`` table::

    seq        1, 2, 3, ... (no gaps)
    time       UTC ISO-8601 with microseconds ("2025-01-31T12:00:00.123456+00:00")
    request_id the request the event belongs to (32 hex characters)
    event      received | planned | retraining | done | failed
    idem_key   the client's idempotency key (``received`` rows only; unique), else NULL
    payload    canonical JSON (sorted keys, no spaces): sample ids, their salted SHA-256 digests, shards, digests ...
    prev_hash  row_hash of row seq − 1 (row 1: the genesis hash, see below)
    row_hash   SHA-256( bytes(prev_hash) || canonical JSON [seq, time, request_id, event, idem_key, payload] )

The genesis hash is SHA-256("unlearnkit-ledger/1|<ledger_id>|<salt>"), so the ``meta`` table (format, ledger id,
per-ledger salt) is bound to the chain too. Triggers refuse UPDATE and DELETE on both tables, so the library and any
honest SQLite client can only append. An attacker with write access to the file can drop the triggers and edit rows:
:meth:`Ledger.verify` recomputes the chain and names the first row whose content or link no longer matches. An
attacker who rewrites *every* row after the edit (recomputing all hashes) can only be caught against a head hash kept
elsewhere: each ``done`` response and :meth:`Ledger.verify` report ``head_hash`` for that purpose (pass it back as
``expected_head`` to check that the ledger still extends it). Deleting trailing rows is likewise only visible
against a kept head (or seq count).

The ledger stores sample ids and salted digests of ids (SHA-256 of ``salt || id``), never the deleted records. The
ids themselves say who asked to be forgotten: the file (and its ``-wal``/``-shm`` companions) is created readable by
its owner only (0600), a missing folder 0700. Sample ids are integers in [0, 2**63 − 1] (int64), checked before a
row is written. Writes use ``BEGIN IMMEDIATE`` transactions with ``synchronous=FULL`` by default: a row whose append
returned is on disk and survives SIGKILL and power loss.

:meth:`Ledger.record_head` appends the current head to ``<ledger>.heads.jsonl`` (the service does at start and after
every window); ``unlearnkit ledger verify`` checks that the last head recorded there is still in the chain. Copy
that line somewhere the ledger's host cannot write to anchor it for real (``--expected-head``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from unlearnkit.errors import DataError, LedgerError
from unlearnkit.persist import append_line, private_dir, refuse_symlink
from unlearnkit.persist import canonical_json as _canonical_json

FORMAT = "unlearnkit-ledger/1"
EVENTS: tuple[str, ...] = ("received", "planned", "retraining", "done", "failed")
TERMINAL: frozenset[str] = frozenset({"done", "failed"})
#: allowed predecessor → successors of a request's events (``retraining`` repeats when a crashed window resumes)
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"received"}),
    "received": frozenset({"planned", "failed"}),
    "planned": frozenset({"retraining", "failed"}),
    "retraining": frozenset({"retraining", "done", "failed"}),
    "done": frozenset(),
    "failed": frozenset(),
}
APPEND_ONLY_TRIGGERS: tuple[str, ...] = ("events_no_update", "events_no_delete", "meta_no_update", "meta_no_delete")
#: largest sample id (int64: numpy and torch hold ids as int64)
MAX_SAMPLE_ID = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    request_id TEXT NOT NULL,
    event TEXT NOT NULL,
    idem_key TEXT,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_idem ON events(idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_request ON events(request_id, seq);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'unlearnkit ledger is append-only: UPDATE of events refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'unlearnkit ledger is append-only: DELETE from events refused'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'unlearnkit ledger meta is write-once: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'unlearnkit ledger meta is write-once: DELETE refused'); END;
"""


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused with different sample ids (HTTP 409)."""

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def utc_now() -> str:
    """Current UTC time, ISO-8601 with microseconds and ``+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace (the form that is hashed), UTF-8 kept; non-finite floats are refused."""
    return _canonical_json(obj, ensure_ascii=False, allow_nan=False)


def genesis_hash(ledger_id: str, salt: str) -> str:
    """prev_hash of row 1: SHA-256 hex of ``"unlearnkit-ledger/1|<ledger_id>|<salt>"``."""
    return hashlib.sha256(f"{FORMAT}|{ledger_id}|{salt}".encode()).hexdigest()


def row_digest(prev_hash: str, seq: int, time: str, request_id: str, event: str, idem_key: str | None,
               payload: str) -> str:
    """row_hash = SHA-256 hex of ``bytes.fromhex(prev_hash) || canonical_json([seq, time, request_id, event,
    idem_key, payload])`` (payload is the stored JSON text, hashed as a string)."""
    body = canonical_json([seq, time, request_id, event, idem_key, payload]).encode()
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def is_sample_id(v: Any) -> bool:
    """True for an ``int`` (not a bool) in [0, :data:`MAX_SAMPLE_ID`]."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SAMPLE_ID


def check_sample_ids(ids: Any) -> list[int]:
    """``ids`` as a list of sample ids, or :class:`DataError` naming up to five bad items (bounded message).

    A sample id is a non-negative 64-bit integer (numpy integers are accepted and converted).
    """
    if isinstance(ids, (str, bytes, dict)) or not hasattr(ids, "__iter__"):
        raise DataError("sample_ids must be a list of integers, e.g. [12, 40]")
    out, bad = [], []
    for v in ids:
        if hasattr(v, "dtype") and hasattr(v, "item") and not isinstance(v, (bool, float)):
            v = v.item()  # numpy integer
        if is_sample_id(v):
            out.append(v)
        elif len(bad) < 5:
            bad.append(v)
    if bad:
        shown = ", ".join(repr(b)[:30] for b in bad)
        raise DataError(f"sample ids must be integers in [0, {MAX_SAMPLE_ID}] (int64); got {shown}")
    return out


def id_digest(salt: str, sample_id: int) -> str:
    """Salted SHA-256 hex of a sample id: SHA-256(bytes.fromhex(salt) || decimal id as ASCII)."""
    return hashlib.sha256(bytes.fromhex(salt) + str(int(sample_id)).encode()).hexdigest()


@dataclass(frozen=True)
class Event:
    """One ledger row. ``payload`` is the decoded JSON object."""

    seq: int
    time: str
    request_id: str
    event: str
    idem_key: str | None
    payload: dict[str, Any]
    prev_hash: str
    row_hash: str
    error: str | None = None  # why the stored payload could not be read (then ``payload`` is empty)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "request_id": self.request_id, "event": self.event,
                "payload": self.payload, "row_hash": self.row_hash}


@dataclass
class VerifyReport:
    """Result of :meth:`Ledger.verify`.

    Attributes:
        ok: True when the chain, the seq numbering and every request's event order are intact.
        rows: number of rows read.
        first_broken_seq: seq of the first row that fails a check (0 = the meta table), None when ok or when only
            the SQLite file itself is damaged (see ``integrity``).
        reason: why the ledger fails (None when ok).
        integrity: ``"ok"``, or what SQLite's ``PRAGMA integrity_check`` reports (a damaged page or index).
        head_seq / head_hash: last row's seq and row_hash as stored (anchor these outside the ledger).
        warnings: non-fatal findings (append-only triggers missing: someone with file access dropped them).
    """

    ok: bool
    rows: int
    first_broken_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str | None = None
    warnings: list[str] = field(default_factory=list)
    integrity: str = "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "first_broken_seq": self.first_broken_seq, "reason": self.reason,
                "head_seq": self.head_seq, "head_hash": self.head_hash, "warnings": list(self.warnings),
                "integrity": self.integrity}


def _row_to_event(row: Sequence[Any]) -> Event:
    """An :class:`Event` of a stored row; a payload that is not a JSON object gives ``payload={}`` and ``error``
    (readers such as recovery must never stop on one damaged row)."""
    seq, time, rid, ev, idem, payload, prev, h = row
    try:
        obj = json.loads(payload)
        error = None if isinstance(obj, dict) else "payload is not a JSON object"
    except (ValueError, TypeError, RecursionError) as err:
        obj, error = {}, f"payload is not valid JSON ({type(err).__name__})"
    return Event(int(seq), time, rid, ev, idem, obj if error is None else {}, prev, h, error)


def heads_path(ledger_path: str | Path) -> Path:
    """Where :meth:`Ledger.record_head` appends: ``<ledger file>.heads.jsonl`` beside the ledger."""
    p = Path(ledger_path)
    return p.with_name(p.name + ".heads.jsonl")


def read_recorded_head(ledger_path: str | Path) -> dict[str, Any] | None:
    """The last valid line of :func:`heads_path` (``{"time", "head_seq", "head_hash", "event"}``), or None."""
    path = heads_path(ledger_path)
    if not path.is_file() or path.is_symlink():
        return None
    last = None
    with open(path, "rb") as f:
        for line in f.read(1 << 24).splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("head_hash"), str) and \
                    len(obj["head_hash"]) == 64 and isinstance(obj.get("head_seq"), int):
                last = obj
    return last


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing (SQLite gives its -wal/-shm files the database's mode), and
    tighten an existing ledger and its companions to 0600."""
    refuse_symlink(path, "ledger file")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except OSError:  # pragma: no cover - a file we do not own: left as it is
            pass


class Ledger:
    """Append-only, hash-chained deletion ledger in one SQLite file (created on first open).

    Args:
        path: the SQLite file (its folder is created). ``-wal`` and ``-shm`` files live beside it.
        synchronous: ``"full"`` (default: each append is fsynced; survives power loss) or ``"normal"`` (WAL default:
            survives a killed process, may lose the last appends on power loss; faster).

    Thread-safe: one connection guarded by a lock; :meth:`verify` reads through its own read-only connection.

    Raises:
        LedgerError: the file is not an unlearnkit ledger, or its format is unknown.
    """

    def __init__(self, path: str | Path, *, synchronous: Literal["full", "normal"] = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise LedgerError(f"ledger synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.path = Path(path)
        if not self.path.parent.exists():
            private_dir(self.path.parent)
        _private_file(self.path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._init_schema()
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"cannot open ledger {self.path}: {err}; is it an unlearnkit ledger (SQLite file)?"
                              ) from err
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise LedgerError(f"{self.path} has ledger format {meta.get('format')!r}, expected {FORMAT!r}; "
                              "use a new ledger path or the unlearnkit version that wrote it")
        self.ledger_id: str = meta["ledger_id"]
        self.salt: str = meta["salt"]
        self.genesis: str = genesis_hash(self.ledger_id, self.salt)

    def _init_schema(self) -> None:
        with self._lock:
            self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); runs outside a transaction
            self._db.execute("BEGIN IMMEDIATE")
            try:
                have = {k for (k,) in self._db.execute("SELECT key FROM meta")}
                if not have:
                    rows = [("format", FORMAT), ("ledger_id", uuid.uuid4().hex), ("salt", secrets.token_hex(32)),
                            ("created_at", utc_now())]
                    self._db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- writing ----------------------------------------------------------------------------------------------
    def _head_locked(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, row_hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), row[1]) if row else (0, self.genesis)

    @staticmethod
    def _prepare(request_id: str, event: str, payload: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
        """Validate and serialise a row before the write lock is taken (JSON is the costly part of an append)."""
        if event not in EVENTS:
            raise LedgerError(f"unknown ledger event {event!r}; valid: {', '.join(EVENTS)}")
        text = canonical_json(payload)
        return request_id, event, text, json.loads(text)

    def _insert_locked(self, rows: Sequence[tuple[str, str, str, dict[str, Any]]],
                       idem_key: str | None = None) -> list[Event]:
        seq, prev = self._head_locked()
        now = utc_now()
        out, params = [], []
        for rid, ev, text, obj in rows:
            seq += 1
            h = row_digest(prev, seq, now, rid, ev, idem_key, text)
            params.append((seq, now, rid, ev, idem_key, text, prev, h))
            out.append(Event(seq, now, rid, ev, idem_key, obj, prev, h))
            prev = h
        self._db.executemany(
            "INSERT INTO events(seq, time, request_id, event, idem_key, payload, prev_hash, row_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params)
        return out

    def append_many(self, items: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Event]:
        """Append ``(request_id, event, payload)`` rows in one transaction (all or none); returns the new events.

        Rows of one call share one timestamp.
        """
        rows = [self._prepare(rid, ev, payload) for rid, ev, payload in items]
        if not rows:
            return []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = self._insert_locked(rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out

    def append(self, request_id: str, event: str, payload: dict[str, Any]) -> Event:
        """Append one event row (one transaction)."""
        return self.append_many([(request_id, event, payload)])[0]

    def receive(self, sample_ids: Sequence[int], idempotency_key: str | None = None) -> tuple[Event, bool]:
        """Record a new deletion request (event ``received``) unless ``idempotency_key`` was seen before.

        The payload holds ``sample_ids`` (ints, as given), ``id_digests`` (salted SHA-256 of each id) and
        ``idempotency_key``.

        Returns:
            ``(received_event, created)``: ``created`` is False when the key was already used with the same ids (the
            original event is returned).

        Raises:
            IdempotencyConflict: the key was used before with different sample ids.
        """
        out = self.receive_many([(sample_ids, idempotency_key)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def receive_many(self, requests: Sequence[tuple[Sequence[int], str | None]]
                     ) -> list[tuple[Event, bool] | IdempotencyConflict]:
        """:meth:`receive` for several requests in **one** transaction (one fsync: group commit).

        Returns, per request in order, ``(event, created)`` or the :class:`IdempotencyConflict` it caused (a conflict
        does not abort the others). A key repeated inside the batch resolves to the first request with that key.
        Any other error (disk full ...) aborts the whole transaction and is raised.
        """
        prepared = []
        for sample_ids, key in requests:
            ids = check_sample_ids(sample_ids)
            payload = {"sample_ids": ids, "id_digests": [id_digest(self.salt, i) for i in ids],
                       "idempotency_key": key}
            prepared.append((ids, key, self._prepare(uuid.uuid4().hex, "received", payload)))
        results: list[tuple[Event, bool] | IdempotencyConflict] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for ids, key, row in prepared:
                    if key is not None:
                        found = self._db.execute(
                            "SELECT seq, time, request_id, event, idem_key, payload, prev_hash, row_hash FROM events "
                            "WHERE idem_key = ?", (key,)).fetchone()
                        if found is not None:
                            old = _row_to_event(found)
                            if sorted(old.payload["sample_ids"]) != sorted(ids):
                                results.append(IdempotencyConflict(
                                    f"idempotency key {key!r} was already used by request {old.request_id} with "
                                    f"{len(old.payload['sample_ids'])} different sample id(s); use a new key for a "
                                    "new request, or resend exactly the same ids to get the original request back",
                                    request_id=old.request_id))
                            else:
                                results.append((old, False))
                            continue
                    results.append((self._insert_locked([row], key)[0], True))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return results

    # -- reading ----------------------------------------------------------------------------------------------
    def events(self, request_id: str | None = None, *, after_seq: int = 0) -> list[Event]:
        """Events in seq order, of one request or all (those with seq > ``after_seq``)."""
        q = "SELECT seq, time, request_id, event, idem_key, payload, prev_hash, row_hash FROM events WHERE seq > ?"
        args: tuple[Any, ...] = (after_seq,)
        if request_id is not None:
            q += " AND request_id = ?"
            args += (request_id,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY seq", args).fetchall()
        return [_row_to_event(r) for r in rows]

    def head(self) -> tuple[int, str]:
        """``(seq, row_hash)`` of the last row (``(0, genesis)`` for an empty ledger)."""
        with self._lock:
            return self._head_locked()

    def unfinished(self) -> dict[str, list[Event]]:
        """Requests whose last event is not ``done``/``failed``: request_id → its events, in first-received order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, time, request_id, event, idem_key, payload, prev_hash, row_hash FROM events "
                "WHERE request_id IN (SELECT request_id FROM events GROUP BY request_id "
                "HAVING SUM(event IN ('done', 'failed')) = 0) ORDER BY seq").fetchall()
        out: dict[str, list[Event]] = {}
        for r in rows:
            e = _row_to_event(r)
            out.setdefault(e.request_id, []).append(e)
        return out

    def check_integrity(self) -> None:
        """Run SQLite's ``PRAGMA quick_check`` (the service does at start).

        Raises:
            LedgerError: a damaged page or index (says how to repair it).
        """
        with self._lock:
            try:
                found = "; ".join(str(r[0]) for r in self._db.execute("PRAGMA quick_check(10)").fetchall())
            except sqlite3.DatabaseError as err:
                found = str(err)
        if found != "ok":
            raise LedgerError(
                f"the ledger {self.path} is damaged ({found[:300]}); stop and restore it from a backup (sqlite3 "
                f"'.backup'). If only an index is damaged, `sqlite3 {self.path} REINDEX` rebuilds it; then check "
                "with `unlearnkit ledger verify`")

    def last_done(self) -> tuple[int, int, str] | None:
        """``(seq, model_version, model_digest)`` of the newest ``done`` event whose audit names them, or None."""
        with self._lock:
            rows = self._db.execute("SELECT seq, payload FROM events WHERE event = 'done' ORDER BY seq DESC"
                                    ).fetchall()
        for seq, payload in rows:
            try:
                audit = json.loads(payload).get("audit") or {}
                version, digest = audit.get("model_version"), audit.get("model_digest")
            except (ValueError, TypeError, AttributeError, RecursionError):
                continue
            if isinstance(version, int) and not isinstance(version, bool) and isinstance(digest, str):
                return int(seq), version, digest
        return None

    def deleted_ids(self) -> set[int]:
        """Every sample id that a ``done`` event reports as deleted (damaged payloads are skipped)."""
        with self._lock:
            rows = self._db.execute("SELECT payload FROM events WHERE event = 'done'").fetchall()
        out: set[int] = set()
        for (payload,) in rows:
            try:
                ids = json.loads(payload).get("deleted_ids") or []
            except (ValueError, TypeError, AttributeError, RecursionError):
                continue
            if isinstance(ids, list):
                out.update(i for i in ids if is_sample_id(i))
        return out

    def record_head(self, event: str) -> dict[str, Any]:
        """Append the current head (``time, head_seq, head_hash, event``) to :func:`heads_path` (0600, fsynced);
        returns the record. An operator compares it with ``unlearnkit ledger verify`` (or copies it elsewhere)."""
        seq, h = self.head()
        rec = {"time": utc_now(), "head_seq": seq, "head_hash": h, "event": event}
        append_line(heads_path(self.path), json.dumps(rec, sort_keys=True), mode=0o600)
        return rec

    def counts(self) -> dict[str, int]:
        """Number of rows per event kind."""
        with self._lock:
            rows = self._db.execute("SELECT event, COUNT(*) FROM events GROUP BY event").fetchall()
        return {ev: int(n) for ev, n in rows}

    def verify(self, expected_head: str | None = None) -> VerifyReport:
        """Check the whole chain (see :func:`verify_ledger`)."""
        return verify_ledger(self.path, expected_head=expected_head)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_ledger(path: str | Path, *, expected_head: str | None = None) -> VerifyReport:
    """Recompute the hash chain of the ledger at ``path`` and name the first broken row.

    Checks, in seq order: seq numbers are 1, 2, 3 … (a gap means deleted or renumbered rows); ``prev_hash`` equals
    the previous row's ``row_hash`` (row 1: the genesis hash from the meta table); the stored ``row_hash`` equals the
    recomputed one (the row's content was edited); the payload is canonical JSON; a ``received`` row's id digests
    match its ids under the ledger's salt; each request's events follow ``received → planned → retraining(+) →
    done | failed`` with exactly one terminal event. ``expected_head`` (a row_hash kept elsewhere) must appear in
    the chain. SQLite's ``PRAGMA integrity_check`` must pass (a damaged page or index is reported even when the
    chain's rows still read back). Missing append-only triggers are reported as a warning. A damaged row (ids that
    are not integers, text that is not UTF-8 ...) is reported as broken, never raised.

    Opens the file read-only; never creates or modifies it.

    Raises:
        LedgerError: the file does not exist or is not an SQLite database.
    """
    path = Path(path)
    if not path.is_file():
        raise LedgerError(f"ledger file not found: {path}; give the path of an existing ledger (ledger.sqlite3)")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.DatabaseError as err:  # pragma: no cover - connect is lazy
        raise LedgerError(f"cannot open ledger {path}: {err}") from err
    try:
        try:
            integrity = "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check(20)").fetchall())[:2000]
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            triggers = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            cur = db.execute("SELECT seq, time, request_id, event, idem_key, payload, prev_hash, row_hash FROM events "
                             "ORDER BY seq")
        except sqlite3.DatabaseError as err:
            raise LedgerError(
                f"{path} is not a readable unlearnkit ledger ({err}); give the ledger.sqlite3 of a service store "
                "(a copy taken while the service runs needs its ledger.sqlite3-wal file too, or use sqlite3's .backup)"
            ) from err
        warnings = []
        missing = [t for t in APPEND_ONLY_TRIGGERS if t not in triggers]
        if missing:
            warnings.append(f"append-only triggers missing: {', '.join(missing)} (dropped by someone with write "
                            "access to the file; the ledger can no longer refuse edits by itself)")
        damaged = None if integrity == "ok" else (
            f"the SQLite file is damaged (PRAGMA integrity_check: {integrity[:300]}); restore the ledger from a "
            "backup (sqlite3 .backup) — rows may be lost or unreadable")
        if meta.get("format") != FORMAT or not isinstance(meta.get("salt"), str) or \
                not isinstance(meta.get("ledger_id"), str):
            fmt = str(meta.get("format"))[:40]
            return VerifyReport(False, 0, 0, f"meta table is missing or altered (format={fmt!r}, "
                                "salt/ledger_id present: "
                                f"{'salt' in meta}/{'ledger_id' in meta})", warnings=warnings, integrity=integrity)
        salt = meta["salt"]
        try:
            prev = genesis_hash(meta["ledger_id"], salt)
            id_digest(salt, 0)
        except ValueError:
            return VerifyReport(False, 0, 0, "meta table is altered (the salt is not hex)", warnings=warnings,
                                integrity=integrity)
        last: dict[str, str] = {}
        n = 0
        head_seq, head_hash = 0, None
        seen_expected = expected_head is None
        broken: tuple[int, str] | None = None
        rows = iter(cur)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except sqlite3.DatabaseError as err:  # a damaged page or undecodable text: stop reading here
                if broken is None:
                    broken = (n + 1, f"row after seq {n} cannot be read ({err})")
                break
            n += 1
            seq, time, rid, ev, idem, payload, prev_hash, row_hash = row
            head_seq, head_hash = seq if isinstance(seq, int) else n, row_hash
            if broken is not None:
                continue
            if not all(isinstance(x, str) for x in (time, rid, ev, payload, prev_hash, row_hash)) or \
                    not (idem is None or isinstance(idem, str)):
                broken = (n, "a field of the row has the wrong type (text expected): the row was altered")
                continue
            if seq != n:
                broken = (int(seq), f"seq {seq} found where {n} was expected: row(s) {n}..{int(seq) - 1} were "
                                    "deleted or renumbered")
                continue
            if prev_hash != prev:
                broken = (n, "prev_hash does not match the previous row's row_hash (the chain link was rewritten "
                             "or an earlier row was replaced)")
                continue
            try:
                recomputed = row_digest(prev_hash, n, time, rid, ev, idem, payload)
            except (ValueError, TypeError) as err:
                broken = (n, f"row cannot be hashed ({err}): a field was altered")
                continue
            if recomputed != row_hash:
                broken = (n, "row_hash does not match the row's content: the row was edited after it was written")
                continue
            prev = row_hash
            try:
                obj = json.loads(payload)
                canonical = canonical_json(obj) == payload
            except (ValueError, TypeError, RecursionError):
                obj, canonical = None, False
            if not canonical or not isinstance(obj, dict):
                broken = (n, "payload is not canonical JSON")
                continue
            if ev not in TRANSITIONS.get(last.get(rid), frozenset()):
                broken = (n, f"event {ev!r} of request {rid} cannot follow {last.get(rid)!r} "
                             "(a request was applied twice or its events are out of order)")
                continue
            last[rid] = ev
            if ev == "received":
                ids = obj.get("sample_ids")
                digs = obj.get("id_digests")
                if not isinstance(ids, list) or not all(is_sample_id(i) for i in ids):
                    broken = (n, f"received row: sample_ids are not a list of integers in [0, {MAX_SAMPLE_ID}]")
                    continue
                if not isinstance(digs, list) or [id_digest(salt, i) for i in ids] != digs:
                    broken = (n, "received row: id_digests do not match sample_ids under this ledger's salt")
                    continue
            if not seen_expected and row_hash == expected_head:
                seen_expected = True
        if broken is None and not seen_expected:
            broken = (head_seq + 1 if n else 1, f"expected head hash {expected_head} is not in the chain: rows were "
                                                 "removed from the end or the chain was rewritten")
        if broken is not None:
            reason = broken[1] if damaged is None else f"{broken[1]}; {damaged}"
            return VerifyReport(False, n, broken[0], reason, head_seq, head_hash, warnings, integrity)
        if damaged is not None:
            return VerifyReport(False, n, None, damaged, head_seq, head_hash, warnings, integrity)
        return VerifyReport(True, n, None, None, head_seq, head_hash, warnings, integrity)
    except sqlite3.DatabaseError as err:
        raise LedgerError(f"{path} cannot be read as an unlearnkit ledger ({err}); restore it from a backup") from err
    finally:
        db.close()


class GroupCommitter:
    """Accepts from many threads or event loops, committed in batches by one writer thread (one fsync per batch).

    With ``synchronous=full`` each commit waits for an fsync (about 0.5 ms on an idle disk, 5 ms and more on a busy
    one); committing every request that is waiting at that moment in one transaction keeps the accept rate up
    without weakening durability: a callback runs only after its row is on disk.

    Args:
        ledger: the ledger to write to.
        on_received: called in the writer thread with ``(event, created)`` of each committed request, before its
            callback (the service queues the request there).
        max_batch: most requests in one transaction.
    """

    def __init__(self, ledger: Ledger, on_received: Any = None, max_batch: int = 256) -> None:
        self.ledger = ledger
        self.on_received = on_received
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._queue: list[tuple[Sequence[int], str | None, Any]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="unlearnkit-ledger-writer", daemon=True)
        self._thread.start()

    def submit(self, sample_ids: Sequence[int], idempotency_key: str | None, callback: Any) -> None:
        """Queue a request; ``callback(result)`` gets ``(event, created)`` or the exception, in the writer thread.

        Raises:
            LedgerError: the committer is closed.
        """
        with self._cv:
            if self._closed:
                raise LedgerError("the ledger writer is closed; the service is shutting down")
            self._queue.append((sample_ids, idempotency_key, callback))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            try:
                results: list[Any] = list(self.ledger.receive_many([(ids, key) for ids, key, _ in batch]))
            except Exception as err:  # noqa: BLE001 - handed to every waiting caller
                results = [err] * len(batch)
            for (_, _, callback), res in zip(batch, results):
                if not isinstance(res, BaseException) and self.on_received is not None:
                    try:
                        self.on_received(*res)
                    except Exception as err:  # noqa: BLE001
                        res = err
                callback(res)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the writer thread (idempotent)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)


def default_ledger_path(store: str | Path) -> Path:
    """Where the service keeps its ledger when none is configured: ``<store>/ledger.sqlite3``."""
    return Path(store) / "ledger.sqlite3"


__all__ = [
    "EVENTS",
    "Event",
    "GroupCommitter",
    "IdempotencyConflict",
    "Ledger",
    "VerifyReport",
    "canonical_json",
    "check_sample_ids",
    "default_ledger_path",
    "heads_path",
    "read_recorded_head",
    "genesis_hash",
    "id_digest",
    "row_digest",
    "verify_ledger",
]

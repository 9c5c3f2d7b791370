"""The deletion service: accepts deletion requests, records them in the ledger, applies them to a SISA ensemble.

Life of a request (each step one ledger event, see :mod:`unlearnkit.service.ledger`)::

    received  → planned (its ids classified: deletable / unknown / already deleted; the window's affected shards)
              → retraining (the window's shards; repeated with ``attempt`` > 1 when a crashed window resumes)
              → done (new model version + digests + audit record)   |   failed (reason)

Accepting (:meth:`DeletionService.submit`, or :meth:`DeletionService.asubmit` from the HTTP API, which shares one
transaction and one fsync among all requests waiting at that moment: group commit) returns once the ``received``
row is on disk. One worker thread drains the accepted requests in **windows**: it waits ``batch_window_s`` after
the first pending request, takes every pending request, plans the union of their ids once (``SISA.plan``),
retrains the affected shards once (``SISA.delete``), and appends the ``done`` events of the whole window in one
transaction. Requests that arrive during a retrain wait for the next window.

Crash safety: everything needed lives in the ledger and the SISA store. On start, the committed model state is
checked against the ledger: a state behind the ledger's last completed deletion (an older ``state.json`` copied
back, a store fitted afresh) is refused, since serving it would bring deleted samples back. Then every request whose
last event is not ``done``/``failed`` is queued again (one whose recorded ids or plan cannot be read gets a
``failed`` event with the reason: one damaged row never blocks recovery); a window that had been planned is re-run
with the classification recorded in its ``planned`` events (so ids that SISA had already committed before the crash
are still reported as deleted by that request), and ``SISA.delete`` is idempotent and reuses completed
content-addressed checkpoints. ``done`` is appended exactly once per request (``ledger verify`` refuses a second
terminal event).

The audit record of each request (in its ``done`` event) holds the shards retrained, the times, the new model's
version and digest, and a **membership check** of the deleted samples against the new model: the loss attack
score ln p_y (Yeom et al., CSF 2018, arXiv:1709.01604; :func:`unlearnkit.metrics.mia_family.attack_scores`) of the
deleted samples against held-out test samples (non-members), summarised by the ROC AUC (≈ 0.5: the deleted samples
look like data the model never saw), with the AUC of retained training samples (members) as the reference.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.errors import CheckpointError, ConfigError, DataError, LedgerError
from unlearnkit.persist import atomic_write, private_dir
from unlearnkit.service.ledger import MAX_SAMPLE_ID, TERMINAL, Event, Ledger, is_sample_id, utc_now

log = logging.getLogger("unlearnkit.service")

#: stages at which :class:`DeletionService` calls its ``fault_hook`` (tests inject crashes there)
FAULT_STAGES: tuple[str, ...] = ("planned", "retraining", "retrained", "done")
MAX_IDEMPOTENCY_KEY = 200
#: test-only: a file path; when set, ``DeletionService.from_config`` holds every deletion window after its first
#: shard job (the marker file is written, then the worker blocks until the process is killed). Lets a crash test kill
#: the service at a known point instead of racing a timer.
HOLD_ENV = "UNLEARNKIT_TEST_HOLD_RETRAIN"


class ModelManager(Protocol):
    """What the service needs of the model (SISA in methods/exact/sisa.py implements it)."""

    version: int
    model_digest: str
    deleted_ids: np.ndarray
    active_ids: np.ndarray

    def plan(self, ids: Iterable[int]) -> Any: ...
    def delete(self, ids: Iterable[int], executor: Any = None) -> Any: ...
    def as_module(self) -> nn.Module: ...
    def shard_of(self, sample_id: int) -> int: ...


@dataclass(frozen=True)
class Receipt:
    """What :meth:`DeletionService.submit` returns (and the HTTP 202 body): the same on an idempotent retry.

    Attributes:
        request_id: 32 hex characters.  received_at: UTC ISO time of the ``received`` event.
        sample_ids: the ids as recorded.  unknown_ids: those not in the training set (reported, not deleted).
        created: False when this is the original request of a reused idempotency key.
    """

    request_id: str
    received_at: str
    sample_ids: list[int]
    unknown_ids: list[int]
    idempotency_key: str | None
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "state": "received", "received_at": self.received_at,
                "sample_ids": self.sample_ids, "unknown_ids": self.unknown_ids,
                "idempotency_key": self.idempotency_key}


@dataclass
class _Pending:
    request_id: str
    sample_ids: list[int]
    received_at: str
    planned: dict[str, Any] | None = None  # payload of its last ``planned`` event (resumed windows)
    attempts: int = 0  # ``retraining`` events already in the ledger


@dataclass(frozen=True)
class Serving:
    """The model that answers predictions: an immutable snapshot swapped atomically after each window."""

    version: int
    model_digest: str
    module: nn.Module
    shard_digests: dict[str, str] = field(default_factory=dict)


class SimulatedCrash(BaseException):
    """Raised by a test's ``fault_hook`` to stop the worker as a SIGKILL would (no ``failed`` event is written)."""


class StoreLock:
    """An exclusive ``flock`` on ``<store>/service.lock``: one service per store (released by the OS on SIGKILL).

    Raises:
        ConfigError: another process holds the store.
    """

    def __init__(self, store: str | Path) -> None:
        self.path = Path(store) / "service.lock"
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        private_dir(self.path.parent)  # the store holds the deleted ids (state files): owner only
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"the store {self.path.parent} is in use by another unlearnkit service process; stop "
                              "it first (or talk to it over HTTP: unlearnkit delete --url ...)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _as_int_list(values: Any) -> list[int]:
    if isinstance(values, list):  # ledger payloads: Python ints, possibly beyond int64 in an old or edited row
        return [int(v) for v in values]
    return [int(v) for v in np.asarray(values, dtype=np.int64).reshape(-1)]


class _HoldAfterFirstJob:
    """Test-only executor wrapper (:data:`HOLD_ENV`): runs a window's first shard job, writes ``marker``, then blocks
    until the process is killed."""

    def __init__(self, inner: Any, marker: str) -> None:
        self.inner, self.marker = inner, marker

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        if len(jobs) > 1:
            self.inner.map(fn, list(jobs)[:1])
        atomic_write(self.marker, f"{os.getpid()}\n")
        while True:  # pragma: no cover - ends by SIGKILL
            time.sleep(3600)

    def close(self) -> None:
        self.inner.close()


class DeletionService:
    """Deletion requests → ledger → windows of SISA deletions → audit records.

    Args:
        manager: the model (a fitted :class:`~unlearnkit.methods.exact.sisa.SISA`, or anything with its interface).
        ledger: the open :class:`Ledger` of this store.
        train: the training set (its rows give the deleted samples' inputs for the membership check); optional.
        holdout: non-member samples (the test split) for the membership check; optional (no check without it).
        executor: passed to ``manager.delete`` (shard jobs); the service closes it in :meth:`close`.
        batch_window_s: seconds to wait after the first pending request before planning a window.
        max_ids_per_request: largest accepted request.
        audit_max_retained: retained training samples scored as the members' reference (0 = none).
        fault_hook: ``hook(stage, window_id)`` called at :data:`FAULT_STAGES` (tests raise :class:`SimulatedCrash`).
        on_close: called by :meth:`close` after the worker stopped (e.g. releases the store lock).

    Unfinished requests found in the ledger are queued at construction (call :meth:`start` or
    :meth:`run_pending` to process them).
    """

    def __init__(
        self,
        manager: ModelManager,
        ledger: Ledger,
        *,
        train: SampleSet | None = None,
        holdout: SampleSet | None = None,
        executor: Any = None,
        batch_window_s: float = 0.2,
        max_ids_per_request: int = 10_000,
        audit_max_retained: int = 500,
        fault_hook: Callable[[str, str], None] | None = None,
        on_close: Callable[[], None] | None = None,
        name: str = "service",
    ) -> None:
        if batch_window_s < 0:
            raise ConfigError(f"batch_window_s must be ≥ 0 seconds, got {batch_window_s}")
        self.manager = manager
        self.ledger = ledger
        self.train = train
        self.holdout = holdout
        self.executor = executor
        self.batch_window_s = float(batch_window_s)
        self.max_ids_per_request = int(max_ids_per_request)
        self.audit_max_retained = int(audit_max_retained)
        self.fault_hook = fault_hook
        self.name = name
        self._on_close = on_close
        self.input_shape: tuple[int, ...] | None = tuple(train.input_shape) if train is not None else None
        self.num_classes: int | None = train.num_classes if train is not None else None
        self._known = frozenset(_as_int_list(manager.active_ids)) | frozenset(_as_int_list(manager.deleted_ids))
        self._cv = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._stop = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._committer: Any = None  # GroupCommitter, started by the first asubmit
        self.windows_done = 0
        self.last_error: str | None = None
        self._check_state_against_ledger()
        self._serving = self._snapshot()
        self._recover()

    # -- construction from a config ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any, *, fault_hook: Callable[[str, str], None] | None = None,
                    console: Any = None, executor: Any = None) -> DeletionService:
        """Build the service of a :class:`~unlearnkit.service.config.ServiceConfig`: lock the store, load the data,
        load the committed SISA state (checkpoint digests verified) or fit it on first start, open the ledger.

        ``executor`` (optional) replaces the one named in the config (the service closes it).

        Raises:
            ConfigError: the store is used by another process, or a setting is invalid.
            CheckpointError: a checkpoint of the store does not match its digest.
        """
        from unlearnkit.data import load_data
        from unlearnkit.engine.loop import Engine
        from unlearnkit.methods.exact.sisa import SISA
        from unlearnkit.service.config import sisa_config_from
        from unlearnkit.service.executors import build_executor

        lock = StoreLock(cfg.store).acquire()
        ledger = None
        try:
            ledger = Ledger(cfg.ledger_path, synchronous=cfg.ledger_synchronous)
            ledger.check_integrity()
            data = load_data(cfg.data)
            factory = ModelFactory(cfg.model.name, dict(cfg.model.params), tuple(data.train.input_shape),
                                   data.num_classes)
            engine = Engine(cfg.engine)
            if executor is None:
                executor = build_executor(cfg.executor, **dict(cfg.executor_params))
                if cfg.executor == "process":
                    executor = GuardedExecutor(executor, cfg.executor_nice)
            store = Path(cfg.store)
            if has_committed_state(store):
                manager = SISA.load(store, factory, data.train, engine=engine)
                stored = manager.config.model_dump(mode="json")
                if stored != cfg.sisa:
                    diff = sorted(k for k in set(stored) | set(cfg.sisa) if stored.get(k) != cfg.sisa.get(k))
                    raise ConfigError(f"the store {store} was fitted with other SISA settings (differing: "
                                      f"{', '.join(diff)}); restore them, or give a new store to fit afresh")
            else:
                last = ledger.last_done()
                if last is not None and (last[1] > 1 or ledger.deleted_ids()):
                    raise CheckpointError(
                        f"the store {store} has no committed SISA state, but its ledger records completed deletions "
                        f"(the last one, row {last[0]}, committed model version {last[1]}): fitting afresh would "
                        "bring the deleted samples back. Restore the store (state.json = the newest "
                        "states/v<N>.json, with checkpoints/ and partitions/), or start a new store with a new ledger")
                if console is not None:
                    console.print(f"first start: fitting the SISA ensemble on {len(data.train)} samples "
                                  f"into {store} ...")
                manager = SISA(sisa_config_from(cfg.sisa), factory, store, engine=engine)
                manager.fit(data.train, executor=executor)
            hold = os.environ.get(HOLD_ENV)
            if hold:
                executor = _HoldAfterFirstJob(executor, hold)
            service = cls(manager, ledger, train=data.train, holdout=data.test, executor=executor,
                          batch_window_s=cfg.batch_window_s, max_ids_per_request=cfg.max_ids_per_request,
                          audit_max_retained=cfg.audit_max_retained, fault_hook=fault_hook, on_close=lock.release,
                          name=cfg.name)
        except BaseException:
            if executor is not None:
                executor.close()
            if ledger is not None:
                ledger.close()
            lock.release()
            raise
        return service

    # -- accepting ---------------------------------------------------------------------------------------------
    def validate_ids(self, sample_ids: Sequence[Any]) -> list[int]:
        """Check a request's ids: 1..``max_ids_per_request`` distinct integers in [0, 2**63 − 1] (int64). Every entry
        point (HTTP, ``unlearnkit delete``, this Python API) checks here before anything is written.

        Raises:
            DataError: empty, too many, not integers, negative, beyond int64 or duplicated (the message says which).
        """
        if isinstance(sample_ids, (str, bytes)) or not isinstance(sample_ids, Sequence):
            raise DataError("sample_ids must be a list of integers, e.g. [12, 40]")
        if not sample_ids:
            raise DataError("sample_ids is empty; name at least one sample id to delete")
        if len(sample_ids) > self.max_ids_per_request:
            raise DataError(f"{len(sample_ids)} sample ids in one request; at most {self.max_ids_per_request} "
                            "are accepted: split the request")
        bad = [v for v in sample_ids if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad:
            raise DataError(f"sample_ids must be integers; got {', '.join(repr(b)[:30] for b in bad[:5])}")
        ids = [int(v) for v in sample_ids]
        neg = [i for i in ids if i < 0]
        if neg:
            raise DataError(f"sample ids are non-negative; got {', '.join(str(i)[:30] for i in neg[:5])}")
        big = [i for i in ids if i > MAX_SAMPLE_ID]
        if big:
            shown = ", ".join(str(i)[:30] for i in big[:5])
            raise DataError(f"sample ids are at most {MAX_SAMPLE_ID} (int64); got {shown}{self._id_range()}")
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            dup = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
            raise DataError(f"sample_ids has duplicates: {dup[:5]}; list each id once")
        return ids

    def _id_range(self) -> str:
        if not self._known:
            return ""
        return f" (this data set's ids run from {min(self._known)} to {max(self._known)})"

    def submit(self, sample_ids: Sequence[int], idempotency_key: str | None = None) -> Receipt:
        """Accept a deletion request: append ``received`` (one ledger transaction) and queue it.

        With an ``idempotency_key`` seen before and the same ids, the original request is returned (not queued
        again).

        Raises:
            DataError: invalid ids (see :meth:`validate_ids`) or idempotency key.
            IdempotencyConflict: the key was used before with other ids.
        """
        self._check_request(sample_ids, idempotency_key)
        ids = self.validate_ids(sample_ids)
        event, created = self.ledger.receive(ids, idempotency_key)
        self._accepted(event, created)
        return self._receipt(event, idempotency_key, created)

    async def asubmit(self, sample_ids: Sequence[int], idempotency_key: str | None = None) -> Receipt:
        """:meth:`submit` for an event loop: the ledger write happens in a writer thread that commits every request
        waiting at that moment in one transaction (one fsync for many concurrent requests); awaits the commit.

        Raises:
            DataError, IdempotencyConflict: as :meth:`submit`.
        """
        import asyncio

        self._check_request(sample_ids, idempotency_key)
        ids = self.validate_ids(sample_ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            loop.call_soon_threadsafe(_resolve, fut, result)

        with self._cv:
            if self._committer is None:
                from unlearnkit.service.ledger import GroupCommitter

                self._committer = GroupCommitter(self.ledger, on_received=self._accepted)
            committer = self._committer
        committer.submit(ids, idempotency_key, done)
        event, created = await fut
        return self._receipt(event, idempotency_key, created)

    def _check_request(self, sample_ids: Sequence[Any], idempotency_key: str | None) -> None:
        if self._closed:
            raise LedgerError("the deletion service is closed; start it again to accept requests")
        if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY
                                                and idempotency_key.isprintable()):
            raise DataError(f"idempotency_key must be 1–{MAX_IDEMPOTENCY_KEY} printable characters")

    def _accepted(self, event: Event, created: bool) -> None:
        """Queue a newly recorded request for the worker (called once its ``received`` row is committed)."""
        if created:
            with self._cv:
                self._pending.append(_Pending(event.request_id, _as_int_list(event.payload["sample_ids"]),
                                              event.time))
                self._cv.notify_all()

    def _receipt(self, event: Event, key: str | None, created: bool) -> Receipt:
        recorded = _as_int_list(event.payload["sample_ids"])
        return Receipt(event.request_id, event.time, recorded, [i for i in recorded if i not in self._known],
                       key, created)

    # -- reading -----------------------------------------------------------------------------------------------
    def status(self, request_id: str) -> dict[str, Any] | None:
        """The state of a request, built from its ledger events; None for an unknown request id.

        Keys: request_id, state, sample_ids, idempotency_key, received_at, updated_at, deleted_ids, unknown_ids,
        already_deleted_ids (from the planned/done events), shards, window, audit (the done event's audit record),
        reason (failed only), events (seq, event, time, row_hash of each).
        """
        events = self.ledger.events(request_id)
        if not events:
            return None
        return request_status(events)

    def serving(self) -> Serving:
        """The current serving snapshot (thread-safe: an immutable object replaced atomically)."""
        return self._serving

    def model_info(self) -> dict[str, Any]:
        """Version, digest and counts of the serving model, plus queue state."""
        s = self._serving
        with self._cv:
            pending = len(self._pending)
        return {"name": self.name, "version": s.version, "model_digest": s.model_digest,
                "shard_digests": s.shard_digests, "n_active": int(len(self.manager.active_ids)),
                "n_deleted": int(len(self.manager.deleted_ids)), "pending_requests": pending,
                "retraining": self._busy, "windows_done": self.windows_done,
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "num_classes": self.num_classes}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, Any]:
        """Class probabilities and predictions of the serving model.

        Args:
            x: float tensor (n, *input_shape).

        Returns:
            ``{"predictions": int list (n,), "probabilities": float lists (n, k), "version", "model_digest"}``.

        Raises:
            DataError: wrong input shape or non-finite values.
        """
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.input_shape is not None:
            want = (int(np.prod(self.input_shape)),)
            if x.ndim < 2 or x.shape[0] == 0:
                raise DataError(f"inputs must be a non-empty list of samples of shape {list(self.input_shape)}")
            if tuple(x.shape[1:]) != self.input_shape:
                if x[0].numel() != want[0]:
                    raise DataError(f"each input must have shape {list(self.input_shape)} ({want[0]} numbers), "
                                    f"got shape {list(x.shape[1:])}")
                x = x.reshape(x.shape[0], *self.input_shape)
        if not bool(torch.isfinite(x).all()):
            raise DataError("inputs contain NaN or infinite values")
        s = self._serving
        logp = s.module(x).float()
        probs = torch.exp(logp)
        return {"predictions": probs.argmax(dim=1).tolist(), "probabilities": probs.tolist(),
                "version": s.version, "model_digest": s.model_digest}

    # -- worker ------------------------------------------------------------------------------------------------
    def start(self) -> DeletionService:
        """Start the worker thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._worker, name="unlearnkit-deletion-worker", daemon=True)
            self._thread.start()
        return self

    @property
    def worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending_count(self) -> int:
        with self._cv:
            return len(self._pending) + (1 if self._busy else 0)

    def stop(self, timeout: float | None = 60.0) -> None:
        """Ask the worker to stop after its current window and wait up to ``timeout`` seconds."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop the worker, close the executor and the ledger, release the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            self._committer.close()  # commits what is queued (and queues it for the worker) ...
        self.stop()  # ... then the worker finishes its current window and stops
        if self.executor is not None:
            self.executor.close()
        self.ledger.close()
        if self._on_close is not None:
            self._on_close()

    def wait(self, request_ids: Iterable[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Block until every request is ``done`` or ``failed`` (or ``timeout`` seconds); returns their statuses."""
        ids = list(request_ids)
        deadline = time.monotonic() + timeout
        while True:
            out = {r: self.status(r) or {"state": "unknown"} for r in ids}
            if all(s["state"] in TERMINAL for s in out.values()) or time.monotonic() >= deadline:
                return out
            with self._cv:
                self._cv.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    def run_pending(self, max_windows: int | None = None) -> int:
        """Process pending windows in the calling thread (no batching delay); returns the number of windows run."""
        n = 0
        while max_windows is None or n < max_windows:
            batch = self._take_window()
            if not batch:
                break
            self._process_window(batch)
            n += 1
        return n

    def _worker(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                resuming = self._pending[0].planned is not None
            if self.batch_window_s and not resuming:
                with self._cv:
                    self._cv.wait_for(lambda: self._stop, timeout=self.batch_window_s)
                    if self._stop:
                        return
            batch = self._take_window()
            if not batch:
                continue
            try:
                self._process_window(batch)
            except Exception as err:  # a ledger write failed: rebuild the queue from the ledger and retry later
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("deletion window failed; re-reading unfinished requests from the ledger")
                with self._cv:
                    self._busy = False
                    self._pending.clear()
                time.sleep(1.0)
                self._recover()

    def _take_window(self) -> list[_Pending]:
        with self._cv:
            if not self._pending:
                return []
            if self._pending[0].planned is not None:  # a window interrupted by a crash: re-run it alone
                wid = self._pending[0].planned["window"]
                batch = [p for p in self._pending if p.planned is not None and p.planned["window"] == wid]
            else:
                batch = [p for p in self._pending if p.planned is None]
            taken = {p.request_id for p in batch}
            self._pending = deque(p for p in self._pending if p.request_id not in taken)
            self._busy = True
            return batch

    def _hook(self, stage: str, window: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(stage, window)

    def _process_window(self, batch: list[_Pending]) -> None:
        try:
            self._run_window(batch)
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _run_window(self, batch: list[_Pending]) -> None:
        t0 = time.perf_counter()
        resumed = batch[0].planned is not None
        if resumed:
            plans = {p.request_id: p.planned for p in batch}
            window = batch[0].planned["window"]  # type: ignore[index]
            window_shards = {int(k): int(v) for k, v in batch[0].planned["window_shards"].items()}  # type: ignore
            log.info("resuming window %s (%d request(s)) after a restart", window, len(batch))
        else:
            window = uuid.uuid4().hex[:16]
            union = sorted({i for p in batch for i in p.sample_ids})
            try:
                plan = self.manager.plan(union)
            except (DataError, ValueError, OverflowError, TypeError) as err:  # nothing written yet for this window
                self._fail(batch, window, f"cannot plan the deletion: {type(err).__name__}: {str(err)[:300]}")
                return
            deletable = set(_as_int_list(plan.deletable))
            already = set(_as_int_list(plan.already_deleted))
            window_shards = {int(k): int(v) for k, v in dict(plan.affected).items()}
            plans = {}
            for p in batch:
                mine = [i for i in p.sample_ids if i in deletable]
                plans[p.request_id] = {
                    "window": window,
                    "window_size": len(batch),
                    "window_shards": {str(k): v for k, v in sorted(window_shards.items())},
                    "deleted_ids": mine,
                    "unknown_ids": [i for i in p.sample_ids if i not in deletable and i not in already],
                    "already_deleted_ids": [i for i in p.sample_ids if i in already],
                    "shards": sorted({int(self.manager.shard_of(i)) for i in mine}),
                    "expected_sample_epochs": float(getattr(plan, "expected_sample_epochs", 0.0)),
                    "model_version_before": int(self.manager.version),
                }
            self.ledger.append_many([(p.request_id, "planned", plans[p.request_id]) for p in batch])
            self._hook("planned", window)
        attempt = max(p.attempts for p in batch) + 1
        self.ledger.append_many([(p.request_id, "retraining",
                                  {"window": window, "shards": sorted(window_shards), "attempt": attempt})
                                 for p in batch])
        self._hook("retraining", window)
        to_delete = sorted({i for pl in plans.values() for i in pl["deleted_ids"]})
        t_retrain = time.perf_counter()
        try:
            report = self.manager.delete(to_delete, executor=self.executor) if to_delete else None
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            log.error("window %s failed: %s", window, reason)
            self.ledger.append_many([(p.request_id, "failed", {"window": window, "reason": reason})
                                     for p in batch])
            self.last_error = reason
            if self.executor is not None:  # a broken worker pool would fail every later window: start afresh
                try:
                    self.executor.close()  # process/ray executors start again lazily on their next map
                except Exception:  # noqa: BLE001
                    log.exception("closing the executor after a failed window failed")
            return
        retrain_s = time.perf_counter() - t_retrain
        self._hook("retrained", window)
        self._serving = self._snapshot(report)
        completed = utc_now()
        membership = self._membership(plans)
        s = self._serving
        done = []
        for p in batch:
            pl = plans[p.request_id]
            audit = {
                "window": window,
                "shards_retrained": pl["shards"],
                "window_shards_retrained": sorted(window_shards),
                "retrain_seconds": round(retrain_s, 6),
                "window_seconds": round(time.perf_counter() - t0, 6),
                "received_at": p.received_at,
                "completed_at": completed,
                "attempts": attempt,
                "model_version": s.version,
                "model_digest": s.model_digest,
                "shard_digests": s.shard_digests,
                "membership": membership.get(p.request_id),
            }
            done.append((p.request_id, "done", {"deleted_ids": pl["deleted_ids"], "unknown_ids": pl["unknown_ids"],
                                                "already_deleted_ids": pl["already_deleted_ids"], "audit": audit}))
        self.ledger.append_many(done)
        self.windows_done += 1
        self._record_head("window")
        self._hook("done", window)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _fail(self, batch: Sequence[_Pending], window: str | None, reason: str) -> None:
        """Append a ``failed`` event with ``reason`` for every request of ``batch``."""
        log.error("request(s) %s failed: %s", ", ".join(p.request_id for p in batch), reason)
        self.ledger.append_many([(p.request_id, "failed", {"window": window, "reason": reason}) for p in batch])
        self.last_error = reason

    def _record_head(self, event: str) -> None:
        try:
            self.ledger.record_head(event)
        except Exception:  # noqa: BLE001 - the head file is for the operator; the ledger itself is committed
            log.exception("could not record the ledger head beside the ledger")

    def _check_state_against_ledger(self) -> None:
        """Refuse a committed model state that is behind the ledger (see the module docstring).

        Raises:
            CheckpointError: the state's version is older than, or its digest differs from, the model the ledger's
                last ``done`` event committed, or ids the ledger reports deleted are active in the model.
        """
        last = self.ledger.last_done()
        if last is None:
            return
        seq, version, digest = last
        mv, md = int(self.manager.version), str(self.manager.model_digest)
        where = getattr(self.manager, "store", None)
        fix = (f"Copy the newest state back: {Path(where) / 'states'}/v<N>.json with the highest N (≥ {version}) over "
               f"{Path(where) / 'state.json'}" if where is not None else f"Restore the state of version ≥ {version}")
        fix += ", or the whole store from the backup taken together with this ledger; never an older state file."
        if mv < version or (mv == version and md != digest):
            raise CheckpointError(
                f"the committed model state (version {mv}, digest {md[:12]}…) is behind the deletion ledger: its last "
                f"completed deletion (row {seq}) committed model version {version} (digest {digest[:12]}…). The state "
                f"file was replaced by an older one, and serving it would bring deleted samples back. {fix}")
        deleted = self.ledger.deleted_ids()
        if deleted:
            active = np.intersect1d(np.fromiter(deleted, dtype=np.int64, count=len(deleted)),
                                    np.asarray(self.manager.active_ids, dtype=np.int64))
            if len(active):
                raise CheckpointError(
                    f"{len(active)} sample id(s) that the deletion ledger reports as deleted are active in the "
                    f"committed model (e.g. {active[:5].tolist()}): the state was rolled back or replaced. {fix}")

    def _recover(self) -> None:
        """Queue every request of the ledger whose last event is not terminal (in first-received order).

        A request whose ``received`` row is missing or unreadable, whose ids are not sample ids, or whose ``planned``
        row cannot be resumed gets a ``failed`` event naming why; recovery goes on with the others.
        """
        queued, broken = [], []
        for rid, events in self.ledger.unfinished().items():
            rec = next((e for e in events if e.event == "received"), None)
            planned = [e for e in events if e.event == "planned"]
            reason = None
            ids = rec.payload.get("sample_ids") if rec is not None else None
            if rec is None or rec.error:
                reason = f"its received event cannot be read ({rec.error if rec else 'missing'})"
            elif not isinstance(ids, list) or not ids or not all(is_sample_id(i) for i in ids):
                reason = f"its recorded sample ids are not integers in [0, {MAX_SAMPLE_ID}]"
            elif planned and not _resumable(planned[-1]):
                reason = "its planned event cannot be resumed (unreadable or incomplete plan)"
            if reason is not None:
                broken.append((_Pending(rid, [], rec.time if rec else ""), reason))
                continue
            queued.append(_Pending(rid, list(ids), rec.time, planned[-1].payload if planned else None,
                                   sum(e.event == "retraining" for e in events)))
        for p, reason in broken:
            self._fail([p], None, f"recovery: {reason}; the request is not applied (submit it again if it is "
                                  "meant)")
        if queued:
            log.info("recovered %d unfinished request(s) from the ledger", len(queued))
        with self._cv:
            known = {p.request_id for p in self._pending}
            # interrupted windows first (in their own windows), then the requests that were only received
            self._pending.extend(p for p in queued if p.planned is not None and p.request_id not in known)
            self._pending.extend(p for p in queued if p.planned is None and p.request_id not in known)
            self._cv.notify_all()

    def _snapshot(self, report: Any = None) -> Serving:
        module = copy.deepcopy(self.manager.as_module()).eval()
        for prm in module.parameters():
            prm.requires_grad_(False)
        digests = getattr(report, "shard_digests", None) or getattr(self.manager, "shard_digests", None)
        if digests is None:  # SISA keeps the committed digests privately until a report carries them
            digests = getattr(self.manager, "_digests", None) or {}
        return Serving(int(self.manager.version), str(self.manager.model_digest), module,
                       {str(k): str(v) for k, v in dict(digests).items()})

    @torch.no_grad()
    def _scores(self, data: SampleSet) -> np.ndarray:
        from unlearnkit.metrics.mia_family import attack_scores

        module = self._serving.module
        out = []
        for start in range(0, len(data), 512):
            x, y, _ = data.batch(np.arange(start, min(start + 512, len(data))))
            out.append(attack_scores(module(x).double(), y, ["loss"])["loss"])
        return np.concatenate(out) if out else np.zeros(0)

    def _membership(self, plans: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        """Loss-attack membership check of each request's deleted samples against the new model."""
        if self.train is None or self.holdout is None or len(self.holdout) == 0:
            return {}
        try:
            deleted = sorted({i for pl in plans.values() for i in pl["deleted_ids"]})
            del_scores = dict(zip(deleted, self._scores(self.train.select_ids(deleted)))) if deleted else {}
            hold = np.sort(self._scores(self.holdout))
            active = np.sort(np.asarray(self.manager.active_ids, dtype=np.int64))
            ref = None
            if self.audit_max_retained and len(active):
                pick = np.random.default_rng(0).permutation(len(active))[: self.audit_max_retained]
                ref = self._scores(self.train.select_ids(active[np.sort(pick)]))
            ref_auc = auc_vs_sorted(ref, hold) if ref is not None and len(ref) else None
            ref_loss = float(-ref.mean()) if ref is not None and len(ref) else None
            out: dict[str, dict[str, Any] | None] = {}
            for rid, pl in plans.items():
                mine = np.asarray([del_scores[i] for i in pl["deleted_ids"]], dtype=np.float64)
                out[rid] = {
                    "attack": "loss (score ln p_y, higher = more member-like; Yeom et al. 2018)",
                    "n_deleted": int(len(mine)),
                    "n_holdout": int(len(hold)),
                    "n_retained": int(len(ref)) if ref is not None else 0,
                    "auc_deleted_vs_holdout": auc_vs_sorted(mine, hold) if len(mine) else None,
                    "auc_retained_vs_holdout": ref_auc,
                    "mean_loss_deleted": float(-mine.mean()) if len(mine) else None,
                    "mean_loss_holdout": float(-hold.mean()),
                    "mean_loss_retained": ref_loss,
                }
            return out
        except Exception as err:  # the audit must never lose a completed deletion
            log.exception("membership check failed")
            return {rid: {"error": f"{type(err).__name__}: {err}"} for rid in plans}


_GUARDED = False  # per worker process: whether _Guarded has set it up already


class _Guarded:
    """Picklable wrapper of a job function; on its first call in a worker process it lowers the process's CPU
    priority (``os.nice``). (The pool's own initializer ends workers whose parent is gone.)"""

    def __init__(self, fn: Callable[[Any], Any], increment: int, parent: int) -> None:
        self.fn, self.increment, self.parent = fn, int(increment), int(parent)

    def __call__(self, job: Any) -> Any:
        global _GUARDED
        if not _GUARDED:
            _GUARDED = True
            if os.getpid() != self.parent and self.increment:  # never renice the service process itself
                try:
                    os.nice(self.increment)
                except OSError:  # pragma: no cover - not permitted on this platform
                    pass
        return self.fn(job)


class GuardedExecutor:
    """Wraps a local process-pool executor for the service: its worker processes run shard retraining at a lower
    CPU priority (``os.nice(increment)``, so retraining yields the CPU to the HTTP API on a busy machine); like every
    :class:`~unlearnkit.service.executors.ProcessPoolExecutor` worker they exit within 0.5 s when the service process
    dies.

    Args:
        inner: the executor (closed by :meth:`close`).  increment: niceness added once per worker process (0–19).
    """

    def __init__(self, inner: Any, increment: int) -> None:
        self.inner, self.increment = inner, int(increment)

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        return self.inner.map(_Guarded(fn, self.increment, os.getpid()), jobs)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> GuardedExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GuardedExecutor({self.inner!r}, nice +{self.increment})"


def _resumable(planned: Event) -> bool:
    """Whether a ``planned`` event holds what a resumed window reads (window, window_shards, the id lists)."""
    pl = planned.payload
    try:
        ok = not planned.error and isinstance(pl.get("window"), str) and \
            all(isinstance(pl.get(k), list) and all(is_sample_id(i) for i in pl[k])
                for k in ("deleted_ids", "unknown_ids", "already_deleted_ids")) and \
            isinstance(pl.get("shards"), list)
        if ok:
            {int(k): int(v) for k, v in dict(pl["window_shards"]).items()}
        return bool(ok)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _resolve(fut: Any, result: Any) -> None:
    if fut.done():  # the awaiting request was cancelled (client gone): its row is committed all the same
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def auc_vs_sorted(member: np.ndarray, nonmember_sorted: np.ndarray) -> float:
    """ROC AUC of "higher score ⇒ member": P(s_m > s_n) + ½ P(s_m = s_n) (the Mann–Whitney U statistic / (m·n),
    equal to ``sklearn.metrics.roc_auc_score``), by binary search in the sorted non-member scores: O(m log n), no
    sklearn import in the worker (it runs once per request of every window).

    Args:
        member: float (m,) scores, m ≥ 1.  nonmember_sorted: float (n,) scores sorted ascending, n ≥ 1.
    """
    m = np.asarray(member, dtype=np.float64)
    below = np.searchsorted(nonmember_sorted, m, side="left")  # non-members strictly below each member score
    ties = np.searchsorted(nonmember_sorted, m, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(m) * len(nonmember_sorted)))


def request_status(events: Sequence[Event]) -> dict[str, Any]:
    """Summarise one request's ledger events (see :meth:`DeletionService.status`)."""
    first, last = events[0], events[-1]
    planned = [e for e in events if e.event == "planned"]
    pl = planned[-1].payload if planned else {}
    terminal = last.payload if last.event in TERMINAL else {}
    audit = terminal.get("audit") if last.event == "done" else None
    return {
        "request_id": first.request_id,
        "state": last.event,
        "sample_ids": first.payload.get("sample_ids", []),
        "idempotency_key": first.payload.get("idempotency_key"),
        "received_at": first.time,
        "updated_at": last.time,
        "deleted_ids": terminal.get("deleted_ids", pl.get("deleted_ids")),
        "unknown_ids": terminal.get("unknown_ids", pl.get("unknown_ids")),
        "already_deleted_ids": terminal.get("already_deleted_ids", pl.get("already_deleted_ids")),
        "shards": pl.get("shards"),
        "window": pl.get("window"),
        "audit": audit,
        "reason": terminal.get("reason") if last.event == "failed" else None,
        "events": [{"seq": e.seq, "event": e.event, "time": e.time, "row_hash": e.row_hash} for e in events],
    }


class ModelFactory:
    """Picklable ``factory(seed) -> nn.Module`` of a registered model (for SISA's shard jobs in other processes).

    Args:
        name / params: the registered model builder and its parameters.  input_shape: one input's shape.
        num_classes: outputs of the model.
    """

    def __init__(self, name: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        self.name, self.params = name, dict(params)
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)

    def __call__(self, seed: int) -> nn.Module:
        from unlearnkit.config.schema import ModelSpec
        from unlearnkit.models import build_model

        return build_model(ModelSpec(name=self.name, params=self.params), self.input_shape, self.num_classes,
                           seed=int(seed))

    def __repr__(self) -> str:
        return f"ModelFactory({self.name!r}, {self.params!r}, {self.input_shape}, {self.num_classes})"


def has_committed_state(store: str | Path) -> bool:
    """True when ``store`` holds a committed SISA state (so the service loads instead of fitting)."""
    from unlearnkit.methods.exact import sisa

    fn = getattr(sisa, "has_committed_state", None)
    if fn is not None:
        return bool(fn(store))
    return (Path(store) / getattr(sisa, "STATE_FILE", "state.json")).is_file()


__all__ = ["DeletionService", "FAULT_STAGES", "auc_vs_sorted", "ModelFactory", "ModelManager", "GuardedExecutor",
           "Receipt", "Serving",
           "SimulatedCrash", "StoreLock", "has_committed_state", "request_status"]

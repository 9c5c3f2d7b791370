"""A fake SISA for service tests: same interface, no training (a nearest-class-mean classifier of the active samples).

Its "retrain" is exact by construction (the class means of the remaining data), persists its committed state
atomically in ``store/state.json`` (and every version in ``store/states/v<N>.json``, like SISA) and is idempotent,
like SISA.delete. ``delay_s`` makes each shard's "retrain" sleep; ``gate`` (a ``threading.Event``) makes every
"retrain" wait until the test sets it, so a test can act while a window is retraining without racing a timer.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from testkit import make_blobs
from unlearnkit.data.base import SampleSet
from unlearnkit.service.deletion import DeletionService
from unlearnkit.service.ledger import Ledger


def digits_like(n_per_class: int = 20, n_classes: int = 3, dim: int = 4, seed: int = 0):
    """Gaussian blobs (centre 4): train ids 0..n-1 (every 4th sample is in the test set instead)."""
    blobs = make_blobs(n_per_class, n_classes, dim, seed, centre=4.0)
    return blobs.train, blobs.test


@dataclass
class FakePlan:
    requested: list[int]
    deletable: list[int]
    unknown: list[int]
    already_deleted: list[int]
    affected: dict[int, int]
    expected_sample_epochs: float = 0.0


@dataclass
class FakeReport:
    plan: FakePlan
    seconds: float
    sample_epochs: float
    shard_digests: dict[int, str]
    model_digest: str
    version: int
    trained_slices: dict[int, list[int]] = field(default_factory=dict)


class _Means(nn.Module):
    def __init__(self, means: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x.reshape(x.shape[0], -1).float(), self.means) ** 2
        return torch.log_softmax(-d, dim=1)


class FakeSISA:
    shards = 3

    def __init__(self, train: SampleSet, store: str | Path, delay_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.train = train
        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        self.delay_s = delay_s
        self.gate = gate
        self.delete_calls: list[list[int]] = []
        state = self.store / "state.json"
        if state.exists():
            s = json.loads(state.read_text())
            self.version, self._deleted = int(s["version"]), set(s["deleted"])
        else:
            self.version, self._deleted = 1, set()
            self._commit()
        self._all = {int(i) for i in train.ids}

    def _commit(self) -> None:
        tmp = self.store / "state.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"version": self.version, "deleted": sorted(self._deleted)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.store / "state.json")
        (self.store / "states").mkdir(exist_ok=True)
        (self.store / "states" / f"v{self.version}.json").write_text((self.store / "state.json").read_text())

    @property
    def deleted_ids(self) -> np.ndarray:
        return np.asarray(sorted(self._deleted), dtype=np.int64)

    @property
    def active_ids(self) -> np.ndarray:
        return np.asarray(sorted(set(int(i) for i in self.train.ids) - self._deleted), dtype=np.int64)

    @property
    def model_digest(self) -> str:
        return hashlib.sha256(json.dumps(sorted(self._deleted)).encode()).hexdigest()

    def shard_of(self, sample_id: int) -> int:
        return int(sample_id) % self.shards

    def plan(self, ids) -> FakePlan:
        ids = sorted({int(i) for i in ids})
        unknown = [i for i in ids if i not in self._all]
        already = [i for i in ids if i in self._deleted]
        deletable = [i for i in ids if i in self._all and i not in self._deleted]
        return FakePlan(ids, deletable, unknown, already, {self.shard_of(i): 0 for i in deletable})

    def delete(self, ids, executor=None) -> FakeReport:
        plan = self.plan(ids)
        self.delete_calls.append(list(plan.deletable))
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        for _ in plan.affected:
            time.sleep(self.delay_s)
        if plan.deletable:
            self._deleted |= set(plan.deletable)
            self.version += 1
            self._commit()
        return FakeReport(plan, 0.0, 0.0, {s: self.model_digest[:16] for s in range(self.shards)},
                          self.model_digest, self.version)

    def as_module(self) -> nn.Module:
        keep = self.train.exclude_ids(self.deleted_ids)
        x, y, _ = keep.batch(np.arange(len(keep)))
        x = x.reshape(len(keep), -1)
        means = torch.stack([x[y == c].mean(0) for c in range(self.train.num_classes)])
        return _Means(means)


TOKEN = "test-token-0123456789abcdef"


def make_fake_service(store, *, delay_s: float = 0.0, window_s: float = 0.0, fault_hook=None,
                      gate: threading.Event | None = None) -> DeletionService:
    train, test = digits_like()
    manager = FakeSISA(train, store, delay_s=delay_s, gate=gate)
    ledger = Ledger(store / "ledger.sqlite3", synchronous="normal")
    return DeletionService(manager, ledger, train=train, holdout=test, batch_window_s=window_s,
                           max_ids_per_request=20, audit_max_retained=10, fault_hook=fault_hook)

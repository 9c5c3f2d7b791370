"""SISA: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., IEEE S&P 2021, arXiv:1912.03817).

The training set is split into S disjoint **shards**; each shard into R disjoint **slices**. One model per shard is
trained *incrementally*: step r (0-based) trains on the union of slices 0..r, starting from the checkpoint saved after
step r − 1. A deletion retrains only the shards that held a deleted sample, from the last checkpoint before the
earliest affected slice. Predictions aggregate the shard models by majority vote or by mean softmax.

Epoch schedule (reference code, github.com/cleverhans-lab/machine-unlearning ``sisa.py``): with E the total epoch
budget of a shard, slice step r (0-based) trains ``e_r = ⌊2E(r+1)/(R+1)⌋ − ⌊2E·r/(R+1)⌋`` epochs on the prefix
(slices 0..r), i.e. on average 2E/(R+1) epochs per step; with uniform slices the whole shard costs E·N/S
sample-epochs, like E epochs of plain training. (The reference computes the same with floats; we use integer floor
division so no rounding error can drop an epoch.) A step with 0 epochs (E < (R+1)/2) trains nothing and keeps the
previous checkpoint, as the reference does.

Expected deletion cost for one uniformly random point with uniform slices (derivation: the affected slice r ∈ 1..R is
uniform, retraining costs ``2E/(R+1) · (N/(SR)) · Σ_{j=r}^{R} j``; averaging over r gives)::

    E · (N/S) · (2R + 1) / (3R)  sample-epochs          (sisa_expected_cost; paper §V-B / Fig. 5's analysis)

versus E·N for retraining from scratch: a theoretical speed-up of S·3R/(2R+1).

Exactness. Every random choice is a pure function of (ids, seeds): the partition is drawn once (stored in the state),
the data order of a step is Engine.fit's shuffle of the step's ids in sorted order with a seed derived from
(seed, shard, slice), the initial weights come from ``model_factory(init_seed)`` under ``torch.manual_seed``, and each
step starts a *fresh* optimizer. Hence, in deterministic mode on one device, retraining after a deletion gives
bit-identical weights to training from scratch on the same partition without the deleted ids. (The reference code
keeps one optimizer across slices in memory but rebuilds it when it resumes from a checkpoint, so its resumed runs
differ from uninterrupted ones whenever the optimizer has state, e.g. Adam or momentum; here a step never depends on
optimizer state of an earlier step.)

Checkpoints are content-addressed: the key of step r hashes the sorted ids of the prefix, the step's epochs and
recipe, its seed and the parent key (the chain starts at a key of the initial weights' SHA-256), so an unaffected
step keeps its key and is reused, and a retried job reuses whatever a crashed one completed.

Durability and verification. Every checkpoint file and folder is fsynced, and the checkpoints folder once per shard
job, before the job returns, hence before the state commit (``state.json``, written atomically) can refer to them. A
checkpoint read from disk is verified against its manifest's SHA-256 digests. Weights a process has just written or
already verified are not re-read: a deletion resumes from them (:data:`CHECKPOINT_MEMO`, bounded, checked against the
manifest's ``state_sha256``) and the new members are built from the job's in-memory weights (``ShardOutcome.state``).
:meth:`SISA.load` always reads and verifies every member from disk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError
from torch import nn

from unlearnkit.config.schema import EngineConfig, Frozen, TrainConfig
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.engine.checkpoint import (
    MANIFEST, fsync_dir, load_checkpoint, load_state_strict, read_manifest, save_checkpoint, state_sha256,
)
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, DataError, MethodError, NotFittedError
from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.models import reinitialize
from unlearnkit.persist import atomic_write, canonical_json, private_dir, stable_hash
from unlearnkit.registry import METHODS

STATE_FILE = "state.json"
STATE_FORMAT = "unlearnkit-sisa-state/1"
#: most shards (and most slices per shard) of an ensemble: one model per shard is trained and kept in memory
MAX_SHARDS = 1024
LOG_EPS = 1e-12  # as_module returns log(max(p, LOG_EPS)) so that vote fractions of 0 stay finite


# ---------------------------------------------------------------------------------------------------------------
# schedule and cost model
# ---------------------------------------------------------------------------------------------------------------
def slice_epochs(epochs: int, slices: int) -> list[int]:
    """Epochs of each incremental step (reference ``sisa.py``): ``e_r = ⌊2E(r+1)/(R+1)⌋ − ⌊2E r/(R+1)⌋``.

    Sum: ``⌊2ER/(R+1)⌋``; for R = 1 it is ``[E]``. Raises ConfigError for epochs < 1 or slices < 1.
    """
    if epochs < 1 or slices < 1:
        raise ConfigError(f"epochs and slices must be ≥ 1, got epochs={epochs}, slices={slices}")
    bound = [(2 * epochs * r) // (slices + 1) for r in range(slices + 1)]
    return [bound[r + 1] - bound[r] for r in range(slices)]


def sisa_expected_cost(n: int, shards: int, slices: int, epochs: int = 1) -> float:
    """Expected sample-epochs to unlearn one uniformly random point: ``E · (N/S) · (2R+1)/(3R)`` (uniform slices).

    Args:
        n: training-set size N.  shards: S.  slices: R.  epochs: E, a shard's total epoch budget.
    """
    if n < 0 or shards < 1 or slices < 1 or epochs < 0:
        raise ConfigError(f"need n ≥ 0, shards ≥ 1, slices ≥ 1, epochs ≥ 0; got {n}, {shards}, {slices}, {epochs}")
    return epochs * (n / shards) * (2 * slices + 1) / (3 * slices)


# ---------------------------------------------------------------------------------------------------------------
# partition
# ---------------------------------------------------------------------------------------------------------------
def make_partition(ids: np.ndarray, labels: np.ndarray, shards: int, slices: int,
                   kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign every id to a (shard, slice); returns int64 arrays aligned with ``ids``.

    ``uniform``: a seeded permutation of the ids (in sorted order, so the result does not depend on the data's row
    order) cut into S shards of sizes differing by ≤ 1, each cut into R slices likewise.
    ``class_balanced``: the ids of each class (classes in order, ids permuted within a class) are dealt round-robin
    to the shards, and within a shard round-robin to the slices, so every shard and slice holds each class in
    proportion (± 1).
    """
    order = np.argsort(ids, kind="stable")
    rng = np.random.default_rng(derive_seed(seed, "sisa-partition"))
    shard = np.empty(len(ids), dtype=np.int64)
    slc = np.empty(len(ids), dtype=np.int64)
    if kind == "uniform":
        perm = order[rng.permutation(len(ids))]
        for s, chunk in enumerate(np.array_split(perm, shards)):
            shard[chunk] = s
            for r, part in enumerate(np.array_split(chunk, slices)):
                slc[part] = r
    elif kind == "class_balanced":
        dealt = []
        for c in np.unique(labels):
            members = order[labels[order] == c]
            dealt.append(members[rng.permutation(len(members))])
        seq = np.concatenate(dealt) if dealt else np.zeros(0, dtype=np.int64)
        shard[seq] = np.arange(len(seq)) % shards
        for s in range(shards):
            rows = seq[shard[seq] == s]
            slc[rows] = np.arange(len(rows)) % slices
    else:  # pragma: no cover - guarded by the config's Literal
        raise ConfigError(f"unknown partition {kind!r}; use uniform or class_balanced")
    return shard, slc


# ---------------------------------------------------------------------------------------------------------------
# content keys, atomic state files, compact data
# ---------------------------------------------------------------------------------------------------------------
def content_key(payload: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of ``payload`` (:func:`unlearnkit.persist.stable_hash`)."""
    return stable_hash(payload)


def ids_sha256(ids: np.ndarray) -> str:
    """SHA-256 of sorted int64 ids (little-endian bytes): identifies a set of samples."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype="<i8")).tobytes()).hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`unlearnkit.persist.atomic_write`: temp file, fsync, rename,
    fsync of the folder), readable by its owner only (0600; a missing folder is created 0700): state and partition
    files name the training and deleted ids."""
    atomic_write(path, text, mode=0o600)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as JSON (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, sort_keys=True))


def _canonical(obj: Any) -> str:
    return canonical_json(obj)


def sealed_text(state: dict[str, Any]) -> str:
    """JSON text of ``state`` plus ``state_sha256`` (SHA-256 of the canonical JSON of the rest), serialised once."""
    body = _canonical({k: v for k, v in state.items() if k != "state_sha256"})
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body[:-1] + f',"state_sha256":"{digest}"}}'


def write_partition(store: Path, ids: np.ndarray, shard: np.ndarray, slc: np.ndarray) -> str:
    """Store the (id → shard, slice) partition once per fit as ``partitions/<sha256>.json``; returns the digest.

    The partition never changes after fit, so the per-deletion state file only refers to it (smaller commits).
    """
    text = _canonical({"ids": ids.tolist(), "shard": shard.tolist(), "slice": slc.tolist()})
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = store / "partitions" / f"{digest}.json"
    if not path.is_file():
        write_text_atomic(path, text)
    return digest


def read_partition(store: Path, digest: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load and verify a partition written by :func:`write_partition`. Raises CheckpointError if missing/edited."""
    path = store / "partitions" / f"{digest}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} is missing: the committed state refers to a partition that is gone") from err
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        raise CheckpointError(f"{path}: SHA-256 mismatch — the partition file was edited or is corrupt")
    obj = json.loads(text)
    return (np.asarray(obj["ids"], dtype=np.int64), np.asarray(obj["shard"], dtype=np.int64),
            np.asarray(obj["slice"], dtype=np.int64))


def seal(state: dict[str, Any]) -> dict[str, Any]:
    """Add ``state_sha256`` (hash of the state without that field) so a hand-edited state file is detected."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return {**body, "state_sha256": content_key(body)}


#: how to repair a damaged state file: the *newest* committed version (an older one would bring deleted ids back;
#: the deletion service refuses a state behind its ledger)
_RESTORE = ("copy the newest states/v<N>.json (the highest N) over it — never an older version: that would bring "
            "deleted samples back (the deletion service refuses a state behind its ledger)")


def read_sealed(path: Path, fmt: str) -> dict[str, Any]:
    """Read a sealed state file. Raises CheckpointError if missing, corrupt, of another format, or edited."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} does not exist: no committed state in this store; call fit() first") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt ({type(err).__name__}); {_RESTORE}") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path}: unknown state format {state.get('format') if isinstance(state, dict) else None!r}"
                              f" (expected {fmt})")
    if seal(state)["state_sha256"] != state.get("state_sha256"):
        raise CheckpointError(f"{path}: state digest mismatch — the file was edited or is corrupt; {_RESTORE}")
    return state


def compact(data: SampleSet, ids: np.ndarray, name: str) -> SampleSet:
    """The rows of ``ids`` (in sorted id order) as a set over a compact copy of just those rows (cheap to pickle)."""
    sub = data.select_ids(np.sort(ids), name=name)
    if isinstance(sub.source, TensorSource):
        pos = torch.from_numpy(sub.positions)
        src = TensorSource(sub.source.x[pos].clone(), sub.source.y[pos].clone())
        return SampleSet(src, np.arange(len(sub)), sub.ids, sub.labels, sub.num_classes, name)
    return sub


def seed_torch(seed: int) -> None:
    """``torch.manual_seed(seed)``; on a machine without an accelerator, only the CPU generator (the same state).

    ``torch.manual_seed`` also queues a lazy seed for CUDA, XPU and MTIA, and each queueing formats the caller's
    stack trace (0.1–1 ms of CPU per call, growing with the stack's depth; SISA seeds twice per retrained slice
    and once per model it builds). Without an
    accelerator those queued seeds can never apply, so seeding only ``torch.default_generator`` leaves every random
    number this process draws unchanged.
    """
    accel = getattr(torch, "accelerator", None)
    if accel is not None and not accel.is_available():
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def build_init(model_factory: Callable[[int], nn.Module], seed: int) -> nn.Module:
    """``model_factory(seed)`` under ``torch.manual_seed(seed)`` (global RNG restored): reproducible init."""
    with torch.random.fork_rng(devices=[]):
        seed_torch(seed)
        model = model_factory(seed)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model_factory must return an nn.Module, got {type(model).__name__}")
    return model


def fit_seeded(engine: Engine, model: nn.Module, data: SampleSet, recipe: TrainConfig, seed: int, **kw: Any) -> Any:
    """Engine.fit with the global torch RNG seeded too (dropout masks), restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        seed_torch(seed)
        return engine.fit(model, data, recipe, seed=seed, **kw)


def save_idempotent(directory: Path, model: nn.Module | dict[str, torch.Tensor], key: str, meta: dict[str, Any],
                    *, sync_parent: bool = True) -> dict[str, Any]:
    """save_checkpoint that accepts a concurrent writer of the same content-addressed checkpoint; returns the
    manifest of the checkpoint now on disk (the other writer's, verified, if it won the race).

    ``sync_parent=False``: the caller fsyncs ``directory.parent`` (once for several checkpoints) before it commits
    anything that refers to the checkpoint (see :func:`~unlearnkit.engine.checkpoint.save_checkpoint`).
    """
    try:
        return save_checkpoint(directory, model, lineage_key=key, meta=meta, sync_parent=sync_parent)
    except OSError:
        if not (directory / MANIFEST).is_file():
            raise
        return load_checkpoint(directory)[1]  # another worker finished the same key: keep it if it verifies


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()`` (safe to keep while the model trains on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class CheckpointMemo:
    """Process-local, size-bounded LRU of checkpoint weights this process wrote or verified, by (store, key).

    A deletion restarts a shard from the checkpoint before its earliest affected slice. When this process wrote that
    checkpoint (it trained the shard) or already loaded and verified it, its weights are taken from here instead of
    re-reading the file and recomputing its SHA-256. An entry is used only if the checkpoint's manifest on disk
    still names the same lineage key and the same ``state_sha256`` as the entry, so a store whose checkpoint was
    replaced falls back to the verified load; a checkpoint read from disk is always verified
    (:func:`~unlearnkit.engine.checkpoint.load_checkpoint`). The weights of a content-addressed key are fixed, so an
    entry can never be stale. Entries are CPU tensors; ``max_bytes`` (default 256 MiB) bounds their total size,
    least recently used first out; 0 disables the memo. Thread-safe.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[dict[str, torch.Tensor], str, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _where(root: Path, key: str) -> tuple[str, str]:
        return (os.path.abspath(root), key)

    def put(self, root: Path, key: str, state: dict[str, torch.Tensor], digest: str) -> None:
        """Remember ``state`` (CPU tensors, not copied: the caller hands over a private copy) of ``root/key``."""
        size = sum(t.numel() * t.element_size() for t in state.values())
        if self.max_bytes <= 0 or size > self.max_bytes:
            return
        where = self._where(root, key)
        with self._lock:
            old = self._items.pop(where, None)
            if old is not None:
                self._bytes -= old[2]
            self._items[where] = (state, digest, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def get(self, root: Path, key: str) -> tuple[dict[str, torch.Tensor], str] | None:
        """(state, state_sha256) of ``root/key`` if remembered (marks it recently used), else None."""
        where = self._where(root, key)
        with self._lock:
            item = self._items.get(where)
            if item is None:
                return None
            self._items.move_to_end(where)
            return item[0], item[1]

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


CHECKPOINT_MEMO = CheckpointMemo()


def resume_from(root: Path, key: str, model: nn.Module) -> None:
    """Load checkpoint ``root/key`` into ``model``: from :data:`CHECKPOINT_MEMO` when its manifest still matches the
    remembered entry, else from disk with every file's SHA-256 verified (then remembered).

    Raises:
        CheckpointError: the checkpoint on disk is missing, corrupt or does not fit ``model``.
    """
    manifest = read_manifest(root / key)
    want = (manifest.get("meta") or {}).get("state_sha256")
    hit = CHECKPOINT_MEMO.get(root, key)
    if hit is not None and manifest.get("lineage_key") == key and want is not None and hit[1] == want:
        load_state_strict(model, hit[0], str(root / key))
        return
    load_checkpoint(root / key, model)
    if want is not None and manifest.get("lineage_key") == key:
        CHECKPOINT_MEMO.put(root, key, cpu_state(model), want)


# ---------------------------------------------------------------------------------------------------------------
# the shard job (pure, idempotent; runs on any executor)
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardJob:
    """Everything needed to (re)train one shard; picklable.

    Attributes:
        store: store folder (checkpoints go to ``store/checkpoints/<key>``).
        shard: shard index.  data: the shard's active samples.  slice_ids: sorted int64 ids of each slice.
        epochs: epochs of each step.  recipe: training recipe (its ``epochs`` is replaced per step).
        init_seed: seed of the initial weights.  step_seeds: seed of each step (data order, dropout).
        engine: engine settings.  model_factory: ``f(init_seed) -> nn.Module``.
    """

    store: str
    shard: int
    data: SampleSet
    slice_ids: tuple[np.ndarray, ...]
    epochs: tuple[int, ...]
    recipe: TrainConfig
    init_seed: int
    step_seeds: tuple[int, ...]
    engine: EngineConfig
    model_factory: Callable[[int], nn.Module]


@dataclass
class ShardOutcome:
    """What a shard job returns: checkpoint keys per step, weights digest, what it trained and what that cost.

    ``state``: the final weights (CPU tensors) when the job holds them in memory because it just trained (and wrote)
    the last step, so the caller need not re-read and re-hash that checkpoint; None when every step was reused from
    the store (the caller then loads the final checkpoint from disk, verified).
    """

    shard: int
    keys: list[str]
    init_digest: str
    digest: str
    trained: list[int]
    sample_epochs: int
    steps: int
    seconds: float
    state: dict[str, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # across processes (process pool, Ray) the weights travel as safetensors bytes, not as torch's shared-memory
        # tensor handles (file descriptors that a pool's result queue may exhaust)
        fields = dict(self.__dict__)
        if fields.get("state") is not None:
            from safetensors.torch import save

            fields["state"] = save({k: v.contiguous() for k, v in fields["state"].items()})
        return fields

    def __setstate__(self, fields: dict[str, Any]) -> None:
        if isinstance(fields.get("state"), bytes):
            from safetensors.torch import load

            fields = {**fields, "state": load(fields["state"])}
        self.__dict__.update(fields)


def init_key(init_digest: str, init_seed: int) -> str:
    return content_key({"kind": "init", "seed": init_seed, "weights": init_digest})


def step_key(parent: str, prefix_ids: np.ndarray, epochs: int, recipe: TrainConfig, seed: int) -> str:
    return content_key({"kind": "sisa-step", "parent": parent, "ids": ids_sha256(prefix_ids), "n": len(prefix_ids),
                        "epochs": epochs, "recipe": recipe.model_dump(mode="json"), "seed": seed})


def run_shard_job(job: ShardJob) -> ShardOutcome:
    """Train one shard slice by slice, reusing every step whose content-addressed checkpoint already exists.

    Returns the chain of keys (one per step; a step that trains nothing keeps its parent's key) and the SHA-256 of
    the final weights. Raises DivergenceError if a loss becomes NaN/inf, CheckpointError on a corrupt checkpoint,
    MethodError if ``model_factory`` is not reproducible.
    """
    root = Path(job.store) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    engine = Engine(job.engine.model_copy(update={"progress": False}))
    model = build_init(job.model_factory, job.init_seed)
    init_digest = state_sha256(model)
    first = parent = init_key(init_digest, job.init_seed)
    in_memory, in_memory_digest, in_memory_state = parent, init_digest, None
    keys: list[str] = []
    trained: list[int] = []
    samples = steps = 0
    t0 = time.perf_counter()
    prefix = np.zeros(0, dtype=np.int64)
    try:
        for r, (ids, epochs, seed) in enumerate(zip(job.slice_ids, job.epochs, job.step_seeds)):
            prefix = np.sort(np.concatenate([prefix, ids]))
            if epochs == 0 or len(prefix) == 0:
                keys.append(parent)
                continue
            key = step_key(parent, prefix, epochs, job.recipe, seed)
            if not (root / key / MANIFEST).is_file():
                if in_memory != parent:  # the parent step was reused from the store: memo or verified load
                    resume_from(root, parent, model)
                recipe = job.recipe.model_copy(update={"epochs": epochs})
                fit = fit_seeded(engine, model, job.data.select_ids(prefix, name=f"shard{job.shard}-step{r}"),
                                 recipe, seed, desc=f"shard {job.shard} slice {r}")
                samples += fit.samples
                steps += fit.steps
                state = cpu_state(model)  # hashed once; written, remembered and (last step) returned as is
                digest = state_sha256(model)
                # the folder checkpoints/ is fsynced once below, before the job returns (hence before any commit)
                on_disk = save_idempotent(root / key, state, key, {"shard": job.shard, "step": r, "n": len(prefix),
                                                                   "epochs": epochs, "state_sha256": digest,
                                                                   "samples": fit.samples, "seconds": fit.seconds},
                                          sync_parent=False)
                if (on_disk.get("meta") or {}).get("state_sha256") != digest:
                    # a concurrent writer of this key won with other weights (non-deterministic kernels): go on
                    # from the checkpoint the store holds, so the chain, the digest and the members agree with it
                    load_checkpoint(root / key, model)
                    state, digest = cpu_state(model), on_disk["meta"]["state_sha256"]
                CHECKPOINT_MEMO.put(root, key, state, digest)
                trained.append(r)
                in_memory, in_memory_digest, in_memory_state = key, digest, state
            keys.append(key)
            parent = key
    finally:
        if trained:  # make the new checkpoint names durable (also those of a job that fails half-way)
            fsync_dir(root)
    final = keys[-1] if keys else first
    if final == first:
        digest, state = init_digest, None
    elif final == in_memory:
        digest, state = in_memory_digest, in_memory_state
    else:
        digest, state = read_manifest(root / final)["meta"]["state_sha256"], None
    return ShardOutcome(job.shard, keys, init_digest, digest, trained, samples, steps, time.perf_counter() - t0,
                        state)


# ---------------------------------------------------------------------------------------------------------------
# ensemble module
# ---------------------------------------------------------------------------------------------------------------
def aggregate(outputs: Sequence[torch.Tensor], how: str) -> torch.Tensor:
    """Mean softmax (``softmax``) or vote fractions (``vote``: one-hot argmax, averaged) of member logits (n, k)."""
    if not outputs:
        raise NotFittedError("the ensemble has no trained member (every shard is empty)")
    if how == "softmax":
        probs = [torch.softmax(o.float(), dim=1) for o in outputs]
    else:
        probs = [nn.functional.one_hot(o.argmax(dim=1), o.shape[1]).float() for o in outputs]
    return torch.stack(probs).mean(dim=0)


class EnsembleModule(nn.Module):
    """Shard models as one module; ``forward(x)`` returns log-probabilities float (n, k): ``log(max(p, 1e-12))``
    of the mean softmax or the vote fractions (so ``softmax(forward(x))`` ≈ the aggregated probabilities)."""

    def __init__(self, members: Sequence[nn.Module], aggregation: str) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.aggregation = aggregation

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return aggregate([m(x) for m in self.members], self.aggregation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.probs(x).clamp_min(LOG_EPS))

    def train(self, mode: bool = True) -> EnsembleModule:  # members stay in eval: the ensemble is for inference
        super().train(mode)
        for m in self.members:
            m.eval()
        return self


# ---------------------------------------------------------------------------------------------------------------
# SISA
# ---------------------------------------------------------------------------------------------------------------
class SISAConfig(Frozen):
    """SISA settings (Bourtoule et al., S&P 2021, arXiv:1912.03817; reference github.com/cleverhans-lab/machine-unlearning).

    Fields:
        shards: S ≥ 1, disjoint shards, one model each (paper: 5–20 on Purchase/SVHN).
        slices: R ≥ 1 slices per shard, trained incrementally with a checkpoint after each (reference default 1).
        aggregation: ``vote`` (majority vote of argmax labels; reference default ``output_type=argmax``) or
            ``softmax`` (mean of the members' softmax).
        partition: ``uniform`` (random, equal sizes) or ``class_balanced`` (each class spread evenly).
        train: the recipe; ``train.epochs`` is E, a shard's *total* epoch budget, split over slices by
            :func:`slice_epochs`. Schedulers run per step (a cosine schedule restarts at each slice).
        seed: seeds the partition, data order and (unless ``init_seed`` is set) the initial weights.
        init_seed: seed of the shards' initial weights (shard s uses ``derive_seed(init_seed, "shard-s")``).
    """

    shards: int = Field(5, ge=1, le=MAX_SHARDS)
    slices: int = Field(1, ge=1, le=MAX_SHARDS)
    aggregation: Literal["vote", "softmax"] = "vote"
    partition: Literal["uniform", "class_balanced"] = "uniform"
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0
    init_seed: int | None = None


@dataclass
class DeletionPlan:
    """What a deletion request will do, before anything is trained.

    Attributes:
        requested: the ids asked for (duplicates removed, order kept).
        deletable: ids that are trained on now and will be removed.
        unknown: ids that were never in the training set (skipped).
        already_deleted: ids removed by an earlier request (skipped).
        affected: shard → earliest affected slice (0-based); training restarts from the checkpoint before it.
        expected_sample_epochs: sample-epochs the retraining will compute (exact, from the schedule and the slice
            sizes after the deletion; a store that already holds some of the new checkpoints trains less).
    """

    requested: list[int]
    deletable: list[int]
    unknown: list[int]
    already_deleted: list[int]
    affected: dict[int, int]
    expected_sample_epochs: float


@dataclass
class SISAReport:
    """Outcome of fit/delete: time (seconds), cost (sample-epochs actually computed), digests, committed version."""

    plan: DeletionPlan | None
    seconds: float
    sample_epochs: int
    shard_digests: dict[int, str]
    model_digest: str
    version: int
    trained_slices: dict[int, list[int]] = field(default_factory=dict)
    steps: int = 0


def _as_id_array(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer)
                             or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
        raise DataError(f"sample ids must be a 1-D sequence of integers, got dtype {arr.dtype} shape {arr.shape}")
    _, first = np.unique(arr.astype(np.int64), return_index=True)
    return arr.astype(np.int64)[np.sort(first)]


class ShardedState:
    """What SISA and S3T ensembles share about their state: the trained ids ``_ids``, the deleted ids ``_deleted``
    (both sorted int64) and ``version`` (0 until trained)."""

    version: int
    _ids: np.ndarray
    _deleted: np.ndarray
    _how_to_fit = "call fit(data) first"

    def _require_fitted(self) -> None:
        if self.version == 0:
            raise NotFittedError(f"this {type(self).__name__} ensemble is not trained: {self._how_to_fit}")

    @property
    def deleted_ids(self) -> np.ndarray:
        """Sorted int64 ids removed so far."""
        return self._deleted.copy()

    @property
    def active_ids(self) -> np.ndarray:
        """Sorted int64 ids the current ensemble is trained on."""
        return np.setdiff1d(self._ids, self._deleted)


class SISA(ShardedState):
    """A sharded, sliced ensemble with content-addressed per-slice checkpoints in a store folder.

    Args:
        config: :class:`SISAConfig`.
        model_factory: ``f(init_seed) -> nn.Module``, a freshly initialised model (logits (n, k)); called under
            ``torch.manual_seed(init_seed)``. Must be picklable (cloudpickle) for the process and Ray executors.
        store: folder holding ``state.json`` (committed state, sealed by its SHA-256), ``states/v<version>.json``
            (every committed version), ``partitions/<sha256>.json`` (the id → (shard, slice) map) and
            ``checkpoints/<key>/`` (content-addressed safetensors checkpoints).
        engine: trains and predicts (default: CPU-or-config engine without progress bars).

    Example::

        sisa = SISA(SISAConfig(shards=5, slices=4), lambda s: build_model("mlp", (64,), 10, seed=s), "store")
        sisa.fit(train)
        report = sisa.delete([17, 42])            # retrains the affected shards from their last clean checkpoint
        probs = sisa.predict_proba(x)             # float32 (n, k)

    Source: Bourtoule et al., "Machine Unlearning", IEEE S&P 2021, arXiv:1912.03817, §IV (SISA), §V (cost).
    """

    def __init__(self, config: SISAConfig, model_factory: Callable[[int], nn.Module], store: str | Path,
                 engine: Engine | None = None) -> None:
        self.config = config
        self.model_factory = model_factory
        self.store = Path(store)
        self.engine = engine or Engine(EngineConfig(progress=False))
        self.version = 0
        self.model_digest = ""
        self._ids = np.zeros(0, dtype=np.int64)
        self._shard = np.zeros(0, dtype=np.int64)
        self._slice = np.zeros(0, dtype=np.int64)
        self._deleted = np.zeros(0, dtype=np.int64)
        self._chains: dict[int, list[str]] = {}
        self._digests: dict[int, str] = {}
        self._models: dict[int, nn.Module] = {}
        self._data: SampleSet | None = None
        self._partition = ""  # digest of partitions/<sha>.json

    # -- seeds and schedule ---------------------------------------------------------------------------------------
    @property
    def epochs(self) -> list[int]:
        """Epochs of each slice step (:func:`slice_epochs`)."""
        return slice_epochs(self.config.train.epochs, self.config.slices)

    def _init_seed(self, shard: int) -> int:
        base = self.config.init_seed if self.config.init_seed is not None else derive_seed(self.config.seed, "init")
        return derive_seed(base, f"shard-{shard}")

    def _step_seed(self, shard: int, step: int) -> int:
        return derive_seed(self.config.seed, f"order-shard-{shard}-slice-{step}")

    # -- state ------------------------------------------------------------------------------------------------------
    _how_to_fit = "call fit(data) or SISA.load(store, ...)"

    def shard_of(self, sample_id: int) -> int:
        """The shard that holds (or held) ``sample_id``. Raises DataError for an id never trained on."""
        i = np.searchsorted(self._ids, sample_id)
        if i >= len(self._ids) or self._ids[i] != sample_id:
            raise DataError(f"id {sample_id} was never in the training set of this ensemble ({len(self._ids)} ids)")
        return int(self._shard[i])

    def assignment(self) -> dict[int, tuple[int, int]]:
        """``{id: (shard, slice)}`` of the active ids (pass to :meth:`fit` to train on the same partition)."""
        keep = ~np.isin(self._ids, self._deleted)
        return {int(i): (int(s), int(r)) for i, s, r in zip(self._ids[keep], self._shard[keep], self._slice[keep])}

    def _slice_ids(self, shard: int, deleted: np.ndarray) -> tuple[np.ndarray, ...]:
        keep = (self._shard == shard) & ~np.isin(self._ids, deleted)
        return tuple(np.sort(self._ids[keep & (self._slice == r)]) for r in range(self.config.slices))

    def _job(self, shard: int, deleted: np.ndarray) -> ShardJob:
        assert self._data is not None
        slices = self._slice_ids(shard, deleted)
        members = np.concatenate(slices)
        return ShardJob(str(self.store), shard, compact(self._data, members, f"shard{shard}"), slices,
                        tuple(self.epochs), self.config.train, self._init_seed(shard),
                        tuple(self._step_seed(shard, r) for r in range(self.config.slices)),
                        self.engine.config, self.model_factory)

    def _digest_all(self) -> str:
        return content_key({"aggregation": self.config.aggregation,
                            "shards": {str(s): d for s, d in sorted(self._digests.items())}})

    def _commit(self) -> None:
        private_dir(self.store)
        if not self._partition:
            self._partition = write_partition(self.store, self._ids, self._shard, self._slice)
        text = sealed_text({
            "format": STATE_FORMAT, "version": self.version, "config": self.config.model_dump(mode="json"),
            "partition": self._partition, "deleted": self._deleted.tolist(),
            "chains": {str(s): c for s, c in self._chains.items()},
            "digests": {str(s): d for s, d in self._digests.items()}, "model_digest": self.model_digest,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        write_text_atomic(self.store / "states" / f"v{self.version}.json", text)
        write_text_atomic(self.store / STATE_FILE, text)

    def _load_member(self, shard: int) -> nn.Module:
        model = build_init(self.model_factory, self._init_seed(shard))
        key = self._chains[shard][-1]
        if key == init_key(state_sha256(model), self._init_seed(shard)):
            return model.eval()
        _, manifest, _ = load_checkpoint(self.store / "checkpoints" / key, model)
        if manifest["meta"].get("state_sha256") != self._digests[shard] or state_sha256(model) != self._digests[shard]:
            raise CheckpointError(f"shard {shard}: weights of checkpoint {key[:12]}… do not match the committed digest")
        return model.eval()

    def _apply(self, outcomes: Sequence[ShardOutcome], empty: Iterable[int]) -> tuple[int, int, dict[int, list[int]]]:
        samples = steps = 0
        trained: dict[int, list[int]] = {}
        for out in outcomes:
            self._chains[out.shard] = out.keys
            self._digests[out.shard] = out.digest
            samples += out.sample_epochs
            steps += out.steps
            trained[out.shard] = out.trained
        for s in empty:
            self._chains.pop(s, None)
            self._digests.pop(s, None)
            self._models.pop(s, None)
        for out in outcomes:
            if out.state is not None:  # weights the job just trained and hashed: no re-read, no re-hash
                model = build_init(self.model_factory, self._init_seed(out.shard))
                load_state_strict(model, out.state, f"shard {out.shard}")
                self._models[out.shard] = model.eval()
            else:  # reused from the store: load and verify
                self._models[out.shard] = self._load_member(out.shard)
        self.model_digest = self._digest_all()
        return samples, steps, trained

    # -- training ---------------------------------------------------------------------------------------------------
    def fit(self, data: SampleSet, executor: Any = None,
            assignment: Mapping[int, tuple[int, int]] | None = None) -> SISAReport:
        """Partition ``data`` and train every shard (in parallel on ``executor``); commits state version 1
        (or the store's version + 1 when refitting an existing store; fitting starts a new lineage).

        Args:
            data: the training set D (items ``(x, y, id)``).
            executor: :class:`~unlearnkit.service.executors.Executor` (default sequential).
            assignment: optional ``{id: (shard, slice)}`` for every id of ``data`` (e.g. another ensemble's
                :meth:`assignment`), instead of drawing the partition.

        Raises:
            ConfigError: fewer samples than shards × slices, or an assignment out of range.
            DataError: ``assignment`` does not cover exactly the ids of ``data``.
            DivergenceError: a shard's training diverged (nothing is committed).
        """
        cfg = self.config
        n = len(data)
        if assignment is None and n < cfg.shards * cfg.slices:
            raise ConfigError(f"{n} samples cannot fill {cfg.shards} shards × {cfg.slices} slices; "
                              "use fewer shards or slices")
        ids = np.sort(data.ids.astype(np.int64))
        if assignment is None:
            labels = data.labels[np.argsort(data.ids, kind="stable")]
            shard, slc = make_partition(ids, labels, cfg.shards, cfg.slices, cfg.partition, cfg.seed)
        else:
            missing = [i for i in ids.tolist() if i not in assignment]
            extra = sorted(set(assignment) - set(ids.tolist()))
            if missing or extra:
                raise DataError(f"assignment must name exactly the ids of the data: {len(missing)} missing "
                                f"(e.g. {missing[:5]}), {len(extra)} not in the data (e.g. {extra[:5]})")
            pairs = np.asarray([assignment[i] for i in ids.tolist()], dtype=np.int64).reshape(-1, 2)
            shard, slc = pairs[:, 0].copy(), pairs[:, 1].copy()
            if n and (shard.min() < 0 or shard.max() >= cfg.shards or slc.min() < 0 or slc.max() >= cfg.slices):
                raise ConfigError(f"assignment has shard/slice indices outside [0, {cfg.shards}) × [0, {cfg.slices})")
        previous = 0
        if (self.store / STATE_FILE).is_file():
            try:
                previous = int(read_sealed(self.store / STATE_FILE, STATE_FORMAT)["version"])
            except CheckpointError:
                previous = 0
        self._ids, self._shard, self._slice = ids, shard, slc
        self._partition = ""
        self._deleted = np.zeros(0, dtype=np.int64)
        self._data = data
        self._chains, self._digests, self._models = {}, {}, {}
        t0 = time.perf_counter()
        nonempty = [s for s in range(cfg.shards) if (shard == s).any()]
        outcomes = self._run([self._job(s, self._deleted) for s in nonempty], executor)
        samples, steps, trained = self._apply(outcomes, [s for s in range(cfg.shards) if s not in nonempty])
        self.version = previous + 1
        self._commit()
        return SISAReport(None, time.perf_counter() - t0, samples, dict(self._digests), self.model_digest,
                          self.version, trained, steps)

    @staticmethod
    def _run(jobs: list[ShardJob], executor: Any) -> list[ShardOutcome]:
        if executor is None:
            return [run_shard_job(j) for j in jobs]
        return list(executor.map(run_shard_job, jobs))

    def plan(self, ids: Iterable[int]) -> DeletionPlan:
        """Plan a deletion without training: which ids count, which shards and slices it touches, its cost.

        A batch plans the union of affected shards once (each shard restarts from its earliest affected slice).
        Raises NotFittedError before fit/load, DataError for non-integer ids.
        """
        self._require_fitted()
        req = _as_id_array(ids)
        known = np.isin(req, self._ids)
        gone = np.isin(req, self._deleted)
        deletable = req[known & ~gone]
        affected: dict[int, int] = {}
        for i in deletable.tolist():
            k = np.searchsorted(self._ids, i)
            s, r = int(self._shard[k]), int(self._slice[k])
            affected[s] = min(affected.get(s, r), r)
        new_deleted = np.union1d(self._deleted, deletable)
        cost = 0
        ep = self.epochs
        for s, r0 in affected.items():
            sizes = np.cumsum([len(x) for x in self._slice_ids(s, new_deleted)])
            cost += sum(ep[r] * int(sizes[r]) for r in range(r0, self.config.slices))
        return DeletionPlan(req.tolist(), deletable.tolist(), req[~known].tolist(), req[known & gone].tolist(),
                            dict(sorted(affected.items())), float(cost))

    def delete(self, ids: Iterable[int], executor: Any = None) -> SISAReport:
        """Remove ``ids``: retrain only the affected shards from their last checkpoint before the earliest affected
        slice, then commit the new state (version + 1) atomically.

        Idempotent: unknown and already-deleted ids are skipped (listed in the plan); a request with nothing to
        delete commits nothing. After a crash, re-running the same request reuses every completed checkpoint.

        Raises:
            NotFittedError: before fit/load.  MethodError: the request would delete every remaining sample.
            DivergenceError: retraining diverged (the previous state stays committed).
        """
        plan = self.plan(ids)
        if not plan.deletable:
            return SISAReport(plan, 0.0, 0, dict(self._digests), self.model_digest, self.version, {}, 0)
        if self._data is None:
            raise NotFittedError("no training data attached; use SISA.load(store, model_factory, data)")
        new_deleted = np.union1d(self._deleted, np.asarray(plan.deletable, dtype=np.int64))
        if len(np.setdiff1d(self._ids, new_deleted)) == 0:
            raise MethodError("this request would delete every remaining training sample; nothing would be left "
                              "to predict with — retrain on new data instead")
        t0 = time.perf_counter()
        jobs, empty = [], []
        for s in plan.affected:
            job = self._job(s, new_deleted)
            (jobs.append(job) if len(job.data) else empty.append(s))
        outcomes = self._run(jobs, executor)
        self._deleted = new_deleted
        samples, steps, trained = self._apply(outcomes, empty)
        self.version += 1
        self._commit()
        return SISAReport(plan, time.perf_counter() - t0, samples, dict(self._digests), self.model_digest,
                          self.version, trained, steps)

    @classmethod
    def load(cls, store: str | Path, model_factory: Callable[[int], nn.Module], data: SampleSet,
             engine: Engine | None = None) -> SISA:
        """Resume from the committed state of ``store``, verifying the state seal and every member's digest.

        Raises:
            CheckpointError: no/corrupt/edited state, or a checkpoint that fails its SHA-256 check.
            DataError: ``data`` lacks ids the ensemble is trained on (needed for later deletions).
        """
        state = read_sealed(Path(store) / STATE_FILE, STATE_FORMAT)
        try:
            config = SISAConfig.model_validate(state["config"])
        except ValidationError as err:
            raise CheckpointError(f"{store}/{STATE_FILE}: stored config is invalid ({err})") from err
        self = cls(config, model_factory, store, engine)
        self.version = int(state["version"])
        self._partition = state["partition"]
        self._ids, self._shard, self._slice = read_partition(self.store, self._partition)
        self._deleted = np.asarray(state["deleted"], dtype=np.int64)
        self._chains = {int(s): list(c) for s, c in state["chains"].items()}
        self._digests = {int(s): d for s, d in state["digests"].items()}
        self.model_digest = state["model_digest"]
        missing = np.setdiff1d(self.active_ids, data.ids)
        if len(missing):
            raise DataError(f"the data lacks {len(missing)} ids the ensemble is trained on (e.g. "
                            f"{missing[:5].tolist()}); pass the original training set")
        self._data = data
        self._models = {s: self._load_member(s) for s in sorted(self._chains)}
        if self._digest_all() != self.model_digest:
            raise CheckpointError(f"{store}: model digest does not match the shard digests; the state is inconsistent")
        return self

    # -- inference --------------------------------------------------------------------------------------------------
    def members(self) -> list[nn.Module]:
        """The trained shard models (empty shards excluded), in shard order."""
        self._require_fitted()
        return [self._models[s] for s in sorted(self._models)]

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Aggregated class probabilities float32 (n, k): mean softmax, or vote fractions (``vote``)."""
        dev = self.engine.device
        outs = [m.to(dev).eval()(x.to(dev)).float().cpu() for m in self.members()]
        return aggregate(outs, self.config.aggregation)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes int64 (n,) (argmax of :meth:`predict_proba`; ties → lowest class)."""
        return self.predict_proba(x).argmax(dim=1)

    def as_module(self) -> EnsembleModule:
        """A copy of the ensemble as one module whose forward returns log-probabilities (n, k)."""
        return EnsembleModule([copy.deepcopy(m) for m in self.members()], self.config.aggregation).eval()


# ---------------------------------------------------------------------------------------------------------------
# runner method
# ---------------------------------------------------------------------------------------------------------------
class SISAMethodConfig(Frozen):
    """SISA as a runner method: train the sharded ensemble on D = D_f ∪ D_r, then delete D_f.

    Fields: ``shards`` (S), ``slices`` (R), ``aggregation``, ``partition`` as in :class:`SISAConfig`;
    ``recipe``: the shards' training recipe (``epochs`` = a shard's total budget E); None = θ_o's recipe.
    """

    shards: int = Field(5, ge=1, le=MAX_SHARDS)
    slices: int = Field(1, ge=1, le=MAX_SHARDS)
    aggregation: Literal["vote", "softmax"] = "vote"
    partition: Literal["uniform", "class_balanced"] = "uniform"
    recipe: TrainConfig | None = None


def _factory_from(model: nn.Module, context: UnlearnContext) -> Callable[[int], nn.Module]:
    if context.model_factory is not None:
        return context.model_factory
    template = copy.deepcopy(model)

    def factory(seed: int) -> nn.Module:
        return reinitialize(copy.deepcopy(template), seed)

    return factory


@METHODS.register("sisa", config=SISAMethodConfig)
class SISAMethod(Unlearner):
    """SISA exact unlearning (Bourtoule et al., IEEE S&P 2021, arXiv:1912.03817).

    Trains S shard models on disjoint shards of D = D_f ∪ D_r, each incrementally over R slices with a checkpoint
    after every slice (epochs per slice step: ⌊2E(r+1)/(R+1)⌋ − ⌊2Er/(R+1)⌋, reference code), then deletes D_f:
    only shards holding a forget sample are retrained, from the checkpoint before their earliest affected slice.
    The returned model is the ensemble (:class:`EnsembleModule`, log-probabilities of the vote or mean softmax);
    its weights equal those of SISA trained from scratch on D_r with the same partition and seeds.

    The original model θ_o is not used (SISA is a training procedure): the ensemble is trained here with fresh
    initialisations (``context.init_seed``) and θ_o's recipe unless ``recipe`` is given. Checkpoints go to a
    temporary folder that is removed afterwards (the runner gives methods no folder). ``seen_ids`` are the ids the
    final ensemble's weights depend on (= D_r); the training before the deletion did see D_f, by design.
    Notes record train_seconds, delete_seconds, delete_sample_epochs, planned and theoretical sample-epochs and the
    affected shards.
    """

    kind = "exact"
    needs_retain = True
    needs_full_train = True
    returns_ensemble = True
    source = "Bourtoule et al., Machine Unlearning, IEEE S&P 2021, arXiv:1912.03817"
    #: unlearnkit tune: exact: nothing to tune (shards trade accuracy for speed, not closeness to the oracle)
    search_space = {}
    smoke_params = {"shards": 2, "slices": 2}

    def own_retrain(self, result: UnlearnResult, forget: SampleSet, retain: SampleSet, engine: Engine,
                    context: UnlearnContext) -> nn.Module:
        """SISA trained from scratch on D_r with the same shards, slices and seeds (the partition of the remaining
        samples kept): the ensemble after deletion must equal it bit for bit (Bourtoule et al., §IV)."""
        st = result.state
        with tempfile.TemporaryDirectory(prefix="unlearnkit-sisa-ref-") as tmp:
            ref = SISA(st["cfg"], st["factory"], tmp, engine)
            ref.fit(retain, assignment=st["assignment"])
            return ref.as_module()

    def _unlearn(self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine,
                 context: UnlearnContext) -> UnlearnResult:
        c = self.config
        recipe = c.recipe or context.train_recipe or TrainConfig()
        full = retain.concat(forget, name="train")
        cfg = SISAConfig(shards=c.shards, slices=c.slices, aggregation=c.aggregation, partition=c.partition,
                         train=recipe, seed=context.seed, init_seed=context.init_seed)
        factory = _factory_from(model, context)
        with tempfile.TemporaryDirectory(prefix="unlearnkit-sisa-") as tmp:
            sisa = SISA(cfg, factory, tmp, engine)
            fit = sisa.fit(full)
            rep = sisa.delete(forget.ids)
            ensemble = sisa.as_module()
            active = sisa.active_ids
            assignment = {i: sa for i, sa in sisa.assignment().items() if i in set(active.tolist())}
        plan = rep.plan
        assert plan is not None
        return UnlearnResult(ensemble, steps=rep.steps, seen_ids=active, state={"assignment": assignment, "cfg": cfg,
                                                                        "factory": factory},
                             notes={
            "train_seconds": fit.seconds, "train_sample_epochs": fit.sample_epochs,
            "delete_seconds": rep.seconds, "delete_sample_epochs": rep.sample_epochs,
            "planned_sample_epochs": plan.expected_sample_epochs,
            "theory_sample_epochs_per_deletion": sisa_expected_cost(len(full), c.shards, c.slices, recipe.epochs),
            "full_retrain_sample_epochs": len(retain) * recipe.epochs,
            "affected_shards": sorted(plan.affected), "model_digest": rep.model_digest,
            "store": "temporary folder (removed after the run)",
        })

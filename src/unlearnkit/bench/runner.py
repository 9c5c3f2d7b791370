"""The experiment runner: config → task → schedule → θ_o / θ_r at every point (cached) → methods × seeds → metrics →
results files.

The runner interprets the track's **plan** (:mod:`unlearnkit.data.schedule`): branches of ``Learn`` / ``Forget`` /
``Evaluate`` operations. For every seed and branch it walks the operations once:

- ``Learn``: θ_o continues learning (cached by lineage: the ids of every Learn so far, in order); every method that
  has already forgotten something continues learning from its own model with θ_o's recipe;
- ``Forget``: every method unlearns the request from its current model (θ_o before its first request), getting
  ``Unlearned(model, policy)``; a chained request composes the previous policy with the new one;
- ``Evaluate``: the oracle θ_r of the point (fresh init, trained on exactly what was learned and not forgotten up to
  there, in order; cached by lineage) and θ_o are evaluated, then every method; one row each, appended at once
  (flushed, fsynced) to ``results.jsonl``. Reference outputs (θ_o's, θ_r's) are computed once per point and shared by
  every row there.

A rerun of the same config resumes: finished rows (status ok or diverged) are skipped; a method continues from the
checkpoint of its last finished point (``checkpoints/<label>-seed<s>-<tag>/``, checked against the row's
``checkpoint_sha256``), or is recomputed from the start of its branch. A method that fails gets a row with
``status: "error"`` (or ``"diverged"``) and its reason, its later points in the branch are recorded as failed, and
the run goes on.

Several processes (LLM track, ``accelerate launch`` / ``torchrun``; :mod:`unlearnkit.engine.distributed`): every
rank runs this same loop, trains together and evaluates the same models; rank 0 alone writes files, and rank 0's
decisions (finished rows, cache hits, usable checkpoints, a method's failure on any rank) are shared with every rank
so all ranks take the same path through the collectives.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from unlearnkit._version import __version__
from unlearnkit.bench.resolve import resolve
from unlearnkit.bench.tracks import TRACKS, Role, Track
from unlearnkit.bench.tracks.classifier import check_requirements  # noqa: F401 - public re-export
from unlearnkit.config.loader import config_hash, dump_yaml, to_plain
from unlearnkit.config.schema import ExperimentConfig, MethodSpec
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.data.scenarios import Task, ids_digest
from unlearnkit.data.schedule import Branch, Evaluate, Forget, Learn
from unlearnkit.engine.checkpoint import ModelCache, load_checkpoint, read_policy, save_checkpoint, state_sha256
from unlearnkit.engine.distributed import launched_world_size
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, DivergenceError, MethodError, UnlearnkitError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.metrics import METRICS, avg_gap
from unlearnkit.metrics._ratio import flag_key, guarded_ratio
from unlearnkit.models.policy import compose, policy_from_saved
from unlearnkit.persist import atomic_write, check_writable_dir, refuse_symlink, stable_hash
from unlearnkit.verdict import judge, preflight
from unlearnkit.results import (
    ORACLE_LABEL,
    ORIGINAL_LABEL,
    RESULT_SCHEMA,
    append_row,
    read_rows_quietly,
    row_id,
)

SCHEMA = RESULT_SCHEMA
CODE_VERSION = "train/1"  # bump when the training loop changes numerics: invalidates cached models


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict[str, str]:
    return {"unlearnkit": __version__, "torch": torch.__version__, "python": platform.python_version()}


def run_dir_for(cfg: ExperimentConfig, extra_identity: str = "") -> Path:
    """``<output_dir>/<name>-<hash8>``: distinct configs (and distinct user data/models) never share a folder.

    ``extra_identity`` is the fingerprint of user-supplied data or model factory (empty for config-only runs), so two
    runs of the same config on different user data cannot resume into each other's results.
    """
    h = config_hash(cfg) if not extra_identity else stable_hash([config_hash(cfg), extra_identity])
    return Path(cfg.output_dir) / f"{cfg.name}-{h[:8]}"


def data_fingerprint(data: SampleSet) -> str:
    """SHA-256 identifying a sample set's content: ids, labels and inputs.

    In-memory tensors are hashed in full; for other datasets the inputs of up to 16 evenly spaced items are hashed
    (with ids, labels and length), which detects a different data set but not an edit of an unsampled item.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.ids).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    if isinstance(data.source, TensorSource):
        x = data.source.x[torch.from_numpy(data.positions)].contiguous()
        h.update(x.numpy().tobytes())
    else:
        for i in np.unique(np.linspace(0, len(data) - 1, num=min(16, len(data))).astype(int)):
            h.update(torch.as_tensor(data[int(i)][0]).contiguous().numpy().tobytes())
    return h.hexdigest()


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl (``[]`` if absent); damaged lines are skipped (see :mod:`unlearnkit.results`)."""
    return read_rows_quietly(path)


@dataclass
class TrainedModel:
    """A cached or freshly trained model with its provenance."""

    model: nn.Module
    key: str
    seconds: float
    cached: bool
    trained_ids: np.ndarray
    sha256: str


@dataclass
class RunOutcome:
    """What :func:`run_experiment` produced: the run folder, all rows (old and new) and what was reused."""

    run_dir: Path
    rows: list[dict[str, Any]]
    new_rows: int
    reused: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    is_main: bool = True  # False on ranks > 0 of a multi-process run (they write nothing; rows is empty)


@dataclass
class _MethodState:
    """A method's model history inside one branch while the runner walks it."""

    spec: MethodSpec
    start: int  # first operation position the runner applies to this method
    write_from: int  # first evaluation point (index into branch.points) whose row is written
    model: nn.Module | None = None  # None: θ_o's current model (before the method's first request)
    policy: Any = None
    failed: str | None = None  # "diverged" or an error text: later points get failed rows
    failed_status: str = "error"
    failed_at: str = ""  # the label of the point whose row recorded the failure
    last: dict[str, Any] = field(default_factory=dict)  # the last Forget's Unlearned facts for the next row
    forgot: bool = False


class _RunLock:
    """Exclusive lock on a run folder (two processes never append to the same results.jsonl)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = None

    def __enter__(self) -> _RunLock:
        refuse_symlink(self.path, "run lock")
        self._f = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                                    0o644), "w")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise ConfigError(
                f"another unlearnkit process is running in {self.path.parent}; wait for it to finish "
                "(the same config always resolves to the same run folder)"
            ) from None
        self._f.write(str(os.getpid()))
        self._f.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._f is not None
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


class Runner:
    """Runs one experiment config. Use :func:`run_experiment` unless you need the pieces.

    The track (``cfg.track``) builds the task and its plan, trains θ_o / θ_r, applies methods and evaluates; the runner
    walks the plan, caches models by lineage, resumes, and writes result rows, per-sample files and reports.
    """

    def __init__(self, cfg: ExperimentConfig, *, console: Console | None = None,
                 model_factory: Callable[[int], nn.Module] | None = None, task: Task | None = None) -> None:
        cfg = resolve(cfg)
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.engine = Engine(cfg.engine)
        self.cache = ModelCache(Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.output_dir) / "cache")
        track_cls = TRACKS.get(cfg.track)
        if task is not None or model_factory is not None:
            if not getattr(track_cls, "user_data", cfg.track == "classifier"):
                raise ConfigError(f"a prebuilt task / model_factory is only supported by the classifier track, "
                                  f"not '{cfg.track}'")
            self.track: Track = track_cls(cfg, self.engine, task=task, model_factory=model_factory)
        else:
            self.track = track_cls(cfg, self.engine)
        self._task: Any = None
        self._plan: list[Branch] | None = None
        self.identity = self._identity(task, model_factory)
        world = launched_world_size()
        if world > 1:  # results of another process count (another global batch) go to their own run folder
            self.identity = stable_hash([self.identity, f"world_size={world}"])
        self.run_dir = run_dir_for(cfg, self.identity)
        self.reused: list[str] = []
        self.trained: list[str] = []
        self._models: dict[str, TrainedModel] = {}  # lineage key → model, for this run (one load per key)

    # -- data and models ------------------------------------------------------------------------------------------
    @property
    def task(self) -> Any:
        """The track's task (for classifiers a :class:`Task`; staged scenarios: the last point's), built once."""
        if self._task is None:
            self._task = self.track.build_task()
        return self._task

    @property
    def plan(self) -> list[Branch]:
        """The schedule of the task: branches of Learn / Forget / Evaluate operations."""
        if self._plan is None:
            self._plan = list(self.track.plan(self.task))
            if not self._plan or not any(b.points for b in self._plan):
                raise ConfigError(f"track '{self.cfg.track}' planned no evaluation point; nothing would be measured")
        return self._plan

    @property
    def points(self) -> list[tuple[int, int, Evaluate]]:
        """Every evaluation point of the plan as (branch index, operation position, Evaluate), in plan order."""
        return [(b, pos, br.ops[pos]) for b, br in enumerate(self.plan) for pos in br.points]

    def new_model(self, init_seed: int, task: Any = None) -> nn.Module:
        """A freshly initialised model (seeded) for the task."""
        return self.track.new_model(self.task if task is None else task, init_seed)

    @staticmethod
    def _identity(task: Task | None, factory: Callable[[int], nn.Module] | None) -> str:
        """Fingerprint of user-supplied data and model architecture ('' for config-only runs)."""
        parts = {}
        if task is not None:
            parts["data"] = data_fingerprint(task.train)
            parts["test"] = data_fingerprint(task.test)
        if factory is not None:
            m = factory(0)
            parts["model"] = stable_hash([repr(m), [(k, list(v.shape)) for k, v in m.state_dict().items()]])
        return stable_hash(parts) if parts else ""

    def _lineage(self, role: str, recipe: Any, seed: int, ids: np.ndarray,
                 learned: list[tuple[str, np.ndarray]] | None = None) -> str:
        """Cache key of a model: role, track lineage, user data, recipe, seed and the ids trained on. A schedule
        that learns more than once adds the ordered (name, ids) of each Learn."""
        parts = {
            "role": role, **self.track.lineage(), "user": self.identity,
            "recipe": to_plain(recipe) if recipe is not None else None, "seed": seed, "ids": ids_digest(ids),
            "code": CODE_VERSION, "deterministic": self.cfg.engine.deterministic,
        }
        if learned is not None:
            parts["learned"] = [[name, ids_digest(x)] for name, x in learned]
        if self.cfg.track != "classifier":
            parts["track"] = self.cfg.track
        if self.engine.dist.world_size > 1:  # the global batch (and float summation order) depend on it
            parts["world_size"] = self.engine.dist.world_size
        return stable_hash(parts)

    def _cached_or_trained(self, key: str, label: str, role: str,
                           produce: Callable[[], tuple[nn.Module, float, np.ndarray]]) -> TrainedModel:
        """The model of lineage ``key``: from this run's memory, from the cache (verified), or ``produce()`` d and
        cached (rank 0 writes)."""
        if key in self._models:
            return self._models[key]
        dist = self.engine.dist
        if dist.agree(self.cache.has(key)):
            model = self.new_model(0)
            failure: CheckpointError | None = None
            try:
                manifest, extras = self.cache.load(key, model)
            except CheckpointError as err:
                failure = err
            # every rank raises together when any rank cannot read it (none may wait alone in a collective)
            bad = [(r, e) for r, e in enumerate(dist.gather(None if failure is None else str(failure))) if e]
            if bad:
                r, e = bad[0]
                where = "" if r == 0 else (f" on rank {r} (rank 0 found it: cache_dir must be on a file system every "
                                           "rank can read)")
                raise CheckpointError(f"cached {label} failed verification{where}: {e}") from failure
            ids = extras["trained_ids"].numpy() if "trained_ids" in extras else np.zeros(0, dtype=np.int64)
            seconds = float(manifest["meta"].get("seconds", 0.0))
            self.console.print(f"[green]reused cached {label}[/] (trained in {seconds:.1f} s)")
            self.reused.append(role)
            tm = TrainedModel(model, key, seconds, True, ids, state_sha256(model))
        else:
            self.console.print(f"training {label} ...")
            with self.engine.events.scoped(method=role, phase="train", lineage=key[:12]):
                self.engine.global_step = 0
                model, seconds, ids = produce()
            if dist.is_main:
                self.cache.save(key, model, meta={"seconds": seconds, "role": role, "samples": int(len(ids))},
                                extras={"trained_ids": torch.from_numpy(np.asarray(ids, dtype=np.int64))})
            self.console.print(f"trained {label} in {seconds:.1f} s")
            self.trained.append(role)
            tm = TrainedModel(model, key, seconds, False, np.asarray(ids), state_sha256(model))
        self._models[key] = tm
        return tm

    def _learned_model(self, role: Role, seed: int, steps: list[tuple[Learn, np.ndarray]]) -> TrainedModel:
        """The model of ``role`` after the Learn ``steps`` (each with the ids it keeps), from a fresh init; every
        prefix is cached by its lineage. Seconds accumulate over the prefix (the cost of training from scratch)."""
        recipe = self.track.recipe(role)
        prev: TrainedModel | None = None
        for k in range(len(steps)):
            prefix = [(op.name, ids) for op, ids in steps[:k + 1]]
            all_ids = np.unique(np.concatenate([ids for _, ids in prefix]))
            key = self._lineage(role, recipe, seed, all_ids, learned=prefix)
            op, keep = steps[k]
            base = prev

            def produce(op: Learn = op, keep: np.ndarray = keep, base: TrainedModel | None = base,
                        k: int = k) -> tuple[nn.Module, float, np.ndarray]:
                start = None if base is None else copy.deepcopy(base.model)
                model, seconds, ids = self.track.learn(start, op.task, role, seed, k, keep=keep)
                before = base.trained_ids if base is not None else np.zeros(0, dtype=np.int64)
                return model, seconds + (base.seconds if base else 0.0), np.union1d(before, ids)

            prev = self._cached_or_trained(key, f"{role} model (seed {seed}, after {op.name}, key {key[:8]})", role,
                                           produce)
        assert prev is not None
        return prev

    def original(self, seed: int, branch: Branch | None = None, position: int | None = None) -> TrainedModel:
        """θ_o for ``seed`` at ``position`` of ``branch`` (default: the end of the first branch): every Learn before it.

        A branch that learns once trains on D with init seed = seed (the classic θ_o, cached by that lineage).
        """
        branch = self.plan[0] if branch is None else branch
        position = len(branch.ops) if position is None else position
        learned = branch.learned_before(position)
        if not learned:
            raise ConfigError("θ_o is asked for before anything was learned")
        if len(learned) == 1:
            op = learned[0]
            key = self._lineage("original", self.track.recipe("original"), seed, op.ids)
            return self._cached_or_trained(key, f"original model (seed {seed}, key {key[:8]})", "original",
                                           lambda: self.track.train(op.task, "original", seed))
        return self._learned_model("original", seed, [(op, op.ids) for op in learned])

    def oracle(self, seed: int, branch: Branch | None = None, position: int | None = None) -> TrainedModel:
        """θ_r for ``seed`` at evaluation ``position`` of ``branch`` (default: the last point of the last branch): a
        fresh init (``derive_seed(seed, "oracle-init")``) trained on exactly what was learned and not forgotten before
        that point, in order; cached by lineage.

        Raises:
            MethodError: the oracle's recorded training ids are not what was kept, or intersect what was removed: it
                must never see data forgotten so far.
        """
        branch = self.plan[-1] if branch is None else branch
        position = branch.points[-1] if position is None else position
        ev = branch.ops[position]
        steps = branch.oracle_learning(position)
        removed = branch.removed_before(position)
        kept = np.unique(np.concatenate([ids for _, ids in steps])) if steps else np.zeros(0, dtype=np.int64)
        if not len(kept):
            raise MethodError(f"nothing is left for the oracle to learn at {getattr(ev, 'label', position)}: every "
                              "learned sample was forgotten")
        where = f" ({ev.label})" if isinstance(ev, Evaluate) and ev.label else ""
        if len(branch.learned_before(position)) == 1:
            task = ev.task
            key = self._lineage("oracle", self.track.recipe("oracle"), seed, task.retain_ids)
            tm = self._cached_or_trained(key, f"oracle model (seed {seed}{where}, key {key[:8]})", "oracle",
                                         lambda: self.track.train(task, "oracle", seed))
        else:
            tm = self._learned_model("oracle", seed, steps)
        leaked = np.intersect1d(tm.trained_ids, removed)
        if len(leaked) or not np.array_equal(np.sort(tm.trained_ids), kept):
            raise MethodError(
                f"the oracle for seed {seed}{where} was trained on ids other than the data kept ({len(leaked)} "
                f"forgotten ids among them); delete the cache entry {self.cache.path(tm.key)}"
            )
        return tm

    # -- evaluation -----------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, seed: int, per_sample_path: Path, *, original: TrainedModel,
                 oracle: TrainedModel, ev: Evaluate, shared: dict[Any, Any] | None = None,
                 policy: Any = None) -> dict[str, float]:
        """All configured metrics on ``model`` (through ``policy``) at point ``ev``; saves per-sample arrays (logits,
        labels, ids, metric arrays) as npz.

        θ_o and θ_r of the same seed and point are handed to metrics as references (``original_model``,
        ``oracle_model``, plus the point's own, e.g. the corrective manipulation); ``shared`` caches their outputs
        for every row of the point.
        """
        references = {"original_model": original.model, "oracle_model": oracle.model, **ev.references}
        values, arrays = self.track.evaluate(ev.task, model, seed, references, list(self.cfg.metrics),
                                             shared=shared, policy=policy)
        if not self.engine.dist.is_main:
            return values
        per_sample_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = per_sample_path.with_suffix(".tmp.npz")
        refuse_symlink(per_sample_path, "per-sample file")
        refuse_symlink(tmp)
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, per_sample_path)
        return values

    # -- rows -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _tag(label: str, seed: int, ev: Evaluate) -> str:
        """File stem of a row's per-sample file and checkpoint: ``<label>-seed<s>`` or ``<label>-seed<s>-<tag>``."""
        return f"{label}-seed{seed}" + (f"-{ev.tag}" if ev.tag else "")

    @staticmethod
    def _row_id(method: str, seed: Any, ev_dims: Any, role: str = "method") -> tuple:
        """Resume key of a row (see :func:`unlearnkit.results.row_id`)."""
        dims = dict(ev_dims)
        row = {"method": method, "seed": seed, "role": role, **dims}
        if dims:
            row["dimensions"] = list(dims)
        return row_id(row)

    def _base_row(self, label: str, name: str, params: dict[str, Any], seed: int, role: str, ev: Evaluate,
                  point: int) -> dict:
        row = {"schema": SCHEMA, "run": self.cfg.name, "config_sha256": config_hash(self.cfg), "method": label,
               "method_name": name, "params": params, "seed": seed, "role": role, "is_oracle": role == "oracle",
               "track": self.cfg.track,
               **({"world_size": self.engine.dist.world_size} if self.engine.dist.distributed else {}),
               **dict(ev.dims), "scenario": ev.task.scenario, "versions": versions(), "started_at": _now()}
        if ev.dims:
            row["dimensions"] = list(ev.dims)
            row["point"] = point
        return row

    # -- main loop ------------------------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        # everything that can fail on bad input fails before the run folder exists (no empty folders left behind)
        world = launched_world_size()
        if world > 1 and not self.track.multi_process:
            raise ConfigError(f"launched with {world} processes, but track '{self.cfg.track}' trains with one process; "
                              "run it as one process (plain unlearnkit run)")
        dist = self.engine.dist
        if dist.distributed:
            if not dist.is_main:
                self.console = Console(stderr=True, quiet=True)
        _ = self.engine.device
        # threads and determinism now: torch.use_deterministic_algorithms' first call imports torch._dynamo (~1 s),
        # which would otherwise fall inside the first method's timed unlearning when θ_o and θ_r come from the cache
        self.engine.setup()
        _ = self.plan
        self._check_methods()
        err = self._check_writable() if dist.is_main else None  # every folder the run writes, before any training
        err = dist.agree(err)
        if err is not None:
            raise err
        if not dist.distributed:
            with _RunLock(self.run_dir / ".lock"):
                return self._run_locked()
        lock: _RunLock | None = None
        if dist.is_main:
            try:
                lock = _RunLock(self.run_dir / ".lock").__enter__()
            except ConfigError as e:
                err = e
        err = dist.agree(err)
        if err is not None:
            raise err
        try:
            return self._run_locked()
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)

    def _check_writable(self) -> ConfigError | None:
        """The run folder, its sub-folders and the model cache folder can be written (no symbolic links); the
        problem as a ConfigError (returned, so that a distributed run can agree on it), or None."""
        try:
            check_writable_dir(self.run_dir, "run folder", "set output_dir to a writable folder, e.g. --set "
                               "output_dir=runs")
            for sub in ("per_sample", "checkpoints"):
                if (self.run_dir / sub).exists() or (self.run_dir / sub).is_symlink():
                    check_writable_dir(self.run_dir / sub, "run folder", "remove it and rerun", create=False)
            check_writable_dir(self.cache.root, "model cache folder", "set cache_dir to a writable folder")
        except UnlearnkitError as e:
            return ConfigError(str(e))
        return None

    def _specs(self) -> list[MethodSpec]:
        """The methods to run (the oracle row and θ_o's row are written by the runner itself)."""
        return [m for m in self.cfg.methods if not ((m.name == "retrain" and m.label == ORACLE_LABEL)
                                                    or m.name == "original")]

    def _check_methods(self) -> None:
        """Refuse up front, before any training, a method a request of the plan cannot serve."""
        for m in self._specs():
            method = METHODS.build(m.name, m.params)
            for branch in self.plan:
                for op in branch.ops:
                    if isinstance(op, Forget):
                        self.track.check_method(method, m.label, op.task)

    def _write_config(self) -> None:
        resolved = dump_yaml(self.cfg)
        path = self.run_dir / "config.resolved.yaml"
        refuse_symlink(path)  # never read, renamed or written through a link planted in the run folder
        if path.is_file() and path.read_text(encoding="utf-8") != resolved:
            # same hash, different text only if the schema's defaults changed: keep the old one for the record
            path.rename(self.run_dir / f"config.resolved.{int(time.time())}.yaml")
        atomic_write(path, resolved)
        atomic_write(self.run_dir / "config.sha256", config_hash(self.cfg) + "\n")

    def _run_locked(self) -> RunOutcome:
        cfg = self.cfg
        dist = self.engine.dist
        results = self.run_dir / "results.jsonl"
        finished: dict[tuple, dict[str, Any]] = {}
        if dist.is_main:
            refuse_symlink(results, "results file")  # never read from or appended through a planted link
            self._write_config()
            finished = {row_id(r): r for r in read_results(results) if r.get("status") in ("ok", "diverged")}
        finished = dist.agree(finished)
        task = self.task
        s = task.scenario
        labels = [ev.label for _, _, ev in self.points if ev.label]
        staged = f"; {len(labels)} points ({', '.join(labels)})" if labels else ""
        self.console.print(
            f"[bold]{cfg.name}[/]: {task.name}, scenario {s.get('kind')} — |D_f|={s.get('n_forget')}, "
            f"|D_r|={s.get('n_retain')}, |D_t|={s.get('n_test')}{staged}; {len(self._specs())} method(s) × "
            f"{len(cfg.seeds)} seed(s) → {self.run_dir}")
        new = 0
        point_index = {(b, pos): i for i, (b, pos, _) in enumerate(self.points)}
        if dist.is_main:
            self.engine.events.open(cfg.engine.trackers, self.run_dir, cfg.name)
        try:
            for seed in cfg.seeds:
                self._models = {}  # θ_o / θ_r of this seed (every branch shares them); earlier seeds' are cached
                for b, branch in enumerate(self.plan):
                    new += self._run_branch(seed, b, branch, finished, results, point_index)
        finally:
            self.engine.events.close()
        if not dist.is_main:
            return RunOutcome(self.run_dir, [], new, list(self.reused), list(self.trained), is_main=False)
        rows = read_results(results)
        return RunOutcome(self.run_dir, rows, new, list(self.reused), list(self.trained))

    # -- one branch of one seed -----------------------------------------------------------------------------------
    def _done(self, finished: dict, label: str, seed: int, ev: Evaluate, role: str = "method") -> dict | None:
        return finished.get(self._row_id(label, seed, ev.dims, role))

    def _run_branch(self, seed: int, b: int, branch: Branch, finished: dict[tuple, dict[str, Any]], results: Path,
                    point_index: dict[tuple[int, int], int]) -> int:
        dist = self.engine.dist
        points = branch.points
        first_forget = branch.first_forget
        states: list[_MethodState] = []
        for spec in self._specs():
            todo = [j for j, pos in enumerate(points) if (first_forget is None or pos > first_forget)
                    and self._done(finished, spec.label, seed, branch.ops[pos]) is None]
            if todo:
                states.append(self._resume_state(spec, seed, branch, todo[0], finished))
        refs_todo = [pos for pos in points if self._done(finished, ORACLE_LABEL, seed, branch.ops[pos], "oracle") is None
                     or self._done(finished, ORIGINAL_LABEL, seed, branch.ops[pos], "original") is None]
        if not states and not refs_todo:
            return 0
        new = 0
        for pos, op in enumerate(branch.ops):
            # a method whose remaining rows are all finished (a middle point was redone) stops here
            states = [st for st in states if any(self._done(finished, st.spec.label, seed, branch.ops[q]) is None
                                                 for q in points if q >= pos)]
            active = [st for st in states if st.start <= pos]
            if isinstance(op, Learn):
                k = sum(isinstance(o, Learn) for o in branch.ops[:pos])
                for st in active:
                    if st.model is not None and st.failed is None:
                        self._method_learn(st, op, seed, k)
            elif isinstance(op, Forget):
                if active:
                    orig = self.original(seed, branch, pos)
                    chained = sum(isinstance(o, Forget) for o in branch.ops) > 1
                    for st in active:
                        if st.failed is None:
                            self._method_forget(st, op, seed, branch, pos, orig, chained)
            else:
                j = points.index(pos)
                want_refs = pos in refs_todo
                writers = [st for st in active if j >= st.write_from and (first_forget is None or pos > first_forget)
                           and self._done(finished, st.spec.label, seed, op) is None]
                if not want_refs and not writers:
                    continue
                orig = self.original(seed, branch, pos)
                oracle = self.oracle(seed, branch, pos)
                shared: dict[Any, Any] = {}
                point = point_index[(b, pos)]
                refs, n = self._reference_rows(orig, oracle, seed, op, point, shared, finished, results)
                new += n
                for st in writers:
                    row = self._method_row(st, seed, op, point, orig, oracle, refs, shared)
                    row = self._agree_on_outcome(row, st)
                    if dist.is_main:
                        append_row(results, row)
                    new += 1
                    status = row["status"]
                    msg = f"{st.spec.label} seed {seed}{f' {op.label}' if op.label else ''}: {status}"
                    if status != "ok":
                        msg += f" — {row['error']}"
                    elif row.get("verdict") not in (None, "ok"):
                        msg += f" — verdict {row['verdict']}: {'; '.join(row.get('verdict_reasons', []))}"
                    self.console.print(escape(msg), style=None if status == "ok" else "red")
        return new

    def _resume_state(self, spec: MethodSpec, seed: int, branch: Branch, first_todo: int,
                      finished: dict[tuple, dict[str, Any]]) -> _MethodState:
        """Where ``spec`` resumes in ``branch``: from the checkpoint of its last finished point before
        ``first_todo`` (verified against that row), or recomputed from the start of the branch."""
        points = branch.points
        st = _MethodState(spec, start=0, write_from=first_todo)
        ff = branch.first_forget
        if first_todo == 0 or (ff is not None and points[first_todo - 1] < ff):  # before its first request: θ_o
            return st
        prev_ev = branch.ops[points[first_todo - 1]]
        row = self._done(finished, spec.label, seed, prev_ev)
        if row is not None and row.get("status") == "diverged":
            st.failed, st.failed_status, st.failed_at = "diverged", "diverged", prev_ev.label or "an earlier point"
            st.start = points[first_todo - 1] + 1
            return st
        ck = self.run_dir / "checkpoints" / self._tag(spec.label, seed, prev_ev)
        model = self.new_model(0)
        why = "missing"
        policy = None
        if ck.is_dir() and row is not None:
            try:
                _, manifest, _ = load_checkpoint(ck, model)
                saved = read_policy(ck, manifest)
                policy = policy_from_saved(saved["kind"], saved["config"], saved["tensors"]) if saved else None
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: recompute (every rank decides below)
                why = f"cannot use {ck}: {type(err).__name__}: {err}"
            else:
                why = "" if state_sha256(model) == row.get("checkpoint_sha256") else \
                    f"{ck} does not hold the model of {prev_ev.label}'s row (different weights)"
        whys = self.engine.dist.gather(why)  # used only when every rank could read it: all ranks take one path
        if all(w == "" for w in whys):
            st.model, st.policy, st.forgot = model, policy, True
            st.start = points[first_todo - 1] + 1
            return st
        first = next((r, w) for r, w in enumerate(whys) if w)
        if first[1] != "missing":
            self.console.print(escape(f"[{spec.label} seed {seed}] rank {first[0]}: {first[1]}" if first[0] else
                                      f"[{spec.label} seed {seed}] {first[1]}"), style="yellow")
        self.console.print(escape(f"[{spec.label} seed {seed}] the output of {prev_ev.label or 'the last point'} is "
                                  f"not available ({ck} missing or unusable): recomputing from θ_o through "
                                  f"{prev_ev.label or 'it'}"), style="yellow")
        return st

    def _context(self, seed: int, branch: Branch, pos: int, chained: bool, task: Any, policy: Any) -> UnlearnContext:
        # chained requests (sequential, continual) get their own randomness per request; the others the row's seed
        nxt = next((o for o in branch.ops[pos + 1:] if isinstance(o, Evaluate)), None)
        tag = nxt.tag if nxt is not None and nxt.tag else f"op{pos}"
        return UnlearnContext(seed=derive_seed(seed, tag) if chained else seed,
                              train_recipe=self.track.recipe("original"), init_seed=derive_seed(seed, "oracle-init"),
                              model_factory=lambda s: self.track.new_model(task, s), policy=policy)

    def _method_forget(self, st: _MethodState, op: Forget, seed: int, branch: Branch, pos: int,
                       orig: TrainedModel, chained: bool) -> None:
        spec = st.spec
        nxt = next((o for o in branch.ops[pos + 1:] if isinstance(o, Evaluate)), None)
        try:
            model = copy.deepcopy(st.model if st.model is not None else orig.model)
            method = METHODS.build(spec.name, spec.params)
            with self.engine.events.scoped(method=spec.label, seed=seed, point=nxt.tag if nxt else "",
                                           phase="unlearn"):
                self.engine.step_hook = self._curve_hook(spec, seed, branch, nxt, orig) if nxt is not None else None
                self.engine.global_step = 0  # after the hook's set-up, which may train the point's oracle
                try:
                    res = self.track.unlearn(op.task, method, model,
                                             self._context(seed, branch, pos, chained, op.task, st.policy))
                finally:
                    self.engine.step_hook = None
            if not all(torch.isfinite(p).all() for p in res.model.parameters()):
                raise DivergenceError(f"{spec.label}: parameters became NaN/inf", step=res.steps, loss=float("nan"))
            st.model, st.policy, st.forgot = res.model, compose(st.policy, res.policy), True
            st.last = {"seconds": res.seconds, "steps": res.steps, "notes": res.notes, "policy": res.policy}
            if method.kind == "exact":
                st.last["exactness"] = self._exactness(method, res, op, branch, pos, seed, chained)
        except DivergenceError as err:
            st.failed, st.failed_status = f"DivergenceError: {err}", "diverged"
            st.last = {"diverged_step": err.step}
        except Exception as err:  # noqa: BLE001 - any failure of one method becomes its error row; the run goes on
            tb = traceback.format_exception(type(err), err, err.__traceback__)
            st.failed, st.failed_status = f"{type(err).__name__}: {err}", "error"
            st.last = {"traceback": "".join(tb[-3:])}
        st.last["fresh_failure"] = st.failed is not None

    def _curve_hook(self, spec: MethodSpec, seed: int, branch: Branch, ev: Evaluate,
                    orig: TrainedModel) -> tuple[int, Callable[[nn.Module, int], None]] | None:
        """Every ``eval_every`` steps of the method's unlearning: the track's curve metrics of the current model at
        the coming point ``ev``, with θ_r's and θ_o's values of the same point (computed once), as an ``eval`` event."""
        every, names = spec.eval_every, list(self.track.curve_metrics())
        if not every or not names or not self.engine.events.active:
            return None
        pos = branch.ops.index(ev)
        oracle = self.oracle(seed, branch, pos)
        refs = {"original_model": orig.model, "oracle_model": oracle.model, **ev.references}
        shared: dict[Any, Any] = {}

        def values(model: nn.Module) -> dict[str, float]:
            vals, _ = self.track.evaluate(ev.task, model, seed, refs, names, shared=shared)
            return {k: v for k, v in vals.items() if not k.startswith("query_ms_per_")}

        anchors = {f"oracle.{k}": v for k, v in values(oracle.model).items()}
        anchors.update({f"original.{k}": v for k, v in values(orig.model).items()})

        def hook(model: nn.Module, step: int) -> None:
            self.engine.events.emit("eval", step=step, **values(model), **anchors)

        return every, hook

    def _exactness(self, method: Any, res: Any, op: Forget, branch: Branch, pos: int, seed: int,
                   chained: bool) -> dict[str, Any]:
        """An exact method's check (not timed): the ids its model was trained on never include anything removed so
        far, and — where the method provides its own retrain (:meth:`Unlearner.own_retrain`) — its model equals that
        retrain on D_r bit for bit (``max_abs_diff`` 0)."""
        removed = np.union1d(branch.removed_before(pos), op.ids)
        out: dict[str, Any] = {}
        if res.seen_ids is not None:
            out["seen_forgotten_ids"] = int(len(np.intersect1d(res.seen_ids, removed)))
        ctx = self._context(seed, branch, pos, chained, op.task, None)
        ref = self.track.own_retrain(op.task, method, res, ctx) if hasattr(self.track, "own_retrain") else None
        if ref is not None:
            a, b = res.model.state_dict(), ref.state_dict()
            if a.keys() != b.keys():
                out["max_abs_diff"] = float("inf")
            else:
                out["max_abs_diff"] = max((float((a[k].double() - b[k].double()).abs().max()) for k in a
                                           if a[k].numel()), default=0.0)
        out["exact"] = out.get("seen_forgotten_ids", 0) == 0 and out.get("max_abs_diff", 0.0) == 0.0
        return out

    def _method_learn(self, st: _MethodState, op: Learn, seed: int, k: int) -> None:
        try:
            model, seconds, _ = self.track.learn(st.model, op.task, "original", seed, k)
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                raise DivergenceError(f"{st.spec.label}: learning {op.name} made parameters NaN/inf", step=0,
                                      loss=float("nan"))
            st.model = model
            st.last["learn_seconds"] = float(seconds)  # the cost of this Learn, in the next row (continual)
        except DivergenceError as err:
            st.failed, st.failed_status = f"DivergenceError: {err}", "diverged"
            st.last = {"diverged_step": err.step, "fresh_failure": True}
        except Exception as err:  # noqa: BLE001
            st.failed, st.failed_status = f"learning {op.name} failed: {type(err).__name__}: {err}", "error"
            st.last = {"fresh_failure": True}

    def _reference_rows(self, orig: TrainedModel, oracle: TrainedModel, seed: int, ev: Evaluate, point: int,
                        shared: dict[Any, Any], finished: dict[tuple, dict[str, Any]],
                        results: Path) -> tuple[dict[str, dict[str, float]], int]:
        """The oracle's and θ_o's rows of a point (evaluated unless finished), after the pre-flight checks of θ_o;
        returns both rows' metrics (``{"oracle": ..., "original": ...}``).

        Raises:
            MethodError: evaluating θ_r or θ_o failed (every method row is compared with them), or θ_o learned
                nothing (chance-level utility: an untrained target is refused).
        """
        metrics: dict[str, dict[str, float]] = {}
        pending: list[tuple[str, dict[str, Any], dict[str, float], dict[str, float]]] = []
        for role, label, tm in (("oracle", ORACLE_LABEL, oracle), ("original", ORIGINAL_LABEL, orig)):
            done = self._done(finished, label, seed, ev, role)
            if done is not None and done.get("status") == "ok":
                metrics[role] = done["metrics"]
                continue
            row = self._base_row(label, "retrain" if role == "oracle" else "original", {}, seed, role, ev, point)
            try:
                values = self.evaluate(tm.model, seed, self.run_dir / "per_sample" / f"{self._tag(label, seed, ev)}.npz",
                                       original=orig, oracle=oracle, ev=ev, shared=shared)
            except Exception as err:  # noqa: BLE001 - every method row is compared with these numbers: stop, say why
                where = f" ({ev.label})" if ev.label else ""
                who = "the oracle θ_r" if role == "oracle" else "the original model θ_o"
                raise MethodError(
                    f"evaluating {who} for seed {seed}{where} failed ({type(err).__name__}: {err}); every method is "
                    "compared with it, so the run stops here. θ_o and θ_r stay cached: fix the metric settings "
                    "(metrics / metric_params) and rerun") from err
            cost = _split_cost(values)
            if role == "oracle":
                values.update(unlearn_seconds=tm.seconds, rte_ratio=1.0)
            else:
                values.update(unlearn_seconds=0.0, rte_ratio=0.0)
            metrics[role] = values
            if self.track.gap_keys():
                values["avg_gap"] = 0.0 if role == "oracle" else avg_gap(values, metrics["oracle"],
                                                                        self.track.gap_keys())
            row.update(status="ok", error=None, metrics=values, checkpoint_sha256=tm.sha256, cached_model=tm.cached,
                       lineage_key=tm.key, finished_at=_now(), trained_samples=int(len(tm.trained_ids)), cost=cost)
            if role == "original":
                row["original_sha256"] = tm.sha256
            pending.append((role, row, values, cost))
        spec = self.track.verdict_spec(ev.task)
        warnings: list[str] = []
        if spec is not None:
            warnings, refusal = preflight(spec, metrics["original"], metrics["oracle"],
                                          self.track.memorisation_keys(ev.task))
            if refusal is not None:
                raise MethodError(f"pre-flight check, seed {seed}{f' ({ev.label})' if ev.label else ''}: {refusal}")
        new = 0
        for role, row, values, _ in pending:
            if spec is not None:
                row["verdict_spec"] = spec.to_json()
                if role == "oracle":
                    row["verdict"], row["verdict_reasons"] = "reference", ["the oracle θ_r"]
                else:
                    row["verdict"], row["verdict_reasons"] = judge(values, metrics["oracle"], values, spec,
                                                                   same_weights_as_original=True)
                    row["preflight"] = warnings
                    for w in warnings:
                        self.console.print(escape(f"[pre-flight, seed {seed}{f' {ev.label}' if ev.label else ''}] "
                                                  f"{w}"), style="yellow")
            if self.engine.dist.is_main:
                append_row(results, row)
            new += 1
        return metrics, new

    def _method_row(self, st: _MethodState, seed: int, ev: Evaluate, point: int, orig: TrainedModel,
                    oracle: TrainedModel, refs: dict[str, dict[str, float]],
                    shared: dict[Any, Any]) -> dict[str, Any]:
        spec = st.spec
        row = self._base_row(spec.label, spec.name, spec.params, seed, "method", ev, point)
        row["original_sha256"] = orig.sha256
        last = st.last
        here = ev.label or "this point"
        if st.failed is not None:
            if last.get("fresh_failure"):
                error = st.failed
                last["fresh_failure"] = False
                st.failed_at = here
            elif st.failed_status == "diverged":
                error = (f"DivergenceError: {st.failed_at} of '{spec.label}' diverged, so {here}, which continues from "
                         "its output, cannot run (change the method's settings and rerun from scratch)")
            else:
                error = (f"MethodError: {st.failed_at} of '{spec.label}' failed ({st.failed}); {here} continues from "
                         "its output, so it is not run (fix the earlier point and rerun: it is retried)")
            row.update(status=st.failed_status, error=error, metrics={}, verdict=st.failed_status)
            if "diverged_step" in last and st.failed_status == "diverged":
                row["diverged_step"] = last["diverged_step"]
            if "traceback" in last:
                row["traceback"] = last.pop("traceback")
            row["finished_at"] = _now()
            return row
        tag = self._tag(spec.label, seed, ev)
        try:
            assert st.model is not None
            metrics = self.evaluate(st.model, seed, self.run_dir / "per_sample" / f"{tag}.npz", original=orig,
                                    oracle=oracle, ev=ev, shared=shared, policy=st.policy)
            cost = _split_cost(metrics)
            seconds = float(last.get("seconds", 0.0))
            metrics["unlearn_seconds"] = seconds
            if "learn_seconds" in last:
                metrics["learn_seconds"] = float(last["learn_seconds"])
            # a near-zero oracle time (< 1 ms: cached or not measured) gives NaN plus a flag, never a huge ratio
            metrics["rte_ratio"], near_zero = guarded_ratio(seconds, oracle.seconds, 1e-3)
            if near_zero:
                metrics[flag_key("rte_ratio")] = 1.0
            gap_keys = self.track.gap_keys()
            if gap_keys:
                metrics["avg_gap"] = avg_gap(metrics, refs["oracle"], gap_keys)
            sha = state_sha256(st.model)
            if self.cfg.save_unlearned and self.engine.dist.is_main:
                ck = self.run_dir / "checkpoints" / tag
                if ck.exists() or ck.is_symlink():  # left by an interrupted attempt whose row was never written
                    refuse_symlink(ck, "checkpoint folder")
                    shutil.rmtree(ck)
                meta = {"method": spec.name, "seed": seed, "original": orig.key}
                if ev.dims:
                    meta["stage"] = dict(ev.dims)
                policy = None
                if st.policy is not None:
                    policy = {"kind": st.policy.kind, "config": st.policy.config(), "tensors": st.policy.tensors()}
                save_checkpoint(ck, st.model, lineage_key=sha, meta=meta, policy=policy)
            if "exactness" in last:
                ex = last["exactness"]
                metrics["exactness_gap"] = ex.get("max_abs_diff", float(ex.get("seen_forgotten_ids", 0) > 0))
            row.update(status="ok", error=None, metrics=metrics, steps=last.get("steps", 0),
                       notes=last.get("notes", {}), checkpoint_sha256=sha, cost=cost)
            if "exactness" in last:
                row["exactness"] = last["exactness"]
            if st.policy is not None:
                row["policy"] = {**st.policy.describe(), "metrics_unaffected": self._unaffected(st.policy)}
            spec = self.track.verdict_spec(ev.task)
            if spec is not None:
                row["verdict"], row["verdict_reasons"] = judge(
                    metrics, refs["oracle"], refs["original"], spec, same_weights_as_original=sha == orig.sha256,
                    has_policy=st.policy is not None, notes=last.get("notes", {}))
                row["verdict_spec"] = spec.to_json()
            ex = last.get("exactness")
            if ex is not None and not ex.get("exact", True):
                row["verdict"] = "inexact"
                row["verdict_reasons"] = [f"differs from its own retrain on D_r (max |Δw| {ex.get('max_abs_diff')}) "
                                          f"or saw {ex.get('seen_forgotten_ids', 0)} forgotten id(s)"]
        except DivergenceError as err:
            row.update(status="diverged", error=f"DivergenceError: {err}", diverged_step=err.step, metrics={},
                       verdict="diverged")
            st.failed, st.failed_status, st.failed_at = row["error"], "diverged", here
        except Exception as err:  # noqa: BLE001 - any failure of one method becomes its error row; the run goes on
            tb = traceback.format_exception(type(err), err, err.__traceback__)
            row.update(status="error", error=f"{type(err).__name__}: {err}", traceback="".join(tb[-3:]), metrics={},
                       verdict="error")
            st.failed, st.failed_status, st.failed_at = row["error"], "error", here
        row["finished_at"] = _now()
        return row

    def _unaffected(self, policy: Any) -> list[str]:
        """The configured metrics a policy cannot change (they read no output the policy affects)."""
        affects = set(getattr(policy, "affects", ()))
        return [m for m in self.cfg.metrics if not (set(getattr(METRICS.get(m), "reads", {"logits"})) & affects)]

    def _agree_on_outcome(self, row: dict[str, Any], st: _MethodState) -> dict[str, Any]:
        """Several processes: a method that failed or diverged on any rank failed on all (a later chained point must
        then be skipped by every rank); rank 0's row says which rank and why."""
        dist = self.engine.dist
        if not dist.distributed:
            return row
        outcomes = dist.gather((row["status"], row.get("error")))
        bad = [(r, s, e) for r, (s, e) in enumerate(outcomes) if s != "ok"]
        if not bad or row["status"] != "ok":
            if bad and st.failed is None:
                st.failed, st.failed_status, st.failed_at = bad[0][2] or "failed", bad[0][1], "an earlier point"
            return row
        r, status, e = bad[0]
        for k in ("checkpoint_sha256", "steps", "notes"):  # rank 0's own results of a step that failed elsewhere
            row.pop(k, None)
        row.update(status=status, error=f"rank {r}: {e}", metrics={}, verdict=status)
        st.failed, st.failed_status, st.failed_at = row["error"], status, "an earlier point"
        return row


def _split_cost(values: dict[str, float]) -> dict[str, float]:
    """Move the per-query cost keys (``query_ms_per_input`` / ``query_ms_per_token``: timings, not metrics) out of
    ``values`` into the row's ``cost``."""
    return {k: values.pop(k) for k in [k for k in values if k.startswith("query_ms_per_")]}


def run_experiment(cfg: ExperimentConfig, *, console: Console | None = None,
                   model_factory: Callable[[int], nn.Module] | None = None, task: Task | None = None,
                   write_report: bool = True) -> RunOutcome:
    """Run an experiment end to end and (by default) write ``report.md`` and ``report.html``.

    Args:
        cfg: the experiment (resolved here if it was not).
        model_factory: ``f(init_seed) -> nn.Module`` for a user model (instead of ``cfg.model``).
        task: a prebuilt :class:`Task` (user data) instead of loading ``cfg.data``.

    Returns:
        :class:`RunOutcome` (run folder, all result rows, which models were reused or trained).

    Raises:
        ConfigError, DataError: bad config or data (before any training), e.g. an empty ``methods`` list (it would
            train θ_o and θ_r for every seed and write reference rows only; :func:`unlearnkit.testing.check_track`
            runs such a reference-only experiment through :meth:`Runner.run` directly).
        CheckpointError: a cached model failed verification.
    """
    if not cfg.methods:
        raise ConfigError("no method to run: methods is empty; list at least one method (retrain alone gives the "
                          "oracle row), e.g. --set 'methods=[finetune]'")
    runner = Runner(cfg, console=console, model_factory=model_factory, task=task)
    outcome = runner.run()
    if write_report and outcome.is_main:
        from unlearnkit.report import write_reports

        write_reports(outcome.run_dir)
    return outcome

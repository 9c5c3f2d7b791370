"""The experiment runner: config → data → θ_o (cached) → θ_r (cached) → methods × seeds → metrics → results files.

Each finished (method, seed) is appended to ``results.jsonl`` at once (flushed and fsynced); a rerun of the same
config resumes by skipping finished rows. A method that fails gets a row with ``status: "error"`` (or ``"diverged"``)
and its reason, and the run goes on.

Scenarios with stages (``corrective``: one per identified fraction p; ``sequential``: one per deletion request) give
one row per (method, seed, stage), identified by the stage's fields (``identified_fraction`` / ``request``). θ_o is
trained once per seed and shared by all stages; every stage has its own oracle θ_r, trained on the stage's D_r and
cached by its lineage (which includes the ids digest). In a sequential scenario the input of request i is the
method's own output of request i − 1: held in memory, or on resume loaded from
``checkpoints/<label>-seed<s>-req<i−1>/`` (recomputed from θ_o when that checkpoint is missing).

Several processes (LLM track, ``accelerate launch`` / ``torchrun``; :mod:`unlearnkit.engine.distributed`): every
rank runs this same loop, trains together and evaluates the same models; rank 0 alone writes files, and rank 0's
decisions (finished rows, cache hits, usable checkpoints, a method's failure on any rank) are shared with every rank
so all ranks take the same path through the collectives.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

import unlearnkit
from unlearnkit.persist import append_line, atomic_write, check_writable_dir, refuse_symlink
from unlearnkit.config.loader import config_hash, dump_yaml, stable_hash, to_plain
from unlearnkit.config.schema import ExperimentConfig, MethodSpec
from unlearnkit.data.base import SampleSet, TensorSource
from unlearnkit.bench.tracks import TRACKS, Role, Track
from unlearnkit.bench.tracks.classifier import check_requirements  # noqa: F401 - public re-export
from unlearnkit.data.scenarios import Stage, Task, ids_digest
from unlearnkit.engine.checkpoint import ModelCache, load_checkpoint, save_checkpoint, state_sha256
from unlearnkit.engine.distributed import launched_world_size
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, DivergenceError, MethodError, UnlearnkitError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.metrics import avg_gap

SCHEMA = "unlearnkit.result/1"
ORACLE_LABEL = "retrain"
CODE_VERSION = "train/1"  # bump when the training loop changes numerics: invalidates cached models


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict[str, str]:
    return {"unlearnkit": unlearnkit.__version__, "torch": torch.__version__, "python": platform.python_version()}


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
    """Rows of a results.jsonl ([] if absent); a truncated line from a crash is skipped silently.

    One parser for the whole package: :func:`unlearnkit.report.summary.read_results` (which warns; the runner only
    needs the valid rows).
    """
    from unlearnkit.report.summary import ReportWarning
    from unlearnkit.report.summary import read_results as parse

    if not Path(path).is_file():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        rows, _ = parse(path)
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line, flushed and fsynced (a crash loses at most the line being written; a link is refused)."""
    append_line(path, json.dumps(row, sort_keys=True, allow_nan=True))


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
    """Runs one :class:`ExperimentConfig`. Use :func:`run_experiment` unless you need the pieces.

    The track (``cfg.track``: classifier, llm, graph, recsys) builds the task, trains θ_o / θ_r, applies methods and
    evaluates; the runner caches models by lineage, resumes, and writes result rows, per-sample files and reports.
    """

    def __init__(self, cfg: ExperimentConfig, *, console: Console | None = None,
                 model_factory: Callable[[int], nn.Module] | None = None, task: Task | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.engine = Engine(cfg.engine)
        self.cache = ModelCache(Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.output_dir) / "cache")
        track_cls = TRACKS.get(cfg.track)
        if cfg.track == "classifier":
            self.track: Track = track_cls(cfg, None, self.engine, task=task, model_factory=model_factory)
        else:
            if task is not None or model_factory is not None:
                raise ConfigError(f"a prebuilt task / model_factory is only supported by the classifier track, "
                                  f"not '{cfg.track}'")
            section = TRACKS.validate_config(cfg.track, getattr(cfg, cfg.track, None) or {})
            self.track = track_cls(cfg, section, self.engine)
        self._task: Any = None
        self._stages: list[Stage] | None = None
        self.identity = self._identity(task, model_factory)
        world = launched_world_size()
        if world > 1:  # results of another process count (another global batch) go to their own run folder
            self.identity = stable_hash([self.identity, f"world_size={world}"])
        self.run_dir = run_dir_for(cfg, self.identity)
        self.reused: list[str] = []
        self.trained: list[str] = []

    # -- data and models ------------------------------------------------------------------------------------------
    @property
    def task(self) -> Any:
        """The track's task (for classifiers a :class:`Task`), built once."""
        if self._task is None:
            self._task = self.track.build_task()
        return self._task

    @property
    def stages(self) -> list[Stage]:
        """The task's stages: one with an empty key for plain scenarios; one per p (corrective) or request
        (sequential)."""
        if self._stages is None:
            self._stages = list(self.track.stages(self.task))
        return self._stages

    def new_model(self, init_seed: int) -> nn.Module:
        """A freshly initialised model (seeded) for the task."""
        return self.track.new_model(self.task, init_seed)

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

    def _lineage(self, role: str, recipe: Any, seed: int, ids: np.ndarray) -> str:
        parts = {
            "role": role, **self.track.lineage(), "user": self.identity,
            "recipe": to_plain(recipe) if recipe is not None else None, "seed": seed, "ids": ids_digest(ids),
            "code": CODE_VERSION, "deterministic": self.cfg.engine.deterministic,
        }
        if self.cfg.track != "classifier":
            parts["track"] = self.cfg.track
        if self.engine.dist.world_size > 1:  # the global batch (and float summation order) depend on it
            parts["world_size"] = self.engine.dist.world_size
        return stable_hash(parts)

    def _train_or_load(self, role: Role, data_ids: np.ndarray, seed: int, task: Any = None) -> TrainedModel:
        key = self._lineage(role, self.track.recipe(role), seed, data_ids)
        label = f"{role} model (seed {seed}, key {key[:8]})"
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
            self.console.print(f"[green]reused cached {label}[/] (trained in {manifest['meta'].get('seconds', 0):.1f} s)")
            self.reused.append(role)
            return TrainedModel(model, key, float(manifest["meta"].get("seconds", 0.0)), True, ids, state_sha256(model))
        self.console.print(f"training {label} ...")
        model, seconds, ids = self.track.train(self.task if task is None else task, role, seed)
        if dist.is_main:
            self.cache.save(key, model, meta={"seconds": seconds, "role": role, "seed": seed, "samples": int(len(ids))},
                            extras={"trained_ids": torch.from_numpy(np.asarray(ids, dtype=np.int64))})
        self.console.print(f"trained {label} in {seconds:.1f} s")
        self.trained.append(role)
        return TrainedModel(model, key, seconds, False, np.asarray(ids), state_sha256(model))

    def original(self, seed: int) -> TrainedModel:
        """θ_o for ``seed``: trained on D (init seed = seed), or loaded from the cache."""
        return self._train_or_load("original", self.task.train_ids, seed)

    def oracle(self, seed: int, stage: Stage | None = None) -> TrainedModel:
        """θ_r for ``seed`` (and ``stage``; default: the last stage, the only one of a plain scenario): a fresh init
        (``derive_seed(seed, "oracle-init")``) trained on the stage's D_r only, or cached.

        Raises:
            MethodError: the oracle's recorded training ids are not the stage's D_r, or intersect the stage's
                (cumulative) forget set: it must never see data removed so far.
        """
        stage = self.stages[-1] if stage is None else stage
        task = stage.task
        tm = self._train_or_load("oracle", task.retain_ids, seed, task=task)
        leaked = np.intersect1d(tm.trained_ids, stage.evaluation.forget_ids)
        if len(leaked) or not np.array_equal(np.sort(tm.trained_ids), np.sort(task.retain_ids)):
            where = f" ({stage.label})" if stage.key else ""
            raise MethodError(
                f"the oracle for seed {seed}{where} was trained on ids other than D_r ({len(leaked)} forget ids among "
                f"them); delete the cache entry {self.cache.path(tm.key)}"
            )
        return tm

    # -- evaluation -----------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, seed: int, per_sample_path: Path, *, original: TrainedModel,
                 oracle: TrainedModel, stage: Stage | None = None) -> dict[str, float]:
        """All configured metrics on ``model``; saves per-sample arrays (logits, labels, ids, metric arrays) as npz.

        θ_o and θ_r of the same seed (and stage) are handed to metrics as ``references`` (``original_model``,
        ``oracle_model``, plus the stage's own, e.g. the corrective manipulation); metrics see the stage's
        evaluation task (sequential: the cumulative forget set).
        """
        stage = self.stages[-1] if stage is None else stage
        references = {"original_model": original.model, "oracle_model": oracle.model, **stage.references}
        values, arrays = self.track.evaluate(stage.evaluation, model, seed, references, list(self.cfg.metrics))
        if not self.engine.dist.is_main:
            return values
        per_sample_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = per_sample_path.with_suffix(".tmp.npz")
        refuse_symlink(tmp)
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, per_sample_path)
        return values

    # -- main loop ------------------------------------------------------------------------------------------------
    @staticmethod
    def _tag(label: str, seed: int, stage: Stage) -> str:
        """File stem of a row's per-sample file and checkpoint: ``<label>-seed<s>`` or ``<label>-seed<s>-<stage>``."""
        return f"{label}-seed{seed}" + (f"-{stage.name}" if stage.name else "")

    @staticmethod
    def _row_id(method: str, seed: Any, fields: Any) -> tuple:
        """Resume key of a row: (method, seed, stage fields) — the stage fields of a plain scenario are empty."""
        from unlearnkit.report.summary import ROW_DIMENSIONS

        return (method, seed, tuple((d, fields[d]) for d in ROW_DIMENSIONS if d in fields))

    def _base_row(self, spec_label: str, name: str, params: dict[str, Any], seed: int, is_oracle: bool,
                  stage: Stage | None = None) -> dict:
        stage = self.stages[-1] if stage is None else stage
        return {"schema": SCHEMA, "run": self.cfg.name, "config_sha256": config_hash(self.cfg), "method": spec_label,
                "method_name": name, "params": params, "seed": seed, "is_oracle": is_oracle, "track": self.cfg.track,
                **({"world_size": self.engine.dist.world_size} if self.engine.dist.distributed else {}),
                **dict(stage.key), "scenario": stage.evaluation.scenario, "versions": versions(), "started_at": _now()}

    def run(self) -> RunOutcome:
        # everything that can fail on bad input fails before the run folder exists (no empty folders left behind)
        world = launched_world_size()
        if world > 1 and self.cfg.track != "llm":
            raise ConfigError(f"launched with {world} processes, but only the llm track trains with several "
                              f"processes; run the {self.cfg.track} track as one process (plain unlearnkit run)")
        dist = self.engine.dist
        if dist.distributed:
            if not dist.is_main:
                self.console = Console(stderr=True, quiet=True)
        _ = self.engine.device
        _ = self.stages
        err: ConfigError | None = None
        if dist.is_main:  # every folder the run writes, before anything is trained
            try:
                check_writable_dir(self.run_dir, "run folder", "set output_dir to a writable folder, e.g. --set "
                                   "output_dir=runs")
                for sub in ("per_sample", "checkpoints"):
                    if (self.run_dir / sub).exists() or (self.run_dir / sub).is_symlink():
                        check_writable_dir(self.run_dir / sub, "run folder", "remove it and rerun", create=False)
                check_writable_dir(self.cache.root, "model cache folder", "set cache_dir to a writable folder")
            except UnlearnkitError as e:
                err = ConfigError(str(e))
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
            finished = {self._row_id(r["method"], r["seed"], r): r for r in read_results(results)
                        if r.get("status") in ("ok", "diverged")}
        finished = dist.agree(finished)
        task = self.task
        stages = self.stages
        s = task.scenario
        staged = "" if len(stages) == 1 and not stages[0].key else \
            f"; {len(stages)} stages ({', '.join(st.label for st in stages)})"
        self.console.print(
            f"[bold]{cfg.name}[/]: {task.name}, scenario {s['kind']} — |D_f|={s['n_forget']}, |D_r|={s['n_retain']}, "
            f"|D_t|={s['n_test']}{staged}; {len(cfg.methods)} method(s) × {len(cfg.seeds)} seed(s) → {self.run_dir}"
        )
        specs = [m for m in cfg.methods if not (m.name == "retrain" and m.label == ORACLE_LABEL)]
        for m in specs:  # refuse up front, before any training
            for st in stages:
                self.track.check_method(METHODS.get(m.name), m.label, st.task)
        new = 0
        for seed in cfg.seeds:
            def pending(st: Stage, seed: int = seed) -> tuple[list[MethodSpec], bool]:
                todo = [m for m in specs if self._row_id(m.label, seed, st.key) not in finished]
                return todo, self._row_id(ORACLE_LABEL, seed, st.key) in finished

            if all(not pending(st)[0] and pending(st)[1] for st in stages):
                continue
            original = self.original(seed)  # θ_o: one per seed, shared by every stage
            outputs: dict[str, nn.Module | str] = {}  # label → its output of the previous stage (or why there is none)
            for index, stage in enumerate(stages):
                todo, oracle_done = pending(stage)
                if not todo and oracle_done:
                    outputs = {}
                    continue
                oracle = self.oracle(seed, stage)
                oracle_metrics = self._oracle_metrics(original, oracle, seed, stage, results, finished)
                new += 0 if oracle_done else 1
                produced: dict[str, nn.Module | str] = {}
                for spec in todo:
                    def start(spec: MethodSpec = spec, index: int = index) -> nn.Module:
                        return self._stage_input(spec, seed, index, original, outputs, finished)

                    row, out = self._run_method(spec, seed, original, oracle, oracle_metrics, stage=stage,
                                                start=start)
                    row, out = self._agree_on_outcome(row, out)
                    produced[spec.label] = out
                    if dist.is_main:
                        append_row(results, row)
                    new += 1
                    st = row["status"]
                    msg = f"{spec.label} seed {seed}{f' {stage.label}' if stage.key else ''}: {st}"
                    if st != "ok":
                        msg += f" — {row['error']}"
                    self.console.print(escape(msg), style=None if st == "ok" else "red")
                outputs = produced
        if not dist.is_main:
            return RunOutcome(self.run_dir, [], new, list(self.reused), list(self.trained), is_main=False)
        rows = read_results(results)
        return RunOutcome(self.run_dir, rows, new, list(self.reused), list(self.trained))

    def _agree_on_outcome(self, row: dict[str, Any], out: nn.Module | str) -> tuple[dict[str, Any], nn.Module | str]:
        """Several processes: a method that failed or diverged on any rank failed on all (a later chained request
        must then be skipped by every rank); rank 0's row says which rank and why."""
        dist = self.engine.dist
        if not dist.distributed:
            return row, out
        outcomes = dist.gather((row["status"], row.get("error")))
        bad = [(r, st, e) for r, (st, e) in enumerate(outcomes) if st != "ok"]
        if not bad or row["status"] != "ok":
            return row, (out if not bad else (out if isinstance(out, str) else "failed"))
        r, st, e = bad[0]
        for k in ("checkpoint_sha256", "steps", "notes"):  # rank 0's own results of a step that failed elsewhere
            row.pop(k, None)
        row.update(status=st, error=f"rank {r}: {e}", metrics={})
        return row, "diverged" if st == "diverged" else "failed"

    def _oracle_metrics(self, original: TrainedModel, oracle: TrainedModel, seed: int, stage: Stage, results: Path,
                        finished: dict[tuple, dict[str, Any]]) -> dict[str, float]:
        done = finished.get(self._row_id(ORACLE_LABEL, seed, stage.key))
        if done is not None and done.get("status") == "ok":
            return done["metrics"]
        row = self._base_row(ORACLE_LABEL, "retrain", {}, seed, True, stage)
        try:
            metrics = self.evaluate(oracle.model, seed,
                                    self.run_dir / "per_sample" / f"{self._tag(ORACLE_LABEL, seed, stage)}.npz",
                                    original=original, oracle=oracle, stage=stage)
        except Exception as err:  # noqa: BLE001 - every method row is compared with these numbers: stop, say why
            where = f" ({stage.label})" if stage.key else ""
            raise MethodError(
                f"evaluating the oracle θ_r for seed {seed}{where} failed ({type(err).__name__}: {err}); every method "
                "is compared with it, so the run stops here. θ_o and θ_r stay cached: fix the metric settings "
                "(metrics / metric_params) and rerun") from err
        metrics.update(unlearn_seconds=oracle.seconds, rte_ratio=1.0)
        if self.track.gap_keys():
            metrics["avg_gap"] = 0.0
        row.update(status="ok", error=None, metrics=metrics, checkpoint_sha256=oracle.sha256,
                   cached_model=oracle.cached, lineage_key=oracle.key, finished_at=_now())
        if done is None and self.engine.dist.is_main:
            append_row(results, row)
        return metrics

    def _context(self, seed: int, stage: Stage) -> UnlearnContext:
        # chained stages (sequential requests) get their own randomness per request; the others the row's seed
        return UnlearnContext(seed=derive_seed(seed, stage.name) if stage.chained else seed,
                              train_recipe=self.track.recipe("original"), init_seed=derive_seed(seed, "oracle-init"),
                              model_factory=self.new_model)

    def _stage_input(self, spec: MethodSpec, seed: int, index: int, original: TrainedModel,
                     outputs: dict[str, nn.Module | str], finished: dict[tuple, dict[str, Any]]) -> nn.Module:
        """The model ``spec`` starts stage ``index`` from: θ_o, or (chained stages) its output of stage index − 1.

        That output is taken from memory (this run), else from ``checkpoints/<label>-seed<s>-<prev>/`` (checked
        against the previous row's ``checkpoint_sha256``), else recomputed from θ_o through stages 0 … index − 1.

        Raises:
            MethodError: the previous stage failed or diverged (nothing to continue from).
        """
        stage = self.stages[index]
        if not stage.chained or index == 0:
            return original.model
        prev = self.stages[index - 1]
        if spec.label in outputs:
            got = outputs[spec.label]
            if got == "diverged":
                raise self._chain_diverged(spec, prev, index)
            if isinstance(got, str):
                raise MethodError(f"{prev.label} of '{spec.label}' {got}; request {index} continues from its output, "
                                  "so it is not run (fix the earlier request and rerun: it is retried)")
            return got
        row = finished.get(self._row_id(spec.label, seed, prev.key))
        if row is not None and row.get("status") == "diverged":
            raise self._chain_diverged(spec, prev, index)
        if row is None or row.get("status") != "ok":
            raise MethodError(f"{prev.label} of '{spec.label}' has no successful row "
                              f"({row.get('status') if row else 'missing'}); nothing to continue from")
        ck = self.run_dir / "checkpoints" / self._tag(spec.label, seed, prev)
        model = self.new_model(0)
        why = "missing"
        if ck.is_dir():
            try:
                load_checkpoint(ck, model)
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: recompute (every rank decides below)
                why = f"cannot use {ck}: {type(err).__name__}: {err}"
            else:
                why = "" if state_sha256(model) == row.get("checkpoint_sha256") else \
                    f"{ck} does not hold the model of {prev.label}'s row (different weights)"
        whys = self.engine.dist.gather(why)  # used only when every rank could read it: all ranks take one path
        if all(w == "" for w in whys):
            return model
        first = next((r, w) for r, w in enumerate(whys) if w)
        if first[1] != "missing":
            self.console.print(escape(f"[{spec.label} seed {seed}] rank {first[0]}: {first[1]}" if first[0] else
                                      f"[{spec.label} seed {seed}] {first[1]}"), style="yellow")
        self.console.print(escape(f"[{spec.label} seed {seed}] the output of {prev.label} is not available "
                                  f"({ck} missing or unusable): recomputing requests 0–{index - 1} from θ_o"),
                           style="yellow")
        model = copy.deepcopy(original.model)
        for j in range(index):
            st = self.stages[j]
            res = self.track.unlearn(st.task, METHODS.build(spec.name, spec.params), model, self._context(seed, st))
            model = res.model
            want = (finished.get(self._row_id(spec.label, seed, st.key)) or {}).get("checkpoint_sha256")
            if want and state_sha256(model) != want:
                self.console.print(escape(f"[{spec.label} seed {seed}] the recomputed output of {st.label} differs "
                                          "from the recorded one (non-deterministic method or changed code)"),
                                   style="yellow")
        return model

    @staticmethod
    def _chain_diverged(spec: MethodSpec, prev: Stage, index: int) -> DivergenceError:
        """A diverged request ends its method's chain: the later requests are recorded as diverged too (a final
        status, like the divergence itself, so reruns do not retry them; an *error* earlier in the chain is retried)."""
        return DivergenceError(f"{prev.label} of '{spec.label}' diverged, so request {index}, which continues from its "
                               "output, cannot run (change the method's settings and rerun from scratch)",
                               step=0, loss=float("nan"))

    def _run_method(self, spec: MethodSpec, seed: int, original: TrainedModel, oracle: TrainedModel,
                    oracle_metrics: dict[str, float], *, stage: Stage | None = None,
                    start: Callable[[], nn.Module] | None = None) -> tuple[dict[str, Any], nn.Module | str]:
        """One (method, seed, stage) row, and the unlearned model (or, when it failed, why) for a following stage.

        ``start`` returns the model to unlearn from (default θ_o); it is copied, never modified.
        """
        stage = self.stages[-1] if stage is None else stage
        row = self._base_row(spec.label, spec.name, spec.params, seed, False, stage)
        tag = self._tag(spec.label, seed, stage)
        out: nn.Module | str = "failed"
        try:
            model = copy.deepcopy(start() if start is not None else original.model)
            method = METHODS.build(spec.name, spec.params)
            res = self.track.unlearn(stage.task, method, model, self._context(seed, stage))
            if not all(torch.isfinite(p).all() for p in res.model.parameters()):
                raise DivergenceError(f"{spec.label}: parameters became NaN/inf", step=res.steps, loss=float("nan"))
            metrics = self.evaluate(res.model, seed, self.run_dir / "per_sample" / f"{tag}.npz",
                                    original=original, oracle=oracle, stage=stage)
            metrics["unlearn_seconds"] = res.seconds
            metrics["rte_ratio"] = res.seconds / oracle.seconds if oracle.seconds > 0 else float("nan")
            gap_keys = self.track.gap_keys()
            if gap_keys:
                metrics["avg_gap"] = avg_gap(metrics, oracle_metrics, gap_keys)
            sha = state_sha256(res.model)
            if self.cfg.save_unlearned and self.engine.dist.is_main:
                ck = self.run_dir / "checkpoints" / tag
                if ck.exists():  # left by an interrupted attempt whose row was never written: this run replaces it
                    shutil.rmtree(ck)
                meta = {"method": spec.name, "seed": seed, "original": original.key}
                if stage.key:
                    meta["stage"] = dict(stage.key)
                save_checkpoint(ck, res.model, lineage_key=sha, meta=meta)
            row.update(status="ok", error=None, metrics=metrics, steps=res.steps, notes=res.notes,
                       checkpoint_sha256=sha)
            out = res.model
        except DivergenceError as err:
            row.update(status="diverged", error=f"DivergenceError: {err}", diverged_step=err.step, metrics={})
            out = "diverged"
        except Exception as err:  # noqa: BLE001 - any failure of one method becomes its error row; the run goes on
            tb = traceback.format_exception(type(err), err, err.__traceback__)
            row.update(status="error", error=f"{type(err).__name__}: {err}", traceback="".join(tb[-3:]), metrics={})
            out = "failed"
        row["finished_at"] = _now()
        row["original_sha256"] = original.sha256
        return row, out


def run_experiment(cfg: ExperimentConfig, *, console: Console | None = None,
                   model_factory: Callable[[int], nn.Module] | None = None, task: Task | None = None,
                   write_report: bool = True) -> RunOutcome:
    """Run an experiment end to end and (by default) write ``report.md`` and ``report.html``.

    Args:
        cfg: the validated experiment.
        model_factory: ``f(init_seed) -> nn.Module`` for a user model (instead of ``cfg.model``).
        task: a prebuilt :class:`Task` (user data) instead of loading ``cfg.data``.

    Returns:
        :class:`RunOutcome` (run folder, all result rows, which models were reused or trained).

    Raises:
        ConfigError, DataError: bad config or data (before any training).
        CheckpointError: a cached model failed verification.
    """
    runner = Runner(cfg, console=console, model_factory=model_factory, task=task)
    outcome = runner.run()
    if write_report and outcome.is_main:
        from unlearnkit.report import write_reports

        write_reports(outcome.run_dir)
    return outcome

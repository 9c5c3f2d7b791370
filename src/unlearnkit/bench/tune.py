"""``unlearnkit tune``: hyperparameter search per method, against the oracle, on a forget set that is *not* the
evaluation's.

For each method of an experiment the tuner searches the method's declared ``search_space``
(:mod:`unlearnkit.methods.search`) with Optuna (TPE), minimising

    gap_s(params)       = (1/|K|) Σ_{k∈K} |m_k(θ_u^s) − m_k(θ_r,tune^s)|
    objective(params)   = mean_s gap_s + w · std_s gap_s          (w = ``std_weight``, default 1; 0 = the plain mean)

where K is the track's :meth:`~unlearnkit.bench.tracks.base.Track.tuning_keys` (its Avg. Gap keys: UA, RA, TA,
MIA-efficacy for classifiers), s runs over the experiment's seeds, θ_u^s is the method applied with ``params`` to θ_o
of seed s (the evaluation's own model) for a **tuning forget set** drawn by :meth:`Track.tuning_task` — one draw per
seed, disjoint from the evaluation D_f (:mod:`unlearnkit.bench.tune_tasks`) — and θ_r,tune^s is the oracle retrained
on D \\ D_f(tune) (cached by lineage like every oracle). The evaluation D_f is never unlearned or scored during the
search; it stays in the tuning D_r. The standard-deviation term ranks a setting that lands near the oracle on one
draw and collapses on another (gradient ascent next to its cliff) below a steady one.

Files (``<run folder>/tune/``; the run folder is the one ``unlearnkit run`` uses for the same config):

- ``<label>.db``: the Optuna study (SQLite). Rerunning continues it: ``--trials N`` runs until the study holds N
  finished trials; several worker processes (``--workers``) share it.
- ``<label>.json``: the search table (trial, parameters, objective, seconds, per-seed gaps, errors), the tuning set
  and θ_o's objective on it (the value to beat); read by ``unlearnkit report``.
- ``tuned.yaml``: a config that ``extends:`` the original and sets every tuned method's best parameters (``unlearnkit
  run <run>/tune/tuned.yaml``).

Optuna is an optional dependency: ``pip install 'unlearnkit[tune]'``.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.markup import escape

from unlearnkit.bench.resolve import resolve
from unlearnkit.bench.runner import Runner, TrainedModel
from unlearnkit.config.loader import apply_overrides, compose, config_hash, parse_overrides, resolve_config_path
from unlearnkit.config.schema import ExperimentConfig, MethodSpec
from unlearnkit.data.schedule import Branch, Evaluate, Forget, Learn
from unlearnkit.errors import ConfigError, DivergenceError, UnlearnkitError
from unlearnkit.methods import METHODS, UnlearnContext, derive_seed
from unlearnkit.methods.search import Choice, Float, Int, Param, check_space, get_path, with_params
from unlearnkit.metrics import avg_gap
from unlearnkit.persist import atomic_write, canonical_json, refuse_symlink
from unlearnkit.registry import suggest
from unlearnkit.results import ORACLE_LABEL

TUNE_SCHEMA = "unlearnkit.tune/1"
TUNE_DIR = "tune"
TUNED_FILE = "tuned.yaml"
DEFAULT_TRIALS = 20
#: the default draw seed of the tuning forget set (the evaluation's D_f is excluded whatever the seed)
DEFAULT_TUNING_SEED = 1
#: the objective adds this many standard deviations of the per-seed gaps to their mean: a setting that lands near the
#: oracle on one draw and collapses on another (gradient ascent near its cliff) ranks below a steady one
DEFAULT_STD_WEIGHT = 1.0
#: a best objective within this fraction of θ_o's counts as no better than doing nothing (tuned.yaml then keeps the
#: configured settings): a 0.1 % "gain" is one flipped prediction, not a setting that acts
MIN_GAIN = 0.01


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("unlearnkit tune needs Optuna: pip install 'unlearnkit[tune]'") from err
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by the tuner itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _TrialFailed(Exception):
    """A trial whose method failed or diverged (recorded in the trial's ``error`` attribute; the search goes on)."""


@dataclass
class _Reference:
    """θ_o and the tuning oracle of one seed, with the oracle's metrics and θ_o's objective on the tuning task."""

    original: TrainedModel
    oracle: TrainedModel
    oracle_metrics: dict[str, float]
    original_gap: float
    shared: dict[Any, Any] = field(default_factory=dict)


@dataclass
class TuneOutcome:
    """What :func:`tune_experiment` produced: the tune folder, the tuned YAML fragment and one summary per method."""

    tune_dir: Path
    fragment: Path | None
    summaries: dict[str, dict[str, Any]]


class Tuner:
    """Searches the parameters of an experiment's methods on a tuning forget set (module docstring).

    Args:
        cfg: the experiment (resolved here if needed). Its methods' parameters are the starting point (the first
            trial of a new study) and the values of every setting the search space does not name.
        seeds: the seeds the objective averages over (default: the experiment's seeds).
        tuning_seed: seed of the tuning forget set's draw.
        raw: the composed config mapping (``compose``) and its source, to write ``tuned.yaml`` with ``extends:``;
            None: ``tuned.yaml`` holds the methods only.

    Raises:
        ConfigError: a scenario the tuner cannot serve (several requests, no disjoint set), Optuna missing.
    """

    def __init__(self, cfg: ExperimentConfig, *, console: Console | None = None, seeds: Sequence[int] | None = None,
                 tuning_seed: int = DEFAULT_TUNING_SEED, raw: tuple[Mapping[str, Any], str, list[str]] | None = None,
                 std_weight: float = DEFAULT_STD_WEIGHT, draws: int = 1) -> None:
        self.runner = Runner(resolve(cfg), console=console)
        self.cfg = self.runner.cfg
        self.track = self.runner.track
        self.console = self.runner.console
        self.seeds = [int(s) for s in (seeds if seeds else self.cfg.seeds)]
        unknown = [s for s in self.seeds if s not in self.cfg.seeds]
        if unknown:
            raise ConfigError(f"--seeds {unknown} are not seeds of the experiment ({list(self.cfg.seeds)}); θ_o of the "
                              "evaluation is the model tuned for, so tune on the experiment's own seeds")
        self.tuning_seed = int(tuning_seed)
        self.raw = raw
        if not (std_weight >= 0 and math.isfinite(std_weight)):
            raise ConfigError(f"--std-weight must be a finite number ≥ 0, got {std_weight}")
        self.std_weight = float(std_weight)
        if int(draws) < 1:
            raise ConfigError(f"--draws must be ≥ 1, got {draws}")
        self.draws = int(draws)
        #: (run seed, draw index) pairs the objective averages over
        self.units = [(s, k) for s in self.seeds for k in range(self.draws)]
        self.keys = tuple(self.track.tuning_keys())
        if not self.keys:
            raise ConfigError(f"track '{self.cfg.track}' defines no gap to the oracle (Track.tuning_keys); there is "
                              "nothing to minimise")
        self._branches: dict[int, Branch] = {}
        self._refs: dict[int, _Reference] = {}

    # -- the tuning task ------------------------------------------------------------------------------------------
    @property
    def tune_dir(self) -> Path:
        """``<run folder>/tune``."""
        return self.runner.run_dir / TUNE_DIR

    def draw_seed(self, seed: int, draw: int = 0) -> int:
        """The draw seed of run seed ``seed``'s ``draw``-th tuning forget set: every (seed, draw) gets its own set
        (the objective averages over forget sets, not only over training noise)."""
        return derive_seed(self.tuning_seed, f"tuning-forget-set/{seed}" + (f"/{draw}" if draw else ""))

    def branch(self, seed: int, draw: int = 0) -> Branch:
        """The tuning schedule of run seed ``seed``: ``[Learn(D), Forget(D_f(tune)), Evaluate]``, checked disjoint
        from every evaluation request (built once per seed).

        Raises:
            ConfigError: the evaluation plan is not plain, or the track's tuning plan is not one branch learning D,
                forgetting one request disjoint from the evaluation D_f and evaluating once.
        """
        if (seed, draw) not in self._branches:
            plan = self.runner.plan
            forgets = [op for b in plan for op in b.ops if isinstance(op, Forget)]
            learns = [op for b in plan for op in b.ops if isinstance(op, Learn)]
            if len(plan) != 1 or len(forgets) != 1 or len(learns) != 1:
                raise ConfigError(f"unlearnkit tune needs a plain scenario (learn D, forget one request, evaluate); "
                                  f"this experiment's plan has {len(plan)} branch(es) and {len(forgets)} request(s). "
                                  "Tune the plain scenario of the same data (e.g. kind: random with the request "
                                  "size) and copy the tuned parameters")
            branches = self.track.tuning_plan(self.runner.task, self.draw_seed(seed, draw))
            if len(branches) != 1:
                raise ConfigError("Track.tuning_plan must return one branch")
            branch = branches[0]
            t_forgets = [op for op in branch.ops if isinstance(op, Forget)]
            t_learns = [op for op in branch.ops if isinstance(op, Learn)]
            if len(t_forgets) != 1 or len(branch.points) != 1 or [op.ids.tolist() for op in t_learns] != \
                    [op.ids.tolist() for op in learns]:
                raise ConfigError("Track.tuning_plan must learn what the evaluation learns (θ_o is the same model), "
                                  "forget one request and evaluate once")
            overlap = np.intersect1d(t_forgets[0].ids, forgets[0].ids)
            if len(overlap):
                raise ConfigError(f"the tuning forget set shares {len(overlap)} ids with the evaluation D_f (e.g. "
                                  f"{overlap[:5].tolist()}); Track.tuning_task must draw a disjoint set")
            self._branches[(seed, draw)] = branch
        return self._branches[(seed, draw)]

    def tuning_task(self, seed: int, draw: int = 0) -> Any:
        """The ``draw``-th tuning task of run seed ``seed`` (what methods unlearn and metrics see in the search)."""
        b = self.branch(seed, draw)
        return b.ops[b.points[0]].task

    def evaluation_forget_ids(self) -> np.ndarray:
        """int64 ids of the evaluation's D_f (never unlearned or scored by the tuner)."""
        return next(op.ids for b in self.runner.plan for op in b.ops if isinstance(op, Forget))

    def tuning_record(self) -> dict[str, Any]:
        """How the tuning forget sets were drawn (JSON): per seed the draw, its size and both digests."""
        draws = []
        for seed, k in self.units:
            sc = self.tuning_task(seed, k).scenario
            rec = dict(sc.get("tuning", {}))
            rec["draw_seed"] = rec.pop("seed", None)
            draws.append({"run_seed": seed, "draw": k, "n_forget": sc.get("n_forget"), "n_retain": sc.get("n_retain"),
                          **rec})
        hows = [str(d.get("how", "")) for d in draws]
        how = hows[0] if len(set(hows)) == 1 else "; ".join(f"seed {d['run_seed']}: {h}" for d, h in zip(draws, hows))
        return {"kind": self.runner.task.scenario.get("kind"), "draws": draws, "disjoint_from_evaluation": True,
                "how": how + (f", {self.draws} draw(s) per seed ({len(draws)} sets)" if len(draws) > 1 else "")}

    # -- references -----------------------------------------------------------------------------------------------
    def reference(self, seed: int, draw: int = 0) -> _Reference:
        """θ_o (the evaluation's, cached) and the tuning oracle of ``seed`` (cached by lineage), their metrics on the
        tuning task, and θ_o's objective there (the value a method must beat)."""
        if (seed, draw) not in self._refs:
            branch = self.branch(seed, draw)
            forget_pos = branch.first_forget
            point = branch.points[0]
            ev: Evaluate = branch.ops[point]
            orig = self.runner.original(seed, branch, forget_pos)
            oracle = self.runner.oracle(seed, branch, point)
            shared: dict[Any, Any] = {}
            refs = self._references(orig, oracle, ev)
            metrics = list(self.cfg.metrics)
            oracle_values, _ = self.track.evaluate(ev.task, oracle.model, seed, refs, metrics, shared=shared)
            orig_values, _ = self.track.evaluate(ev.task, orig.model, seed, refs, metrics, shared=shared)
            missing = [k for k in self.keys if k not in oracle_values]
            if len(missing) == len(self.keys):
                raise ConfigError(f"the configured metrics ({', '.join(metrics)}) give none of the tuning keys "
                                  f"({', '.join(self.keys)}); add the metrics that produce them")
            self._refs[(seed, draw)] = _Reference(orig, oracle, oracle_values,
                                                  avg_gap(orig_values, oracle_values, self.keys), shared)
        return self._refs[(seed, draw)]

    @staticmethod
    def _references(orig: TrainedModel, oracle: TrainedModel, ev: Evaluate) -> dict[str, Any]:
        return {"original_model": orig.model, "oracle_model": oracle.model, **ev.references}

    def prepare(self) -> float:
        """Train or load every reference; returns θ_o's objective on the tuning tasks (mean + std_weight · std over
        seeds of its gaps: the same formula as a trial's, the value to beat)."""
        gaps = [self.reference(s, k).original_gap for s, k in self.units]
        return float(np.mean(gaps) + self.std_weight * np.std(gaps))

    # -- methods --------------------------------------------------------------------------------------------------
    def specs(self, labels: Sequence[str] | None = None) -> list[MethodSpec]:
        """The methods to tune: ``labels`` (default every method of the experiment with a non-empty search space;
        the oracle row and θ_o's row are never tuned).

        Raises:
            ConfigError: an unknown label, or a named method whose search space is empty or undeclared.
        """
        all_specs = {m.label: m for m in self.cfg.methods
                     if not (m.label == ORACLE_LABEL and m.name == "retrain") and m.name != "original"}
        if labels:
            unknown = [x for x in labels if x not in all_specs]
            refs = [x for x in unknown if x == ORACLE_LABEL or x == "original"]
            if refs:
                raise ConfigError(f"--method '{refs[0]}' is the {'oracle' if refs[0] == ORACLE_LABEL else 'θ_o'} "
                                  "row: a reference the objective compares against, never tuned; tune one of "
                                  f"{', '.join(all_specs) or 'none'}")
            if unknown:
                raise ConfigError(f"--method {unknown}: not a method label of this experiment "
                                  f"({', '.join(all_specs) or 'none'}).{suggest(unknown[0], list(all_specs))}")
            chosen = [all_specs[x] for x in labels]
            for m in chosen:
                space = self.space(m)
                if not space:
                    raise ConfigError(f"method '{m.label}' ({m.name}) has nothing to tune (an empty search space: "
                                      f"{'an exact method, whose output is a retrain' if self._kind(m) == 'exact' else 'no setting to search'})")
            return chosen
        return [m for m in all_specs.values() if METHODS.get(m.name).search_space]

    @staticmethod
    def _kind(spec: MethodSpec) -> str:
        return getattr(METHODS.get(spec.name), "kind", "approximate")

    @staticmethod
    def space(spec: MethodSpec) -> dict[str, Param]:
        """The search space of ``spec``'s method, checked against its config class.

        Raises:
            ConfigError: the method declares none (``search_space = None``) or names settings it does not have.
        """
        cls = METHODS.get(spec.name)
        space = getattr(cls, "search_space", None)
        if space is None:
            raise ConfigError(f"method '{spec.name}' declares no search_space; add one to its class (see "
                              "unlearnkit.methods.search) or set its parameters by hand")
        check_space(space, METHODS.entry(spec.name).config, f"method '{spec.name}'")
        return dict(space)

    def check_method(self, spec: MethodSpec) -> None:
        """Refuse, before any trial, a method whose configured settings the tuning task cannot serve."""
        method = METHODS.build(spec.name, spec.params)
        for seed, k in self.units:
            self.track.check_method(method, spec.label, self.tuning_task(seed, k))

    # -- one trial ------------------------------------------------------------------------------------------------
    def evaluate_params(self, spec: MethodSpec, params: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``spec``'s method with ``params`` (complete settings) to θ_o for every seed on the tuning task.

        Returns:
            ``{"value": objective = mean + std_weight · std of the per-seed gaps, "mean", "std", "gaps": [per seed],
            "seconds": mean unlearning seconds, "metrics": {key: mean over seeds}}``.

        Raises:
            _TrialFailed: the settings are invalid for the method or the task, the method failed, or it diverged.
        """
        try:
            method = METHODS.build(spec.name, dict(params))
            for seed, k in self.units:
                self.track.check_method(method, spec.label, self.tuning_task(seed, k))
        except UnlearnkitError as err:
            raise _TrialFailed(f"{type(err).__name__}: {err}") from err
        gaps, seconds, values = [], [], []
        for seed, k in self.units:
            task = self.tuning_task(seed, k)
            ref = self.reference(seed, k)
            ctx = UnlearnContext(seed=seed, train_recipe=self.track.recipe("original"),
                                 init_seed=derive_seed(seed, "oracle-init"),
                                 model_factory=lambda s, task=task: self.track.new_model(task, s))
            try:
                res = self.track.unlearn(task, method, copy.deepcopy(ref.original.model), ctx)
                if not all(torch.isfinite(p).all() for p in res.model.parameters()):
                    raise DivergenceError("parameters became NaN/inf", step=res.steps, loss=float("nan"))
                refs = self._references(ref.original, ref.oracle, self.branch(seed, k).ops[self.branch(seed, k).points[0]])
                got, _ = self.track.evaluate(task, res.model, seed, refs, list(self.cfg.metrics), shared=ref.shared,
                                             policy=res.policy)
            except DivergenceError as err:
                raise _TrialFailed(f"diverged (seed {seed}): {err}") from err
            except Exception as err:  # noqa: BLE001 - a failing setting is a failed trial; the search goes on
                raise _TrialFailed(f"{type(err).__name__} (seed {seed}): {err}") from err
            gap = avg_gap(got, ref.oracle_metrics, self.keys)
            if not math.isfinite(gap):
                raise _TrialFailed(f"the gap is not finite (seed {seed}): a tuning key is NaN")
            gaps.append(gap)
            seconds.append(float(res.seconds))
            values.append({k: float(got[k]) for k in self.keys if k in got})
        means = {k: float(np.mean([v[k] for v in values if k in v])) for k in self.keys if any(k in v for v in values)}
        mean, std = float(np.mean(gaps)), float(np.std(gaps))
        return {"value": mean + self.std_weight * std, "mean": mean, "std": std, "gaps": gaps,
                "seconds": float(np.mean(seconds)), "metrics": means}

    # -- studies --------------------------------------------------------------------------------------------------
    def storage_url(self, spec: MethodSpec, storage: str | None = None) -> str:
        """The study's storage: ``storage`` if given, else ``sqlite:///<run>/tune/<label>.db``."""
        if storage:
            return storage
        path = self.tune_dir / f"{spec.label}.db"
        refuse_symlink(path, "study database")
        return f"sqlite:///{path}"

    def study_name(self, spec: MethodSpec) -> str:
        return f"{self.runner.run_dir.name}/{spec.label}"

    def identity(self, spec: MethodSpec) -> dict[str, Any]:
        """What a study was made for: a rerun that differs in any of these refuses to mix into it."""
        return {"schema": TUNE_SCHEMA, "config_sha256": config_hash(self.cfg), "method": spec.name,
                "base_params": spec.params, "space": {k: _describe(p) for k, p in self.space(spec).items()},
                "seeds": self.seeds, **({"draws": self.draws} if self.draws != 1 else {}),
                "tuning_seed": self.tuning_seed, "keys": list(self.keys), "std_weight": self.std_weight,
                "tuning_sets": [d.get("forget_ids_sha256") for d in self.tuning_record()["draws"]]}

    def study(self, spec: MethodSpec, storage: str | None = None, *, create: bool = True) -> Any:
        """The Optuna study of ``spec`` (created, or loaded and checked against :meth:`identity`).

        Raises:
            ConfigError: the stored study was made for another config, search space, seeds or tuning set.
        """
        optuna = _optuna()
        self.tune_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage_url(spec, storage)
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180,
                                         failed_trial_callback=None)
        name = self.study_name(spec)
        ident = self.identity(spec)
        names = {s.study_name for s in optuna.get_all_study_summaries(rdb)}
        if name in names:
            study = optuna.load_study(study_name=name, storage=rdb)
            old = study.user_attrs.get("identity")
            if old is not None and old != _plain(ident):
                diff = sorted(k for k in ident if _plain(ident)[k] != old.get(k))
                raise ConfigError(f"the study of '{spec.label}' in {url} was made for another {', '.join(diff)}; "
                                  "delete it (or pass another --storage) to start a new search")
            return study
        if not create:
            raise ConfigError(f"no study of '{spec.label}' in {url}")
        study = optuna.create_study(study_name=name, storage=rdb, direction="minimize", load_if_exists=True)
        study.set_user_attr("identity", _plain(ident))
        start = self.start_params(spec)
        if start:
            study.enqueue_trial(start, user_attrs={"start": True}, skip_if_exists=True)
        return study

    def start_params(self, spec: MethodSpec) -> dict[str, Any]:
        """The configured values of the searched settings that lie in the space (the first trial of a new study)."""
        out = {}
        for key, p in self.space(spec).items():
            try:
                v = get_path(spec.params, key)
            except KeyError:
                continue
            if p.contains(v):
                out[key] = v
        return out

    def optimize(self, spec: MethodSpec, *, trials: int | None, seconds: float | None, storage: str | None = None,
                 worker: int = 0, sampler_seed: int = 0,
                 on_trial: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Run trials of ``spec`` in this process until the study holds ``trials`` finished trials or ``seconds``
        have passed (either may be None, not both).

        Raises:
            ConfigError: Optuna missing, a study made for something else.
        """
        optuna = _optuna()
        study = self.study(spec, storage)
        space = self.space(spec)
        done = _finished(study)
        todo = None if trials is None else max(0, trials - done)
        if todo == 0:
            return
        if todo is None and seconds is None:
            raise ConfigError("give a budget: --trials N or --seconds S")
        base = dict(spec.params)

        def objective(trial: Any) -> float:
            sampled = {key: _suggest(trial, key, p) for key, p in space.items()}
            try:
                out = self.evaluate_params(spec, with_params(base, sampled))
            except _TrialFailed as err:
                trial.set_user_attr("error", str(err)[:500])
                _notify(on_trial, trial.number, sampled, None, str(err))
                raise
            trial.set_user_attr("seconds", out["seconds"])
            trial.set_user_attr("gaps", out["gaps"])
            trial.set_user_attr("mean", out["mean"])
            trial.set_user_attr("std", out["std"])
            trial.set_user_attr("metrics", out["metrics"])
            _notify(on_trial, trial.number, sampled, out["value"], None)
            return out["value"]

        def stop_at_budget(study: Any, _trial: Any) -> None:
            if trials is not None and _finished(study) >= trials:
                study.stop()

        seed = derive_seed(sampler_seed, f"tune/{spec.label}/{worker}/{len(study.trials)}")
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True)
        study.optimize(objective, n_trials=todo, timeout=seconds, catch=(_TrialFailed,),
                       callbacks=[stop_at_budget], gc_after_trial=False, show_progress_bar=False)

    # -- results --------------------------------------------------------------------------------------------------
    def summary(self, spec: MethodSpec, storage: str | None = None) -> dict[str, Any]:
        """The search table of ``spec`` as JSON-ready data (the ``<label>.json`` file's content)."""
        optuna = _optuna()
        study = self.study(spec, storage, create=False)
        rows = []
        for t in study.trials:
            rows.append({"trial": t.number, "state": t.state.name.lower(), "params": dict(t.params),
                         "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                         "seconds": t.user_attrs.get("seconds"), "gaps": t.user_attrs.get("gaps"),
                         "mean": t.user_attrs.get("mean"), "std": t.user_attrs.get("std"),
                         "metrics": t.user_attrs.get("metrics"), "error": t.user_attrs.get("error"),
                         "start": bool(t.user_attrs.get("start", False)),
                         "wall_seconds": (t.duration.total_seconds() if t.duration is not None else None)})
        complete = [r for r in rows if r["value"] is not None]
        best = min(complete, key=lambda r: (r["value"], r["trial"])) if complete else None
        original = self.prepare()
        return {
            "schema": TUNE_SCHEMA, "run": self.cfg.name, "config_sha256": config_hash(self.cfg),
            "track": self.cfg.track, "method": spec.label, "method_name": spec.name,
            "objective": {"what": "mean + std_weight × std over seeds of the mean |θ_u − θ_r| over the keys, on the "
                                  "tuning forget sets", "keys": list(self.keys), "seeds": self.seeds, "draws": self.draws,
                          "std_weight": self.std_weight, "direction": "minimize"},
            "tuning_set": self.tuning_record(), "search_space": {k: _describe(p) for k, p in self.space(spec).items()},
            "base_params": spec.params, "original_objective": original, "min_gain": MIN_GAIN,
            "adopted": best is not None and best["value"] < original * (1 - MIN_GAIN),
            "best": None if best is None else {"trial": best["trial"], "value": best["value"],
                                               "params": with_params(spec.params, best["params"]),
                                               "searched": best["params"]},
            "trials": rows, "n_finished": _finished(study), "updated_at": _now(),
        }

    def write_summary(self, spec: MethodSpec, storage: str | None = None) -> dict[str, Any]:
        """Write ``<label>.json`` (the search table) and return it."""
        data = self.summary(spec, storage)
        path = self.tune_dir / f"{spec.label}.json"
        refuse_symlink(path, "tune summary")
        atomic_write(path, canonical_json(data) + "\n")
        return data

    def write_fragment(self) -> Path | None:
        """Write ``tuned.yaml``: the experiment with every method whose search summary (in the tune folder) found a
        setting better than θ_o's objective (by more than :data:`MIN_GAIN`) set to that setting (a config that ``extends:`` the original; ``unlearnkit
        run`` accepts it). Methods whose best is no better than doing nothing keep their configured settings, with a
        comment saying so. None when no method has a finished trial."""
        import json

        best: dict[str, dict[str, Any]] = {}
        lines = []
        for spec in self.cfg.methods:
            path = self.tune_dir / f"{spec.label}.json"
            if not path.is_file():
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("config_sha256") != config_hash(self.cfg) or not data.get("best"):
                continue
            b, o = data["best"], data["original_objective"]
            if b["value"] < o * (1 - MIN_GAIN):
                best[spec.label] = b["searched"]
                lines.append(f"#   {spec.label}: objective {b['value']:.4g} (θ_o {o:.4g}) after "
                             f"{_n_trials(data['n_finished'])}")
            else:
                lines.append(f"#   {spec.label}: no setting beat θ_o by {MIN_GAIN:.0%} after "
                             f"{_n_trials(data['n_finished'])} (best {b['value']:.4g}, θ_o {o:.4g}): its configured "
                             "settings are kept")
        if not lines:
            return None
        obj = (f"mean + {self.std_weight:g} × std" if self.std_weight else "mean")
        text = fragment_yaml(self.cfg, best, self.raw, header=[
            f"# Tuned by `unlearnkit tune` on {time.strftime('%Y-%m-%d', time.gmtime())}: best settings per method on "
            f"tuning forget sets disjoint from the evaluation D_f (--tuning-seed {self.tuning_seed}: "
            f"{self.tuning_record().get('how', '')}); objective = {obj} over seeds {self.seeds} and sets of the "
            f"mean |θ_u − θ_r| over {', '.join(self.keys)}.", *lines])
        path = self.tune_dir / TUNED_FILE
        refuse_symlink(path, "tuned config")
        atomic_write(path, text)
        return path


def _notify(cb: Callable[[dict[str, Any]], None] | None, number: int, params: dict[str, Any], value: float | None,
            error: str | None) -> None:
    if cb is not None:
        cb({"trial": number, "params": params, "value": value, "error": error})


def _n_trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def _finished(study: Any) -> int:
    """Trials that count towards ``--trials``: complete, and failed ones that recorded why (a trial left running by
    a killed process is failed by Optuna's heartbeat without a reason and is redone)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)
               or t.state == TrialState.PRUNED)


def _suggest(trial: Any, key: str, p: Param) -> Any:
    if isinstance(p, Float):
        return trial.suggest_float(key, p.low, p.high, log=p.log)
    if isinstance(p, Int):
        return trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
    if isinstance(p, Choice):
        return trial.suggest_categorical(key, list(p.choices))
    raise ConfigError(f"unknown search range {p!r}")  # pragma: no cover - check_space refuses it


def _describe(p: Param) -> str:
    return p.describe()


def _plain(obj: Any) -> Any:
    import json

    return json.loads(canonical_json(obj))


def _flow(params: Mapping[str, Any]) -> Any:
    """Round floats to 4 significant digits for a readable YAML (the tuned value is a sample, not a measurement)."""
    if isinstance(params, Mapping):
        return {k: _flow(v) for k, v in params.items()}
    if isinstance(params, float):
        return float(f"{params:.4g}")
    return params


def fragment_yaml(cfg: ExperimentConfig, best: Mapping[str, Mapping[str, Any]],
                  raw: tuple[Mapping[str, Any], str, list[str]] | None, header: Sequence[str] = ()) -> str:
    """The YAML text of a config equal to ``cfg`` except that method ``label`` takes the (dotted) settings
    ``best[label]``.

    With ``raw`` = (composed mapping, source path, ``--set`` overrides) the text ``extends:`` the source file and
    repeats the overrides; the methods list is the composed one (as written, defaults not expanded) with the tuned
    settings merged in. Without it, the methods list of ``cfg`` (resolved parameters) is written alone.
    """
    body: dict[str, Any] = {}
    if raw is not None:
        mapping, source, overrides = raw
        methods = list(mapping.get("methods", [m.label for m in cfg.methods]))
        if source and Path(source).is_file():
            body["extends"] = str(Path(source).resolve())
            kept = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("methods")]
            try:
                body = {**body, **apply_overrides({}, parse_overrides(kept))}
            except ConfigError:  # an override indexing a list: write the whole composed config instead
                body = {k: v for k, v in mapping.items() if k != "methods"}
        else:
            body = {k: v for k, v in mapping.items() if k != "methods"}
    else:
        methods = [{"name": m.name, **({"label": m.label} if m.label != m.name else {}), **m.params}
                   for m in cfg.methods]
    out_methods = []
    for entry, spec in zip(methods, cfg.methods):
        if spec.label not in best:
            out_methods.append(entry)
            continue
        item = {"name": entry} if isinstance(entry, str) else dict(entry)
        params = dict(item.pop("params", {}) or {})
        fixed = {k: item.pop(k) for k in ("name", "label") if k in item}
        params.update(item)
        params = with_params(params, _flow(best[spec.label]))
        out_methods.append({**fixed, **params})
    body["methods"] = out_methods
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=118)
    return "\n".join(header) + ("\n" if header else "") + text


def compose_source(config: str | None, overrides: Sequence[str]) -> tuple[dict[str, Any], str, list[str]]:
    """(composed mapping, resolved source path, overrides) of a config as the CLI gives it."""
    path = str(resolve_config_path(config)) if config else None
    mapping, source = compose(path, list(overrides))
    return mapping, source, list(overrides)


# -- several processes ------------------------------------------------------------------------------------------------
def _worker(mapping: dict[str, Any], source: str, label: str, seeds: list[int], tuning_seed: int, trials: int | None,
            seconds: float | None, storage: str | None, worker: int, sampler_seed: int, std_weight: float,
            draws: int) -> None:
    """One extra search process (spawned): rebuilds the tuner from the composed config, then runs trials."""
    from unlearnkit.bench.resolve import resolve as _resolve

    cfg = _resolve(mapping, source=source)
    tuner = Tuner(cfg, console=Console(stderr=True, quiet=True), seeds=seeds, tuning_seed=tuning_seed,
                  std_weight=std_weight, draws=draws)
    spec = next(m for m in tuner.cfg.methods if m.label == label)
    tuner.optimize(spec, trials=trials, seconds=seconds, storage=storage, worker=worker, sampler_seed=sampler_seed)


def _check_writable(runner: Runner) -> None:
    """Refuse, before anything is trained, a run folder or model cache the tuner cannot write (the runner's own
    check, :meth:`Runner._check_writable`).

    Raises:
        ConfigError: the run folder, one of its sub-folders or the cache folder is not a writable directory.
    """
    err = runner._check_writable()
    if err is not None:
        raise err


def tune_experiment(cfg: ExperimentConfig, *, methods: Sequence[str] | None = None, trials: int | None = None,
                    seconds: float | None = None, workers: int = 1, seeds: Sequence[int] | None = None,
                    tuning_seed: int = DEFAULT_TUNING_SEED, storage: str | None = None, sampler_seed: int = 0,
                    std_weight: float = DEFAULT_STD_WEIGHT, draws: int = 1,
                    raw: tuple[Mapping[str, Any], str, list[str]] | None = None, console: Console | None = None,
                    on_trial: Callable[[str, dict[str, Any]], None] | None = None) -> TuneOutcome:
    """Tune ``methods`` (labels; default all with a search space) of ``cfg`` one after another, each with the budget
    ``trials`` (finished trials in its study) and/or ``seconds`` (wall clock of this call, per method), on ``workers``
    processes; then write each method's ``<label>.json`` and ``tuned.yaml``.

    Raises:
        ConfigError: no budget, a bad worker count, Optuna missing, a scenario the tuner cannot serve, an unknown
            label or a method with nothing to tune.
    """
    if trials is None and seconds is None:
        trials = DEFAULT_TRIALS
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be ≥ 1, got {trials}")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    if workers > 1 and raw is None:
        raise ConfigError("several workers need the config as a mapping (raw=...), as the CLI passes it")
    _optuna()
    tuner = Tuner(cfg, console=console, seeds=seeds, tuning_seed=tuning_seed, raw=raw, std_weight=std_weight,
                  draws=draws)
    specs = tuner.specs(methods)
    if not specs:
        raise ConfigError("no method of this experiment has anything to tune")
    for seed, k in tuner.units:
        tuner.branch(seed, k)
    _check_writable(tuner.runner)
    tuner.runner._write_config()  # config.resolved.yaml: what was tuned (the run of the same config writes the same)
    for spec in specs:
        tuner.space(spec)
        tuner.check_method(spec)
    original = tuner.prepare()  # θ_o and the tuning oracles trained (and cached) before any worker starts
    tuner.console.print(f"tuning forget sets (disjoint from the evaluation D_f): "
                        f"{escape(str(tuner.tuning_record().get('how', '')))}; θ_o's objective there: {original:.4g}")
    summaries: dict[str, dict[str, Any]] = {}
    for spec in specs:
        tuner.study(spec, storage)  # created once, before workers share it
        cb = (lambda info, label=spec.label: on_trial(label, info)) if on_trial is not None else None
        procs = []
        if workers > 1:
            assert raw is not None
            ctx = multiprocessing.get_context("spawn")
            for w in range(1, workers):
                p = ctx.Process(target=_worker, args=(dict(raw[0]), raw[1], spec.label, tuner.seeds, tuning_seed,
                                                      trials, seconds, storage, w, sampler_seed, std_weight,
                                                      draws))
                p.start()
                procs.append(p)
        try:
            tuner.optimize(spec, trials=trials, seconds=seconds, storage=storage, worker=0, sampler_seed=sampler_seed,
                           on_trial=cb)
        finally:
            for p in procs:
                p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            tuner.console.print(f"[yellow]{len(bad)} worker process(es) of '{spec.label}' ended with an error "
                                f"(exit codes {bad}); the study keeps their finished trials[/]")
        summaries[spec.label] = tuner.write_summary(spec, storage)
    fragment = tuner.write_fragment()
    if (tuner.runner.run_dir / "results.jsonl").is_file():  # the run was made: its report gets the search section
        from unlearnkit.report import write_reports

        write_reports(tuner.runner.run_dir)
    return TuneOutcome(tuner.tune_dir, fragment, summaries)


__all__ = ["DEFAULT_TRIALS", "TUNE_DIR", "TUNED_FILE", "TuneOutcome", "Tuner", "compose_source", "fragment_yaml",
           "tune_experiment"]

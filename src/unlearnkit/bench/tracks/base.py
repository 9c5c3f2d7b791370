"""Tracks: the families of models the one runner serves (classifier, llm, graph, recsys, and any plug-in's).

A track owns everything that depends on the model family; the runner (``bench/runner.py``) owns everything generic —
run folder, lock, model cache keyed by lineage, the schedule walk, resume, result rows, per-sample files, reports.
Adding a track touches only its own files plus one registration (``@TRACKS.register(name, config=ItsExperiment)``,
or a plug-in's entry point)::

    class ToyExperiment(ExperimentConfig):           # the experiment's schema: track Literal + its own sections
        default_metrics: ClassVar = ("toy_acc",)
        track: Literal["toy"] = "toy"
        toy: ToySection = Field(default_factory=ToySection)

    @TRACKS.register("toy", config=ToyExperiment)
    class ToyTrack(Track):
        name = "toy"
        def build_task(self): ...                     # data + split; ConfigError / DataError before any training
        def new_model(self, task, init_seed): ...
        def train(self, task, role, seed): ...        # θ_o on D ("original") or θ_r on D_r ("oracle"), fresh init
        def unlearn(self, task, method, model, ctx): ...
        def eval_context(self, task, model, seed, references, shared): ...

The runner asks, in order: ``build_task`` → ``plan`` (the schedule: :mod:`unlearnkit.data.schedule`) → ``train`` /
``learn`` for θ_o and θ_r at each point → ``unlearn`` for each method → ``evaluate`` at each point.

Methods and metrics declare the track they serve (``Unlearner.track``, ``Metric.track``); :func:`unlearnkit.bench.
resolve` refuses a mismatch before anything trains.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from unlearnkit.config.schema import ExperimentConfig
    from unlearnkit.data.schedule import Branch
    from unlearnkit.engine.loop import Engine
    from unlearnkit.methods.base import UnlearnContext, Unlearned, Unlearner

#: track name → Track subclass; the registered config class is the track's experiment class (the schema of a whole
#: experiment of that track)
TRACKS: Registry[type[Track]] = Registry("track")

Role = Literal["original", "oracle"]


@runtime_checkable
class TrackTask(Protocol):
    """What the runner reads from any track's task.

    Attributes:
        name: data set name (shown in the console and report).
        scenario: JSON-serialisable record of how D_f was chosen; at least ``kind``, ``n_forget``, ``n_retain``,
            ``n_test``.
        train_ids, forget_ids, retain_ids: int64 arrays (n,) of stable sample ids of D, D_f and D_r
            (for graphs: edge or node ids; for recommenders: interaction ids).
    """

    name: str
    scenario: dict[str, Any]

    @property
    def train_ids(self) -> np.ndarray: ...

    @property
    def forget_ids(self) -> np.ndarray: ...

    @property
    def retain_ids(self) -> np.ndarray: ...


class Track(ABC):
    """Base class of tracks. Constructors store; nothing trains or loads until the runner asks.

    Args:
        cfg: the whole (resolved) experiment config, an instance of the track's experiment class.
        engine: the run's engine (device, seeds, threads, progress).

    Class attributes:
        name: the registered name.
        extra: the ``pip install unlearnkit[extra]`` the track needs (for error messages), or None.
        multi_process: the track trains with several processes (``accelerate launch``); others refuse a launch.
        continual: the track implements :meth:`learn` (schedules that learn after their first operation).
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str | None] = None
    multi_process: ClassVar[bool] = False
    continual: ClassVar[bool] = False

    def __init__(self, cfg: ExperimentConfig, engine: Engine) -> None:
        self.cfg = cfg
        self.engine = engine

    # -- configuration ------------------------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, cfg: ExperimentConfig) -> ExperimentConfig:
        """Check the track's own names against the registries (data sets, model builders) and return the config with
        their parameters filled in; called by :func:`unlearnkit.bench.resolve` before anything trains.

        Raises:
            ConfigError: an unknown name or a bad parameter.
        """
        return cfg

    @classmethod
    def conformance_config(cls) -> dict[str, Any] | None:
        """A tiny experiment of this track (fields of its experiment class, without ``output_dir``) that trains θ_o
        and θ_r in seconds on a CPU: the task :mod:`unlearnkit.testing` checks components on. None: not provided."""
        return None

    @classmethod
    def conformance_overrides(cls, component: type) -> dict[str, Any]:
        """Changes to :meth:`conformance_config` a method or metric class needs (e.g. another deletion target)."""
        return dict(getattr(component, "conformance", {}) or {})

    @property
    def section(self) -> Any:
        """The experiment's section named after the track (``cfg.llm`` for the llm track), or None."""
        return getattr(self.cfg, self.name, None)

    # -- identity -------------------------------------------------------------------------------------------------
    def lineage(self) -> dict[str, Any]:
        """Config parts that determine θ_o / θ_r besides (role, recipe, seed, ids); part of the model cache key."""
        from unlearnkit.config.loader import to_plain

        section = self.section
        return {"track": self.name, "section": to_plain(section) if section is not None else None}

    def recipe(self, role: Role) -> Any:
        """The training recipe of θ_o (``role="original"``) or θ_r (``"oracle"``) as a pydantic model (hashed)."""
        return None

    # -- data and schedule ----------------------------------------------------------------------------------------
    @abstractmethod
    def build_task(self) -> TrackTask:
        """Load data and draw the split; raise ``ConfigError``/``DataError`` on bad input (before any training)."""

    def plan(self, task: TrackTask) -> list[Branch]:
        """The schedule of ``task`` (:mod:`unlearnkit.data.schedule`); default: learn D, forget D_f, evaluate."""
        from unlearnkit.data.schedule import single_branch

        return [single_branch(task, task)]

    # -- models -----------------------------------------------------------------------------------------------------
    @abstractmethod
    def new_model(self, task: TrackTask, init_seed: int) -> nn.Module:
        """A freshly initialised model for ``task`` (seeded by ``init_seed``); also the skeleton cached weights load into."""

    @abstractmethod
    def train(self, task: TrackTask, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        """Train θ_o (``"original"``: on D = ``task.train``, init seed = seed) or θ_r (``"oracle"``: on D_r =
        ``task.retain`` only, a fresh init seed).

        Returns:
            (model, training seconds, int64 ids the model was trained on). The runner checks that the oracle's ids
            are exactly D_r.
        """

    def learn(self, model: nn.Module | None, task: TrackTask, role: Role, seed: int, position: int,
              keep: np.ndarray | None = None) -> tuple[nn.Module, float, np.ndarray]:
        """Continue training ``model`` (None: a fresh initialisation) on ``task``'s training data — the ``position``-th
        Learn of a schedule; ``keep`` restricts it to those ids (the oracle skips what was forgotten).

        Returns:
            (model, training seconds, int64 ids trained on).

        Raises:
            ConfigError: the track does not support schedules that learn more than once (the default).
        """
        raise ConfigError(f"track '{self.name}' does not support schedules that learn after their first step "
                          "(continual learning); use a scenario with one training set")

    def retrain_oracle(self, method: str, task: TrackTask, seed: int, recipe: Any) -> tuple[nn.Module, float, np.ndarray]:
        """θ_r through the track's exact retrain method ``method`` (a registered name): a fresh model from the seed
        derived for the oracle, trained with ``recipe`` on ``task``'s D_r. Returns (model, train seconds, ids seen)."""
        from unlearnkit.methods import METHODS, UnlearnContext, derive_seed

        ctx = UnlearnContext(seed=seed, train_recipe=recipe, init_seed=derive_seed(seed, "oracle-init"),
                             model_factory=lambda s: self.new_model(task, s))
        res = METHODS.build(method, {}).unlearn(self.new_model(task, 0), task.forget, task.retain, self.engine, ctx)
        return res.model, float(res.notes["train_seconds"]), res.seen_ids

    # -- methods ----------------------------------------------------------------------------------------------------
    def check_method(self, method: Unlearner, label: str, task: TrackTask) -> None:  # noqa: B027 - optional hook
        """Raise ``ConfigError`` / ``MethodError`` if ``method`` (an instance, with its settings) cannot serve
        ``task``; called for every Forget of the plan before anything trains (default: nothing to check)."""

    @abstractmethod
    def unlearn(self, task: TrackTask, method: Unlearner, model: nn.Module, ctx: UnlearnContext) -> Unlearned:
        """Apply ``method`` to ``model`` (a copy of θ_o or of the method's previous output) for ``task``'s D_f / D_r."""

    def own_retrain(self, task: TrackTask, method: Unlearner, result: Unlearned, ctx: UnlearnContext) -> nn.Module | None:
        """An exact method's own retrain on ``task``'s D_r (:meth:`Unlearner.own_retrain`), or None (also for a task
        without ``forget`` / ``retain`` data sets: a track whose tasks differ overrides this)."""
        forget, retain = getattr(task, "forget", None), getattr(task, "retain", None)
        if forget is None or retain is None:
            return None
        return method.own_retrain(result, forget, retain, self.engine, ctx)

    # -- evaluation -------------------------------------------------------------------------------------------------
    def eval_context(self, task: TrackTask, model: nn.Module, seed: int, references: dict[str, Any],
                     shared: dict[Any, Any] | None = None, policy: Any = None) -> Any:
        """The :class:`unlearnkit.metrics.base.EvaluationContext` of ``model`` on ``task``.

        Args:
            references: ``original_model`` (θ_o) and ``oracle_model`` (θ_r) of the same seed and point, plus the
                point's own (e.g. the corrective manipulation).
            shared: a cache that lives for one (seed, point): reference outputs are computed once there, not once
                per method row.
            policy: the inference-time policy of the model (None for weights-only methods).
        """
        raise NotImplementedError(f"track '{self.name}' has no evaluation context")

    def evaluate(self, task: TrackTask, model: nn.Module, seed: int, references: dict[str, Any],
                 metrics: list[str], *, shared: dict[Any, Any] | None = None,
                 policy: Any = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Compute ``metrics`` on ``model`` (through ``policy``, if any).

        Returns:
            (scalar values ``{key: float}``, per-sample arrays ``{key: ndarray}`` saved to ``per_sample/*.npz``).
        """
        ctx = self.eval_context(task, model, seed, references, {} if shared is None else shared, policy)
        values: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        for name in metrics:
            out = self.build_metric(name).compute(ctx)
            values.update(out.values)
            arrays.update({f"{name}.{k}": np.asarray(v) for k, v in out.per_sample.items()})
        arrays.update(ctx.arrays())
        values.update(ctx.cost())
        return values, arrays

    def build_metric(self, name: str) -> Any:
        """A fresh instance of metric ``name`` with the experiment's ``metric_params[name]`` (validated)."""
        from unlearnkit.metrics import METRICS

        return METRICS.build(name, self.cfg.metric_params.get(name, {}))

    def gap_keys(self) -> tuple[str, ...]:
        """Metric keys averaged into ``avg_gap`` (|θ_u − θ_r| per key); empty = no avg_gap column."""
        return ()

    def curve_metrics(self) -> tuple[str, ...]:
        """Cheap metrics evaluated every ``eval_every`` steps while a method unlearns (curves); () = none."""
        return ()

    def verdict_spec(self, task: TrackTask) -> Any:
        """How this track's metrics are judged (:class:`unlearnkit.verdict.VerdictSpec`: forget metrics and their
        direction, utility metrics and their chance level, sample sizes); None: rows get no verdict beyond status."""
        return None

    def memorisation_keys(self, task: TrackTask | None = None) -> tuple[str, str] | None:
        """(forget-set metric, unseen-data metric) whose gap on θ_o shows memorisation of D_f (pre-flight check) at
        the evaluation point of ``task``; None where that comparison means nothing there."""
        return None

    # -- tuning (unlearnkit tune) -------------------------------------------------------------------------------------
    def tuning_task(self, task: TrackTask, seed: int) -> TrackTask:
        """A task with the same D as ``task`` and a deletion request of the same kind and size **disjoint from
        ``task``'s D_f**, drawn with ``seed``: what ``unlearnkit tune`` optimises on (never the evaluation D_f).
        Implementations: :mod:`unlearnkit.bench.tune_tasks`.

        Raises:
            ConfigError: no disjoint request can be drawn (the default: the track provides none), saying what to do.
        """
        raise ConfigError(f"track '{self.name}' cannot draw a tuning forget set disjoint from the evaluation one "
                          "(it implements no Track.tuning_task); set the methods' parameters by hand")

    def tuning_plan(self, task: TrackTask, seed: int) -> list[Branch]:
        """The schedule ``unlearnkit tune`` runs: learn ``task``'s D (θ_o, the evaluation's model), forget
        :meth:`tuning_task`'s request, evaluate on it."""
        from unlearnkit.data.schedule import single_branch

        return [single_branch(task, self.tuning_task(task, seed))]

    def tuning_keys(self) -> tuple[str, ...]:
        """Metric keys of the tuning objective (mean |θ_u − θ_r| over them): the track's :meth:`gap_keys`."""
        return self.gap_keys()

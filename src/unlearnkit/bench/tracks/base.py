"""Tracks: the families of models the one runner serves (classifier, llm, graph, recsys).

A track turns an experiment config into a task (data + split), trains θ_o and θ_r, applies an unlearner and evaluates
a model. The runner (``bench/runner.py``) owns everything generic — run folder, lock, model cache keyed by lineage,
resume, result rows, per-sample files, reports — and asks the track for the rest::

    task = track.build_task()                               # raises ConfigError / DataError before any training
    stages = track.stages(task)                             # one, or one per corrective p / sequential request
    model, seconds, ids = track.train(task, "original", seed)   # or "oracle": D_r only, fresh init
    result = track.unlearn(task, method, copy_of_original, ctx)
    values, arrays = track.evaluate(task, model, seed, references)

A track's own settings live in the experiment's section named after it (``llm:``, ``graph:``, ``recsys:``),
validated by the track's ``config`` class; the classifier track uses the top-level ``data``/``model``/``scenario``/
``train``/``oracle`` fields. Methods and metrics declare the track they serve (``Unlearner.track``, ``Metric.track``)
and the config refuses a mismatch at load time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from torch import nn

from unlearnkit.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from unlearnkit.config.schema import ExperimentConfig, Frozen
    from unlearnkit.data.scenarios import Stage
    from unlearnkit.engine.loop import Engine
    from unlearnkit.methods.base import UnlearnContext, Unlearner, UnlearnResult

#: track name → Track subclass (config class = the schema of the experiment's ``<track>:`` section)
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
        cfg: the whole experiment config.
        section: the validated ``cfg.<name>`` section (an instance of ``config``), None for the classifier track.
        engine: the run's engine (device, seeds, threads, progress).
    """

    name: ClassVar[str] = ""
    #: metrics used when the experiment does not list any
    default_metrics: ClassVar[tuple[str, ...]] = ()
    #: what ``pip install`` extra the track needs (for error messages), e.g. ``"llm"``
    extra: ClassVar[str | None] = None

    def __init__(self, cfg: ExperimentConfig, section: Frozen | None, engine: Engine) -> None:
        self.cfg = cfg
        self.section = section
        self.engine = engine

    # -- identity -------------------------------------------------------------------------------------------------
    def lineage(self) -> dict[str, Any]:
        """Config parts that determine θ_o / θ_r besides (role, recipe, seed, ids); part of the model cache key."""
        from unlearnkit.config.loader import to_plain

        return {"track": self.name, "section": to_plain(self.section) if self.section is not None else None}

    def recipe(self, role: Role) -> Any:
        """The training recipe of θ_o (``role="original"``) or θ_r (``"oracle"``) as a pydantic model (hashed)."""
        return None

    # -- the four steps -------------------------------------------------------------------------------------------
    @abstractmethod
    def build_task(self) -> TrackTask:
        """Load data and draw the split; raise ``ConfigError``/``DataError`` on bad input (before any training)."""

    @abstractmethod
    def new_model(self, task: TrackTask, init_seed: int) -> nn.Module:
        """A freshly initialised model for ``task`` (seeded by ``init_seed``); also the skeleton cached weights load into."""

    @abstractmethod
    def train(self, task: TrackTask, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        """Train θ_o (``"original"``: on D, init seed = seed) or θ_r (``"oracle"``: on D_r only, a fresh init seed).

        Returns:
            (model, training seconds, int64 ids the model was trained on). The runner checks that the oracle's ids
            are exactly D_r.
        """

    def stages(self, task: TrackTask) -> list[Stage]:
        """The unlearning stages of ``task`` (one row per (method, seed, stage)); default: one stage, empty key.

        The classifier track returns one stage per identified fraction p (``corrective``) or per deletion request
        (``sequential``); the LLM track one per request (``sequential``) or forget-set size (``scalability``); see
        :class:`unlearnkit.data.scenarios.Stage`.
        """
        from unlearnkit.data.scenarios import single_stage

        return single_stage(task)

    def check_method(self, method: type[Unlearner], label: str, task: TrackTask) -> None:
        """Raise ``ConfigError`` if ``method`` cannot serve ``task`` (default: nothing to check)."""

    @abstractmethod
    def unlearn(self, task: TrackTask, method: Unlearner, model: nn.Module, ctx: UnlearnContext) -> UnlearnResult:
        """Apply ``method`` to ``model`` (a copy of θ_o) for ``task``'s D_f / D_r."""

    @abstractmethod
    def evaluate(self, task: TrackTask, model: nn.Module, seed: int, references: dict[str, nn.Module],
                 metrics: list[str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Compute ``metrics`` on ``model``.

        Args:
            references: ``original_model`` (θ_o) and ``oracle_model`` (θ_r) of the same seed.

        Returns:
            (scalar values ``{key: float}``, per-sample arrays ``{key: ndarray}`` saved to ``per_sample/*.npz``).
        """

    def build_metric(self, name: str) -> Any:
        """A fresh instance of metric ``name`` with the experiment's ``metric_params[name]`` (validated)."""
        from unlearnkit.metrics import METRICS

        return METRICS.build(name, self.cfg.metric_params.get(name, {}))

    def gap_keys(self) -> tuple[str, ...]:
        """Metric keys averaged into ``avg_gap`` (|θ_u − θ_r| per key); empty = no avg_gap column."""
        return ()

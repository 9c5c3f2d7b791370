"""The metric contract: ``compute(ctx) -> MetricOutput(values, per_sample)``.

Metrics never train and never read files; model outputs come from :class:`EvalContext`, which computes each split's
predictions once per model and shares them between metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from unlearnkit.data.scenarios import Task
from unlearnkit.engine.loop import Engine, Predictions
from unlearnkit.errors import ConfigError


@dataclass
class MetricOutput:
    """Scalar values (``{key: float}``) and per-sample arrays (``{key: np.ndarray}``, saved to ``per_sample/*.npz``)."""

    values: dict[str, float]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)


#: the model outputs a metric reads (``Metric.reads``); an inference-time policy declares which of them it changes
READS: tuple[str, ...] = ("logits", "generations", "hidden_states", "weights")

#: accepted reference names: the short names and the keys the runner passes
_REFERENCE_ALIASES = {"original": "original_model", "oracle": "oracle_model"}
_REFERENCE_WHAT = {"oracle_model": "the retrained oracle θ_r (trained from scratch on D_r only)",
                   "original_model": "the original model θ_o (trained on the full training set D, before unlearning)"}


class EvaluationContext:
    """The evaluation-context protocol of every track: one model under evaluation on one task.

    Subclasses (:class:`EvalContext` for classifiers, ``LLMEvalContext``, ``GraphEvalContext``,
    ``RecsysEvalContext``) add the track's model outputs, each computed once per context and shared by metrics.

    Args:
        model: the model under evaluation (θ_u, θ_o or θ_r).
        task: the track's task (what metrics see at this evaluation point).
        engine: the run's engine.  seed: the run seed.
        references: ``original_model`` (θ_o) and ``oracle_model`` (θ_r) of the same seed and point, plus the
            point's own references; read them with :meth:`reference`.
        shared: a cache that lives for one (seed, evaluation point) and is shared by every row evaluated there:
            outputs of *reference* models are computed once (:meth:`for_reference`), keyed by the SHA-256 of the
            reference's weights (never by a name: a changed model can never be answered from a stale entry, C05).
        policy: the inference-time policy of the evaluated model (:class:`unlearnkit.models.policy.InferencePolicy`),
            applied by the track's generate / score path to what it changes (``policy.affects``).
    """

    def __init__(self, model: nn.Module, task: Any, engine: Engine | None = None, *, seed: int = 0,
                 references: dict[str, Any] | None = None, shared: dict[Any, Any] | None = None,
                 policy: Any = None) -> None:
        self.model = model
        self.task = task
        self.engine = engine
        self.seed = seed
        self.references = references or {}
        self.shared = shared if shared is not None else {}
        self.policy = policy
        self._sha: dict[int, str] = {}
        self._query_seconds = 0.0
        self._queries = 0
        self._query_unit = "input"

    # -- references -------------------------------------------------------------------------------------------------
    def reference(self, name: str, who: str = "this metric") -> nn.Module:
        """The reference model ``name`` (``original`` / ``original_model`` = θ_o, ``oracle`` / ``oracle_model`` =
        θ_r, or a point's own reference key).

        Raises:
            ConfigError: the reference was not supplied (C07: never a silent None); the message says how to supply it.
        """
        key = _REFERENCE_ALIASES.get(name, name)
        ref = self.references.get(key)
        if ref is None:
            have = ", ".join(sorted(self.references)) or "none"
            raise ConfigError(f"{who} needs {_REFERENCE_WHAT.get(key, key)} (references['{key}']), which was not "
                              f"supplied (references given: {have}); run it through the runner (`unlearnkit run`), "
                              f"which trains θ_o and θ_r and passes both, or pass references={{'{key}': model}}")
        return ref

    def model_sha(self, model: nn.Module) -> str:
        """SHA-256 of ``model``'s weights (computed once per context and model)."""
        from unlearnkit.engine.checkpoint import state_sha256

        if id(model) not in self._sha:
            self._sha[id(model)] = state_sha256(model)
        return self._sha[id(model)]

    def with_model(self, model: nn.Module) -> EvaluationContext:
        """A context of ``model`` on the same task and settings, sharing the reference cache, without a policy."""
        import copy

        sub = copy.copy(self)
        sub.model = model
        sub.policy = None
        sub._sha = self._sha
        sub._reset()
        return sub

    def _reset(self) -> None:
        """Drop outputs cached for the previous model (subclasses with caches extend this)."""
        self._query_seconds, self._queries = 0.0, 0

    def for_reference(self, name_or_model: str | nn.Module, key: Any, fn: Callable[[Any], Any]) -> Any:
        """``fn(context of the reference)``, computed once per (reference weights, ``key``) for every row evaluated
        at this point (θ_o's and θ_r's outputs are not recomputed for each method)."""
        model = self.reference(name_or_model) if isinstance(name_or_model, str) else name_or_model
        ck = ("ref", self.model_sha(model), key)
        if ck not in self.shared:
            self.shared[ck] = fn(self.with_model(model))
        return self.shared[ck]

    # -- what the runner records --------------------------------------------------------------------------------------
    def timed_query(self, seconds: float, n: int, unit: str = "input") -> None:
        """Record ``n`` queries (inputs, or generated tokens) answered in ``seconds`` by the evaluated model."""
        self._query_seconds += seconds
        self._queries += n
        self._query_unit = unit

    def cost(self) -> dict[str, float]:
        """Per-query cost of the evaluated model (with its policy): ``query_ms_per_<unit>`` (milliseconds)."""
        if not self._queries:
            return {}
        return {f"query_ms_per_{self._query_unit}": 1000.0 * self._query_seconds / self._queries}

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-sample outputs saved beside the metrics' own arrays (e.g. logits per split); default none."""
        return {}


class EvalContext(EvaluationContext):
    """One classifier under evaluation on one task: lazily computed, cached predictions per split.

    Splits: ``forget`` (D_f), ``retain`` (D_r), ``test`` (TA's test set: remaining classes in class scenarios),
    ``test_all`` (full D_t), ``test_forgotten`` (test samples of forgotten classes; class scenarios only).
    A policy that ``affects`` logits post-processes them (``policy.process_logits(logits)``).
    """

    SPLITS: ClassVar[tuple[str, ...]] = ("forget", "retain", "test", "test_all", "test_forgotten")

    def __init__(self, model: nn.Module, task: Task, engine: Engine, *, seed: int = 0,
                 references: dict[str, Any] | None = None, shared: dict[Any, Any] | None = None,
                 policy: Any = None) -> None:
        super().__init__(model, task, engine, seed=seed, references=references, shared=shared, policy=policy)
        self._cache: dict[str, Predictions] = {}

    def _reset(self) -> None:
        super()._reset()
        self._cache = {}

    def dataset(self, split: str):
        """The SampleSet of ``split`` (None for ``test_forgotten`` outside class scenarios)."""
        t = self.task
        sets = {"forget": t.forget, "retain": t.retain, "test": t.eval_test, "test_all": t.test,
                "test_forgotten": t.test_forgotten}
        if split not in sets:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(self.SPLITS)}")
        return sets[split]

    def predictions(self, split: str) -> Predictions:
        """Model outputs on ``split`` (computed once, then cached; without a policy, outputs of the same weights
        are shared with every context of this evaluation point — θ_r's own row fills what other rows read as a
        reference)."""
        if split not in self._cache:
            import time

            data = self.dataset(split)
            if data is None:
                raise ConfigError(f"split {split!r} does not exist in scenario {self.task.scenario.get('kind')!r}")
            shared_key = ("ref", self.model_sha(self.model), ("pred", split)) if self.policy is None else None
            t0 = time.perf_counter()
            if shared_key is not None and shared_key in self.shared:
                pred = self.shared[shared_key]
            else:
                pred = self.engine.predict(self.model, data)
                if self.policy is not None and "logits" in getattr(self.policy, "affects", ()):
                    pred = Predictions(self.policy.process_logits(pred.logits), pred.labels, pred.ids)
                if shared_key is not None:
                    self.shared[shared_key] = pred
                self.timed_query(time.perf_counter() - t0, len(data))  # what the model itself took
            self._cache[split] = pred
        return self._cache[split]

    def reference_predictions(self, name: str, split: str) -> Predictions:
        """Predictions of reference ``name`` (θ_o / θ_r) on ``split``: computed once per evaluation point."""
        return self.for_reference(name, ("pred", split), lambda sub: sub.predictions(split))

    @property
    def computed(self) -> dict[str, Predictions]:
        return dict(self._cache)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for split, pred in self._cache.items():
            out[f"{split}.logits"] = pred.logits.numpy()
            out[f"{split}.labels"] = pred.labels.numpy()
            out[f"{split}.ids"] = pred.ids.numpy()
        return out


class Metric(ABC):
    """Base class of metrics; subclasses are registered in ``METRICS`` and instantiated per evaluation."""

    #: keys this metric writes, with their meaning and direction (shown by ``unlearnkit metrics``)
    keys: ClassVar[dict[str, str]] = {}
    source: ClassVar[str] = ""
    #: the model family the metric serves (``classifier``, ``llm``, ``graph``, ``recsys``); the config refuses others
    track: ClassVar[str] = "classifier"
    #: the model outputs the metric reads (subset of :data:`READS`): an inference-time policy can change the metric
    #: only through these (a policy that changes generations leaves a logits-only metric as θ_u's weights give it)
    reads: ClassVar[frozenset[str]] = frozenset({"logits"})

    @abstractmethod
    def compute(self, ctx: EvalContext) -> MetricOutput:
        """Compute the metric on the model in ``ctx``."""

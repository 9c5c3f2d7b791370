"""The metric contract: ``compute(ctx) -> MetricOutput(values, per_sample)``.

Metrics never train and never read files; model outputs come from :class:`EvalContext`, which computes each split's
predictions once per model and shares them between metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class EvalContext:
    """One model under evaluation on one task: lazily computed, cached predictions per split.

    Splits: ``forget`` (D_f), ``retain`` (D_r), ``test`` (TA's test set: remaining classes in class scenarios),
    ``test_all`` (full D_t), ``test_forgotten`` (test samples of forgotten classes; class scenarios only).
    """

    SPLITS: ClassVar[tuple[str, ...]] = ("forget", "retain", "test", "test_all", "test_forgotten")

    def __init__(self, model: nn.Module, task: Task, engine: Engine, *, seed: int = 0,
                 references: dict[str, Any] | None = None) -> None:
        self.model = model
        self.task = task
        self.engine = engine
        self.seed = seed
        self.references = references or {}
        self._cache: dict[str, Predictions] = {}

    def dataset(self, split: str):
        """The SampleSet of ``split`` (None for ``test_forgotten`` outside class scenarios)."""
        t = self.task
        sets = {"forget": t.forget, "retain": t.retain, "test": t.eval_test, "test_all": t.test,
                "test_forgotten": t.test_forgotten}
        if split not in sets:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(self.SPLITS)}")
        return sets[split]

    def predictions(self, split: str) -> Predictions:
        """Model outputs on ``split`` (computed once, then cached)."""
        if split not in self._cache:
            data = self.dataset(split)
            if data is None:
                raise ConfigError(f"split {split!r} does not exist in scenario {self.task.scenario.get('kind')!r}")
            self._cache[split] = self.engine.predict(self.model, data)
        return self._cache[split]

    @property
    def computed(self) -> dict[str, Predictions]:
        return dict(self._cache)


class Metric(ABC):
    """Base class of metrics; subclasses are registered in ``METRICS`` and instantiated per evaluation."""

    #: keys this metric writes, with their meaning and direction (shown by ``unlearnkit metrics``)
    keys: ClassVar[dict[str, str]] = {}
    source: ClassVar[str] = ""
    #: the model family the metric serves (``classifier``, ``llm``, ``graph``, ``recsys``); the config refuses others
    track: ClassVar[str] = "classifier"

    @abstractmethod
    def compute(self, ctx: EvalContext) -> MetricOutput:
        """Compute the metric on the model in ``ctx``."""

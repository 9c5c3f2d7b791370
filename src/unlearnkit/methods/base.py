"""The unlearner contract: a pydantic config class plus an implementation class, registered together.

    @METHODS.register("finetune", config=FinetuneConfig)
    class Finetune(Unlearner): ...

``unlearn(model, forget, retain, engine, context) -> UnlearnResult``. Constructors only store settings; methods never
read files, configs or environment, never move devices themselves (the engine does).
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError


def derive_seed(seed: int, tag: str) -> int:
    """A 31-bit seed derived from ``(seed, tag)`` by SHA-256: independent streams for independent purposes."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class UnlearnContext:
    """What the runner knows besides the data, passed to every method (methods use what they need).

    Attributes:
        seed: seed of this (method, seed) run; methods derive their randomness from it.
        train_recipe: the recipe θ_o was trained with (``retrain`` reuses it by default).
        init_seed: fresh initialisation seed for methods that retrain from scratch (differs from θ_o's).
        model_factory: builds a freshly initialised model of the same architecture (``retrain``); when absent,
            ``retrain`` re-initialises the given model's modules with ``reset_parameters``.
        policy: the inference-time policy the model already carries (an earlier request of a sequential scenario);
            the runner composes it with the policy this call returns, so methods need not.
    """

    seed: int = 0
    train_recipe: TrainConfig | None = None
    init_seed: int | None = None
    model_factory: Callable[[int], nn.Module] | None = None
    policy: Any = None


@dataclass
class Unlearned:
    """Output of an unlearner: the model and, for inference-time methods, the policy applied when it answers.

    Attributes:
        model: the unlearned model θ_u (may be the input model, modified in place; inference-time methods return it
            unchanged).
        policy: an :class:`~unlearnkit.models.policy.InferencePolicy` the track's generate / score path applies
            (logits processor, input guard, abstention ...), saved with the weights; None for weight-only methods.
        seconds: wall-clock time of the unlearning (set-up seconds for inference-time methods), measured by
            :meth:`Unlearner.unlearn`.
        steps: optimizer steps taken (0 for closed-form and inference-time methods).
        notes: method-specific facts worth recording (JSON-serialisable): solver residuals, truncation counts, ...
        seen_ids: int64 sample ids that contributed a gradient (None if not tracked).
    """

    model: nn.Module
    seconds: float = 0.0
    steps: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    seen_ids: np.ndarray | None = None
    policy: Any = None
    #: method-private state for :meth:`Unlearner.own_retrain` (e.g. SISA's partition); never serialised
    state: Any = None


#: the former name of :class:`Unlearned`
UnlearnResult = Unlearned


class OptimConfig(Frozen):
    """Shared optimisation fields of training-based unlearners (units: lr per step, epochs = passes over the data)."""

    epochs: int = Field(10, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    scheduler: Literal["none", "cosine", "step"] = "none"
    grad_clip: float | None = Field(None, gt=0)

    def recipe(self) -> TrainConfig:
        """This config as an engine :class:`TrainConfig`."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
                           momentum=self.momentum, weight_decay=self.weight_decay, scheduler=self.scheduler,
                           grad_clip=self.grad_clip)


class Unlearner(ABC):
    """Base class of unlearning methods.

    Class attributes declare what a method needs, so the runner can refuse a scenario it cannot serve:
        kind: ``"exact"``, ``"approximate"`` or ``"inference"``.
        needs_retain: the method reads D_r.
        needs_labels: the method reads labels (False for label-free methods).
        needs_full_train: the method needs all of D (forget ∪ retain), not a sample of it.
        smoke_params: small settings used by the conformance suite.
    """

    kind: ClassVar[str] = "approximate"
    #: the model family the method serves (``classifier``, ``llm``, ``graph``, ``recsys``); the config refuses others
    track: ClassVar[str] = "classifier"
    needs_retain: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    #: the method reads the whole original training set D = D_f ∪ D_r (e.g. SSD's importances I_D); the runner
    #: refuses it when the retain set handed over is only a sample of D_r
    needs_full_train: ClassVar[bool] = False
    source: ClassVar[str] = ""
    #: small settings (e.g. ``{"epochs": 1}``) under which the conformance suite runs the method in seconds on CPU
    smoke_params: ClassVar[dict[str, Any]] = {}
    #: what ``unlearnkit tune`` searches: config field → range (:mod:`unlearnkit.methods.search`); ``{}`` = nothing to
    #: tune (exact methods), None = not declared (tune refuses the method)
    search_space: ClassVar[dict[str, Any] | None] = None
    #: what the method intends (SoK of LLM unlearning, Ren et al. 2025, arXiv:2506.09227): ``removal`` — erase D_f's
    #: influence from the parameters — or ``suppression`` — keep the model from expressing it (refusals, output
    #: filters, inference-time policies); shown by ``unlearnkit methods``. The audit battery
    #: (:mod:`unlearnkit.metrics.audit`) checks what a method achieves, whatever it intends. ``none``: the θ_o
    #: reference row (``original``), which unlearns nothing.
    intent: ClassVar[str] = "removal"

    def __init__(self, config: Frozen) -> None:
        self.config = config

    def own_retrain(self, result: Unlearned, forget: Any, retain: Any, engine: Any,
                    context: UnlearnContext) -> nn.Module | None:
        """Exact methods: the method's own model trained from scratch on D_r only (same partition, seeds and recipe),
        which ``result.model`` must equal bit for bit — the runner reports the distance as ``exactness_gap``, beside
        the gap to the standard oracle (the price of the method's model family). None: not provided."""
        return None

    def requirements(self) -> dict[str, bool]:
        """What this method, *with its settings*, reads: ``retain`` (D_r), ``labels``, ``full_train`` (all of D).

        The runner refuses a scenario that cannot serve them before anything trains. Defaults come from the class
        attributes; methods whose needs depend on a setting (e.g. a retain term with weight 0) override this.
        """
        return {"retain": bool(self.needs_retain), "labels": bool(self.needs_labels),
                "full_train": bool(self.needs_full_train)}

    def unlearn(
        self,
        model: nn.Module,
        forget: SampleSet,
        retain: SampleSet,
        engine: Engine,
        context: UnlearnContext | None = None,
    ) -> UnlearnResult:
        """Make ``model`` forget ``forget``; times the call.

        Args:
            model: θ_o (will be modified; pass a copy to keep the original).
            forget: D_f, items ``(x, y, id)``.  retain: D_r (may be empty for methods that do not need it).
            engine: runs training/evaluation.  context: seed, θ_o's recipe, fresh init seed.

        Raises:
            MethodError: the forget set is empty, or the method needs a retain set and none is given.
            DivergenceError: training diverged (NaN/inf loss).
        """
        context = context or UnlearnContext()
        if len(forget) == 0:
            raise MethodError(f"{type(self).__name__}: the forget set is empty; nothing to unlearn")
        if self.requirements()["retain"] and len(retain) == 0:
            raise MethodError(f"{type(self).__name__} needs a non-empty retain set (D_r) with these settings; this "
                              "scenario has none")
        overlap = np.intersect1d(forget.ids, retain.ids)
        if len(overlap):
            raise MethodError(f"forget and retain sets share {len(overlap)} sample ids (e.g. {overlap[:5].tolist()})")
        engine.seed_everything(context.seed)
        hooks = getattr(engine, "hook_seconds", 0.0)
        t0 = time.perf_counter()
        result = self._unlearn(model, forget, retain, engine, context)
        # evaluations run by the engine's step hook (curves during unlearning) are not unlearning time
        result.seconds = time.perf_counter() - t0 - (getattr(engine, "hook_seconds", 0.0) - hooks)
        return result

    @abstractmethod
    def _unlearn(
        self, model: nn.Module, forget: SampleSet, retain: SampleSet, engine: Engine, context: UnlearnContext
    ) -> UnlearnResult:
        """The method itself (inputs already validated)."""

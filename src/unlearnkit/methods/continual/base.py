"""Continual learners: how a continual schedule's ``Learn`` operations train (``scenario.learner``).

A continual scenario (``L1 L2 U1 L3 …``, :mod:`unlearnkit.data.continual`) learns several times. Which algorithm
learns — plain fine-tuning, a replay method, a hypernetwork, an analytic head — is the **learner**; θ_o, the oracle
θ_r and every method's model after its first request all learn with the same learner (each from its own model), so
the oracle at a point is "the same continual learner, trained from scratch on exactly what is kept".

A learner is registered in :data:`LEARNERS` with a pydantic config::

    @LEARNERS.register("der++", config=DerppConfig)
    class Derpp(Learner):
        def build(self, base, info): ...          # the model skeleton (the net, plus state the learner keeps)
        def learn(self, model, spec, engine): ... # one Learn: train ``model`` on ``spec.data``; a LearnResult
        def forget(self, model, ids): ...         # after a request: drop the learner's own copies of those ids

State a learner keeps between Learns (a replay buffer, a hypernetwork's task embeddings, an analytic head's
autocorrelation) lives in the model as registered buffers of fixed shape, so the runner's cache, checkpoints and
resume carry it with the weights.

Registered here: ``finetune`` (the default: plain training with the ``train`` recipe, the behaviour without a
learner). Others: ``der++`` and ``refresh`` (:mod:`.replay`, :mod:`.refresh`), ``uncle`` (:mod:`.uncle`), ``acu``
(:mod:`.acu`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unlearnkit.config.schema import Frozen, ModelSpec, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.registry import Registry

#: learner name → Learner subclass (with its config class)
LEARNERS: Registry[type["Learner"]] = Registry("continual learner")


@dataclass(frozen=True)
class ModelInfo:
    """What a learner needs to build a model skeleton.

    Attributes:
        input_shape: one input's shape (without the batch).  num_classes: C over all tasks.
        groups: the classes of every task, in task order (task t = ``groups[t]``).
        head: ``single`` (class-incremental) or ``task`` (task-incremental: the task id is known at test time).
        model: the experiment's model spec (a learner may read its sizes, e.g. the target net of a hypernetwork).
        init_seed: the seed of this model's initialisation.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    groups: tuple[tuple[int, ...], ...]
    head: str = "single"
    model: ModelSpec | None = None
    init_seed: int = 0


@dataclass(frozen=True)
class LearnSpec:
    """One Learn operation as a learner sees it.

    Attributes:
        data: the samples to learn (the oracle's: only those kept), items ``(x, y, id)``.
        task_index: 0-based index of the task (the group the labels belong to).
        groups: the classes of every task.  recipe: the training recipe (θ_o's ``train``, the oracle's ``oracle``).
        seed: seed of the data order and of the learner's own randomness.  desc: progress description.
    """

    data: SampleSet
    task_index: int
    groups: tuple[tuple[int, ...], ...]
    recipe: TrainConfig
    seed: int
    desc: str = "learn"

    @property
    def classes(self) -> tuple[int, ...]:
        return self.groups[self.task_index]


@dataclass
class LearnResult:
    """Seconds, optimizer steps and the sorted int64 ids that contributed a gradient (replayed ones included)."""

    seconds: float
    steps: int
    seen_ids: np.ndarray
    notes: dict[str, Any] = field(default_factory=dict)


def task_of_labels(labels: np.ndarray, groups: Sequence[Sequence[int]], what: str = "the data") -> int:
    """The index of the one task whose classes hold every label of ``labels``.

    Raises:
        DataError: the labels span several tasks, or a label belongs to no task.
    """
    owner = {int(c): t for t, g in enumerate(groups) for c in g}
    ts = sorted({owner.get(int(y), -1) for y in np.unique(labels)})
    if -1 in ts:
        bad = sorted({int(y) for y in np.unique(labels) if int(y) not in owner})
        raise DataError(f"{what} has labels {bad[:5]} that belong to no task of the scenario")
    if len(ts) != 1:
        raise DataError(f"{what} spans tasks {[t + 1 for t in ts]}; a Learn operation learns one task")
    return ts[0]


class LearnerConfig(Frozen):
    """Base of learner configs (unknown keys are errors)."""


class Learner:
    """Base class of continual learners (see the module docstring).

    Class attributes:
        source: paper and reference code.
        whole_tasks_only: the learner (and its unlearner) handles only requests that forget whole tasks; a sequence
            with ``U<k>:<share>`` is refused before training.
        head: the head setting the learner needs (``task`` for a hypernetwork that needs the task id), or None.
        methods: the unlearning methods that work on this learner's models (None: any classifier method).
    """

    source: ClassVar[str] = ""
    whole_tasks_only: ClassVar[bool] = False
    head: ClassVar[str | None] = None
    methods: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config

    def build(self, base: Callable[[], nn.Module], info: ModelInfo) -> nn.Module:
        """A freshly initialised model (default: ``base()``, the experiment's model)."""
        return base()

    def learn(self, model: nn.Module, spec: LearnSpec, engine: Any) -> LearnResult:
        """Train ``model`` in place on ``spec.data`` (default: the engine's plain loop with ``spec.recipe``)."""
        fit = engine.fit(model, spec.data, spec.recipe, seed=spec.seed, desc=spec.desc)
        return LearnResult(fit.seconds, fit.steps, fit.seen_ids)

    def forget(self, model: nn.Module, ids: np.ndarray) -> None:  # noqa: B027 - optional hook
        """After a request removed ``ids`` from ``model``: drop the learner's own copies of them (a replay buffer)."""


@LEARNERS.register("finetune", config=LearnerConfig)
class FinetuneLearner(Learner):
    """Plain sequential fine-tuning: every Learn trains the current model on the new task with the ``train`` recipe
    (the lower bound of continual learning; the behaviour of a continual scenario without ``learner``)."""

    source = "sequential fine-tuning (the naive continual-learning baseline; e.g. van de Ven et al. 2022, " \
             "arXiv:1904.07734)"


def train_steps(model: nn.Module, data: SampleSet, recipe: TrainConfig, engine: Any, *, seed: int, desc: str,
                step_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, np.ndarray]],
                params: Sequence[nn.Parameter] | None = None,
                before_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
                after_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None) -> LearnResult:
    """The engine's loop (optimizer, per-step scheduler, data order, divergence check, events) with a learner's loss.

    Args:
        step_loss: ``(x, y, ids) -> (loss, extra_ids)``: the batch loss and the ids of replayed samples it read.
        params: parameters to optimise (default: every parameter with ``requires_grad``).
        before_step: called with the batch before its loss (e.g. refresh learning's unlearning step).
        after_step: called with the batch after the optimizer step (e.g. a replay buffer's insertion).

    Raises:
        DivergenceError: a NaN/inf loss (before it updates the weights).  ConfigError: empty data.
    """
    from unlearnkit.engine.loop import make_optimizer, make_scheduler, num_train_batches

    if len(data) == 0:
        raise ConfigError(f"cannot learn the empty set '{data.name}'")
    engine.setup()
    model.to(engine.device).train()
    opt = make_optimizer(params if params is not None else model.parameters(), recipe)
    trainable = [p for g in opt.param_groups for p in g["params"]]
    sched = make_scheduler(opt, recipe, num_train_batches(len(data), recipe.batch_size))
    gen = torch.Generator().manual_seed(seed)
    seen: list[np.ndarray] = []
    step = 0
    t0 = time.perf_counter()
    for epoch in range(recipe.epochs):
        for x, y, ids in engine.batches(data, recipe.batch_size, shuffle=True, generator=gen):
            if before_step is not None:
                before_step(x, y, ids)
            loss, extra = step_loss(x, y, ids)
            lv = engine.check_finite(loss, step=step, desc=f"{desc} (epoch {epoch})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(trainable, recipe.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            if after_step is not None:
                after_step(x, y, ids)
            seen.append(ids.numpy())
            if len(extra):
                seen.append(np.asarray(extra, dtype=np.int64))
            step += 1
            engine.after_optimizer_step(model, loss=lv, lr=float(opt.param_groups[0]["lr"]), epoch=epoch, desc=desc,
                                        seconds=time.perf_counter() - t0)
    model.eval()
    seen_ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)
    return LearnResult(time.perf_counter() - t0, step, seen_ids)


def build_learner(spec: dict[str, Any] | None) -> Learner | None:
    """The learner of ``scenario.learner`` (``{name: ..., params}``), or None without one.

    Raises:
        ConfigError: unknown learner (names the valid ones) or a bad parameter.
    """
    if spec is None:
        return None
    params = {k: v for k, v in spec.items() if k != "name"}
    return LEARNERS.build(str(spec["name"]), params)


__all__ = ["LEARNERS", "FinetuneLearner", "LearnResult", "LearnSpec", "Learner", "LearnerConfig", "ModelInfo",
           "build_learner", "task_of_labels", "train_steps"]

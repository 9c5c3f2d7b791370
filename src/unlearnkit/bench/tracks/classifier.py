"""The classifier track: image / tabular classification (digits, MNIST, CIFAR-10, user data sets and models).

Its experiment (:class:`ClassifierExperiment`) keeps the data, model, scenario and recipes at the top level of the
config (``data``, ``model``, ``scenario``, ``train``, ``oracle``). Every scenario kind becomes a schedule
(:mod:`unlearnkit.data.schedule`): plain kinds one point, ``corrective`` one branch per identified fraction,
``sequential`` one point per request, ``continual`` a learn/forget sequence such as ``L1 L2 U1 L3``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.bench.tracks.base import TRACKS, Role, Track
from unlearnkit.config.schema import (
    DataConfig,
    ExperimentConfig,
    MethodSpec,
    ModelSpec,
    ScenarioConfig,
    TrainConfig,
)
from unlearnkit.data.base import LoadedData
from unlearnkit.data.scenarios import Task, build_stages, load_data
from unlearnkit.data.schedule import Branch, plan_from_stages, single_branch
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods import UnlearnContext, Unlearned, Unlearner, derive_seed
from unlearnkit.metrics import AVG_GAP_KEYS, EvalContext
from unlearnkit.models import build_model


class ClassifierExperiment(ExperimentConfig):
    """A classifier experiment: data → model → θ_o → θ_r → methods × seeds → metrics (DESIGN §3)."""

    default_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "mia_efficacy")

    track: Literal["classifier"] = "classifier"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="mlp"))
    scenario: ScenarioConfig = Field(default_factory=lambda: ScenarioConfig(kind="random", fraction=0.1))
    train: TrainConfig = Field(default_factory=TrainConfig, description="recipe of the original model θ_o")
    oracle: TrainConfig | None = Field(
        None, description="recipe of the retrained oracle θ_r; default: the same as 'train'"
    )
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="finetune")])

    def _omit_when_default(self) -> dict[str, Any]:
        return {"track": "classifier"}  # classifier configs hash as they did before tracks existed

    @model_validator(mode="after")
    def _check_scenario_metrics(self) -> ClassifierExperiment:
        if "corrective" in self.metrics and self.scenario.kind != "corrective":
            raise ValueError("metric 'corrective' measures the effect of a manipulated training set and needs "
                             f"scenario kind: corrective (this scenario is '{self.scenario.kind}'); remove it from "
                             "metrics or use a corrective scenario")
        return self

    @property
    def oracle_recipe(self) -> TrainConfig:
        """The oracle's training recipe (``oracle`` if set, else ``train``)."""
        return self.oracle or self.train


def classifier_verdict_spec(task: Task) -> Any:
    """UA and MIA-efficacy are the forget metrics (larger = more forgotten), RA and TA the utility metrics (chance
    100/K); their binomial noise from |D_f|, |D_r| and the TA test set (:mod:`unlearnkit.verdict`)."""
    from unlearnkit.verdict import VerdictSpec

    chance = 100.0 / max(task.num_classes, 1)
    nf, nr, nt = len(task.forget), len(task.retain), len(task.eval_test)
    return VerdictSpec(forget={"unlearn_acc": 1, "mia_efficacy": 1}, utility={"retain_acc": chance, "test_acc": chance},
                       n={"unlearn_acc": nf, "mia_efficacy": nf, "retain_acc": nr, "test_acc": nt},
                       default_floor=0.5, percent=True)


def _resolve_learner(cfg: ClassifierExperiment) -> ScenarioConfig:
    """The continual scenario with its learner's parameters validated and filled with their defaults.

    Raises:
        ConfigError: unknown learner or parameter; a learner that forgets whole tasks with a ``U<k>:<share>``
            operation (naming its position); a learner that needs ``head: task`` without it; a method the learner's
            models cannot serve.
    """
    from unlearnkit.methods.continual import LEARNERS

    sc = cfg.scenario
    spec = dict(sc.learner or {})
    name = str(spec.pop("name"))
    entry = LEARNERS.entry(name)
    params = LEARNERS.validate_config(name, spec)
    learner = entry.obj
    ops = sc.sequence.split() if isinstance(sc.sequence, str) else list(sc.sequence or [])
    if learner.whole_tasks_only:
        for pos, op in enumerate(ops):
            if ":" in op:
                raise ConfigError(f"scenario continual: operation {pos} ({op}) forgets part of a task, but learner "
                                  f"'{name}' learns and forgets whole tasks only; use U<k> without a share")
    if learner.head is not None and (sc.head or "single") != learner.head:
        raise ConfigError(f"scenario continual: learner '{name}' needs head: {learner.head} (the task id at test "
                          f"time), got head: {sc.head or 'single'}")
    if learner.methods is not None:
        bad = [m.label for m in cfg.methods if m.name not in ("retrain", "original", *learner.methods)]
        if bad:
            raise ConfigError(f"method(s) {bad} cannot unlearn the models of learner '{name}' (it has no trainable "
                              f"parameters to tune); use {', '.join(learner.methods)} (and the oracle row retrain)")
    full = {"name": name, **(params.model_dump(mode="json") if params is not None else {})}
    return sc.model_copy(update={"learner": full})


def check_target(model: nn.Module, task: Task, engine: Engine) -> None:
    """Refuse a target θ_o that learned nothing (test accuracy within noise of chance, 100/K %), before unlearning.

    Raises:
        MethodError: the model performs at chance level (untrained or a random initialisation).
    """
    from unlearnkit.verdict import preflight

    ctx = EvalContext(model, task, engine)
    acc = {"test_acc": ctx.predictions("test").accuracy(), "retain_acc": ctx.predictions("retain").accuracy()}
    _, refusal = preflight(classifier_verdict_spec(task), acc, {})
    if refusal is not None:
        raise MethodError(refusal.replace("the original model θ_o", "the model to unlearn"))


def check_requirements(method: Unlearner | type, task: Task, *, label: str) -> None:
    """Refuse a method whose needs (derived from its settings) the task cannot serve, before any training.

    Raises:
        MethodError: the method needs a retain set and D_r is empty; or needs labels and the task has none; or
            needs the whole of D and only a sample of D_r is given.
    """
    needs = method.requirements() if isinstance(method, Unlearner) else {
        "retain": getattr(method, "needs_retain", False), "labels": getattr(method, "needs_labels", True),
        "full_train": getattr(method, "needs_full_train", False)}
    if needs["retain"] and len(task.retain) == 0:
        raise MethodError(f"method '{label}' needs a retain set (D_r) with its settings but this scenario leaves "
                          "none; forget fewer samples or choose a method (or setting) that uses only D_f")
    if needs["labels"] and not task.scenario.get("labels_available", True):
        raise MethodError(f"method '{label}' needs labels but this task is label-free; choose a label-free "
                          "method (see `unlearnkit methods`)")
    if needs["full_train"] and not task.scenario.get("retain_is_complete", True):
        raise MethodError(f"method '{label}' needs the whole original training set D (e.g. SSD's importances "
                          "I_D), but the retain set is only a sample of D_r; pass the complete retain set")


@TRACKS.register("classifier", config=ClassifierExperiment)
class ClassifierTrack(Track):
    """Classifiers trained with the engine's loop; metrics from ``METRICS`` on an :class:`EvalContext`.

    Args (besides :class:`Track`'s):
        task: a prebuilt :class:`Task` (user data) instead of loading ``cfg.data``.
        model_factory: ``f(init_seed) -> nn.Module`` (a user model) instead of ``cfg.model``.
    """

    name = "classifier"
    continual = True

    def __init__(self, cfg: ClassifierExperiment, engine: Engine, *, task: Task | None = None,
                 model_factory: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__(cfg, engine)
        self.cfg: ClassifierExperiment = cfg
        self._task = task
        self._user_factory = model_factory
        self._built: tuple[Task, list[Branch]] | None = None
        self._learner: Any = None

    @property
    def learner(self) -> Any:
        """The continual learner of ``scenario.learner`` (:mod:`unlearnkit.methods.continual`), or None (plain
        training with the ``train`` recipe)."""
        sc = self.cfg.scenario
        if sc.kind != "continual" or sc.learner is None:
            return None
        if self._learner is None:
            from unlearnkit.methods.continual import build_learner

            self._learner = build_learner(sc.learner)
        return self._learner

    @classmethod
    def resolve(cls, cfg: ExperimentConfig) -> ExperimentConfig:
        from unlearnkit.data import DATASETS
        from unlearnkit.models import MODELS

        assert isinstance(cfg, ClassifierExperiment)
        DATASETS.entry(cfg.data.name)
        model = MODELS.validate_config(cfg.model.name, cfg.model.params)
        params = model.model_dump(mode="json") if model is not None else {}
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"params": params})})
        if cfg.scenario.kind == "continual" and cfg.scenario.learner is not None:
            cfg = cfg.model_copy(update={"scenario": _resolve_learner(cfg)})
        return cfg

    @classmethod
    def conformance_config(cls) -> dict[str, Any]:
        return {"data": {"name": "digits", "train_subset": 150, "test_subset": 50},
                "model": {"name": "mlp", "hidden": [16]}, "scenario": {"kind": "random", "fraction": 0.1},
                "train": {"epochs": 4, "batch_size": 32, "lr": 0.05, "scheduler": "none"}, "metrics": ["accuracy"]}

    def lineage(self) -> dict[str, Any]:
        from unlearnkit.config.loader import to_plain

        out = {"data": to_plain(self.cfg.data) if self._task is None else None,
               "model": to_plain(self.cfg.model) if self._user_factory is None else None}
        sc = self.cfg.scenario
        if sc.kind == "corrective":  # θ_o / θ_r train on manipulated inputs and labels under the same sample ids
            out["manipulation"] = {f: getattr(sc, f) for f in ("manipulation", "fraction", "count", "target",
                                                               "classes", "trigger_size", "trigger_value", "seed")}
        if sc.kind == "continual" and (sc.learner is not None or sc.permute):
            # the learner shapes every model; permuted inputs differ under the same ids per permutation seed
            out["continual"] = {"learner": sc.learner, "permute": sc.seed if sc.permute else None}
        return out

    def recipe(self, role: Role) -> Any:
        return self.cfg.train if role == "original" else self.cfg.oracle_recipe

    def _build(self) -> tuple[Task, list[Branch]]:
        if self._built is None:
            sc = self.cfg.scenario
            if self._task is not None and not sc.staged:
                self._built = (self._task, [single_branch(self._task, self._task)])
            else:
                data = load_data(self.cfg.data) if self._task is None else LoadedData(
                    self._task.name, self._task.train, self._task.test, self._task.num_classes,
                    tuple(str(c) for c in range(self._task.num_classes)))
                if sc.kind == "continual":
                    from unlearnkit.data.continual import continual_branch

                    task, branch = continual_branch(data, sc)
                    self._built = (task, [branch])
                else:
                    task, stages = build_stages(data, sc)  # task.train: the D θ_o learns (manipulated if corrective)
                    self._built = (task, plan_from_stages(task, stages))
        return self._built

    def build_task(self) -> Task:
        """The task (for staged scenarios: the last evaluation point's).

        A prebuilt task (user data) is used as is for the plain kinds; for staged kinds its train and test sets are
        the data the scenario manipulates or deletes from (its own D_f is not used).
        """
        return self._build()[0]

    def plan(self, task: Task) -> list[Branch]:
        return self._build()[1]

    def new_model(self, task: Task, init_seed: int) -> nn.Module:
        learner = self.learner
        if learner is not None:
            from unlearnkit.methods.continual import ModelInfo

            info = ModelInfo(tuple(task.train.input_shape), task.num_classes, _groups(task),
                             self.cfg.scenario.head or "single", None if self._user_factory else self.cfg.model,
                             init_seed)
            return learner.build(lambda: self._base_model(task, init_seed), info)
        return self._base_model(task, init_seed)

    def _base_model(self, task: Task, init_seed: int) -> nn.Module:
        if self._user_factory is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                return self._user_factory(init_seed)
        return build_model(self.cfg.model, task.train.input_shape, task.num_classes, seed=init_seed)

    def train(self, task: Task, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        if self.cfg.scenario.kind == "continual":  # a point after one Learn: the same training as every later prefix
            return self.learn(None, task, role, seed, 0, keep=None if role == "original" else task.retain_ids)
        if role == "original":
            model = self.new_model(task, seed)
            self.engine.seed_everything(seed)
            fit = self.engine.fit(model, task.train, self.cfg.train, seed=derive_seed(seed, "original-order"),
                                  desc=f"original seed {seed}")
            return model, fit.seconds, fit.seen_ids
        return self.retrain_oracle("retrain", task, seed, self.cfg.oracle_recipe)

    def learn(self, model: nn.Module | None, task: Task, role: Role, seed: int, position: int,
              keep: np.ndarray | None = None) -> tuple[nn.Module, float, np.ndarray]:
        """Continue training ``model`` (None: fresh init — θ_o's seed, or the oracle's derived one) on ``task.train``
        (restricted to ``keep``) with θ_o's recipe (the oracle: its own), data order seeded per (role, position)."""
        data = task.train if keep is None else task.train.select_ids(keep, "train")
        if model is None:
            model = self.new_model(task, seed if role == "original" else derive_seed(seed, "oracle-init"))
        self.engine.seed_everything(derive_seed(seed, f"{role}-learn-{position}"))
        learner = self.learner
        if learner is not None:  # scenario.learner: the same algorithm for θ_o, θ_r and the methods' models
            from unlearnkit.methods.continual import LearnSpec
            from unlearnkit.methods.continual.base import task_of_labels

            groups = _groups(task)
            t = task_of_labels(data.labels, groups, what=f"learn {position} of the {role} model")
            res = learner.learn(model, LearnSpec(data, t, groups, self.recipe(role),
                                                 derive_seed(seed, f"{role}-order-{position}"),
                                                 f"{role} seed {seed} learn {position}"), self.engine)
            return model, res.seconds, res.seen_ids
        fit = self.engine.fit(model, data, self.recipe(role), seed=derive_seed(seed, f"{role}-order-{position}"),
                              desc=f"{role} seed {seed} learn {position}")
        return model, fit.seconds, fit.seen_ids

    def check_method(self, method: Unlearner, label: str, task: Task) -> None:
        check_requirements(method, task, label=label)
        needs = getattr(method, "learner", None)  # a method that unlearns one learner's models (uncle, acu)
        have = (self.cfg.scenario.learner or {}).get("name") if self.cfg.scenario.kind == "continual" else None
        if needs is not None and needs != have:
            raise MethodError(f"method '{label}' unlearns the models of `scenario.learner: {needs}` (continual "
                              f"scenarios); this experiment's learner is {have or 'none'}")

    def unlearn(self, task: Task, method: Unlearner, model: nn.Module, ctx: UnlearnContext) -> Unlearned:
        res = method.unlearn(model, task.forget, task.retain, self.engine, ctx)
        if self.learner is not None:  # the learner's own copies of the request (a replay buffer) go too
            self.learner.forget(res.model, task.forget.ids)
        return res

    def eval_context(self, task: Task, model: nn.Module, seed: int, references: dict[str, Any],
                     shared: dict[Any, Any] | None = None, policy: Any = None) -> EvalContext:
        sc = self.cfg.scenario
        if sc.kind == "continual" and sc.head == "task":  # task-incremental: logits masked to the sample's task
            from unlearnkit.metrics.continual import TaskMaskedEvalContext

            return TaskMaskedEvalContext(model, task, self.engine, seed=seed, references=references, shared=shared,
                                         policy=policy, groups=_groups(task))
        return EvalContext(model, task, self.engine, seed=seed, references=references, shared=shared, policy=policy)

    def gap_keys(self) -> tuple[str, ...]:
        return AVG_GAP_KEYS

    def verdict_spec(self, task: Task) -> Any:
        return classifier_verdict_spec(task)

    def curve_metrics(self) -> tuple[str, ...]:
        return ("accuracy",)

    def memorisation_keys(self, task: Task | None = None) -> tuple[str, str] | None:
        # corrective: D_f carries poisoned labels, so its accuracy is not comparable with clean test accuracy;
        # continual: a lower D_f accuracy after later tasks is ordinary forgetting, not a lack of memorisation
        kind = (getattr(task, "scenario", None) or {}).get("kind") if task is not None else None
        return None if kind in ("corrective", "continual") else ("forget_acc", "test_acc")

    def tuning_task(self, task: Task, seed: int) -> Task:
        """Another random draw of |D_f| samples (random / ids) or other classes (class / subclass), disjoint from
        D_f (:func:`unlearnkit.bench.tune_tasks.classifier_tuning_task`)."""
        from unlearnkit.bench.tune_tasks import classifier_tuning_task

        return classifier_tuning_task(task, seed)


def _groups(task: Task) -> tuple[tuple[int, ...], ...]:
    """The classes of every task of a continual scenario (its record's ``tasks``).

    Raises:
        ConfigError: the task carries no task structure (not a continual scenario).
    """
    groups = task.scenario.get("tasks")
    if not groups:
        raise ConfigError("a continual learner needs the task structure of a continual scenario (scenario.kind: "
                          "continual with tasks and sequence)")
    return tuple(tuple(int(c) for c in g) for g in groups)


__all__ = ["ClassifierExperiment", "ClassifierTrack", "check_requirements"]

"""The classifier track: image / tabular classification (digits, MNIST, CIFAR-10, user data sets and models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearnkit.bench.tracks.base import TRACKS, Role, Track
from unlearnkit.config.schema import ExperimentConfig
from unlearnkit.data.base import LoadedData
from unlearnkit.data.scenarios import Stage, Task, build_stages, load_data, single_stage
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import MethodError
from unlearnkit.methods import METHODS, UnlearnContext, Unlearner, UnlearnResult, derive_seed
from unlearnkit.metrics import AVG_GAP_KEYS, EvalContext
from unlearnkit.models import build_model


def check_requirements(method: type, task: Task, *, label: str) -> None:
    """Refuse a method whose declared needs the task cannot serve (before any training).

    Raises:
        MethodError: the method needs a retain set and D_r is empty; or needs labels and the task has none; or
            needs the whole of D and only a sample of D_r is given.
    """
    if getattr(method, "needs_retain", False) and len(task.retain) == 0:
        raise MethodError(f"method '{label}' needs a retain set (D_r) but this scenario leaves none; "
                          "forget fewer samples or choose a method that uses only D_f (e.g. grad_ascent)")
    if getattr(method, "needs_labels", True) and not task.scenario.get("labels_available", True):
        raise MethodError(f"method '{label}' needs labels but this task is label-free; choose a label-free "
                          "method (see `unlearnkit methods`)")
    if getattr(method, "needs_full_train", False) and not task.scenario.get("retain_is_complete", True):
        raise MethodError(f"method '{label}' needs the whole original training set D (e.g. SSD's importances "
                          "I_D), but the retain set is only a sample of D_r; pass the complete retain set")


@TRACKS.register("classifier")
class ClassifierTrack(Track):
    """Classifiers trained with the engine's loop; metrics from ``METRICS`` on an :class:`EvalContext`.

    Args (besides :class:`Track`'s):
        task: a prebuilt :class:`Task` (user data) instead of loading ``cfg.data``.
        model_factory: ``f(init_seed) -> nn.Module`` (a user model) instead of ``cfg.model``.
    """

    name = "classifier"
    default_metrics = ("accuracy", "mia_efficacy")

    def __init__(self, cfg: ExperimentConfig, section: Any, engine: Engine, *, task: Task | None = None,
                 model_factory: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__(cfg, section, engine)
        self._task = task
        self._user_factory = model_factory
        self._built: tuple[Task, list[Stage]] | None = None

    def lineage(self) -> dict[str, Any]:
        from unlearnkit.config.loader import to_plain

        out = {"data": to_plain(self.cfg.data) if self._task is None else None,
               "model": to_plain(self.cfg.model) if self._user_factory is None else None}
        sc = self.cfg.scenario
        if sc.kind == "corrective":  # θ_o / θ_r train on manipulated inputs and labels under the same sample ids
            out["manipulation"] = {f: getattr(sc, f) for f in ("manipulation", "fraction", "count", "target",
                                                               "classes", "trigger_size", "trigger_value", "seed")}
        return out

    def recipe(self, role: Role) -> Any:
        return self.cfg.train if role == "original" else self.cfg.oracle_recipe

    def build_task(self) -> Task:
        """The task (for corrective / sequential scenarios: the last stage's, see :func:`build_stages`).

        A prebuilt task (user data) is used as is for the plain kinds; for ``corrective`` and ``sequential`` its
        train and test sets are the data the scenario manipulates or deletes from (its own D_f is not used).
        """
        if self._built is None:
            if self._task is not None and not self.cfg.scenario.staged:
                self._built = (self._task, single_stage(self._task))
            else:
                data = load_data(self.cfg.data) if self._task is None else LoadedData(
                    self._task.name, self._task.train, self._task.test, self._task.num_classes,
                    tuple(str(c) for c in range(self._task.num_classes)))
                self._built = build_stages(data, self.cfg.scenario)
        return self._built[0]

    def stages(self, task: Task) -> list[Stage]:
        self.build_task()
        assert self._built is not None
        return list(self._built[1])

    def new_model(self, task: Task, init_seed: int) -> nn.Module:
        if self._user_factory is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                return self._user_factory(init_seed)
        return build_model(self.cfg.model, task.train.input_shape, task.num_classes, seed=init_seed)

    def train(self, task: Task, role: Role, seed: int) -> tuple[nn.Module, float, np.ndarray]:
        if role == "original":
            model = self.new_model(task, seed)
            self.engine.seed_everything(seed)
            fit = self.engine.fit(model, task.train, self.cfg.train, seed=derive_seed(seed, "original-order"),
                                  desc=f"original seed {seed}")
            return model, fit.seconds, fit.seen_ids
        retrain = METHODS.build("retrain", {})
        ctx = UnlearnContext(seed=seed, train_recipe=self.cfg.oracle_recipe, init_seed=derive_seed(seed, "oracle-init"),
                             model_factory=lambda s: self.new_model(task, s))
        res = retrain.unlearn(self.new_model(task, 0), task.forget, task.retain, self.engine, ctx)
        return res.model, float(res.notes["train_seconds"]), res.seen_ids

    def check_method(self, method: type[Unlearner], label: str, task: Task) -> None:
        check_requirements(method, task, label=label)

    def unlearn(self, task: Task, method: Unlearner, model: nn.Module, ctx: UnlearnContext) -> UnlearnResult:
        return method.unlearn(model, task.forget, task.retain, self.engine, ctx)

    def evaluate(self, task: Task, model: nn.Module, seed: int, references: dict[str, nn.Module],
                 metrics: list[str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        ctx = EvalContext(model, task, self.engine, seed=seed, references=references)
        values: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        for name in metrics:
            out = self.build_metric(name).compute(ctx)
            values.update(out.values)
            arrays.update({f"{name}.{k}": v for k, v in out.per_sample.items()})
        for split, pred in ctx.computed.items():
            arrays[f"{split}.logits"] = pred.logits.numpy()
            arrays[f"{split}.labels"] = pred.labels.numpy()
            arrays[f"{split}.ids"] = pred.ids.numpy()
        return values, arrays

    def gap_keys(self) -> tuple[str, ...]:
        return AVG_GAP_KEYS

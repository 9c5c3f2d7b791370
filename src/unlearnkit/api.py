"""Python API for your own model and data.

Example (a ``torch.nn.Module`` factory, two datasets of ``(x, y)`` items, and the ids to forget)::

    import unlearnkit as uk

    task = uk.make_task(train_ds, test_ds, forget_ids=[3, 17, 42])          # ids = positions in train_ds
    outcome = uk.compare(lambda seed: MyNet(), task,
                         methods=["finetune", {"name": "grad_ascent", "lr": 1e-3}],
                         train=uk.TrainConfig(epochs=10, lr=0.05), seeds=[0, 1])
    print(uk.summarize(outcome.rows))        # mean ± std per method, oracle first

or, to unlearn an already trained model once::

    result = uk.unlearn(my_trained_model, task, "finetune", epochs=5)
    print(uk.evaluate(result.model, task))   # {"forget_acc": …, "unlearn_acc": …, "retain_acc": …, …}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.config.schema import EngineConfig, MethodSpec, ScenarioConfig, TrainConfig
from unlearnkit.data.base import LoadedData, SampleSet
from unlearnkit.data.scenarios import Task, build_task
from unlearnkit.engine.loop import Engine
from unlearnkit.methods import METHODS, UnlearnContext, UnlearnResult
from unlearnkit.metrics import METRICS, EvalContext


def _as_set(data: Dataset | SampleSet, name: str, ids: Sequence[int] | None, num_classes: int | None) -> SampleSet:
    if isinstance(data, SampleSet):
        return data
    return SampleSet.from_dataset(data, ids=ids, num_classes=num_classes, name=name)


def make_task(
    train: Dataset | SampleSet,
    test: Dataset | SampleSet,
    *,
    forget_ids: Sequence[int] | None = None,
    scenario: ScenarioConfig | None = None,
    train_ids: Sequence[int] | None = None,
    num_classes: int | None = None,
    name: str = "user",
) -> Task:
    """Build a :class:`Task` from your datasets.

    Args:
        train: the original training set D; items ``(x, y)`` (x any tensor, y int class).
        test: held-out data D_t (also the non-member pool of membership inference).
        forget_ids: sample ids to forget (a deletion request); ids are ``train_ids`` if given, else positions in
            ``train``. Mutually exclusive with ``scenario``.
        scenario: a :class:`ScenarioConfig` (random fraction, classes, ...) instead of explicit ids.
        num_classes: number of classes (default: max label + 1 over train and test).

    Raises:
        DataError: ids out of range or duplicated, empty forget/retain set, class absent.
        ConfigError: both or neither of ``forget_ids`` and ``scenario`` given.
    """
    from unlearnkit.errors import ConfigError

    if (forget_ids is None) == (scenario is None):
        raise ConfigError("give exactly one of forget_ids=[...] or scenario=ScenarioConfig(...)")
    tr = _as_set(train, "train", train_ids, num_classes)
    te = _as_set(test, "test", None, num_classes)
    k = num_classes or max(tr.num_classes, te.num_classes)
    tr = SampleSet(tr.source, tr.positions, tr.ids, tr.labels, k, "train")
    te = SampleSet(te.source, te.positions, te.ids, te.labels, k, "test")
    data = LoadedData(name, tr, te, k, tuple(str(i) for i in range(k)))
    sc = scenario or ScenarioConfig(kind="ids", ids=[int(i) for i in np.asarray(forget_ids).tolist()])
    return build_task(data, sc)


def unlearn(model: nn.Module, task: Task, method: str = "finetune", *, seed: int = 0,
            engine: Engine | None = None, train_recipe: TrainConfig | None = None, check: bool = True,
            **params: Any) -> UnlearnResult:
    """Run one registered method on ``model`` (modified in place; pass a copy to keep it).

    ``params`` are the method's config fields (``unlearnkit methods --json`` lists them with defaults).
    ``check``: refuse a model that learned nothing (test accuracy at chance level) before unlearning it.

    Raises:
        ConfigError: unknown method or parameter.  MethodError: the task cannot serve the method (e.g. it needs
            D_r and the task has none), or the model is at chance level.
        DivergenceError: the loss became NaN/inf.
    """
    m = METHODS.build(method, params)
    eng = engine or Engine(EngineConfig(progress=False))
    from unlearnkit.bench.tracks.classifier import check_requirements

    check_requirements(m, task, label=method)
    if check:
        from unlearnkit.bench.tracks.classifier import check_target

        check_target(model, task, eng)
    return m.unlearn(model, task.forget, task.retain, eng, UnlearnContext(seed=seed, train_recipe=train_recipe))


def evaluate(model: nn.Module, task: Task, metrics: Sequence[str] = ("accuracy", "mia_efficacy"), *,
             seed: int = 0, engine: Engine | None = None, original: nn.Module | None = None,
             oracle: nn.Module | None = None) -> dict[str, float]:
    """Compute registered metrics of ``model`` on ``task``: ``{key: value}`` (accuracies in %).

    ``original`` (θ_o) and ``oracle`` (θ_r) are needed by metrics that compare models (``retrain_distance``,
    ``representation``); those raise ConfigError when the reference they need is missing.
    """
    refs = {k: v for k, v in (("original_model", original), ("oracle_model", oracle)) if v is not None}
    ctx = EvalContext(model, task, engine or Engine(EngineConfig(progress=False)), seed=seed, references=refs)
    out: dict[str, float] = {}
    for name in metrics:
        out.update(METRICS.build(name).compute(ctx).values)
    return out


def compare(
    model_factory: Callable[[int], nn.Module],
    task: Task,
    *,
    methods: Sequence[str | dict[str, Any]] = ("finetune", "grad_ascent", "random_label"),
    train: TrainConfig | None = None,
    seeds: Sequence[int] = (0,),
    metrics: Sequence[str] = ("accuracy", "mia_efficacy"),
    name: str = "user",
    output_dir: str = "runs",
    engine: EngineConfig | None = None,
    write_report: bool = True,
):
    """Train θ_o and the oracle θ_r with ``model_factory`` on ``task``, run ``methods`` × ``seeds``, evaluate.

    The same machinery as ``unlearnkit run``: cached θ_o/θ_r (keyed by your data's fingerprint and the model's
    architecture), ``results.jsonl``, resume, report files in ``<output_dir>/<name>-<hash8>/``.

    Returns:
        :class:`unlearnkit.bench.RunOutcome` (``run_dir``, ``rows``).
    """
    from unlearnkit.bench.runner import run_experiment
    from unlearnkit.bench.tracks.classifier import ClassifierExperiment

    cfg = ClassifierExperiment(
        name=name, train=train or TrainConfig(), methods=[MethodSpec.model_validate(m) for m in methods],
        metrics=list(metrics), seeds=list(seeds), output_dir=output_dir,
        engine=engine or EngineConfig(progress=False),
        # the task's real forget ids: part of the run's identity (a new request never resumes an old run's rows)
        scenario=ScenarioConfig(kind="ids", ids=sorted(int(i) for i in task.forget.ids)),
    )
    return run_experiment(cfg, model_factory=model_factory, task=task, write_report=write_report)

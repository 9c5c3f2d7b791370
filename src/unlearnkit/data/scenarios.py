"""Scenarios: how the forget set D_f is chosen, and the resulting split with checked invariants.

Invariants (checked by :func:`check_split`, violations raise ``DataError``):
D_f ∩ D_r = ∅, D_f ∪ D_r = D (train), D_t ∩ D = ∅ (by sample identity), D_f non-empty, D_r non-empty.

Most scenarios give one task. ``corrective`` and ``sequential`` give several **stages** (:func:`build_stages`): one
per identified fraction p, or one per deletion request; the runner writes one result row per (method, seed, stage).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from unlearnkit.config.schema import DataConfig, ScenarioConfig
from unlearnkit.data.base import LoadedData, SampleSet, SplitIds, check_id_split
from unlearnkit.errors import DataError
from unlearnkit.registry import DATASETS


def ids_digest(ids: np.ndarray) -> str:
    """SHA-256 of the sorted int64 ids: identifies a set of samples (part of cache keys)."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()


@dataclass(frozen=True)
class Task(SplitIds):
    """The data of one unlearning problem.

    Attributes:
        train: D, the full training set of the original model.
        forget: D_f ⊂ D.  retain: D_r = D \\ D_f.  test: D_t (never trained on).
        test_forgotten: for class scenarios, test samples of the forgotten classes (else None).
        num_classes: number of classes.
        scenario: record of how D_f was chosen (kind, parameters, |D_f|, forget ids digest).
    TA is measured on ``eval_test`` = test samples of the remaining classes in class scenarios, the full test set
    otherwise (the scenario is recorded explicitly, never inferred from counts).
    """

    name: str
    train: SampleSet
    forget: SampleSet
    retain: SampleSet
    test: SampleSet
    num_classes: int
    scenario: dict[str, Any] = field(default_factory=dict)
    test_forgotten: SampleSet | None = None

    @property
    def train_ids(self) -> np.ndarray:
        """int64 ids of D."""
        return self.train.ids

    @property
    def eval_test(self) -> SampleSet:
        """The test set TA is computed on (remaining classes only in class scenarios)."""
        if self.test_forgotten is None:
            return self.test
        return self.test.exclude_ids(self.test_forgotten.ids, name="test")


def check_split(train: SampleSet, forget: SampleSet, retain: SampleSet, test: SampleSet | None = None) -> None:
    """Raise ``DataError`` unless D_f ∩ D_r = ∅, D_f ∪ D_r = D, both non-empty, and test positions are not train's."""
    check_id_split(train.ids, forget.ids, retain.ids, where="",
                   empty_forget="the forget set is empty; choose a scenario that selects at least one training sample",
                   empty_retain="the retain set is empty: the scenario forgets every training sample; forget fewer")
    if test is not None and test.source is train.source:
        shared = np.intersect1d(test.positions, train.positions)
        if len(shared):
            raise DataError(f"test and train share {len(shared)} source rows; the test set must be held out")


def load_data(cfg: DataConfig) -> LoadedData:
    """Load the data set named in ``cfg`` through the ``DATASETS`` registry."""
    return DATASETS.get(cfg.name)(cfg)


def build_task(data: LoadedData, scenario: ScenarioConfig) -> Task:
    """Choose D_f from ``data.train`` by ``scenario``; return the checked :class:`Task`.

    Raises:
        DataError: fraction/count that selects nothing or everything, class absent from the data (lists the
            classes present), ids out of range or duplicated, subclass on a data set without a hierarchy.
    """
    train = data.train
    n = len(train)
    rec: dict[str, Any] = {"kind": scenario.kind, "seed": scenario.seed}
    test_forgotten = None
    if scenario.kind == "random":
        rng = np.random.default_rng(scenario.seed)
        k = scenario.count if scenario.count is not None else int(round(scenario.fraction * n))
        if k < 1 or k >= n:
            raise DataError(
                f"random forgetting of {scenario.fraction or scenario.count} selects {k} of {n} training samples; "
                f"it must select between 1 and {n - 1}"
            )
        idx = np.sort(rng.choice(n, size=k, replace=False))
        forget = train.take(idx, "forget")
        rec.update(fraction=scenario.fraction, count=scenario.count)
    elif scenario.kind == "class":
        present = sorted(set(train.labels.tolist()))
        bad = [c for c in scenario.classes if c not in present]
        if bad:
            raise DataError(
                f"class(es) {bad} are not in the training data of '{data.name}'; classes present: {present}"
            )
        mask = np.isin(train.labels, scenario.classes)
        forget = train.take(mask, "forget")
        test_forgotten = data.test.take(np.isin(data.test.labels, scenario.classes), "test_forgotten")
        rec.update(classes=list(scenario.classes))
    elif scenario.kind == "subclass":
        if data.superclasses is None:
            raise DataError(
                f"scenario 'subclass' needs a data set with a class hierarchy (e.g. CIFAR-20 super-classes of "
                f"CIFAR-100); '{data.name}' has none. Use kind: class or random"
            )
        bad = [c for c in scenario.classes if c >= data.num_classes or c < 0]
        if bad:
            raise DataError(f"subclass(es) {bad} out of range [0, {data.num_classes})")
        mask = np.isin(train.labels, scenario.classes)
        forget = train.take(mask, "forget")
        rec.update(classes=list(scenario.classes), superclasses=[data.superclasses[c] for c in scenario.classes])
    else:  # ids
        forget = train.select_ids(scenario.ids, "forget")
        rec.update(count=len(scenario.ids))
    retain = train.exclude_ids(forget.ids, "retain")
    check_split(train, forget, retain, data.test)
    rec.update(n_train=n, n_forget=len(forget), n_retain=len(retain), n_test=len(data.test),
               forget_ids_sha256=ids_digest(forget.ids))
    return Task(data.name, train, forget, retain, data.test, data.num_classes, rec, test_forgotten)


@dataclass(frozen=True)
class Stage:
    """One unlearning step of a scenario: a plain scenario has one stage with an empty ``key``.

    Attributes:
        key: the row fields that identify the stage (``{}``, ``{"identified_fraction": p}``, ``{"request": i}``);
            part of the result row and of its identity (resume, reports): each field must be one of
            ``unlearnkit.report.summary.ROW_DIMENSIONS``.
        name: file-name tag (``""``, ``"p25"``, ``"req2"``): per_sample/<label>-seed<s>-<name>.npz,
            checkpoints/<label>-seed<s>-<name>/.
        task: what the method unlearns (its D_f and D_r); the oracle of the stage trains on ``task.retain`` only.
        eval_task: what the metrics see (sequential: D_f = everything removed so far); None = ``task``.
        chained: the method's input is its own output of the previous stage (sequential), not a copy of θ_o.
        references: extra references handed to metrics (corrective: the manipulation).
    """

    key: Mapping[str, Any]
    name: str
    task: Task
    eval_task: Task | None = None
    chained: bool = False
    references: Mapping[str, Any] = field(default_factory=dict)

    @property
    def evaluation(self) -> Task:
        """The task metrics are computed on."""
        return self.eval_task if self.eval_task is not None else self.task

    @property
    def label(self) -> str:
        """Human-readable stage (``""`` for a plain scenario), e.g. ``p=25 %`` or ``request 2``."""
        if "identified_fraction" in self.key:
            return f"p={100 * self.key['identified_fraction']:g} %"
        if "request" in self.key:
            return f"request {self.key['request']}"
        if "forget_size" in self.key:
            return f"|D_f|={self.key['forget_size']}"
        return ", ".join(f"{k}={v}" for k, v in self.key.items())


def stage_name(key: Mapping[str, Any]) -> str:
    """File-name part of a stage (``p25``, ``req2``, ``n40``; ``""`` for a plain scenario's empty key); see
    :func:`unlearnkit.results.point_tag`."""
    from unlearnkit.results import point_tag

    return point_tag(key)


def single_stage(task: Any) -> list[Stage]:
    """The stages of a plain scenario: one, with an empty key."""
    return [Stage({}, "", task)]


def build_stages(data: LoadedData, scenario: ScenarioConfig) -> tuple[Task, list[Stage]]:
    """The task and its stages for ``scenario``.

    Plain kinds: (:func:`build_task`, one stage). ``corrective``: the training set is manipulated
    (:mod:`unlearnkit.data.corrective`, seeded by ``scenario.seed``); stage p forgets the identified ⌈p·m⌉ of the m
    manipulated samples (nested over p), and the returned task is the stage of the largest p (D = the manipulated
    training set that θ_o trains on). ``sequential``: stage i forgets request i (:mod:`unlearnkit.data.sequential`);
    the returned task has D_f = all requests, D_r = what remains after the last.

    Raises:
        DataError: as :func:`build_task`, and the manipulation's / requests' own errors.
    """
    if scenario.kind == "corrective":
        from unlearnkit.data.corrective import MANIPULATION_KEY, corrective_task, interclass_confusion, poison

        if scenario.manipulation == "poison":
            manip = poison(data, fraction=scenario.fraction, count=scenario.count, target=int(scenario.target or 0),
                           trigger_size=int(scenario.trigger_size or 3), trigger_value=scenario.trigger_value,
                           seed=scenario.seed)
        else:
            a, b = scenario.classes or (3, 5)
            manip = interclass_confusion(data, fraction=scenario.fraction, count=scenario.count, classes=(a, b),
                                         seed=scenario.seed)
        stages = []
        for p in scenario.identified_fractions or ():
            task = corrective_task(manip, p, seed=scenario.seed)
            key = {"identified_fraction": float(p)}
            stages.append(Stage(key, stage_name(key), task,
                                references={MANIPULATION_KEY: manip}))
        last = stages[-1].task
        base = replace(last, scenario={**last.scenario, "identified_fractions": list(scenario.identified_fractions
                                                                                     or ())})
        return base, stages
    if scenario.kind == "sequential":
        from unlearnkit.data.sequential import draw_requests, request_specs, request_tasks

        specs = request_specs(scenario)
        requests = draw_requests(data.train, specs, seed=scenario.seed)
        pairs = request_tasks(data, requests, record={"seed": scenario.seed}, classes=[sp.classes for sp in specs])
        stages = [Stage({"request": i}, stage_name({"request": i}), unl, ev, chained=True)
                  for i, (unl, ev) in enumerate(pairs)]
        last = pairs[-1][1]
        base = replace(last, scenario={**last.scenario, "n_forget": len(last.forget)})
        return base, stages
    task = build_task(data, scenario)
    return task, single_stage(task)

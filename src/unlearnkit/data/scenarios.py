"""Scenarios: how the forget set D_f is chosen, and the resulting split with checked invariants.

Invariants (checked by :func:`check_split`, violations raise ``DataError``):
D_f ∩ D_r = ∅, D_f ∪ D_r = D (train), D_t ∩ D = ∅ (by sample identity), D_f non-empty, D_r non-empty.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unlearnkit.config.schema import DataConfig, ScenarioConfig
from unlearnkit.data.base import LoadedData, SampleSet
from unlearnkit.errors import DataError
from unlearnkit.registry import DATASETS


def ids_digest(ids: np.ndarray) -> str:
    """SHA-256 of the sorted int64 ids: identifies a set of samples (part of cache keys)."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()


@dataclass(frozen=True)
class Task:
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
    def forget_ids(self) -> np.ndarray:
        """int64 ids of D_f."""
        return self.forget.ids

    @property
    def retain_ids(self) -> np.ndarray:
        """int64 ids of D_r."""
        return self.retain.ids

    @property
    def eval_test(self) -> SampleSet:
        """The test set TA is computed on (remaining classes only in class scenarios)."""
        if self.test_forgotten is None:
            return self.test
        return self.test.exclude_ids(self.test_forgotten.ids, name="test")


def check_split(train: SampleSet, forget: SampleSet, retain: SampleSet, test: SampleSet | None = None) -> None:
    """Raise ``DataError`` unless D_f ∩ D_r = ∅, D_f ∪ D_r = D, both non-empty, and test positions are not train's."""
    f, r, d = set(forget.ids.tolist()), set(retain.ids.tolist()), set(train.ids.tolist())
    if not f:
        raise DataError("the forget set is empty; choose a scenario that selects at least one training sample")
    if not r:
        raise DataError("the retain set is empty: the scenario forgets every training sample; forget fewer")
    if f & r:
        raise DataError(f"forget and retain sets overlap in {len(f & r)} ids (e.g. {sorted(f & r)[:5]})")
    if f | r != d:
        raise DataError(f"forget ∪ retain ≠ train: {len(d - (f | r))} train ids missing, {len((f | r) - d)} extra")
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

"""Continual schedules of classifier data: learn and forget tasks in any order (``scenario.kind: continual``).

The training classes are split into tasks (``tasks: k`` consecutive groups, or explicit class lists); a sequence such
as ``L1 L2 U1 L3`` becomes one :class:`~unlearnkit.data.schedule.Branch` (class-incremental, single head):

- ``L<k>`` learns every training sample of task k, continuing from the current model;
- ``U<k>`` forgets every sample of task k not forgotten yet; ``U<k>:s`` a random share s of task k's samples (drawn
  with ``np.random.default_rng([seed, position])`` among those not forgotten yet);
- after every operation from the first ``U`` on there is an evaluation point (row dimension ``step`` = the
  operation's position, 0-based). Its task: D = everything learned so far, D_f = everything forgotten so far,
  D_r = the rest; TA on the test samples of the learned classes that are not wholly forgotten, the wholly forgotten
  classes' test samples as ``test_forgotten`` (as in a class scenario).
"""

from __future__ import annotations

import re

import numpy as np

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.base import LoadedData, SampleSet
from unlearnkit.data.scenarios import Task, ids_digest
from unlearnkit.data.schedule import Branch, Evaluate, Forget, Learn, Operation
from unlearnkit.errors import DataError


def task_classes(scenario: ScenarioConfig, classes_present: list[int]) -> list[list[int]]:
    """The classes of each task: ``tasks: k`` splits the present classes, in order, into k near-equal groups.

    Raises:
        DataError: more tasks than classes, or a task class that is not in the training data.
    """
    t = scenario.tasks
    if isinstance(t, int):
        if t > len(classes_present):
            raise DataError(f"scenario continual: {t} tasks but the training data has only {len(classes_present)} "
                            "classes; use at most one task per class")
        return [list(map(int, part)) for part in np.array_split(np.asarray(classes_present), t)]
    out = [list(map(int, c)) for c in (t or [])]
    bad = sorted({c for cs in out for c in cs} - set(classes_present))
    if bad:
        raise DataError(f"scenario continual: task class(es) {bad} are not in the training data; classes present: "
                        f"{classes_present}")
    return out


def continual_branch(data: LoadedData, scenario: ScenarioConfig) -> tuple[Task, Branch]:
    """The branch of a continual scenario and the task of its last evaluation point.

    Raises:
        DataError: a task with no training samples, a partial forget that selects nothing, or an operation that
            forgets everything that was learned (the message names the position in the sequence).
    """
    train, test = data.train, data.test
    present = sorted(set(train.labels.tolist()))
    groups = task_classes(scenario, present)
    tasks: list[SampleSet] = []
    for k, cls in enumerate(groups, start=1):
        part = train.take(np.isin(train.labels, cls), f"task{k}")
        if len(part) == 0:
            raise DataError(f"scenario continual: task {k} (classes {cls}) has no training samples")
        tasks.append(part)
    ops_text = scenario.sequence.split() if isinstance(scenario.sequence, str) else list(scenario.sequence or [])
    learned = np.zeros(0, dtype=np.int64)
    removed = np.zeros(0, dtype=np.int64)
    learned_classes: list[int] = []
    gone_classes: list[int] = []
    ops: list[Operation] = []
    last: Task | None = None
    record = {"kind": "continual", "seed": scenario.seed, "tasks": groups, "sequence": " ".join(ops_text)}
    for pos, op in enumerate(ops_text):
        m = re.match(r"^(L|U)(\d+)(?::(.+))?$", op)
        assert m is not None  # checked by ScenarioConfig
        kind, k = m.group(1), int(m.group(2))
        part = tasks[k - 1]
        if kind == "L":
            learned = np.union1d(learned, part.ids)
            learned_classes += [c for c in groups[k - 1] if c not in learned_classes]
            empty = part.take(np.zeros(0, dtype=np.int64), "forget")
            ops.append(Learn(Task(data.name, part, empty, part, test, data.num_classes,
                                  {**record, "op": op, "step": pos}), op))
        else:
            pool = np.setdiff1d(part.ids, removed)
            if m.group(3) is None:
                req = pool
            else:
                n = int(round(float(m.group(3)) * len(part)))
                if n < 1 or n > len(pool):
                    raise DataError(f"scenario continual: operation {pos} ({op}) selects {n} samples but {len(pool)} "
                                    f"of task {k} are left to forget; choose a share between "
                                    f"{1 / len(part):.3g} and {len(pool) / len(part):.3g}")
                req = np.sort(np.random.default_rng([scenario.seed, pos]).choice(pool, size=n, replace=False))
            if len(req) == 0:
                raise DataError(f"scenario continual: operation {pos} ({op}) has nothing left to forget in task {k}")
            cur = train.select_ids(np.setdiff1d(learned, removed), "train")
            if len(req) >= len(cur):
                raise DataError(f"scenario continual: operation {pos} ({op}) forgets everything learned so far; "
                                "nothing would remain for D_r")
            forget = cur.select_ids(req, "forget")
            retain = cur.exclude_ids(req, "retain")
            removed = np.union1d(removed, req)
            if m.group(3) is None or len(np.setdiff1d(part.ids, removed)) == 0:
                gone_classes += [c for c in groups[k - 1] if c not in gone_classes]
            rec = {**record, "op": op, "step": pos, "n_request": len(req)}
            ops.append(Forget(_task(data, cur, forget, retain, learned_classes, gone_classes, rec), op))
        if removed.size:
            everything = train.select_ids(learned, "train")
            cum = everything.select_ids(removed, "forget")
            kept = everything.exclude_ids(removed, "retain")
            rec = {**record, "op": op, "step": pos, "n_removed": len(removed),
                   "removed_ids_sha256": ids_digest(removed)}
            last = _task(data, everything, cum, kept, learned_classes, gone_classes, rec)
            ops.append(Evaluate(last, {"step": pos}, {}, f"step {pos} ({op})"))
    assert last is not None  # the sequence forgets (checked by ScenarioConfig)
    return last, Branch(tuple(ops))


def _task(data: LoadedData, train: SampleSet, forget: SampleSet, retain: SampleSet, learned: list[int],
          gone: list[int], record: dict) -> Task:
    """A task whose test set holds the learned classes: TA on those not wholly forgotten, ``test_forgotten`` on the
    wholly forgotten ones."""
    test = data.test.take(np.isin(data.test.labels, learned), "test")
    forgotten = test.take(np.isin(test.labels, gone), "test_forgotten") if gone else None
    rec = {**record, "n_train": len(train), "n_forget": len(forget), "n_retain": len(retain), "n_test": len(test),
           "forget_ids_sha256": ids_digest(forget.ids), "classes_learned": sorted(learned)}
    if gone:
        rec["classes_removed"] = sorted(gone)
    return Task(data.name, train, forget, retain, test, data.num_classes, rec, forgotten)


__all__ = ["continual_branch", "task_classes"]

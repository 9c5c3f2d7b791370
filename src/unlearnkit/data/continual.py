"""Continual schedules of classifier data: learn and forget tasks in any order (``scenario.kind: continual``).

The training classes are split into tasks (``tasks: k`` consecutive groups, or explicit class lists); a sequence such
as ``L1 L2 U1 L3`` becomes one :class:`~unlearnkit.data.schedule.Branch` (class-incremental, single head):

- ``L<k>`` learns every training sample of task k, continuing from the current model;
- ``U<k>`` forgets every sample of task k not forgotten yet; ``U<k>:s`` a random share s of task k's samples (drawn
  with ``np.random.default_rng([seed, position])`` among those not forgotten yet);
- after every operation from the first ``U`` on there is an evaluation point (row dimension ``step`` = the
  operation's position, 0-based); with ``evaluate: every`` after every operation (before the first ``U``, D_f is
  empty and only θ_o and the oracle have rows: the full accuracy matrix). Its task: D = everything learned so far,
  D_f = everything forgotten so far, D_r = the rest; TA on the test samples of the learned classes that are not
  wholly forgotten, the wholly forgotten classes' test samples as ``test_forgotten`` (as in a class scenario).

``permute: true`` (permuted MNIST, Goodfellow et al. 2013, arXiv:1312.6211; the UnCLe / Mammoth "perm-mnist"
setting): every task is the whole data set under its own fixed random permutation of the input features, with its own
classes (task t's class y is t·C + y) and its own sample ids (t·stride + id) — see :func:`permuted_tasks`. With
``head: task`` (task-incremental) each task is a C-way problem; with a single head a (k·C)-way one.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from unlearnkit.config.schema import ScenarioConfig
from unlearnkit.data.base import LoadedData, SampleSet, TensorSource
from unlearnkit.data.scenarios import Task, ids_digest
from unlearnkit.data.schedule import Branch, Evaluate, Forget, Learn, Operation
from unlearnkit.errors import DataError


def _operations(scenario: ScenarioConfig) -> list[str]:
    """The operations of the sequence, in order (``L1``, ``U2:0.5``, ...)."""
    seq = scenario.sequence
    return seq.split() if isinstance(seq, str) else list(seq or [])


def _where(scenario: ScenarioConfig, k: int) -> str:
    """Where task k (1-based) first appears in the sequence, for error messages: ``operation 2 (L3)``."""
    for pos, op in enumerate(_operations(scenario)):
        m = re.match(r"^(L|U)(\d+)", op)
        if m is not None and int(m.group(2)) == k:
            return f"operation {pos} ({op})"
    return "no operation of the sequence"


def task_classes(scenario: ScenarioConfig, classes_present: list[int]) -> list[list[int]]:
    """The classes of each task: ``tasks: k`` splits the present classes, in order, into k near-equal groups.

    Raises:
        DataError: more tasks than classes, or a task class that is not in the training data (the message names the
            task and the first operation of the sequence that uses it).
    """
    t = scenario.tasks
    if isinstance(t, int):
        if t > len(classes_present):
            raise DataError(f"scenario continual: {t} tasks but the training data has only {len(classes_present)} "
                            "classes; use at most one task per class")
        return [list(map(int, part)) for part in np.array_split(np.asarray(classes_present), t)]
    out = [list(map(int, c)) for c in (t or [])]
    for k, cs in enumerate(out, start=1):
        bad = sorted(set(cs) - set(classes_present))
        if bad:
            raise DataError(f"scenario continual: task class(es) {bad} of task {k} (used first by "
                            f"{_where(scenario, k)}) are not in the training data; classes present: "
                            f"{classes_present}")
    return out


def _id_stride(*sets: SampleSet) -> int:
    """The smallest power of ten above every id of ``sets`` (task t's ids are t·stride + id: readable and disjoint)."""
    top = max((int(s.ids.max()) for s in sets if len(s)), default=0) + 1
    return int(10 ** int(np.ceil(np.log10(max(top, 10)))))


def permuted_tasks(data: LoadedData, k: int, seed: int) -> LoadedData:
    """``k`` permuted copies of ``data`` as one data set with ``k · C`` classes.

    Copy t (0-based) holds every train and test sample with its input features (flattened, then reshaped back)
    permuted by ``np.random.default_rng([seed, 0x9E3, t]).permutation(d)``, label ``t · C + y`` and sample id
    ``t · stride + id`` (``stride``: the power of ten above the largest id), so the copies are disjoint tasks of
    consecutive classes — ``tasks: k`` splits them back exactly. Every copy is permuted (the first too), as in the
    permuted-MNIST benchmark of Mammoth and UnCLe.

    Raises:
        DataError: the data is not held in memory (a user Dataset source), or ``k < 2``.
    """
    if k < 2:
        raise DataError(f"scenario continual: permute needs at least 2 tasks, got {k}")
    c = data.num_classes
    stride = _id_stride(data.train, data.test)
    out = {}
    for split, part in (("train", data.train), ("test", data.test)):
        if not isinstance(part.source, TensorSource):
            raise DataError("scenario continual: permute needs in-memory data (a TensorSource); this data set is a "
                            "torch Dataset — load it as tensors or use split tasks")
        x = part.source.x[torch.from_numpy(part.positions)]
        flat = x.reshape(len(part), -1)
        xs, ys, ids = [], [], []
        for t in range(k):
            perm = np.random.default_rng([seed, 0x9E3, t]).permutation(flat.shape[1])
            xs.append(flat[:, torch.from_numpy(perm)].reshape(x.shape))
            ys.append(part.labels + t * c)
            ids.append(part.ids + t * stride)
        y = np.concatenate(ys)
        src = TensorSource(torch.cat(xs).contiguous(), torch.from_numpy(y))
        out[split] = SampleSet(src, np.arange(len(y)), np.concatenate(ids), y, k * c, split)
    names = tuple(f"p{t + 1}:{n}" for t in range(k) for n in data.class_names)
    return LoadedData(f"{data.name}-permuted{k}", out["train"], out["test"], k * c, names,
                      notes=data.notes + (f"permuted: {k} copies, id stride {stride}",))


def continual_branch(data: LoadedData, scenario: ScenarioConfig) -> tuple[Task, Branch]:
    """The branch of a continual scenario and the task of its last evaluation point.

    Raises:
        DataError: a task with no training samples or with a class not in the training data, a partial forget that
            selects nothing, or an operation that forgets everything that was learned (each message names the position
            in the sequence: the operation, 0-based, and its text).
    """
    if scenario.permute:
        assert isinstance(scenario.tasks, int)  # checked by ScenarioConfig
        data = permuted_tasks(data, scenario.tasks, scenario.seed)
    train, test = data.train, data.test
    present = sorted(set(train.labels.tolist()))
    groups = task_classes(scenario, present)
    tasks: list[SampleSet] = []
    for k, cls in enumerate(groups, start=1):
        part = train.take(np.isin(train.labels, cls), f"task{k}")
        if len(part) == 0:
            raise DataError(f"scenario continual: task {k} (classes {cls}, used first by {_where(scenario, k)}) "
                            "has no training samples; give it classes that are in the training data")
        tasks.append(part)
    ops_text = _operations(scenario)
    learned = np.zeros(0, dtype=np.int64)
    removed = np.zeros(0, dtype=np.int64)
    learned_classes: list[int] = []
    gone_classes: list[int] = []
    ops: list[Operation] = []
    last: Task | None = None
    record: dict = {"kind": "continual", "seed": scenario.seed, "tasks": groups, "sequence": " ".join(ops_text)}
    if scenario.permute:
        record["permute"] = True
    if scenario.head is not None:
        record["head"] = scenario.head
    if scenario.learner is not None:
        record["learner"] = scenario.learner["name"]  # type: ignore[index]
    every = scenario.evaluate == "every"
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
        if removed.size or every:
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


__all__ = ["continual_branch", "permuted_tasks", "task_classes"]

"""Schedules: what a model learns and forgets, in order, and where it is evaluated.

A **plan** is a list of **branches**; a branch is a sequence of operations the runner interprets for every method
and seed:

- :class:`Learn` — train on ``task``'s training data, continuing from the current model (the first Learn of a
  branch starts from a fresh initialisation);
- :class:`Forget` — a deletion request: the method unlearns ``task.forget`` from its current model;
- :class:`Evaluate` — an evaluation point: one result row per method (and for θ_o and the oracle θ_r), with the
  row dimensions ``dims`` (e.g. ``{"request": 2}``).

Every scenario is one mechanism:

=====================  ==================================================================================
plain (random, class)  ``[Learn(D), Forget(D_f), Evaluate()]``
sequential requests    ``[Learn(D), Forget(R_0), Evaluate(request=0), Forget(R_1), Evaluate(request=1), …]``
corrective fractions   one branch per identified fraction p: ``[Learn(D̃), Forget(D_f(p)), Evaluate(p)]``
MUSE scalability       one branch per forget-set size
continual              e.g. ``L1 L2 U1 L3``: ``[Learn(T1), Learn(T2), Forget(T1), Evaluate(step=2), Learn(T3),
                       Evaluate(step=3)]``
=====================  ==================================================================================

From a branch follow both references of every evaluation point:

- **θ_o** at a point has applied every Learn before it and no Forget (the system without unlearning);
- **the oracle θ_r** at a point is trained from a fresh initialisation on exactly the data learned and not forgotten
  up to that point, in the same order (:meth:`Branch.oracle_learning`).

Both are cached by lineage (the ids of every Learn, in order), so branches that share a prefix train it once. A
method's model before its first Forget *is* θ_o; after it, Learn operations continue training the method's own
model with θ_o's recipe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unlearnkit.errors import DataError
from unlearnkit.results import point_tag


def _ids(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.int64).reshape(-1)


@dataclass(frozen=True)
class Learn:
    """Train on ``task``'s training set (``task.train_ids``), continuing from the current model.

    Attributes:
        task: the track's task whose training data is learned (a classifier :class:`~unlearnkit.data.Task`, a text
            task, ...); ``task.train_ids`` are the ids learned.
        name: short name shown in messages (``D``, ``L1``, ...).
    """

    task: Any
    name: str = "D"

    @property
    def ids(self) -> np.ndarray:
        """int64 ids of the data this operation learns."""
        return _ids(self.task.train_ids)


@dataclass(frozen=True)
class Forget:
    """A deletion request: the method unlearns ``task.forget`` (its retain set is ``task.retain``).

    Attributes:
        task: what the method sees: D_f = the request, D_r = what was learned and is kept.
        name: short name (``U1``, ``request 2``, ...).
    """

    task: Any
    name: str = "D_f"

    @property
    def ids(self) -> np.ndarray:
        """int64 ids of the request."""
        return _ids(self.task.forget_ids)


@dataclass(frozen=True)
class Evaluate:
    """An evaluation point: one row per (method, seed), with θ_o's and the oracle's rows beside them.

    Attributes:
        task: what metrics see (D_f = everything removed so far in this branch; D_r = what is kept; the test set of
            what was learned).
        dims: the row dimensions this point adds (``{"request": 2}``, ``{"step": 3}``); empty for a plain scenario.
        references: extra references handed to metrics (e.g. the corrective manipulation).
        label: human-readable name of the point (``request 2``, ``p=25 %``).
    """

    task: Any
    dims: Mapping[str, Any] = field(default_factory=dict)
    references: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def tag(self) -> str:
        """File-name part of the point (``req2``, ``p25``, ``step3``; ``""`` without dimensions)."""
        return point_tag(self.dims)


Operation = Learn | Forget | Evaluate


@dataclass(frozen=True)
class Branch:
    """A sequence of operations (one model history); a plan has one branch per independent history (corrective: one
    per identified fraction, all sharing θ_o).

    Raises (on construction):
        DataError: the branch forgets ids it has not learned, learns ids twice, evaluates before learning, or has an
            empty operation (the message names the position).
    """

    ops: tuple[Operation, ...]

    def __post_init__(self) -> None:
        learned: set[int] = set()
        removed: set[int] = set()
        for i, op in enumerate(self.ops):
            where = f"operation {i} ({type(op).__name__} {getattr(op, 'name', getattr(op, 'label', ''))})"
            if isinstance(op, Learn):
                ids = op.ids
                if len(ids) == 0:
                    raise DataError(f"{where} learns no samples; every learned task needs at least one sample")
                again = learned.intersection(ids.tolist())
                if again:
                    raise DataError(f"{where} learns ids that an earlier operation already learned (e.g. "
                                    f"{sorted(again)[:5]}); each sample is learned once per schedule")
                learned.update(ids.tolist())
            elif isinstance(op, Forget):
                ids = op.ids
                if len(ids) == 0:
                    raise DataError(f"{where} forgets no samples; a deletion request needs at least one")
                unknown = set(ids.tolist()) - learned
                if unknown:
                    raise DataError(f"{where} forgets ids that were never learned before it (e.g. "
                                    f"{sorted(unknown)[:5]}); a request can only name learned samples")
                gone = removed.intersection(ids.tolist())
                if gone:
                    raise DataError(f"{where} forgets ids an earlier request already removed (e.g. "
                                    f"{sorted(gone)[:5]}); each sample is forgotten once")
                removed.update(ids.tolist())
            elif isinstance(op, Evaluate):
                if not learned:
                    raise DataError(f"{where} evaluates before anything was learned")
            else:  # pragma: no cover - typing
                raise TypeError(f"unknown operation {op!r}")

    @property
    def points(self) -> list[int]:
        """Positions of the Evaluate operations."""
        return [i for i, op in enumerate(self.ops) if isinstance(op, Evaluate)]

    def learned_before(self, position: int) -> list[Learn]:
        """The Learn operations before ``position``, in order (θ_o's lineage at that point)."""
        return [op for op in self.ops[:position] if isinstance(op, Learn)]

    def removed_before(self, position: int) -> np.ndarray:
        """Sorted int64 ids forgotten by the Forget operations before ``position``."""
        parts = [op.ids for op in self.ops[:position] if isinstance(op, Forget)]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def oracle_learning(self, position: int) -> list[tuple[Learn, np.ndarray]]:
        """The oracle's training at ``position``: each earlier Learn with the ids it keeps (learned and not forgotten
        before ``position``); Learns that keep nothing are left out."""
        removed = self.removed_before(position)
        out = []
        for op in self.learned_before(position):
            keep = np.setdiff1d(op.ids, removed)
            if len(keep):
                out.append((op, keep))
        return out

    @property
    def first_forget(self) -> int | None:
        """Position of the first Forget (None: the branch never forgets)."""
        return next((i for i, op in enumerate(self.ops) if isinstance(op, Forget)), None)


def single_branch(learn_task: Any, forget_task: Any, eval_task: Any | None = None, *,
                  dims: Mapping[str, Any] | None = None, references: Mapping[str, Any] | None = None,
                  label: str = "") -> Branch:
    """``[Learn(D), Forget(D_f), Evaluate]``: the plan of a plain scenario (one point without dimensions)."""
    ev = eval_task if eval_task is not None else forget_task
    return Branch((Learn(learn_task), Forget(forget_task), Evaluate(ev, dict(dims or {}), dict(references or {}),
                                                                    label)))


def sequential_branch(learn_task: Any, pairs: Sequence[tuple[Any, Any]], dim: str = "request") -> Branch:
    """``[Learn(D), Forget(R_0), Evaluate(dim=0), Forget(R_1), Evaluate(dim=1), …]`` from (unlearn task, evaluation
    task) pairs, one per request."""
    ops: list[Operation] = [Learn(learn_task)]
    for i, (unl, ev) in enumerate(pairs):
        ops += [Forget(unl, f"{dim} {i}"), Evaluate(ev, {dim: i}, {}, f"{dim} {i}")]
    return Branch(tuple(ops))


def plan_from_stages(learn_task: Any, stages: Sequence[Any]) -> list[Branch]:
    """A plan from :class:`unlearnkit.data.scenarios.Stage` lists: chained stages (sequential requests) form one
    branch; independent stages (corrective p, scalability sizes) one branch each, sharing ``Learn(learn_task)``."""
    if stages and all(st.chained for st in stages):
        ops: list[Operation] = [Learn(learn_task)]
        for st in stages:
            label = _stage_label(st)
            ops += [Forget(st.task, label), Evaluate(st.evaluation, dict(st.key), dict(st.references), label)]
        return [Branch(tuple(ops))]
    return [single_branch(learn_task, st.task, st.evaluation, dims=st.key, references=st.references,
                          label=_stage_label(st)) for st in stages]


def _stage_label(stage: Any) -> str:
    return stage.label if stage.key else ""


__all__ = ["Branch", "Evaluate", "Forget", "Learn", "Operation", "plan_from_stages", "sequential_branch",
           "single_branch"]

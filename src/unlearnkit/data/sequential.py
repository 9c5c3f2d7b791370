"""Sequential deletion requests: k requests removed one after another from the same training set.

Request i (0-based) removes the ids R_i. The method's input for request i is its own output of request i − 1 (θ_o for
request 0); it sees forget set R_i and retain set D_r^i = D \\ (R_0 ∪ … ∪ R_i). After every request the model is
evaluated on the *cumulative* forget set R_0 ∪ … ∪ R_i (everything removed so far must look forgotten), against the
oracle θ_r^i trained from scratch on D_r^i only. The runner drives this (one stage per request, see
:func:`unlearnkit.data.scenarios.build_stages`); this module draws the requests and builds the per-request tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unlearnkit.config.schema import RequestSpec, ScenarioConfig
from unlearnkit.data.base import LoadedData, SampleSet
from unlearnkit.data.scenarios import Task, check_split, ids_digest
from unlearnkit.errors import DataError


def request_specs(scenario: ScenarioConfig) -> list[RequestSpec]:
    """The requests of a ``sequential`` scenario as a list (``requests: k`` → k copies of fraction/count)."""
    r = scenario.requests
    if isinstance(r, int):
        return [RequestSpec(fraction=scenario.fraction, count=scenario.count) for _ in range(r)]
    return list(r or [])


def draw_requests(train: SampleSet, specs: Sequence[RequestSpec], seed: int = 0) -> list[np.ndarray]:
    """Resolve request specs to disjoint int64 id arrays (sorted), in request order.

    ``fraction``/``count``: drawn uniformly (``np.random.default_rng([seed, i])``) among the samples neither removed by
    an earlier request nor named by an ``ids`` request of the sequence; ``fraction`` is a share of |D|.
    ``classes``: every training sample of those classes not removed earlier. ``ids``: exactly those ids.

    Raises:
        DataError: an id not in D, a class without remaining samples, a request larger than what remains, an
            ``ids`` request naming a sample an earlier request already removed, or nothing left for D_r.
    """
    n = len(train)
    named = np.unique(np.concatenate([np.asarray(q.ids, dtype=np.int64) for q in specs if q.ids is not None]
                                     or [np.zeros(0, dtype=np.int64)]))
    if len(named):
        train.select_ids(named)  # DataError naming unknown ids
    present = sorted(set(train.labels.tolist()))
    removed = np.zeros(n, dtype=bool)  # by position in train
    out: list[np.ndarray] = []
    for i, q in enumerate(specs):
        if q.ids is not None:
            mask = np.isin(train.ids, np.asarray(q.ids, dtype=np.int64))
            again = train.ids[mask & removed]
            if len(again):
                raise DataError(f"request {i} names ids an earlier request already removed (e.g. "
                                f"{sorted(again.tolist())[:5]}); each sample can be deleted once")
        elif q.classes is not None:
            bad = [c for c in q.classes if c not in present]
            if bad:
                raise DataError(f"request {i}: class(es) {bad} are not in the training data; classes present: "
                                f"{present}")
            mask = np.isin(train.labels, q.classes) & ~removed
            if not mask.any():
                raise DataError(f"request {i}: no training sample of class(es) {q.classes} is left (earlier "
                                "requests removed them all); drop this request")
        else:
            pool = np.flatnonzero(~removed & ~np.isin(train.ids, named))
            k = q.count if q.count is not None else int(round(q.fraction * n))
            if not 1 <= k <= len(pool):
                raise DataError(f"request {i} ({q.fraction or q.count}) selects {k} samples but {len(pool)} are "
                                f"left to draw from (of {n}); it must select between 1 and {len(pool)}")
            mask = np.zeros(n, dtype=bool)
            mask[np.random.default_rng([seed, i]).choice(pool, size=k, replace=False)] = True
        removed |= mask
        out.append(np.sort(train.ids[mask]).astype(np.int64))
    if removed.all():
        raise DataError(f"the {len(specs)} requests remove all {n} training samples; leave some for the retain set")
    return out


def request_tasks(data: LoadedData, requests: Sequence[np.ndarray], *,
                  record: dict | None = None,
                  classes: Sequence[Sequence[int] | None] | None = None) -> list[tuple[Task, Task]]:
    """For each request i: (unlearn task, evaluation task).

    The unlearn task has D = D \\ (R_0 ∪ … ∪ R_{i−1}), D_f = R_i, D_r = D_r^i; the evaluation task has D = the
    original training set, D_f = R_0 ∪ … ∪ R_i (cumulative), the same D_r^i. Scenario records carry ``request``,
    ``n_requests``, ``n_removed`` (|R_0 ∪ … ∪ R_i|) and ``removed_ids_sha256``; ``record`` adds fields (kind, seed).

    ``classes[i]``: the classes request i removes whole (a ``classes`` request), else None. Once a class is gone, TA
    is measured on the test samples of the remaining classes and the forgotten classes' test samples form
    ``test_forgotten`` (as in a class scenario), from that request on.

    Raises:
        DataError: overlapping requests, ids outside D, or an empty D_f / D_r.
    """
    train = data.train
    out: list[tuple[Task, Task]] = []
    removed = np.zeros(0, dtype=np.int64)
    gone: list[int] = []
    for i, r in enumerate(requests):
        r = np.asarray(r, dtype=np.int64)
        again = np.intersect1d(removed, r)
        if len(again):
            raise DataError(f"request {i} repeats ids of an earlier request (e.g. {again[:5].tolist()})")
        cur = train.exclude_ids(removed, "train")
        forget = cur.select_ids(r, "forget")
        retain = cur.exclude_ids(r, "retain")
        check_split(cur, forget, retain, data.test)
        removed = np.union1d(removed, r)
        gone += [int(c) for c in ((classes[i] if classes is not None else None) or []) if int(c) not in gone]
        test_forgotten = data.test.take(np.isin(data.test.labels, gone), "test_forgotten") if gone else None
        rec = {"kind": "sequential", **(record or {}), "request": i, "n_requests": len(requests),
               "n_request": len(forget), "n_removed": len(removed), "n_train": len(train), "n_forget": len(forget),
               "n_retain": len(retain), "n_test": len(data.test), "forget_ids_sha256": ids_digest(forget.ids),
               "removed_ids_sha256": ids_digest(removed)}
        if gone:
            rec["classes_removed"] = sorted(gone)
        unl = Task(data.name, cur, forget, retain, data.test, data.num_classes, rec, test_forgotten)
        cum = train.select_ids(removed, "forget")
        ev = Task(data.name, train, cum, retain, data.test, data.num_classes,
                  {**rec, "n_forget": len(cum), "forget_ids_sha256": ids_digest(cum.ids)}, test_forgotten)
        out.append((unl, ev))
    return out


__all__ = ["draw_requests", "request_specs", "request_tasks"]

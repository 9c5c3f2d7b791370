"""Tuning tasks: the forget sets ``unlearnkit tune`` optimises on, disjoint from the evaluation D_f.

Hyperparameters chosen on the evaluation forget set would report an optimistic gap (the selection is fitted to the
very samples the table measures). A tuning task keeps D (so θ_o is the evaluation's model, trained once) and draws
another deletion request of the same kind and size, **disjoint from the evaluation D_f**, with its own seed:

==========================  ==========================================================================================
classifier random / ids     |D_f| samples of D \\ D_f (uniform, seeded); ``ids`` requests are replaced by a random draw
classifier class / subclass as many other classes (not forgotten in the evaluation), drawn at random
llm (TOFU-style)            as many other persons of D_r, outside the retain evaluation set (the holdout is not in D)
graph                       |D_f| other edges / nodes of D (random, or the next highest-degree ones if targeted)
recsys                      as many other users / items (random or next most popular), or |D_f| other interactions
==========================  ==========================================================================================

The tuning oracle is trained on D \\ D_f(tune), cached by lineage like every oracle. The evaluation's D_f stays in
the tuning task's D_r: a tuned method is asked to *keep* it, never to forget it. Each function returns a task of the
track's own type with a ``scenario["tuning"]`` record (the draw seed, both forget sets' digests) and raises
:class:`~unlearnkit.errors.ConfigError` when no disjoint set can be drawn, saying what to do.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from unlearnkit.data.scenarios import ids_digest
from unlearnkit.errors import ConfigError

#: scenario kinds whose plan is not one learn → forget → evaluate: tuned on the plain scenario of the same data
_STAGED = ("sequential", "corrective", "continual", "scalability")


def _record(task: Any, seed: int, forget_ids: np.ndarray, how: str) -> dict[str, Any]:
    return {"seed": int(seed), "how": how, "forget_ids_sha256": ids_digest(forget_ids),
            "evaluation_forget_ids_sha256": ids_digest(np.asarray(task.forget_ids, dtype=np.int64))}


def _refuse(what: str, fix: str) -> ConfigError:
    return ConfigError(f"unlearnkit tune cannot draw a tuning forget set disjoint from the evaluation one: {what}; "
                       f"{fix}")


def classifier_tuning_task(task: Any, seed: int) -> Any:
    """A :class:`~unlearnkit.data.scenarios.Task` with D = ``task.train`` and a forget set disjoint from
    ``task.forget``: random / ids → |D_f| samples of D_r drawn with ``seed``; class / subclass → as many other
    classes, drawn with ``seed`` among the classes not forgotten.

    Raises:
        ConfigError: a staged scenario, D_r smaller than |D_f| + 1, or fewer than |classes| + 1 other classes.
    """
    from unlearnkit.data.scenarios import Task, check_split

    sc = dict(task.scenario)
    kind = sc.get("kind")
    train = task.train
    rng = np.random.default_rng(seed)
    test_forgotten = None
    if kind in ("random", "ids"):
        pool = np.flatnonzero(~np.isin(train.ids, task.forget.ids))
        k = len(task.forget)
        if len(pool) < k + 1:
            raise _refuse(f"the evaluation forgets {k} of {len(train)} samples, so D \\ D_f has only {len(pool)}",
                          "forget at most half of D (scenario.fraction < 0.5) to tune")
        forget = train.take(np.sort(rng.choice(pool, size=k, replace=False)), "forget")
        how = f"{k} samples of D \\ D_f drawn uniformly" + (" (the evaluation's ids replaced by a random draw of "
                                                             "the same size)" if kind == "ids" else "")
        extra: dict[str, Any] = {}
    elif kind in ("class", "subclass"):
        gone = [int(c) for c in sc.get("classes", [])]
        others = sorted(int(c) for c in set(train.labels.tolist()) if int(c) not in gone)
        if len(others) < len(gone) + 1:
            raise _refuse(f"the evaluation forgets classes {gone} and only {others} remain",
                          "tuning needs as many other classes to forget plus one to keep; tune on a data set with "
                          "more classes or a random scenario")
        chosen = sorted(int(c) for c in rng.choice(others, size=len(gone), replace=False))
        forget = train.take(np.isin(train.labels, chosen), "forget")
        if kind == "class":
            test_forgotten = task.test.take(np.isin(task.test.labels, chosen), "test_forgotten")
        how = f"class(es) {chosen} instead of {gone}"
        extra = {"classes": chosen}
    else:
        raise _refuse(f"scenario kind '{kind}' has several forget requests or a manipulated D",
                      "tune the plain scenario of the same data (kind: random with the request size, or kind: class) "
                      "and copy the tuned parameters")
    retain = train.exclude_ids(forget.ids, "retain")
    check_split(train, forget, retain, task.test)
    sc.update(extra, n_forget=len(forget), n_retain=len(retain), forget_ids_sha256=ids_digest(forget.ids),
              tuning=_record(task, seed, forget.ids, how))
    return Task(task.name, train, forget, retain, task.test, task.num_classes, sc, test_forgotten)


def text_tuning_task(task: Any, seed: int) -> Any:
    """A TOFU-style :class:`~unlearnkit.data.text.qa.TextTask` forgetting as many other persons as the evaluation,
    drawn with ``seed`` among the persons of D_r outside the retain evaluation set; its ``forget`` evaluation set is
    their items.

    Raises:
        ConfigError: MUSE (its evaluation material is written for its own forget corpus), a forget set without
            persons, too few other persons, or tuning items without the perturbed answers the evaluation items have.
    """
    from unlearnkit.data.text.qa import check_split

    sc = dict(task.scenario)
    if sc.get("source") == "muse" or str(task.name).startswith("muse") or sc.get("kind") in _STAGED:
        raise _refuse("MUSE's evaluation material (VerbMem prompts, KnowMem QA, PrivLeak pools) is written for its "
                      "own forget corpus and staged LLM scenarios forget several requests",
                      "tune on a TOFU-style config of the same model (llm.data.source: synthetic or tofu, "
                      "scenario kind single) and copy the tuned parameters")
    gone = sorted({it.subject for it in task.forget if it.subject})
    if not gone:
        raise _refuse("the forget set has no persons (subjects)", "tuning draws other persons; use TOFU-style data")
    protected = set(gone)
    for name in ("retain", "holdout"):
        if name in task.eval_sets:
            protected |= {it.subject for it in task.eval_sets[name] if it.subject}
    others: list[str] = []
    for it in task.retain:
        if it.subject and it.subject not in protected and it.subject not in others:
            others.append(it.subject)
    if len(others) < len(gone) + 1:
        raise _refuse(f"the evaluation forgets {len(gone)} person(s) and D_r has {len(others)} other(s) outside the "
                      "retain evaluation set", "use more persons (llm.data.n_persons) or a smaller forget split")
    rng = np.random.default_rng(seed)
    chosen = sorted(others[i] for i in rng.choice(len(others), size=len(gone), replace=False))
    ids = np.array([it.id for it in task.full if it.subject in set(chosen)], dtype=np.int64)
    forget = task.full.select_ids(ids, "forget")
    retain = task.full.exclude_ids(ids, "retain")
    check_split(task.full, forget, retain, f"{task.name} tuning split")
    ev = task.eval_sets.get("forget")
    if ev is not None and any(it.perturbed_answers for it in ev) and not all(it.perturbed_answers for it in forget):
        raise _refuse("the other persons' items have no perturbed answers (TOFU ships them only for its forget "
                      "splits and retain_perturbed), so truth ratios and forget quality cannot be computed on them",
                      "tune on the synthetic TOFU-style data (llm.data.source: synthetic) or a smaller forget split "
                      "of the same data whose persons have them")
    sets = {**task.eval_sets, "forget": forget}
    sc.update(n_forget=len(forget), n_retain=len(retain), subjects_forget=chosen,
              forget_ids_sha256=ids_digest(forget.ids),
              tuning=_record(task, seed, forget.ids, f"persons {chosen} instead of {gone}"))
    return replace(task, forget=forget, retain=retain, eval_sets=sets, scenario=sc)


def graph_tuning_task(task: Any, seed: int) -> Any:
    """A :class:`~unlearnkit.data.graph.GraphTask` deleting |D_f| other edges / nodes of D: drawn with ``seed``
    (random scenarios) or the next highest-degree ones (targeted).

    Raises:
        ConfigError: D \\ D_f has fewer than |D_f| + 1 elements.
    """
    from unlearnkit.data.graph import _draw, check_graph_task

    k = len(task.forget)
    rest = np.setdiff1d(task.candidates, task.forget)
    if len(rest) < k + 1:
        raise _refuse(f"the evaluation deletes {k} of {len(task.candidates)} {task.target}s",
                      "delete at most half of them (graph.deletion.fraction < 0.5) to tune")
    selection = task.scenario.get("selection", "random")
    d = task.data
    deg = d.degree(task.train_edge_ids)
    if task.target == "edge":
        e = d.edges[rest]
        score = np.maximum(deg[e[:, 0]], deg[e[:, 1]]).astype(float)
    else:
        score = deg[rest].astype(float)
    forget = _draw(rest, k, selection, score, np.random.default_rng(seed)).astype(np.int64)
    sc = {**task.scenario, "n_forget": int(k),
          "tuning": _record(task, seed, forget, f"{k} other {task.target}s ({selection})")}
    out = replace(task, forget=forget, scenario=sc)
    out.scenario["n_retain"] = int(len(out.retain_ids))
    check_graph_task(out)
    return out


def recsys_tuning_task(task: Any, seed: int) -> Any:
    """A :class:`~unlearnkit.data.recsys.RecsysTask` forgetting as many other users / items (random, or the next
    most popular), or |D_f| other training interactions (random / ids), drawn with ``seed``.

    Raises:
        ConfigError: too few other users / items / interactions.
    """
    from unlearnkit.data.recsys import RecsysTask, check_recsys_task

    sc = dict(task.scenario)
    kind, selection = sc.get("kind"), sc.get("selection", "random")
    d = task.data
    rng = np.random.default_rng(seed)
    train_pos, test_pos = task.train_pos, task.test_pos
    f_users = f_items = np.zeros(0, dtype=np.int64)
    test_keep = np.ones(len(test_pos), dtype=bool)
    if kind in ("users", "items"):
        col = d.users if kind == "users" else d.items
        gone = task.forgotten_users if kind == "users" else task.forgotten_items
        cnt = np.bincount(col[train_pos], minlength=d.n_users if kind == "users" else d.n_items)
        cands = np.setdiff1d(np.flatnonzero(cnt), gone)
        n = len(gone)
        if len(cands) < n + 1:
            raise _refuse(f"the evaluation forgets {n} {kind} and {len(cands)} others have training interactions",
                          f"forget fewer {kind} (recsys.scenario.fraction) to tune")
        if selection == "popular":
            chosen = np.sort(cands[np.lexsort((cands, -cnt[cands]))[:n]])
        else:
            chosen = np.sort(rng.choice(cands, size=n, replace=False))
        fmask = np.isin(col[train_pos], chosen)
        test_keep = ~np.isin(col[test_pos], chosen)
        if kind == "users":
            f_users = chosen
        else:
            f_items = chosen
        how = f"{n} other {kind} ({selection})"
    elif kind in ("random", "ids"):
        n = len(task.forget_pos)
        pool = np.flatnonzero(~np.isin(train_pos, task.forget_pos))
        if len(pool) < n + 1:
            raise _refuse(f"the evaluation forgets {n} of {len(train_pos)} interactions",
                          "forget at most half of D to tune")
        fmask = np.zeros(len(train_pos), dtype=bool)
        fmask[rng.choice(pool, size=n, replace=False)] = True
        how = f"{n} other interactions drawn uniformly"
    else:
        raise _refuse(f"recsys scenario kind '{kind}' is not known to the tuner", "use users, items, random or ids")
    out = RecsysTask(task.name, d, train_pos, test_pos, train_pos[fmask], train_pos[~fmask], test_pos[test_keep],
                     f_users, f_items)
    forget_ids = d.ids[train_pos[fmask]]
    sc.update(n_forget=int(fmask.sum()), n_retain=int((~fmask).sum()), n_test=int(test_keep.sum()),
              forgotten_users=int(len(f_users)), forgotten_items=int(len(f_items)),
              tuning=_record(task, seed, forget_ids, how))
    out.scenario = sc
    check_recsys_task(out)
    return out


__all__ = ["classifier_tuning_task", "graph_tuning_task", "recsys_tuning_task", "text_tuning_task"]

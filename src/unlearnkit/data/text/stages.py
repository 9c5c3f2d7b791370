"""Multi-stage LLM scenarios of MUSE (Shi et al. 2024, arXiv:2407.06460, §5 "scalability" and "sustainability").

* **Sustainability** (sequential requests): D_f is split into k disjoint *folds* R_0 … R_{k−1} (MUSE splits the forget
  corpus into 4 folds and unlearns them one after another). Request i: the method's input is its own output of request
  i − 1 (θ_o for request 0); it unlearns D_f^i = R_i with retain set D_r^i = D \\ (R_0 ∪ … ∪ R_i) (folds not yet
  requested are still retained); the oracle θ_r^i is trained on D_r^i only; metrics see the *cumulative* forget set
  R_0 ∪ … ∪ R_i.
* **Scalability** (forget-set sizes): stage j forgets the first ⌈f_j · |D_f|⌉ items of D_f (nested prefixes), each an
  independent task from θ_o with its own oracle trained on D \\ D_f^j.

Folds and prefixes follow D_f's order, which is person-major for TOFU-style data (synthetic, TOFU) and corpus order
for MUSE, so a fold holds whole persons / contiguous corpus chunks whenever the sizes divide evenly.

Evaluation sets: for TOFU-style data the ``forget`` evaluation set (items with paraphrased / perturbed answers, the
same ids as D_f) is restricted to the stage's (cumulative) forget ids; ``retain``, ``real_authors``,
``world_facts`` and ``holdout`` are unchanged (they never intersect D_f). MUSE's evaluation material (VerbMem
prompts, KnowMem QA, PrivLeak pools) is not aligned with corpus chunks, so it is kept whole at every stage, as in
MUSE's own sustainability / scalability plots (metrics on the full forget evaluation set); the scenario record says
so (``forget_eval: "full"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from unlearnkit.data.text.qa import QASet, TextTask, check_split
from unlearnkit.errors import DataError


def _digest(ids: np.ndarray) -> str:
    from unlearnkit.data.scenarios import ids_digest

    return ids_digest(np.asarray(ids, dtype=np.int64))


def _stage_task(task: TextTask, full: QASet, forget_ids: np.ndarray, retain: QASet, eval_forget_ids: np.ndarray,
                record: dict[str, Any]) -> TextTask:
    """A TextTask with D = ``full``, D_f = ``forget_ids`` (in D's order), D_r = ``retain``; the ``forget``
    evaluation set cut to ``eval_forget_ids`` when it is aligned with D_f (TOFU-style)."""
    forget = full.select_ids(forget_ids, "forget")
    check_split(full, forget, retain, f"{task.name} stage {record}")
    sets = dict(task.eval_sets)
    aligned = "forget" in sets and len(np.intersect1d(sets["forget"].ids, task.forget.ids)) > 0
    if aligned:
        ev = sets["forget"]
        sets["forget"] = ev.select_ids(np.intersect1d(ev.ids, eval_forget_ids), "forget")
    scenario = {**task.scenario, **record, "n_forget": len(forget), "n_retain": len(retain),
                "forget_ids_sha256": _digest(forget.ids), "forget_eval": "stage" if aligned else "full"}
    return replace(task, full=full, forget=forget, retain=retain.renamed("retain"), eval_sets=sets,
                   scenario=scenario)


def split_folds(forget: QASet, k: int) -> list[np.ndarray]:
    """D_f's ids in ``k`` contiguous, disjoint, near-equal folds (``np.array_split`` of D_f's order).

    Raises:
        DataError: k < 2, or D_f has fewer than k items.
    """
    if k < 2:
        raise DataError(f"a sequential scenario needs at least 2 requests, got {k}")
    if len(forget) < k:
        raise DataError(f"cannot split the forget set ({len(forget)} items) into {k} requests; use at most "
                        f"{len(forget)} requests or a larger forget split")
    return [np.asarray(f, dtype=np.int64) for f in np.array_split(forget.ids, k)]


def sequential_text_tasks(task: TextTask, requests: int) -> list[tuple[TextTask, TextTask]]:
    """For each request i: (unlearn task, evaluation task) of MUSE's sustainability protocol.

    Unlearn task: D = D \\ (R_0 ∪ … ∪ R_{i−1}), D_f = R_i, D_r = D \\ (R_0 ∪ … ∪ R_i). Evaluation task: D = the original
    D, D_f = R_0 ∪ … ∪ R_i (cumulative), the same D_r. Records carry ``kind: sequential``, ``protocol`` (the base
    kind, e.g. ``tofu``), ``request``, ``n_requests``, ``n_request``, ``n_removed`` and ``removed_ids_sha256``.

    Raises:
        DataError: fewer forget items than requests, or a request that leaves D_r empty.
    """
    folds = split_folds(task.forget, requests)
    out: list[tuple[TextTask, TextTask]] = []
    removed = np.zeros(0, dtype=np.int64)
    base = {"kind": "sequential", "protocol": task.scenario.get("protocol", task.scenario.get("kind")), "n_requests": requests}
    for i, fold in enumerate(folds):
        cur = task.full.exclude_ids(removed, "full")
        cum = np.union1d(removed, fold)
        retain = task.full.exclude_ids(cum, "retain")
        if len(retain) == 0:
            raise DataError(f"request {i} leaves no retain data; forget fewer items")
        rec = {**base, "request": i, "n_request": len(fold), "n_removed": len(cum),
               "removed_ids_sha256": _digest(cum)}
        unl = _stage_task(task, cur, fold, retain, cum, rec)
        ev = _stage_task(task, task.full, cum, retain, cum, rec)
        out.append((unl, ev))
        removed = cum
    return out


def scalability_text_tasks(task: TextTask, fractions: Sequence[float]) -> list[TextTask]:
    """One independent task per forget fraction f (MUSE scalability): D_f^f = the first ⌈f·|D_f|⌉ items of D_f
    (nested), D_r^f = D \\ D_f^f. Records carry ``kind: scalability``, ``protocol``, ``forget_fraction`` and
    ``forget_size`` (= |D_f^f|, items).

    Raises:
        DataError: a fraction outside (0, 1], fractions not strictly increasing, or two fractions giving the same
            number of items (identical stages).
    """
    fr = [float(f) for f in fractions]
    if not fr or any(not 0.0 < f <= 1.0 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
        raise DataError(f"forget_fractions must be strictly increasing values in (0, 1], got {fr}")
    n = len(task.forget)
    sizes = [max(1, math.ceil(f * n - 1e-9)) for f in fr]
    if len(set(sizes)) != len(sizes):
        raise DataError(f"forget_fractions {fr} of the {n} forget items give repeated sizes {sizes}; use fewer or "
                        "more distant fractions, or a larger forget split")
    out = []
    for f, size in zip(fr, sizes):
        ids = task.forget.ids[:size]
        retain = task.full.exclude_ids(ids, "retain")
        rec = {"kind": "scalability", "protocol": task.scenario.get("protocol", task.scenario.get("kind")), "forget_fractions": fr,
               "forget_fraction": f, "forget_size": size}
        out.append(_stage_task(task, task.full, ids, retain, ids, rec))
    return out


__all__ = ["scalability_text_tasks", "sequential_text_tasks", "split_folds"]

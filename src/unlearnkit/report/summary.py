"""Read a run's ``results.jsonl`` and aggregate it per method over seeds.

Every number here is a *view* of the result rows (DESIGN §10.7): nothing is recomputed from models.

Units and directions of the metrics aggregated (keys of a row's ``metrics``):

- ``unlearn_acc`` (UA, %): 100 − accuracy on the forget set D_f. Closer to the oracle is better.
- ``retain_acc`` (RA, %): accuracy on the retain set D_r. Higher is better; ideally the oracle's.
- ``test_acc`` (TA, %): accuracy on the test set D_t. Higher is better; ideally the oracle's.
- ``mia_efficacy`` (MIA-Eff., %): share of D_f predicted as non-members by a membership-inference attack.
  Closer to the oracle is better.
- ``unlearn_seconds`` (RTE, seconds): wall-clock time of the unlearning step (the oracle's: retraining).
  Lower is better.
- ``avg_gap`` (percentage points): per-seed mean |metric − oracle metric| over UA, RA, TA, MIA-Eff. Lower is better.
- ``forgotten_test_acc`` (%, class scenarios): test accuracy on the forgotten classes. Closer to the oracle is better.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unlearnkit.results import (  # noqa: F401 - re-exported: the report layer's readers are the results module's
    CONFIG_FILE,
    FAILED_STATUSES,
    RESULT_SCHEMA,
    RESULTS_FILE,
    ROW_DIMENSIONS,
    ReportWarning,
    as_number,
    final_stage_rows,
    latest_rows,
    load_rows,
    read_results,
    row_role,
    row_status,
    superseded_rows,
)

#: Metrics whose mean |Δ| to the oracle is the Avg. Gap (same keys as ``unlearnkit.metrics.gap.AVG_GAP_KEYS``;
#: repeated here so that building a report does not import torch).
AVG_GAP_KEYS: tuple[str, ...] = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")

@dataclass
class SummaryRow:
    """One method's results aggregated over its successful seeds.

    Attributes:
        method: the row label (unique per config; the oracle's is ``"retrain"``).
        method_name: the registered method name (several labels may share one, e.g. two learning rates).
        is_oracle: True for the retrained model θ_r, the reference of every gap.
        role: ``oracle`` (θ_r), ``original`` (θ_o, the model before unlearning) or ``method``.
        verdict: the method's verdict over seeds (:mod:`unlearnkit.verdict`: its means against θ_r's and θ_o's
            means, tolerance from the seed spread; when the means read ``ok`` but most seeds' own verdicts are not,
            the most frequent of those); ``reference`` for θ_r; "" when the rows carry no verdict spec.
        verdict_reasons: why. seed_verdicts: the per-seed rows' verdicts, counted.
        n_seeds: number of seeds whose (latest) row has ``status == "ok"``; means and stds are over these.
        n_failed: number of seeds whose latest row has status ``"error"`` or ``"diverged"``.
        status: ``"ok"`` (every seed ok), ``"partial"`` (some ok, some failed), ``"diverged"`` (every seed
            diverged) or ``"error"`` (no seed ok, at least one error).
        mean: metric key → mean over the ok seeds, in the metric's unit (%, seconds); NaN when no seed has a
            finite value.
        std: metric key → sample standard deviation (ddof=1) over the ok seeds; 0.0 with one value, NaN with none.
        n: metric key → how many ok seeds had a finite value for it (≤ n_seeds; less when a metric was NaN/absent).
        errors: distinct error messages of the failed seeds, in file order.
        gap_of_means: Avg. Gap (percentage points) of the *mean* metrics against the oracle's mean metrics
            (see :func:`avg_gap_of_means`); NaN when there is no oracle row. Lower is better; the oracle's is 0.
        seeds: the ok seeds, in file order.
        failed_seeds: the failed seeds, in file order.
        params: the method's parameters (from its first row).
        gap_n: how many of the 4 Avg. Gap metrics entered ``gap_of_means`` (finite on both sides).
        gap_n_oracle: how many of them the oracle has (finite); ``gap_n < gap_n_oracle`` means the gap covers
            fewer metrics than it should (a metric was missing/NaN for this method) and is not comparable.
    """

    method: str
    method_name: str
    is_oracle: bool
    n_seeds: int
    n_failed: int
    status: str
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    gap_of_means: float = float("nan")
    n: dict[str, int] = field(default_factory=dict)
    seeds: list[Any] = field(default_factory=list)
    failed_seeds: list[Any] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    gap_n: int = 0
    gap_n_oracle: int = 0
    role: str = "method"
    verdict: str = ""
    verdict_reasons: list[str] = field(default_factory=list)
    seed_verdicts: dict[str, int] = field(default_factory=dict)

    @property
    def n_total(self) -> int:
        """Seeds with a row: ``n_seeds + n_failed``."""
        return self.n_seeds + self.n_failed


# ---------------------------------------------------------------------------------------------------- aggregation
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = math.fsum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    var = math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var)


def _gap_diffs(summary_row: SummaryRow, oracle_row: SummaryRow | None) -> list[float]:
    if oracle_row is None:
        return []
    diffs = []
    for k in AVG_GAP_KEYS:
        a = summary_row.mean.get(k, float("nan"))
        b = oracle_row.mean.get(k, float("nan"))
        if not (math.isnan(a) or math.isnan(b)):
            diffs.append(abs(a - b))
    return diffs


def avg_gap_of_means(summary_row: SummaryRow, oracle_row: SummaryRow | None) -> float:
    """Avg. Gap (percentage points) of a method's *mean* metrics against the oracle's mean metrics.

    ``(1/|K|) Σ_k |mean_k − oracle_mean_k|`` over K = {unlearn_acc, retain_acc, test_acc, mia_efficacy}, skipping keys
    absent or NaN on either side (Fan et al., SalUn, ICLR 2024, Table 1 "Avg. Gap"). This differs from the mean of
    per-seed ``avg_gap`` values: |mean Δ| ≤ mean |Δ|. Lower is better; the oracle's own is 0. NaN without an oracle or
    without any common key.
    """
    diffs = _gap_diffs(summary_row, oracle_row)
    return math.fsum(diffs) / len(diffs) if diffs else float("nan")


def summarize(rows: Iterable[Mapping[str, Any]]) -> list[SummaryRow]:
    """Aggregate result rows per method: the oracle first, then methods in order of first appearance.

    Rows are first reduced with :func:`latest_rows` (last row per (method, seed) wins) and, in runs with stages
    (corrective p, sequential requests), to the last stage (:func:`final_stage_rows`). Means and stds are over the
    ok seeds and ignore non-finite or non-numeric values (counted in ``SummaryRow.n``). ``gap_of_means`` is filled
    with :func:`avg_gap_of_means` against the oracle row (NaN if the run has no ok oracle).
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in final_stage_rows(latest_rows(rows)):
        groups.setdefault((row_role(row), str(row["method"])), []).append(row)

    out: list[SummaryRow] = []
    for (role, method), grp in groups.items():
        is_oracle = role == "oracle"
        ok = [r for r in grp if row_status(r) == "ok"]
        failed = [r for r in grp if row_status(r) != "ok"]
        keys: list[str] = []
        for r in ok:
            metrics = r.get("metrics") or {}
            if isinstance(metrics, Mapping):
                keys.extend(k for k in metrics if k not in keys)
        mean: dict[str, float] = {}
        std: dict[str, float] = {}
        n: dict[str, int] = {}
        for k in keys:
            vals = [as_number((r.get("metrics") or {}).get(k)) for r in ok]
            vals = [v for v in vals if math.isfinite(v)]
            mean[k], std[k] = _mean_std(vals)
            n[k] = len(vals)
        errors: list[str] = []
        for r in failed:
            msg = r.get("error")
            msg = str(msg).strip() if msg else f"status {row_status(r)!r} without an error message"
            if msg not in errors:
                errors.append(msg)
        if not failed:
            status = "ok"
        elif ok:
            status = "partial"
        elif all(row_status(r) == "diverged" for r in failed):
            status = "diverged"
        else:
            status = "error"
        first = grp[0]
        params = first.get("params")
        out.append(
            SummaryRow(
                method=method,
                method_name=str(first.get("method_name") or method),
                is_oracle=is_oracle,
                n_seeds=len(ok),
                n_failed=len(failed),
                status=status,
                mean=mean,
                std=std,
                errors=errors,
                n=n,
                seeds=[r.get("seed") for r in ok],
                failed_seeds=[r.get("seed") for r in failed],
                params=dict(params) if isinstance(params, Mapping) else {},
                role=role,
            )
        )
    # stable: oracle(s) first, then θ_o, the rest keep first-appearance order
    out.sort(key=lambda s: {"oracle": 0, "original": 1}.get(s.role, 2))
    oracle = next((s for s in out if s.is_oracle and s.n_seeds > 0), None)
    for s in out:
        s.gap_of_means = avg_gap_of_means(s, oracle)
        s.gap_n = len(_gap_diffs(s, oracle))
        s.gap_n_oracle = len(_gap_diffs(oracle, oracle)) if oracle is not None else 0
    _summary_verdicts(out, groups)
    return out


def _summary_verdicts(out: list[SummaryRow], groups: Mapping[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Each summary row's verdict over seeds: its means against θ_r's and θ_o's means, with a tolerance per metric
    from the seed spread (:func:`unlearnkit.verdict.seed_tolerance`); failures keep their status."""
    from unlearnkit.verdict import VerdictSpec, judge, seed_tolerance

    spec = next((VerdictSpec.from_json(r.get("verdict_spec")) for grp in groups.values() for r in grp
                 if r.get("verdict_spec")), None)
    oracle = next((s for s in out if s.role == "oracle" and s.n_seeds), None)
    original = next((s for s in out if s.role == "original" and s.n_seeds), None)

    def values(role: str, method: str, key: str) -> list[float]:
        return [as_number((r.get("metrics") or {}).get(key)) for r in groups.get((role, method), [])
                if row_status(r) == "ok"]

    for s in out:
        grp = groups.get((s.role, s.method), [])
        counts: dict[str, int] = {}
        for r in grp:
            v = r.get("verdict") or (row_status(r) if row_status(r) != "ok" else None)
            if v:
                counts[str(v)] = counts.get(str(v), 0) + 1
        s.seed_verdicts = counts
        if s.role == "oracle":
            s.verdict, s.verdict_reasons = ("reference", ["the oracle θ_r"]) if spec is not None else ("", [])
            continue
        if s.n_seeds == 0:
            s.verdict, s.verdict_reasons = s.status, list(s.errors[:1])
            continue
        if spec is None or oracle is None or original is None:
            continue
        ok = [r for r in grp if row_status(r) == "ok"]
        tol = {k: seed_tolerance(spec, k, values("oracle", oracle.method, k), values(s.role, s.method, k),
                                 oracle.mean.get(k, float("nan")))
               for k in (*spec.forget, *spec.utility)}
        same = bool(ok) and all(r.get("checkpoint_sha256") and r.get("checkpoint_sha256") == r.get("original_sha256")
                                for r in ok)
        policy = any(r.get("policy") for r in ok)
        unconverged = next((r.get("notes") for r in ok if "unconverged" == r.get("verdict")), None)
        s.verdict, s.verdict_reasons = judge(s.mean, oracle.mean, original.mean, spec, tolerance=tol,
                                             same_weights_as_original=same, has_policy=policy,
                                             notes=unconverged or {})
        n_judged = sum(counts.values())
        if s.verdict == "ok" and n_judged and 2 * counts.get("ok", 0) < n_judged:
            # means that land near θ_r while most seeds do not (one collapses, one does nothing) are not a good run
            worst = max((v for v in counts if v != "ok"), key=lambda v: (counts[v], v))
            s.verdict_reasons = [f"the means over seeds are near θ_r's, but {n_judged - counts.get('ok', 0)} of "
                                 f"{n_judged} seeds are not ok ({', '.join(f'{v} {c}' for v, c in sorted(counts.items()))})"
                                 ] + list(s.verdict_reasons)
            s.verdict = worst
        if s.n_failed and s.verdict == "ok":
            s.verdict = "partial"


def oracle_of(summary: Sequence[SummaryRow]) -> SummaryRow | None:
    """The oracle's summary row, or None if the run has none."""
    return next((s for s in summary if s.is_oracle), None)


__all__ = [
    "AVG_GAP_KEYS",
    "ReportWarning",
    "SummaryRow",
    "avg_gap_of_means",
    "final_stage_rows",
    "latest_rows",
    "load_rows",
    "read_results",
    "summarize",
    "superseded_rows",
]

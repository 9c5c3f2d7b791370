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

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.errors import DataError

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.resolved.yaml"
RESULT_SCHEMA = "unlearnkit.result/1"

#: Metrics whose mean |Δ| to the oracle is the Avg. Gap (same keys as ``unlearnkit.metrics.gap.AVG_GAP_KEYS``;
#: repeated here so that building a report does not import torch).
AVG_GAP_KEYS: tuple[str, ...] = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")

#: Row statuses that count as failures.
FAILED_STATUSES: tuple[str, ...] = ("error", "diverged")


class ReportWarning(UserWarning):
    """A result row or line was skipped or looks inconsistent; the report is still built from the rest."""


@dataclass
class SummaryRow:
    """One method's results aggregated over its successful seeds.

    Attributes:
        method: the row label (unique per config; the oracle's is ``"retrain"``).
        method_name: the registered method name (several labels may share one, e.g. two learning rates).
        is_oracle: True for the retrained model θ_r, the reference of every gap.
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

    @property
    def n_total(self) -> int:
        """Seeds with a row: ``n_seeds + n_failed``."""
        return self.n_seeds + self.n_failed


# ----------------------------------------------------------------------------------------------------------- reading
def read_results(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """Parse a results.jsonl file: ``(rows in file order, number of skipped lines)``.

    Blank lines are ignored. A line that is not valid JSON (typically the truncated last line of a crashed run), is
    not a JSON object, or has no string ``method`` or no integer ``seed`` is skipped with a :class:`ReportWarning`; it
    never raises for content.

    Raises:
        DataError: the file does not exist or cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as err:
        raise DataError(
            f"no {RESULTS_FILE} at {p}; run `unlearnkit run CONFIG` first, or pass the run directory it created "
            "(runs/<name>-<hash8>/)"
        ) from err
    except OSError as err:
        raise DataError(f"cannot read {p}: {err}; check the path and its permissions") from err
    rows: list[dict[str, Any]] = []
    skipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            skipped += 1
            warnings.warn(
                f"{p}:{lineno}: skipped a line that is not valid JSON ({err.msg}; probably cut off by a crash); "
                "rerun `unlearnkit run` on the same config to redo that (method, seed)",
                ReportWarning,
                stacklevel=3,
            )
            continue
        seed = obj.get("seed") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("method"), str) or not isinstance(seed, int) \
                or isinstance(seed, bool):
            skipped += 1
            warnings.warn(
                f"{p}:{lineno}: skipped a line that is not a result row (expected a JSON object with a 'method' "
                "and an integer 'seed'; damaged?); rerun `unlearnkit run` on the same config to redo that row",
                ReportWarning,
                stacklevel=3,
            )
            continue
        schema = obj.get("schema")
        if schema is not None and schema != RESULT_SCHEMA:
            warnings.warn(
                f"{p}:{lineno}: row has schema {schema!r}, this report reads {RESULT_SCHEMA!r}; "
                "values may be misread",
                ReportWarning,
                stacklevel=3,
            )
        rows.append(obj)
    return rows, skipped


def load_rows(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All result rows of ``run_dir/results.jsonl`` in file order (retried rows included; see :func:`latest_rows`).

    Invalid lines are skipped with a :class:`ReportWarning`. ``run_dir`` may also be the results.jsonl path itself.

    Raises:
        DataError: ``run_dir`` has no results.jsonl ("run `unlearnkit run CONFIG` first").
    """
    p = Path(run_dir)
    path = p if p.is_file() else p / RESULTS_FILE
    rows, _ = read_results(path)
    return rows


#: extra row dimensions of scenarios that produce several rows per (method, seed): corrective (identified fraction
#: p), sequential (request index) and scalability (forget-set size in items, LLM track); part of the row identity so
#: a retry replaces only its own point
ROW_DIMENSIONS: tuple[str, ...] = ("identified_fraction", "request", "forget_size")


def _row_key(row: Mapping[str, Any]) -> tuple[bool, str, str]:
    seed = json.dumps([row.get("seed")] + [row[d] for d in ROW_DIMENSIONS if d in row], sort_keys=True, default=str)
    return bool(row.get("is_oracle", False)), str(row.get("method")), seed


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (oracle?, method, seed): the LAST one in file order wins (a retry replaces an error row).

    The surviving row takes the position of the pair's first appearance, so method order is first-appearance order.
    """
    out: list[dict[str, Any]] = []
    where: dict[tuple[bool, str, str], int] = {}
    for row in rows:
        key = _row_key(row)
        if key in where:
            out[where[key]] = dict(row)
        else:
            where[key] = len(out)
            out.append(dict(row))
    return out


def superseded_rows(rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """For each row in file order: True if a later row has the same (oracle?, method, seed) and replaces it."""
    last: dict[tuple[bool, str, str], int] = {}
    for i, row in enumerate(rows):
        last[_row_key(row)] = i
    return [last[_row_key(row)] != i for i, row in enumerate(rows)]


# ---------------------------------------------------------------------------------------------------- aggregation
def as_number(value: Any) -> float:
    """A metric value as float: NaN for None, bools, strings, and anything non-numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = math.fsum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    var = math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var)


def row_status(row: Mapping[str, Any]) -> str:
    """A row's status: ``"ok"``, ``"error"``, ``"diverged"`` (missing → ``"ok"``; unknown strings are kept)."""
    s = row.get("status", "ok")
    return str(s) if s is not None else "ok"


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


def final_stage_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a staged run's last stage (largest ``identified_fraction`` / ``forget_size``, last ``request``);
    others unchanged.

    Corrective and sequential runs have one row per (method, seed, stage); the summary table shows the final state
    (p = the largest identified fraction, after the last request) and the report's curves show every stage.
    """
    out = [dict(r) for r in rows]
    for d in ROW_DIMENSIONS:
        vals = [as_number(r[d]) for r in out if d in r]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            last = max(vals)
            out = [r for r in out if d not in r or as_number(r[d]) == last]
    return out


def summarize(rows: Iterable[Mapping[str, Any]]) -> list[SummaryRow]:
    """Aggregate result rows per method: the oracle first, then methods in order of first appearance.

    Rows are first reduced with :func:`latest_rows` (last row per (method, seed) wins) and, in runs with stages
    (corrective p, sequential requests), to the last stage (:func:`final_stage_rows`). Means and stds are over the
    ok seeds and ignore non-finite or non-numeric values (counted in ``SummaryRow.n``). ``gap_of_means`` is filled
    with :func:`avg_gap_of_means` against the oracle row (NaN if the run has no ok oracle).
    """
    groups: dict[tuple[bool, str], list[dict[str, Any]]] = {}
    for row in final_stage_rows(latest_rows(rows)):
        groups.setdefault((bool(row.get("is_oracle", False)), str(row["method"])), []).append(row)

    out: list[SummaryRow] = []
    for (is_oracle, method), grp in groups.items():
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
            )
        )
    out.sort(key=lambda s: not s.is_oracle)  # stable: oracle(s) first, the rest keep first-appearance order
    oracle = next((s for s in out if s.is_oracle and s.n_seeds > 0), None)
    for s in out:
        s.gap_of_means = avg_gap_of_means(s, oracle)
        s.gap_n = len(_gap_diffs(s, oracle))
        s.gap_n_oracle = len(_gap_diffs(oracle, oracle)) if oracle is not None else 0
    return out


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

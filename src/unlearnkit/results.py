"""Result rows: their schema, identity, reader and writer — the one module the runner, the metrics that re-read a run
(NeurIPS-2023 score) and the reports share. It sits at the bottom of the import graph (errors and persist only), so
nothing below the report layer ever imports the report layer.

A run's ``results.jsonl`` holds one JSON object per line, appended as rows are produced::

    {"schema": "unlearnkit.result/1", "run": NAME, "config_sha256": HEX, "track": "classifier",
     "method": LABEL, "method_name": NAME, "params": {...}, "seed": 0,
     "role": "method" | "oracle" | "original", "is_oracle": bool,
     "dimensions": ["request"], "request": 2, "point": 2,      # only for runs with several evaluation points
     "status": "ok" | "error" | "diverged", "verdict": "ok" | ..., "error": null | "...",
     "metrics": {KEY: float}, "notes": {...}, "steps": int, "checkpoint_sha256": HEX, ...}

Identity: a row is identified by (method label, seed, its dimension values). A later row with the same identity
replaces an earlier one (a retry after an error), see :func:`latest_rows`. ``dimensions`` names the fields that place
a row in a schedule (e.g. ``request``, ``identified_fraction``, ``forget_size``, ``step``); rows written before this
field existed are read with the legacy dimensions :data:`LEGACY_DIMENSIONS`. ``point`` orders the evaluation points
of a run: the summary table shows the last point (:func:`final_stage_rows`), the report's curves show all.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnkit.errors import DataError
from unlearnkit.persist import append_line

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.resolved.yaml"
RESULT_SCHEMA = "unlearnkit.result/1"
#: label of the oracle θ_r's rows (reserved: no method may use it)
ORACLE_LABEL = "retrain"
#: label of the original model θ_o's rows (reserved: no method may use it)
ORIGINAL_LABEL = "original"
#: row statuses that count as failures
FAILED_STATUSES: tuple[str, ...] = ("error", "diverged")
#: row dimensions of runs written before rows named their own (corrective p, sequential request, LLM forget size)
LEGACY_DIMENSIONS: tuple[str, ...] = ("identified_fraction", "request", "forget_size")
#: every dimension unlearnkit's own schedules write (shown by name in reports); tracks may add others
ROW_DIMENSIONS: tuple[str, ...] = (*LEGACY_DIMENSIONS, "step")


class ReportWarning(UserWarning):
    """A result row or line was skipped or looks inconsistent; the rest is still read."""


# ------------------------------------------------------------------------------------------------------------ identity
def row_dimensions(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The dimension fields of ``row`` (its ``dimensions`` list, or the legacy dimensions it carries)."""
    dims = row.get("dimensions")
    if isinstance(dims, (list, tuple)):
        return tuple(str(d) for d in dims)
    return tuple(d for d in LEGACY_DIMENSIONS if d in row)


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """``(dimension, value)`` pairs of ``row``, in its dimension order: its place in the schedule (``()`` for a plain
    scenario's single point)."""
    return tuple((d, row.get(d)) for d in row_dimensions(row))


def row_id(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The identity of a result row: (role, method label, seed, its dimension values) as a hashable tuple."""
    seed = json.dumps([row.get("seed"), [[d, v] for d, v in row_key(row)]], sort_keys=True, default=str)
    return row_role(row), str(row.get("method")), seed


def point_tag(key: Mapping[str, Any]) -> str:
    """File-name part of an evaluation point (``""`` for a plain scenario's single point): ``p25`` (identified
    fraction 0.25), ``req2`` (request 2), ``n40`` (forget size 40), ``step3``; other dimensions ``<name><value>``,
    joined by ``-``. Per-sample files and checkpoints of a row are ``<label>-seed<s>[-<tag>]``."""
    parts = []
    for d, v in key.items():
        if d == "identified_fraction":
            parts.append(f"p{100 * float(v):g}")
        elif d == "request":
            parts.append(f"req{int(v)}")
        elif d == "forget_size":
            parts.append(f"n{int(v)}")
        else:
            parts.append(f"{d}{v}")
    return "-".join(parts)


def row_tag(row: Mapping[str, Any]) -> str:
    """File stem of a row's per-sample file and checkpoint: ``<label>-seed<s>`` plus ``-<point tag>``."""
    tag = point_tag(dict(row_key(row)))
    return f"{row.get('method')}-seed{row.get('seed')}" + (f"-{tag}" if tag else "")


def row_role(row: Mapping[str, Any]) -> str:
    """``oracle``, ``original`` or ``method`` (rows written before ``role`` existed: from ``is_oracle``)."""
    role = row.get("role")
    if isinstance(role, str):
        return role
    return "oracle" if row.get("is_oracle") else "method"


def row_status(row: Mapping[str, Any]) -> str:
    """A row's status: ``"ok"``, ``"error"``, ``"diverged"`` (missing → ``"ok"``; unknown strings are kept)."""
    s = row.get("status", "ok")
    return str(s) if s is not None else "ok"


def as_number(value: Any) -> float:
    """A metric value as float: NaN for None, bools, strings, and anything non-numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


# ------------------------------------------------------------------------------------------------------------ reading
def _problem(obj: Any) -> str | None:
    """Why ``obj`` is not a usable result row (None if it is)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if not isinstance(obj.get("method"), str) or not obj["method"]:
        return "no 'method'"
    if "seed" not in obj:
        return "no 'seed'"
    seed = obj["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"'seed' is {type(seed).__name__}, not an integer (damaged?)"
    dims = obj.get("dimensions")
    if dims is not None and (not isinstance(dims, list) or not all(isinstance(d, str) and d in obj for d in dims)):
        return "'dimensions' is not a list of fields the row has"
    metrics = obj.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        return "'metrics' is not an object"
    return None


def read_results(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """Parse a results.jsonl file: ``(rows in file order, number of skipped lines)``.

    Blank lines are ignored. A line that is not valid JSON (typically the truncated last line of a crashed run), is
    not a JSON object, or lacks what identifies a row (``method``, ``seed``, well-formed ``dimensions``) is skipped
    with a :class:`ReportWarning`; it never raises for content.

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
        except (json.JSONDecodeError, RecursionError) as err:
            skipped += 1
            why = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            warnings.warn(f"{p}:{lineno}: skipped a line that is not valid JSON ({why}; probably cut off by a crash); "
                          "rerun `unlearnkit run` on the same config to redo that (method, seed)",
                          ReportWarning, stacklevel=3)
            continue
        problem = _problem(obj)
        if problem is not None:
            skipped += 1
            warnings.warn(f"{p}:{lineno}: skipped a line that is not a result row ({problem}); rerun `unlearnkit run` "
                          "on the same config to redo it", ReportWarning, stacklevel=3)
            continue
        schema = obj.get("schema")
        if schema is not None and schema != RESULT_SCHEMA:
            warnings.warn(f"{p}:{lineno}: row has schema {str(schema)[:40]!r}, this version reads {RESULT_SCHEMA!r}; "
                          "values may be misread", ReportWarning, stacklevel=3)
        rows.append(obj)
    return rows, skipped


def read_rows_quietly(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a results.jsonl (``[]`` if absent), damaged lines skipped without warnings (the runner's resume)."""
    if not Path(path).is_file():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        rows, _ = read_results(path)
    return rows


def load_rows(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All result rows of ``run_dir/results.jsonl`` in file order (retried rows included; see :func:`latest_rows`).

    ``run_dir`` may also be the results.jsonl path itself.

    Raises:
        DataError: ``run_dir`` has no results.jsonl ("run `unlearnkit run CONFIG` first").
    """
    p = Path(run_dir)
    path = p if p.is_file() else p / RESULTS_FILE
    rows, _ = read_results(path)
    return rows


def append_row(path: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append one row as a JSON line, flushed and fsynced (a crash loses at most this line; a symlink is refused)."""
    append_line(path, json.dumps(row, sort_keys=True, allow_nan=True))


# ----------------------------------------------------------------------------------------------------------- selecting
def latest_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per identity (:func:`row_id`): the LAST one in file order wins (a retry replaces an error row).

    The surviving row takes the position of the identity's first appearance, so method order is first-appearance
    order.
    """
    out: list[dict[str, Any]] = []
    where: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = row_id(row)
        if key in where:
            out[where[key]] = dict(row)
        else:
            where[key] = len(out)
            out.append(dict(row))
    return out


def superseded_rows(rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """For each row in file order: True if a later row has the same identity and replaces it."""
    last: dict[tuple[Any, ...], int] = {}
    for i, row in enumerate(rows):
        last[row_id(row)] = i
    return [last[row_id(row)] != i for i, row in enumerate(rows)]


def final_stage_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a run's last evaluation point; rows of a single-point run unchanged.

    Rows that carry ``point`` keep the largest point; older rows the largest value of each legacy dimension (the
    largest identified fraction / forget size, the last request). The summary table shows this final state; the
    report's curves show every point.
    """
    out = [dict(r) for r in rows]
    points = [as_number(r.get("point")) for r in out if row_dimensions(r)]
    points = [p for p in points if math.isfinite(p)]
    if points:
        last = max(points)
        return [r for r in out if not row_dimensions(r) or as_number(r.get("point")) == last]
    for d in LEGACY_DIMENSIONS:
        vals = [as_number(r[d]) for r in out if d in r]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            top = max(vals)
            out = [r for r in out if d not in r or as_number(r[d]) == top]
    return out


def staged(rows: Iterable[Mapping[str, Any]]) -> bool:
    """True if any row has dimensions (the run has several evaluation points)."""
    return any(row_dimensions(r) for r in rows)


__all__ = [
    "CONFIG_FILE", "FAILED_STATUSES", "LEGACY_DIMENSIONS", "ORACLE_LABEL", "ORIGINAL_LABEL", "RESULTS_FILE",
    "RESULT_SCHEMA", "ROW_DIMENSIONS", "ReportWarning", "append_row", "as_number", "final_stage_rows", "latest_rows",
    "load_rows", "point_tag", "read_results", "read_rows_quietly", "row_dimensions", "row_id", "row_key", "row_role",
    "row_status", "row_tag",
    "staged", "superseded_rows",
]

"""The hyperparameter search in reports: ``<run>/tune/<label>.json`` files written by ``unlearnkit tune``.

A run folder holds them when the same config was tuned (``unlearnkit tune CONFIG``); the report then gets a section
with one summary line per method (trials, θ_o's objective on the tuning forget sets, the best objective and its
settings) and the search table of each method (trial, settings, objective, seconds): the best ten in report.md, every
trial in report.html. Nothing here imports Optuna: the files are plain JSON.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnkit.results import ReportWarning

TUNE_DIR = "tune"
TUNE_SCHEMA = "unlearnkit.tune/1"
MD_TRIALS = 10


def load_tune(run_dir: str | Path) -> list[dict[str, Any]]:
    """The search summaries in ``run_dir/tune`` (one per method, file name order); unreadable files are skipped with
    a :class:`ReportWarning`. Empty when the run was never tuned."""
    d = Path(run_dir) / TUNE_DIR
    if not d.is_dir():
        return []
    out = []
    for path in sorted(d.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            warnings.warn(f"cannot read {path} ({err}); the report leaves it out", ReportWarning, stacklevel=2)
            continue
        if isinstance(data, dict) and data.get("schema") == TUNE_SCHEMA and isinstance(data.get("trials"), list):
            out.append(data)
    return out


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params(p: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in (p or {}).items())


def _ranked(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Finished trials, best first (complete by objective, then failed ones)."""
    trials = [t for t in data.get("trials", []) if t.get("state") in ("complete", "fail", "pruned")]
    return sorted(trials, key=lambda t: (t.get("value") is None, t.get("value") or 0.0, t.get("trial", 0)))


def _intro(items: Sequence[Mapping[str, Any]]) -> str:
    first = items[0]
    obj = first.get("objective", {})
    how = first.get("tuning_set", {}).get("how", "")
    w = obj.get("std_weight", 0.0)
    spread = f" plus {w:g} × its standard deviation over seeds" if w else ""
    return (f"Each method's settings were searched by `unlearnkit tune` (Optuna TPE) to minimise the mean "
            f"|θ_u − θ_r| over {', '.join(obj.get('keys', []))}, averaged over seeds {obj.get('seeds')}{spread}, on "
            f"tuning forget sets disjoint from the evaluation D_f ({how}); each tuning oracle is retrained without "
            "its tuning set. θ_o is the value of doing nothing there; lower is better. The tuned config is "
            "tune/tuned.yaml.")


def _summary_rows(items: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for d in items:
        best = d.get("best") or {}
        failed = sum(1 for t in d.get("trials", []) if t.get("state") == "fail")
        n_sets = len(d.get("tuning_set", {}).get("draws", []))
        sets = f", {n_sets} tuning sets" if d.get("objective", {}).get("draws", 1) > 1 else ""
        rows.append([str(d.get("method")), f"{d.get('n_finished', 0)}" + (f" ({failed} failed)" if failed else "")
                     + sets,
                     _num(d.get("original_objective")), _num(best.get("value")), _num(best.get("trial")),
                     _params(best.get("searched")) or "no finished trial", _verdict(d)])
    return rows


def _verdict(d: Mapping[str, Any]) -> str:
    """What tuned.yaml does with the method: ``tuned`` (its best beat θ_o's objective by more than ``min_gain``) or
    ``kept`` (no setting did: the configured settings stay)."""
    best, o = (d.get("best") or {}).get("value"), d.get("original_objective")
    if best is None:
        return "kept (no finished trial)"
    adopted = d.get("adopted")
    if adopted is None:  # summaries written before the field existed: the same rule
        gain = float(d.get("min_gain", 0.01))
        adopted = o is not None and math.isfinite(float(o)) and float(best) < float(o) * (1 - gain)
    if adopted:
        return "tuned"
    return f"kept (best not {float(d.get('min_gain', 0.01)):.0%} below θ_o)"


SUMMARY_HEADER = ["Method", "trials", "θ_o", "best", "best trial", "best settings", "tuned.yaml"]
TRIAL_HEADER = ["trial", "settings", "objective", "seconds"]


def _trial_row(t: Mapping[str, Any]) -> list[str]:
    value = _num(t.get("value")) if t.get("value") is not None else f"failed: {str(t.get('error') or '')[:80]}"
    return [str(t.get("trial")) + (" (start)" if t.get("start") else ""), _params(t.get("params")), value,
            _num(t.get("seconds"))]


def markdown_section(items: Sequence[Mapping[str, Any]]) -> str:
    """The report.md section (empty string when ``items`` is empty)."""
    if not items:
        return ""

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["", "## Hyperparameter search", "", _intro(items), "",
             "| " + " | ".join(SUMMARY_HEADER) + " |", "| :--- | ---: | ---: | ---: | ---: | :--- | :--- |"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in _summary_rows(items)]
    for d in items:
        ranked = _ranked(d)
        lines += ["", f"**{esc(str(d.get('method')))}**: the best {min(MD_TRIALS, len(ranked))} of {len(ranked)} "
                  f"trials (all in tune/{d.get('method')}.json; search space: "
                  f"{esc(_params(d.get('search_space')))})", "",
                  "| " + " | ".join(TRIAL_HEADER) + " |", "| ---: | :--- | ---: | ---: |"]
        lines += ["| " + " | ".join(esc(c) for c in _trial_row(t)) + " |" for t in ranked[:MD_TRIALS]]
    return "\n".join(lines) + "\n"


def html_section(items: Sequence[Mapping[str, Any]]) -> str:
    """The report.html section (empty string when ``items`` is empty)."""
    if not items:
        return ""

    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [f'<section id="tune"><h2>Hyperparameter search</h2><p>{html.escape(_intro(items))}</p>',
             table(SUMMARY_HEADER, _summary_rows(items))]
    for d in items:
        ranked = _ranked(d)
        parts.append(f"<details><summary>{html.escape(str(d.get('method')))}: {len(ranked)} trials (search space: "
                     f"{html.escape(_params(d.get('search_space')))})</summary>"
                     + table(TRIAL_HEADER, [_trial_row(t) for t in ranked]) + "</details>")
    return "".join(parts) + "</section>"


__all__ = ["html_section", "load_tune", "markdown_section"]

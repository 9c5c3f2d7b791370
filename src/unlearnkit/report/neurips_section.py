"""The NeurIPS-2023 unlearning score in reports: computed on request, cached in ``<run>/neurips.json``.

Computing ε per forget example costs about 10 ms per example and method on a CPU, so reports include the score only
when it was computed (``unlearnkit report RUN_DIR --neurips``); the cached file is then reused by every later report
of the same results (it records the results file's SHA-256 and is recomputed when the results change).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from pathlib import Path
from typing import Any

from unlearnkit.errors import ConfigError, UnlearnkitError

NEURIPS_FILE = "neurips.json"


def _results_digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "results.jsonl").read_bytes()).hexdigest()


def compute_neurips(run_dir: str | Path, *, max_time_fraction: float | None = None) -> dict[str, Any]:
    """Score every non-oracle method of a run and write ``neurips.json``; returns its content.

    A method that cannot be scored (fewer than 3 seeds, a failed seed, …) gets ``{"error": message}`` instead.

    Raises:
        ConfigError: the run is not a classifier run (llm / graph / recsys rows): the score needs per-example
            confidences of classifiers; ``max_time_fraction`` is not > 0.
    """
    from unlearnkit.metrics.neurips import neurips_score_from_run
    from unlearnkit.report.summary import latest_rows, load_rows

    if max_time_fraction is not None and not max_time_fraction > 0:  # one error, not one per method in the file
        raise ConfigError(f"--max-time-fraction must be > 0 (a fraction of the retraining time, e.g. 0.2), got "
                          f"{max_time_fraction}; leave it out for no time cap")
    d = Path(run_dir)
    rows = latest_rows(load_rows(d))
    tracks = sorted({str(r.get("track") or "classifier") for r in rows})
    if tracks and tracks != ["classifier"]:
        raise ConfigError(f"--neurips: the NeurIPS-2023 score is defined for classifiers (per-example confidences "
                          f"of image models), but {d} is a {'/'.join(tracks)} run; drop --neurips for this run")
    methods: list[str] = []
    for r in rows:
        if not r.get("is_oracle") and r["method"] not in methods:
            methods.append(r["method"])
    scores: dict[str, Any] = {}
    for m in methods:
        try:
            res = neurips_score_from_run(d, m, max_time_fraction=max_time_fraction)
            scores[m] = {**res.to_dict(), "epsilons": [float(e) for e in res.epsilons]}  # for the ε histogram
        except UnlearnkitError as err:
            scores[m] = {"error": str(err)}
    data = {"results_sha256": _results_digest(d), "max_time_fraction": max_time_fraction, "methods": scores}
    (d / NEURIPS_FILE).write_text(json.dumps(data, indent=2, allow_nan=True), encoding="utf-8")
    return data


def load_neurips(run_dir: str | Path) -> dict[str, Any] | None:
    """The cached scores if ``neurips.json`` exists and matches the current results file, else None."""
    d = Path(run_dir)
    path = d / NEURIPS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return data if data.get("results_sha256") == _results_digest(d) else None


def _fmt(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}" if isinstance(v, float) else str(v)


def _rows(data: dict[str, Any]) -> list[list[str]]:
    out = []
    for m, s in data["methods"].items():
        if "error" in s:
            out.append([m, "n/a", "", "", "", "", s["error"][:160]])
        else:
            out.append([m, _fmt(s["neurips_score"]), _fmt(s["forget_quality"]), _fmt(s["retain_ratio"]),
                        _fmt(s["test_ratio"]), str(s["n_models"]),
                        f"{s['eps_at_cap']} of {s['n_forget']} examples at the ε cap"
                        + ("; time cap exceeded" if s.get("time_cap_exceeded") else "")])
    return out


HEADER = ["Method", "Score", "F (forget quality)", "RA_u/RA_r", "TA_u/TA_r", "N models", "notes"]
EXPLAIN = ("NeurIPS-2023 unlearning score (Triantafillou et al., arXiv:2406.09073): per forget example ε from "
           "threshold attacks on the logit confidence of N unlearned vs N oracle models (δ = 1e-5), H = 2/2^bin "
           "(0.5-wide bins), F = mean H; score = F × RA_u/RA_r × TA_u/TA_r. Higher is better; scores are comparable "
           "only at equal N (with few seeds even an ideal unlearner scores well below 1: about 0.32 at N = 3).")


def markdown_section(data: dict[str, Any]) -> str:
    lines = ["", "## NeurIPS-2023 unlearning score", "", "| " + " | ".join(HEADER) + " |",
             "| :--- | " + " | ".join(["---:"] * (len(HEADER) - 2)) + " | :--- |"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(data)]
    return "\n".join(lines + ["", EXPLAIN, ""])


def html_section(data: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _rows(data))
    return (f'<section id="neurips"><h2>NeurIPS-2023 unlearning score</h2><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table><p>{html.escape(EXPLAIN)}</p></section>")

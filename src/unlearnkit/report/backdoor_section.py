"""The reports' section on corrective and backdoor metrics, rebuilt from the result rows only.

Corrective scenarios (Goel et al., TMLR 2024, arXiv:2402.14015) write the ``corrective`` metric's keys (attack
success rate, confusion rate, corrupted-domain and clean accuracy), and the ``backdoor_detection`` metric (Li et al.,
Expose Before You Defend, arXiv:2410.19427) writes ``backdoor_exposure_share`` and ``backdoor_detected``. None of
them is a column of the summary table, and report.html draws the corrective keys only as curves over the identified
fraction p: this section lists their numbers, one line per method (and per identified fraction p when the rows have
one), mean ± sample std (ddof = 1) over the ok seeds. Absent when no row carries any of the keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

from unlearnkit.results import as_number, latest_rows, row_role, row_status

TITLE = "Corrective and backdoor metrics"
#: (metric key, column title, direction), in column order
KEYS: tuple[tuple[str, str, str], ...] = (
    ("attack_success_rate", "ASR (%)", "% of triggered non-target test inputs predicted as the planted target; lower "
     "is better"),
    ("confusion_rate", "Confusion (%)", "% of the confused pair's test inputs predicted as the other class; lower is "
     "better"),
    ("corrupted_acc", "Corrupted acc. (%)", "accuracy on the corrupted domain; higher is better"),
    ("clean_acc", "Clean acc. (%)", "clean test accuracy; higher is better"),
    ("backdoor_exposure_share", "Exposure share (%)", "% of clean defense inputs the exposed model assigns to the "
     "planted target; lower is better after removal"),
    ("backdoor_detected", "Backdoor detected (%)", "share of seeds whose exposed model collapses onto the planted "
     "target (the detection rate); lower is better after removal"),
)
NOTE = ("Mean ± sample std over the ok seeds (a single value with one seed; — where absent). Corrective metrics: Goel "
        "et al., TMLR 2024 (arXiv:2402.14015); backdoor detection by exposure: Li et al., arXiv:2410.19427.")
_ROLE_ORDER = {"oracle": 0, "original": 1}


def _label(role: str, method: str) -> str:
    return method + (" (oracle)" if role == "oracle" else "")


def backdoor_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, Any,
                                                                                                        list[str]]]]:
    """``(columns, lines)``: the :data:`KEYS` some ok row carries, and one ``(label, p, cells)`` per method (θ_r,
    θ_o, then the methods in file order) and identified fraction p (None when the rows have none, else in increasing
    order). Cells are "mean ± std" (1 decimal) over the ok seeds, "—" where no seed has a finite value. ``([], [])``
    when no row carries any of the keys."""
    ok = [r for r in latest_rows(rows) if row_status(r) == "ok" and isinstance(r.get("metrics"), Mapping)]
    cols = [k for k in KEYS if any(math.isfinite(as_number(r["metrics"].get(k[0]))) for r in ok)]
    if not cols:
        return [], []
    groups: dict[tuple[str, str], dict[Any, list[Mapping[str, Any]]]] = {}
    for r in ok:
        groups.setdefault((row_role(r), str(r["method"])), {}).setdefault(r.get("identified_fraction"), []).append(r)
    order = sorted(groups, key=lambda g: (_ROLE_ORDER.get(g[0], 2), list(groups).index(g)))
    lines = []
    for role, method in order:
        by_p = groups[(role, method)]
        for p in sorted(by_p, key=lambda x: (x is not None, as_number(x))):
            cells = []
            for key, _, _ in cols:
                vals = [v for v in (as_number(r["metrics"].get(key)) for r in by_p[p]) if math.isfinite(v)]
                if not vals:
                    cells.append("—")
                elif len(vals) == 1:
                    cells.append(f"{vals[0]:.1f}")
                else:
                    cells.append(f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f}")
            lines.append((_label(role, method), p, cells))
    return cols, lines


def _p_cell(p: Any) -> str:
    v = as_number(p)
    return f"{100 * v:g}" if math.isfinite(v) else "—"


def _view(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], str, list[list[str]]] | None:
    """``(header, note, body rows)`` of the section, or None when no row carries a corrective or backdoor key."""
    cols, lines = backdoor_table(rows)
    if not lines:
        return None
    with_p = any(p is not None for _, p, _ in lines)
    heads = ["Method", *(["p (%)"] if with_p else []), *(t for _, t, _ in cols)]
    note = NOTE + " " + "; ".join(f"{t}: {d}" for _, t, d in cols) + "."
    return heads, note, [[label, *([_p_cell(p)] if with_p else []), *cells] for label, p, cells in lines]


def markdown_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown section ('' when no row carries a corrective or backdoor key)."""
    view = _view(rows)
    if view is None:
        return ""
    from unlearnkit.report.markdown import md_escape

    heads, note, body = view
    out = ["", f"## {TITLE}", "", note, "", "| " + " | ".join(heads) + " |", "| :--- |" + " ---: |" * (len(heads) - 1)]
    out += [f"| {md_escape(r[0])} | " + " | ".join(r[1:]) + " |" for r in body]
    return "\n".join(out) + "\n"


def html_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The HTML section ('' when no row carries a corrective or backdoor key)."""
    view = _view(rows)
    if view is None:
        return ""
    heads, note, body = view
    cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return (f'<section id="backdoor"><h2>{escape(TITLE)}</h2><p class="note">{escape(note)}</p><table><thead><tr>'
            + "".join(f"<th>{escape(h)}</th>" for h in heads) + f"</tr></thead><tbody>{cells}</tbody></table></section>")


__all__ = ["KEYS", "backdoor_table", "html_section", "markdown_section"]

"""The markdown report: header, summary table (mean ± std over seeds), column directions, failures."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from unlearnkit.report._common import (
    CELL_NOTE,
    SEEDS_DIRECTION,
    cell,
    column_sigs,
    columns_for,
    failures,
    label,
    meta_lines,
    one_line,
    seeds_cell,
    VERDICT_NOTE,
    verdict_cell,
)
from unlearnkit.report.summary import SummaryRow

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def md_escape(text: Any) -> str:
    """Make user text safe inside a markdown table cell: one line, ``| < > * [ ] ` \\`` backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", one_line(str(text)))


def to_markdown(summary: Sequence[SummaryRow], meta: Mapping[str, Any]) -> str:
    """Render the run as GitHub-flavoured markdown.

    Args:
        summary: rows from :func:`unlearnkit.report.summarize` (oracle first).
        meta: run facts: ``run`` (name), ``config_sha256`` (shown as 8 characters), ``scenario`` (the row's or the
            config's scenario dict), optionally ``data``, ``model``, ``versions``, ``config_hashes``,
            ``skipped_lines``, ``superseded``. Missing keys are shown as unknown.

    Returns:
        The markdown text: a header, the table ``Method | UA | RA | TA | MIA-Eff. | Avg. Gap | RTE (s) | seeds``
        (plus ``Forgotten-class TA`` for class scenarios) with "mean ± std" cells (at least 2 decimals and 2
        significant digits, more where a column's different means would print alike; see
        :func:`~unlearnkit.report._common.fmt_num`), what each column
        means and which direction is better, and a section listing failed / diverged methods with their reasons.
    """
    run = meta.get("run") or "unnamed run"
    lines = [f"# unlearnkit report: {md_escape(run)}", ""]
    for name, value in meta_lines(meta):
        lines.append(f"- **{name}**: {md_escape(value)}")
    lines.append("")

    cols = columns_for(summary)
    header = ["Method", *(c.header for c in cols), "seeds", "verdict"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join([":---"] + ["---:"] * (len(header) - 1)) + " |")
    sigs = column_sigs(summary, cols)
    for s in summary:
        cells = [md_escape(label(s)), *(cell(s, c, sigs[c.key]) for c in cols), seeds_cell(s),
                 md_escape(verdict_cell(s))]
        lines.append("| " + " | ".join(cells) + " |")
    if not summary:
        lines.append("| (no result rows) |" + " |" * (len(header) - 1))
    lines.append("")
    lines.append(CELL_NOTE)
    lines.append("")
    for c in cols:
        lines.append(f"- **{c.header}**: {c.direction}")
    lines.append(f"- **seeds**: {SEEDS_DIRECTION}")
    lines.append(f"- **verdict**: {VERDICT_NOTE}")
    lines.append("")

    failed = failures(summary)
    lines.append("## Failed or diverged methods")
    lines.append("")
    if not failed:
        lines.append("None: every (method, seed) finished.")
    for s in failed:
        seeds = ", ".join(str(x) for x in s.failed_seeds)
        lines.append(f"- **{md_escape(label(s))}** ({s.status}; {s.n_failed} of {s.n_total} seeds failed: {seeds})")
        for e in s.errors:
            lines.append(f"  - {md_escape(e)}")
    lines.append("")
    return "\n".join(lines)


__all__ = ["md_escape", "to_markdown"]

"""The reports' section on inference-time policies (issue 16), rebuilt from the result rows only.

For every method whose rows carry a policy (``row["policy"]``: kind, ``affects``, settings, ``metrics_unaffected``),
one line: what the policy changes, which configured metrics it *cannot* change (they read none of those outputs, so
they show θ_u's weights — θ_o's for a weight-free method — whatever the policy does), and its per-query cost beside
θ_o's (``row["cost"]``, milliseconds per generated token or per input) with the ratio. Absent when no row carries a
policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from unlearnkit.results import final_stage_rows, latest_rows

TITLE = "Inference-time policies"
NOTE = ("A policy changes only the outputs it affects; the metrics it cannot affect read the weights alone (for a "
        "method that leaves the weights as θ_o's, θ_o's numbers). Cost: evaluation queries of the row's model with "
        "its policy, in milliseconds per generated token, beside θ_o's.")


def policy_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per method with a policy (final stage, first seed): ``method``, ``kind``, ``affects``,
    ``unaffected``, ``cost`` and ``cost_original`` (ms per unit, or None), ``ratio``, ``unit``."""
    final = final_stage_rows(latest_rows(rows))
    base = next((r for r in final if r.get("role") == "original" and r.get("status") == "ok"), None)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in final:
        pol = r.get("policy")
        if not isinstance(pol, Mapping) or r.get("method") in seen:
            continue
        seen.add(str(r.get("method")))
        cost = r.get("cost") if isinstance(r.get("cost"), Mapping) else {}
        key = next(iter(cost), None)
        mine = cost.get(key) if key else None
        orig = (base.get("cost") or {}).get(key) if base is not None and key else None
        out.append({"method": str(r.get("method")), "kind": str(pol.get("kind", "?")),
                    "affects": list(pol.get("affects", [])), "unaffected": list(pol.get("metrics_unaffected", [])),
                    "cost": mine, "cost_original": orig, "unit": (key or "").replace("query_ms_per_", "") or None,
                    "ratio": (mine / orig) if isinstance(mine, (int, float)) and isinstance(orig, (int, float))
                    and orig > 0 else None})
    return out


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) else "–"


def markdown_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown section ("" when no row has a policy)."""
    table = policy_table(rows)
    if not table:
        return ""
    from unlearnkit.report.markdown import md_escape

    lines = ["", f"## {TITLE}", "", "| Method | policy | changes | metrics it cannot affect | ms / query unit | "
             "θ_o ms / query unit | × θ_o |", "| :--- | :--- | :--- | :--- | ---: | ---: | ---: |"]
    for t in table:
        lines.append("| " + " | ".join([md_escape(t["method"]), md_escape(t["kind"]),
                                         md_escape(", ".join(t["affects"]) or "nothing"),
                                         md_escape(", ".join(t["unaffected"]) or "none"), _num(t["cost"]),
                                         _num(t["cost_original"]), _num(t["ratio"])]) + " |")
    lines += ["", NOTE, ""]
    return "\n".join(lines)


def html_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The HTML section ("" when no row has a policy)."""
    table = policy_table(rows)
    if not table:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in ("Method", "policy", "changes", "metrics it cannot affect",
                                                      "ms / query unit", "θ_o ms / query unit", "× θ_o"))
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
            t["method"], t["kind"], ", ".join(t["affects"]) or "nothing", ", ".join(t["unaffected"]) or "none",
            _num(t["cost"]), _num(t["cost_original"]), _num(t["ratio"]))) + "</tr>" for t in table)
    return (f'<section id="policies"><h2>{escape(TITLE)}</h2><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table><p>{escape(NOTE)}</p></section>")


__all__ = ["html_section", "markdown_section", "policy_table"]

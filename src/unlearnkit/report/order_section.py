"""The training-order section of a report: how much each model's outcome depends on the order θ_o's training stages
were learned in (rows with the ``order`` dimension: ``llm.data.source: stages``).

"On the Impossibility of Retrain Equivalence in Machine Unlearning" (Yu, He, Goyal, Arora 2025, arXiv:2510.16629):
local unlearning methods (GA, NPO) give order-dependent outcomes while the retrain target does not depend on where
the forget stage was learned. For every metric of :data:`ORDER_KEYS` present in the rows, the section gives per row
label (each method, θ_o, the oracle θ_r) the value at every order and the **spread** across orders (max − min; seed
means first), and for each method its change from θ_o at the same order (θ_u − θ_o: the unlearning's own effect,
apart from how θ_o already differs between orders). The figure shows the spread of the forget-set answer probability: a method whose bar is far longer
than the oracle's has order-dependent outcomes. Built from results.jsonl only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

from unlearnkit.report.charts import ORACLE_COLOR, Bar, hbar_svg
from unlearnkit.report.summary import as_number, latest_rows, row_status
from unlearnkit.results import row_dimensions, row_role

DIM = "order"
#: (metric key, what it is, direction) — the spread is reported for each key the rows carry
ORDER_KEYS: tuple[tuple[str, str, str], ...] = (
    ("forget.prob", "forget-set answer probability", "lower = more forgotten"),
    ("forget.rouge", "forget-set ROUGE-L recall", "lower = more forgotten"),
    ("forget_quality", "forget quality (KS p vs θ_r)", "higher = closer to θ_r"),
    ("model_utility", "model utility", "higher is better"),
    ("stage.retained_rouge", "retained stages' ROUGE-L", "higher is better"),
)


def _label(row: Mapping[str, Any]) -> str:
    role = row_role(row)
    return "retrain (oracle)" if role == "oracle" else ("original (θ_o)" if role == "original" else str(row["method"]))


def order_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, dict[str, dict[str, float]]]]:
    """``(orders, {key: {row label: {order: seed-mean value}}})`` over the ok rows with an ``order`` dimension."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    orders: list[str] = []
    for r in latest_rows(rows):
        if row_status(r) != "ok" or DIM not in row_dimensions(r):
            continue
        o = str(r.get(DIM))
        if o not in orders:
            orders.append(o)
        for key, _, _ in ORDER_KEYS:
            v = as_number((r.get("metrics") or {}).get(key))
            if math.isfinite(v):
                acc.setdefault(key, {}).setdefault(_label(r), {}).setdefault(o, []).append(v)
    table = {k: {lab: {o: float(np.mean(v)) for o, v in per.items()} for lab, per in labs.items()}
             for k, labs in acc.items()}
    return orders, table


def change_table(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per key, per method label: θ_u − θ_o at each order (the unlearning's own effect, separated from how θ_o
    differs between orders); θ_o's and the oracle's rows are left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, labs in table.items():
        orig = labs.get("original (θ_o)", {})
        for lab, vals in labs.items():
            if lab in ("original (θ_o)", "retrain (oracle)"):
                continue
            d = {o: v - orig[o] for o, v in vals.items() if o in orig}
            if d:
                out.setdefault(key, {})[lab] = d
    return out


def spread(values: Mapping[str, float]) -> float:
    """max − min over the orders' values (0 for one order; nan for none)."""
    v = [x for x in values.values() if math.isfinite(x)]
    return float(max(v) - min(v)) if v else float("nan")


def _ordered_labels(labels: Sequence[str]) -> list[str]:
    first = [x for x in ("retrain (oracle)", "original (θ_o)") if x in labels]
    return first + sorted(x for x in labels if x not in first)


def markdown_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """The order section as markdown ('' when the run has no ``order`` rows)."""
    orders, table = order_table(rows)
    if len(orders) < 1 or not table:
        return ""
    out = ["", "## Training order", "",
           "Outcomes per order of the training stages (columns) and their spread (max − min). A method whose spread "
           "is far above the oracle's has order-dependent outcomes (Yu et al. 2025, arXiv:2510.16629).", ""]
    change = change_table(table)
    for key, what, direction in ORDER_KEYS:
        if key not in table:
            continue
        out += [f"**{key}** — {what} ({direction})", "",
                "| row | " + " | ".join(orders) + " | spread |", "| :--- |" + " ---: |" * (len(orders) + 1)]
        for lab in _ordered_labels(list(table[key])):
            vals = table[key][lab]
            cells = [f"{vals[o]:.4g}" if o in vals else "—" for o in orders]
            out.append(f"| {lab} | " + " | ".join(cells) + f" | {spread(vals):.4g} |")
        for lab in sorted(change.get(key, {})):
            vals = change[key][lab]
            cells = [f"{vals[o]:+.4g}" if o in vals else "—" for o in orders]
            out.append(f"| {lab}: change from θ_o | " + " | ".join(cells) + f" | {spread(vals):.4g} |")
        out.append("")
    return "\n".join(out) + "\n"


def html_section(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """The order section as HTML: one figure (spread of the forget-set probability, or the first key present) and
    the per-order tables, with each method's change from θ_o at the same order ('' when the run has no ``order``
    rows)."""
    orders, table = order_table(rows)
    if not orders or not table:
        return ""
    key = next(k for k, _, _ in ORDER_KEYS if k in table)
    what = dict((k, w) for k, w, _ in ORDER_KEYS)[key]
    bars = []
    change = change_table(table)
    for lab in _ordered_labels(list(table[key])):
        s = spread(table[key][lab])
        if math.isfinite(s):
            color = ORACLE_COLOR if lab == "retrain (oracle)" else ("#888888" if lab.startswith("original")
                                                                   else colors.get(lab, "#0072B2"))
            bars.append(Bar(lab, s, 0.0, color))
    for lab in sorted(change.get(key, {})):
        s = spread(change[key][lab])
        if math.isfinite(s):
            bars.append(Bar(f"{lab}: Δ vs θ_o", s, 0.0, colors.get(lab, "#0072B2")))
    svg = hbar_svg(bars, title=f"Spread across {len(orders)} training orders: {what}", unit="max − min", digits=3)
    parts = [f'<figure id="order-spread">{svg}<figcaption>{escape(f"max − min over the orders of {key}, per row. ")}'
             f'{escape("A local unlearning method whose bar is far longer than the oracle bar has outcomes that depend on the training order (Yu et al. 2025, arXiv:2510.16629).")}'
             "</figcaption></figure>"]
    for k, w, direction in ORDER_KEYS:
        if k not in table:
            continue
        head = "".join(f"<th>{escape(o)}</th>" for o in orders)
        body = []
        for lab in _ordered_labels(list(table[k])):
            vals = table[k][lab]
            cells = "".join(f"<td>{vals[o]:.4g}</td>" if o in vals else "<td>—</td>" for o in orders)
            body.append(f"<tr><th>{escape(lab)}</th>{cells}<td>{spread(vals):.4g}</td></tr>")
        for lab in sorted(change.get(k, {})):
            vals = change[k][lab]
            cells = "".join(f"<td>{vals[o]:+.4g}</td>" if o in vals else "<td>—</td>" for o in orders)
            body.append(f"<tr><th>{escape(lab)}: change from θ_o</th>{cells}<td>{spread(vals):.4g}</td></tr>")
        parts.append(f"<h3>{escape(k)} — {escape(w)} ({escape(direction)})</h3><table><thead><tr><th>row</th>{head}"
                     f"<th>spread</th></tr></thead><tbody>{''.join(body)}</tbody></table>")
    note = ("θ_o was trained on the same stages in each order; every method then unlearned the same forget stage. "
            "The oracle of an order learns the kept stages in that order: orders that differ only in where the "
            "forget stage sits share one oracle (its spread is 0 by construction).")
    return (f'<section id="training-order"><h2>Training order</h2><p class="note">{escape(note)}</p>'
            + "".join(parts) + "</section>")


__all__ = ["ORDER_KEYS", "change_table", "html_section", "markdown_section", "order_table", "spread"]

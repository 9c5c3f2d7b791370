"""The single-file offline HTML report: tables, forget-vs-utility scatter, Avg. Gap bars, time bars, config.

The page loads nothing: CSS is inline, charts are inline SVG drawn by :mod:`unlearnkit.report.charts`, there is no
JavaScript, and a Content-Security-Policy forbids any network fetch. Every user-provided string (method labels,
error messages, the config) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from unlearnkit._version import __version__
from unlearnkit.report._common import (
    CELL_NOTE,
    FTA,
    MIA,
    RA,
    RTE,
    SEEDS_DIRECTION,
    TA,
    UA,
    VERDICT_NOTE,
    cell,
    column_sig,
    column_sigs,
    columns_for,
    failures,
    fmt_num,
    label,
    meta_lines,
    verdict_cell,
    one_line,
    seeds_cell,
)
from unlearnkit.report.charts import ORACLE_COLOR, Bar, Point, color_for, hbar_svg, scatter_svg
from unlearnkit.report.summary import SummaryRow, as_number, row_status, superseded_rows

_STATUSES = ("ok", "partial", "error", "diverged")

_CSS = """
:root { --fg:#1b1b1b; --muted:#5d5d5d; --line:#d9d9d9; --bg-alt:#f6f7f9; --bad:#b42318; --warn:#b54708; --good:#067647; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff;
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1240px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:22px; margin:0 0 8px; } h2 { font-size:17px; margin:32px 0 10px; border-bottom:1px solid var(--line);
  padding-bottom:4px; }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:0; }
dl.meta dt { color:var(--muted); } dl.meta dd { margin:0; }
table { border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { padding:4px 8px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:var(--bg-alt); font-weight:600; }
th:first-child, td:first-child, th.err { text-align:left; }
td.err { text-align:left; white-space:normal; max-width:420px; color:var(--bad); font-size:12px; }
tr.oracle td { font-weight:600; background:#fbfbf6; }
tr.superseded td { color:#9a9a9a; text-decoration:line-through; }
td.verdict { white-space:nowrap; }
td.v-inert, td.v-over-unlearned, td.v-under-unlearned, td.v-utility-collapse, td.v-unconverged,
td.v-diverged, td.v-error, td.v-partial { color:#a05a00; font-weight:600; }
.swatch { display:inline-block; width:10px; height:10px; margin-right:6px; vertical-align:baseline; }
.oracle-swatch { transform:rotate(45deg); }
.status { font-size:12px; padding:1px 6px; border-radius:8px; background:var(--bg-alt); }
.status-ok { color:var(--good); } .status-partial { color:var(--warn); }
.status-error, .status-diverged, .status-other { color:var(--bad); }
.note { color:var(--muted); font-size:13px; } ul.directions { font-size:13px; color:var(--muted); padding-left:20px; }
ul.directions b { color:var(--fg); }
figure { margin:8px 0 0; } figcaption { font-size:13px; color:var(--muted); max-width:680px; }
.scroll { overflow-x:auto; }
pre { background:var(--bg-alt); padding:12px; overflow-x:auto; font-size:12px; border:1px solid var(--line); }
svg.chart { max-width:100%; height:auto; font-size:12px; }
svg .plot-bg { fill:#fff; } svg .frame { fill:none; stroke:#999; }
svg .grid { stroke:#ececec; } svg .axis { stroke:#666; }
svg .tick { fill:#555; font-size:11px; } svg .axis-label { fill:#333; font-size:12px; }
svg .chart-title { fill:#1b1b1b; font-size:13px; font-weight:600; }
svg .errbar { fill:none; stroke-width:1.3; }
svg circle { stroke:#fff; stroke-width:1.2; fill-opacity:.9; }
svg .point-label { font-size:11px; fill:#333; }
svg .oracle-label { font-size:12px; font-weight:700; fill:#111; }
svg .oracle-guide { stroke:#111; stroke-dasharray:4 4; stroke-opacity:.35; }
svg .bar-label { fill:#333; } svg .bar-value { fill:#333; font-size:11px; }
svg .marker { stroke:#111; stroke-width:1.5; stroke-dasharray:5 4; }
svg .marker-label { fill:#111; font-size:11px; font-weight:600; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _status_badge(status: str) -> str:
    cls = status if status in _STATUSES else "other"
    return f'<span class="status status-{cls}">{_e(status)}</span>'


def _colors(summary: Sequence[SummaryRow]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    for s in summary:
        if s.is_oracle:
            out["\0oracle\0" + s.method] = ORACLE_COLOR
        else:
            out[s.method] = color_for(i)
            i += 1
    return out


def _color(colors: Mapping[str, str], s: SummaryRow) -> str:
    return colors.get("\0oracle\0" + s.method if s.is_oracle else s.method, ORACLE_COLOR)


def _swatch(color: str, oracle: bool) -> str:
    extra = " oracle-swatch" if oracle else ""
    return f'<span class="swatch{extra}" style="background:{color}"></span>'


def _summary_table(summary: Sequence[SummaryRow], colors: Mapping[str, str]) -> str:
    cols = columns_for(summary)
    head = "".join(f'<th title="{_e(c.direction)}">{_e(c.header)}</th>' for c in cols)
    out = ['<div class="scroll"><table class="summary">',
           f'<thead><tr><th>Method</th>{head}<th>seeds</th><th>status</th><th title="{_e(VERDICT_NOTE)}">verdict'
           "</th></tr></thead>", "<tbody>"]
    sigs = column_sigs(summary, cols)
    for s in summary:
        tds = "".join(f"<td>{_e(cell(s, c, sigs[c.key]))}</td>" for c in cols)
        cls = ' class="oracle"' if s.is_oracle else ""
        name = _swatch(_color(colors, s), s.is_oracle) + _e(label(s))
        why = _e("; ".join(s.verdict_reasons))
        verdict = f'<td class="verdict v-{_e(s.verdict or "none")}" title="{why}">{_e(verdict_cell(s))}</td>'
        out.append(f"<tr{cls}><td>{name}</td>{tds}<td>{_e(seeds_cell(s))}</td><td>{_status_badge(s.status)}</td>"
                   f"{verdict}</tr>")
    if not summary:
        out.append(f'<tr><td colspan="{len(cols) + 4}">no result rows</td></tr>')
    out.append("</tbody></table></div>")
    out.append(f'<p class="note">{_e(CELL_NOTE)}</p>')
    out.append(f'<p class="note">{_e(VERDICT_NOTE)}</p>')
    items = "".join(f"<li><b>{_e(c.header)}</b>: {_e(c.direction).replace('*', '')}</li>" for c in cols)
    out.append(f'<ul class="directions">{items}<li><b>seeds</b>: {_e(SEEDS_DIRECTION.replace("`", ""))}</li></ul>')
    return "\n".join(out)


def _failures_section(summary: Sequence[SummaryRow]) -> str:
    failed = failures(summary)
    if not failed:
        return '<p class="note">None: every (method, seed) finished.</p>'
    out = ["<ul>"]
    for s in failed:
        seeds = ", ".join(str(x) for x in s.failed_seeds)
        errs = "".join(f'<li class="err">{_e(one_line(e, 1000))}</li>' for e in s.errors)
        out.append(f"<li><b>{_e(label(s))}</b> {_status_badge(s.status)} {s.n_failed} of {s.n_total} seeds failed "
                   f"(seeds {_e(seeds)})<ul>{errs}</ul></li>")
    out.append("</ul>")
    return "\n".join(out)


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _scatter(summary: Sequence[SummaryRow], colors: Mapping[str, str]) -> str:
    points: list[Point] = []
    oracle: Point | None = None
    skipped: list[str] = []
    for s in summary:
        x, y = s.mean.get(UA.key, float("nan")), s.mean.get(TA.key, float("nan"))
        if s.n_seeds == 0:
            skipped.append(f"{label(s)} (no successful seed)")
            continue
        missing = [c.header for c, v in ((UA, x), (TA, y)) if not _finite(v)]
        if missing:
            skipped.append(f"{label(s)} ({' and '.join(missing)} missing or NaN)")
            continue
        xe, ye = s.std.get(UA.key, 0.0), s.std.get(TA.key, 0.0)
        p = Point(s.method, x, y, xe if _finite(xe) else 0.0, ye if _finite(ye) else 0.0, _color(colors, s))
        if s.is_oracle:
            oracle = p
        else:
            points.append(p)
    caption = ("Each point is a method's mean over seeds, error bars ± one std. UA (x): 100 − forget accuracy; TA (y): "
               "test accuracy. The best place is the oracle's (black diamond, dashed guides): same forgetting, "
               "same utility.")
    if oracle is None:
        caption += " No oracle row to plot."
    if skipped:
        caption += " Not plotted: " + "; ".join(skipped) + "."
    if not points and oracle is None:
        return f'<figure><p class="note">Nothing to plot.</p><figcaption>{_e(caption)}</figcaption></figure>'
    svg = scatter_svg(points, oracle, x_label="UA (%)", y_label="TA (%)", title="Forgetting vs utility")
    return f'<figure id="scatter">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _gap_bars(summary: Sequence[SummaryRow], colors: Mapping[str, str]) -> str:
    bars: list[Bar] = []
    skipped: list[str] = []
    partial: list[str] = []
    has_oracle = any(s.is_oracle and s.n_seeds > 0 for s in summary)
    for s in summary:
        if s.is_oracle:
            continue
        if not _finite(s.gap_of_means):
            skipped.append(f"{label(s)} ({'no successful seed' if s.n_seeds == 0 else 'no metric to compare'})")
            continue
        bars.append(Bar(s.method, s.gap_of_means, 0.0, _color(colors, s)))
        if s.gap_n < s.gap_n_oracle:
            partial.append(f"{label(s)} ({s.gap_n} of {s.gap_n_oracle})")
    caption = "Avg. Gap of the seed means to the oracle, over UA, RA, TA and MIA-Eff. (percentage points). " \
              "Lower is better; the oracle's is 0."
    if not has_oracle:
        caption += " The run has no successful oracle row, so no gap can be computed."
    if skipped and has_oracle:
        caption += " Not plotted: " + "; ".join(skipped) + "."
    if partial:
        caption += (" Over fewer metrics (a metric was missing or NaN), so not comparable: "
                    + "; ".join(partial) + ".")
    if not bars:
        return f'<figure><p class="note">Nothing to plot.</p><figcaption>{_e(caption)}</figcaption></figure>'
    svg = hbar_svg(bars, title="Avg. Gap to the oracle (lower is better)", unit="percentage points")
    return f'<figure id="gap-bars">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _time_bars(summary: Sequence[SummaryRow], colors: Mapping[str, str]) -> str:
    bars: list[Bar] = []
    skipped: list[str] = []
    marker = None
    for s in summary:
        v = s.mean.get(RTE.key, float("nan"))
        if s.is_oracle:
            if _finite(v):
                marker = (v, f"oracle retrain: {fmt_num(v)} s")
            continue
        if not _finite(v):
            skipped.append(f"{label(s)} ({'no successful seed' if s.n_seeds == 0 else 'no time recorded'})")
            continue
        err = s.std.get(RTE.key, 0.0)
        bars.append(Bar(s.method, v, err if _finite(err) else 0.0, _color(colors, s)))
    caption = "Wall-clock seconds of the unlearning step, mean over seeds, whiskers + one std. Lower is better."
    caption += (" The dashed line is the oracle's retraining time, the cost that unlearning tries to avoid."
                if marker else " The oracle's retraining time is not recorded.")
    if skipped:
        caption += " Not plotted: " + "; ".join(skipped) + "."
    if not bars and marker is None:
        return f'<figure><p class="note">Nothing to plot.</p><figcaption>{_e(caption)}</figcaption></figure>'
    svg = hbar_svg(bars, title="Unlearning time (lower is better)", unit="seconds", marker=marker)
    return f'<figure id="time-bars">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _per_seed_table(rows: Sequence[Mapping[str, Any]], with_fta: bool) -> str:
    cols = [UA, RA, TA, *( [FTA] if with_fta else []), MIA]
    head = "".join(f"<th>{_e(c.header)}</th>" for c in cols)
    out = ['<div class="scroll"><table class="per-seed">',
           f"<thead><tr><th>Method</th><th>seed</th><th>status</th>{head}<th>Avg. Gap</th><th>RTE (s)</th>"
           '<th class="err">error</th></tr></thead>', "<tbody>"]
    replaced = superseded_rows(rows)

    def metric(row: Mapping[str, Any], key: str) -> float:
        m = row.get("metrics")
        return as_number(m.get(key)) if isinstance(m, Mapping) else float("nan")

    sigs = {k: column_sig([metric(r, k) for r in rows]) for k in [*(c.key for c in cols), "avg_gap", RTE.key]}
    for row, old in zip(rows, replaced):
        metrics = row.get("metrics") if isinstance(row.get("metrics"), Mapping) else {}
        oracle = bool(row.get("is_oracle", False))
        name = str(row.get("method")) + (" (oracle)" if oracle else "")
        status = row_status(row)
        badge = _status_badge(status) + (' <span class="note">(replaced by a later row)</span>' if old else "")
        vals = "".join(f"<td>{_e(fmt_num(as_number(metrics.get(c.key)), sig=sigs[c.key]))}</td>" for c in cols)
        gap = _e(fmt_num(as_number(metrics.get("avg_gap")), sig=sigs["avg_gap"]))
        rte = _e(fmt_num(as_number(metrics.get(RTE.key)), sig=sigs[RTE.key]))
        err = row.get("error")
        classes = [c for c, on in (("oracle", oracle), ("superseded", old)) if on]
        cls = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f"<tr{cls}><td>{_e(name)}</td><td>{_e(row.get('seed'))}</td><td>{badge}</td>{vals}"
                   f'<td>{gap}</td><td>{rte}</td><td class="err">{_e(one_line(err, 1000)) if err else ""}</td></tr>')
    if not rows:
        out.append(f'<tr><td colspan="{len(cols) + 6}">no result rows</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _methods_table(summary: Sequence[SummaryRow]) -> str:
    out = ['<div class="scroll"><table class="methods"><thead><tr><th>label</th><th>method</th><th>parameters</th>'
           "</tr></thead><tbody>"]
    for s in summary:
        params = json.dumps(s.params, sort_keys=True, default=str) if s.params else "(defaults)"
        out.append(f'<tr><td>{_e(label(s))}</td><td>{_e(s.method_name)}</td>'
                   f'<td class="err" style="color:inherit">{_e(params)}</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def to_html(summary: Sequence[SummaryRow], rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any],
            extra_sections: str = "") -> str:
    """Render the run as ONE self-contained, offline HTML page (inline CSS and SVG, no script, no URL).

    Args:
        summary: rows from :func:`unlearnkit.report.summarize` (oracle first).
        rows: the result rows in file order (as :func:`unlearnkit.report.load_rows` returns them, retries included;
            rows replaced by a later retry are shown struck through).
        meta: as for :func:`unlearnkit.report.to_markdown`, plus optional ``config_text`` (the resolved YAML).
        extra_sections: trusted HTML (built by :mod:`unlearnkit.report.figures`, every value escaped there) placed
            after the main charts: sequential / corrective curves, MIA ROC, ε histogram, CKA bars.

    Returns:
        The HTML text: header, summary table (mean ± std, 2 decimals), failures, a forget-vs-utility scatter
        (x = UA %, y = TA %, one circle per method with ± std error bars, the oracle a labelled diamond), a bar chart
        of Avg. Gap (percentage points, lower is better), a bar chart of unlearning time (seconds) with the oracle's
        retraining time marked, a per-seed table, the methods' parameters, and the resolved config.
    """
    run = str(meta.get("run") or "unnamed run")
    colors = _colors(summary)
    with_fta = any(FTA.key in s.mean for s in summary) or any(
        isinstance(r.get("metrics"), Mapping) and FTA.key in r["metrics"] for r in rows
    )
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta_lines(meta))
    config_text = meta.get("config_text")
    config_html = (f"<pre>{_e(config_text)}</pre>" if config_text
                   else '<p class="note">config.resolved.yaml was not found in the run directory.</p>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>unlearnkit report: {_e(run)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body><main>",
        f'<header><h1>unlearnkit report: {_e(run)}</h1><dl class="meta">{facts}</dl></header>',
        '<section id="summary"><h2>Summary</h2>',
        _summary_table(summary, colors),
        "</section>",
        '<section id="failures"><h2>Failed or diverged methods</h2>',
        _failures_section(summary),
        "</section>",
        '<section id="charts"><h2>Forgetting vs utility</h2>',
        _scatter(summary, colors),
        "<h2>Avg. Gap</h2>",
        _gap_bars(summary, colors),
        "<h2>Run-time</h2>",
        _time_bars(summary, colors),
        "</section>",
        extra_sections,
        '<section id="per-seed"><h2>Every result row</h2>',
        _per_seed_table(rows, with_fta),
        "</section>",
        '<section id="methods"><h2>Methods and parameters</h2>',
        _methods_table(summary),
        "</section>",
        '<section id="config"><h2>Resolved config</h2>',
        config_html,
        "</section>",
        f"<footer>Built by unlearnkit {_e(__version__)} from results.jsonl and "
        "config.resolved.yaml only; rebuild with <code>unlearnkit report RUN_DIR</code>.</footer>",
        "</main></body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


__all__ = ["to_html"]

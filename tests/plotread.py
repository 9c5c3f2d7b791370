"""Read back what a report's inline SVG line chart shows (import as ``from plotread import ...``).

The report's charts (unlearnkit.report.charts.line_svg) draw each series as a polyline with one circle marker per
point, and label the axes with tick texts at the grid positions. :func:`plotted_series` inverts that drawing: it maps
every marker's pixel position back to data coordinates through the tick labels (a linear fit of tick value against
tick pixel, per axis), so a test can compare the plotted values with the numbers in results.jsonl without trusting
the report's own scaling code. Only the standard library's XML parser and numpy are used.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

import numpy as np


def figure_svg(html: str, fig_id: str) -> str:
    """The ``<svg>…</svg>`` text inside ``<figure id="fig_id">`` of a report page (AssertionError if absent)."""
    m = re.search(r'<figure id="' + re.escape(fig_id) + r'">(<svg.*?</svg>)', html, flags=re.S)
    assert m, f"figure {fig_id!r} is not in the report"
    return m.group(1)


def _axis_fit(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of value = slope·pixel + intercept through the tick (pixel, value) pairs."""
    assert len(pairs) >= 2, f"an axis needs two ticks to be read, got {pairs}"
    px = np.array([p for p, _ in pairs])
    val = np.array([v for _, v in pairs])
    slope, icept = np.polyfit(px, val, 1)
    resid = np.abs(slope * px + icept - val).max()
    assert resid <= 1e-6 * max(1.0, np.abs(val).max()) + abs(slope) * 0.2, f"ticks not on a linear scale: {pairs}"
    return float(slope), float(icept)


def plotted_series(svg: str) -> dict[str, list[tuple[float, float]]]:
    """``{series label: [(x, y), ...]}`` in data units, read from the markers' pixel positions.

    Resolution: pixels are written with one decimal, so values carry an error of about 0.05 px times the axis'
    units per pixel (≈ 0.02 % of the axis span on the report's 310-px plot height).
    """
    root = ET.fromstring(svg)
    x_ticks, y_ticks = [], []
    for t in root.iter("text"):
        if t.get("class") != "tick":
            continue
        value = float(t.text)
        if t.get("text-anchor") == "middle":
            x_ticks.append((float(t.get("x")), value))
        elif t.get("text-anchor") == "end":
            y_ticks.append((float(t.get("y")), value))
    ax, bx = _axis_fit(x_ticks)
    ay, by = _axis_fit(y_ticks)
    # SVG pixels grow rightwards and downwards: values must grow to the right and upwards
    assert ax > 0, f"the x axis runs backwards (ticks {x_ticks})"
    assert ay < 0, f"the y axis is upside down (ticks {y_ticks})"
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for g in root.iter("g"):
        if g.get("class") != "series":
            continue
        line = g.find("polyline")
        label = line.find("title").text
        for c in g.iter("circle"):
            out[label].append((ax * float(c.get("cx")) + bx, ay * float(c.get("cy")) + by))
    return dict(out)


def axis_units_per_pixel(svg: str) -> tuple[float, float]:
    """|data units per pixel| of the x and y axes (for tolerances)."""
    root = ET.fromstring(svg)
    xs, ys = [], []
    for t in root.iter("text"):
        if t.get("class") == "tick":
            (xs if t.get("text-anchor") == "middle" else ys).append(
                (float(t.get("x") if t.get("text-anchor") == "middle" else t.get("y")), float(t.text)))
    return abs(_axis_fit(xs)[0]), abs(_axis_fit(ys)[0])


def expected_curves(rows, dim: str, key: str, *, scale_x: float = 1.0) -> dict[str, dict[float, float]]:
    """``{series label: {x: mean y over seeds}}`` straight from result rows: the last row of each (method, seed,
    stage) with status ``ok`` and a finite value; oracle rows are labelled ``"<method> (oracle)"``."""
    last = {}
    for r in rows:
        if dim not in r:
            continue
        last[(r["method"], bool(r.get("is_oracle")), r.get("seed"), r[dim])] = r
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (method, oracle, _seed, x), r in last.items():
        y = (r.get("metrics") or {}).get(key)
        if r.get("status") != "ok" or y is None or not math.isfinite(float(y)):
            continue
        acc[method + (" (oracle)" if oracle else "")][float(x) * scale_x].append(float(y))
    return {label: {x: float(np.mean(v)) for x, v in pts.items()} for label, pts in acc.items()}


def assert_plots_rows(html: str, fig_id: str, rows, dim: str, key: str, *, scale_x: float = 1.0) -> int:
    """Assert that figure ``fig_id`` plots exactly the series and points that the rows hold for ``key`` over ``dim``.

    Returns the number of points compared. Each plotted (x, y) must equal the rows' mean within the chart's pixel
    resolution; a series or point missing on either side fails.
    """
    svg = figure_svg(html, fig_id)
    got = plotted_series(svg)
    want = expected_curves(rows, dim, key, scale_x=scale_x)
    assert set(got) == set(want), f"{fig_id}: series {sorted(got)} plotted, rows have {sorted(want)}"
    ux, uy = axis_units_per_pixel(svg)
    n = 0
    for label, pts in want.items():
        plotted = sorted(got[label])
        assert len(plotted) == len(pts), f"{fig_id}/{label}: {len(plotted)} points plotted, rows have {len(pts)}"
        for (gx, gy), (wx, wy) in zip(plotted, sorted(pts.items())):
            assert abs(gx - wx) <= 0.1 * ux + 1e-9, f"{fig_id}/{label}: x {gx} plotted, rows say {wx}"
            assert abs(gy - wy) <= 0.1 * uy + 1e-9, f"{fig_id}/{label}: at x={wx} y {gy} plotted, rows say {wy}"
            n += 1
    return n

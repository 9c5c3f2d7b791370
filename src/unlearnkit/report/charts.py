"""Inline SVG charts for the offline HTML report, drawn without any plotting library.

Every function returns an ``<svg>`` element as a string (no ``xmlns``/URLs needed inside HTML5) with all text
HTML-escaped. Callers pass only finite numbers; empty inputs and all-equal values are handled (no division by zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from unlearnkit.report._common import column_sig, fmt_num

#: Okabe–Ito colour-blind-safe palette (without yellow, which is unreadable on white); cycled over methods.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#7F7F7F", "#8C564B")
ORACLE_COLOR = "#111111"


def color_for(i: int) -> str:
    """The colour of the ``i``-th non-oracle method."""
    return PALETTE[i % len(PALETTE)]


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def _tick_label(v: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step)))) if step > 0 else 0
    if step * 10**decimals % 1 > 1e-9:  # steps like 2.5
        decimals += 1
    return f"{v:.{decimals}f}"


def nice_step(span: float, n: int = 5) -> float:
    """A 1/2/2.5/5 × 10^k step giving about ``n`` intervals over ``span`` (> 0)."""
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw - 1e-12:
            return m * mag
    return 10 * mag  # pragma: no cover


def nice_domain(
    values: Sequence[float], *, lo_bound: float | None = None, hi_bound: float | None = None, n: int = 5
) -> tuple[float, float, list[float]]:
    """Axis ``(lo, hi, ticks)`` covering ``values`` with some padding, snapped to nice ticks.

    All-equal values get a ±max(1, 5%) window; ``lo_bound``/``hi_bound`` clip the padding (e.g. 0 and 100 for %)
    without cutting off data. Empty input gives ``(0, 1, [0, 0.5, 1])``-like axes.
    """
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        vals = [0.0, 1.0]
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        pad = max(abs(lo) * 0.05, 1.0)
    else:
        pad = 0.08 * (hi - lo)
    dlo, dhi = lo - pad, hi + pad
    if lo_bound is not None and lo >= lo_bound:
        dlo = max(dlo, lo_bound)
    if hi_bound is not None and hi <= hi_bound:
        dhi = min(dhi, hi_bound)
    if dhi - dlo < 1e-9:  # pragma: no cover - defensive
        dhi = dlo + 1.0
    step = nice_step(dhi - dlo, n)
    dlo = math.floor(dlo / step + 1e-9) * step
    dhi = math.ceil(dhi / step - 1e-9) * step
    if lo_bound is not None and lo >= lo_bound:
        dlo = max(dlo, lo_bound)
    if hi_bound is not None and hi <= hi_bound:
        dhi = min(dhi, hi_bound)
    if dhi <= dlo:  # pragma: no cover - defensive
        dhi = dlo + step
    ticks = []
    t = math.ceil(dlo / step - 1e-9) * step
    while t <= dhi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return dlo, dhi, ticks


@dataclass(frozen=True)
class Point:
    """A scatter point: a method's mean (x, y) with std error bars (0 = none)."""

    label: str
    x: float
    y: float
    xerr: float = 0.0
    yerr: float = 0.0
    color: str = PALETTE[0]


def _axes(title: str, width: int, height: int, ml: float, mt: float, pw: float, ph: float, xt: list[float],
          yt: list[float], sx: Callable[[float], float], sy: Callable[[float], float], x_label: str,
          y_label: str) -> list[str]:
    """Opening SVG elements of an x–y chart: background, grid with tick labels, frame, axis labels and title."""
    out = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="plot-bg"/>',
    ]
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    for t in xt:
        X = _f(sx(t))
        out.append(f'<line x1="{X}" y1="{mt}" x2="{X}" y2="{mt + ph}" class="grid"/>')
        out.append(f'<text x="{X}" y="{mt + ph + 18}" class="tick" text-anchor="middle">{_tick_label(t, xstep)}</text>')
    for t in yt:
        Y = _f(sy(t))
        out.append(f'<line x1="{ml}" y1="{Y}" x2="{ml + pw}" y2="{Y}" class="grid"/>')
        out.append(f'<text x="{ml - 8}" y="{Y}" dy="0.32em" class="tick" text-anchor="end">'
                   f"{_tick_label(t, ystep)}</text>")
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 12}" class="axis-label" text-anchor="middle">'
               f"{escape(x_label)}</text>")
    out.append(f'<text transform="translate(16 {mt + ph / 2:.1f}) rotate(-90)" class="axis-label" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    out.append(f'<text x="{ml}" y="{mt - 12}" class="chart-title">{escape(title)}</text>')
    return out


def scatter_svg(
    points: Sequence[Point],
    oracle: Point | None,
    *,
    x_label: str,
    y_label: str,
    title: str,
    percent_bounds: bool = True,
    width: int = 680,
    height: int = 440,
) -> str:
    """Scatter of method means with ± std error bars; one ``<circle>`` per method, the oracle a black diamond.

    The oracle is drawn first, so a method sitting exactly on it shows as a circle inside the diamond.

    Dashed guide lines cross at the oracle so "closer to the oracle" can be read off directly.
    """
    ml, mr, mt, mb = 62, 24, 34, 56
    pw, ph = width - ml - mr, height - mt - mb
    allp = list(points) + ([oracle] if oracle else [])
    xs = [v for p in allp for v in (p.x - p.xerr, p.x + p.xerr)]
    ys = [v for p in allp for v in (p.y - p.yerr, p.y + p.yerr)]
    b = (0.0, 100.0) if percent_bounds else (None, None)
    x0, x1, xt = nice_domain(xs, lo_bound=b[0], hi_bound=b[1])
    y0, y1, yt = nice_domain(ys, lo_bound=b[0], hi_bound=b[1])

    inset = 10  # points on the axis bounds (UA = 100 %) stay inside the frame

    def sx(v: float) -> float:
        return ml + inset + (v - x0) / (x1 - x0) * (pw - 2 * inset)

    def sy(v: float) -> float:
        return mt + ph - inset - (v - y0) / (y1 - y0) * (ph - 2 * inset)

    out = _axes(title, width, height, ml, mt, pw, ph, xt, yt, sx, sy, x_label, y_label)

    if oracle is not None:
        ox, oy = sx(oracle.x), sy(oracle.y)
        out.append(f'<line x1="{_f(ox)}" y1="{mt}" x2="{_f(ox)}" y2="{mt + ph}" class="oracle-guide"/>')
        out.append(f'<line x1="{ml}" y1="{_f(oy)}" x2="{ml + pw}" y2="{_f(oy)}" class="oracle-guide"/>')

    def errbars(p: Point, cx: float, cy: float, color: str) -> None:
        if p.xerr > 0:
            a, b2 = _f(sx(p.x - p.xerr)), _f(sx(p.x + p.xerr))
            out.append(f'<path d="M{a} {_f(cy)}H{b2}M{a} {_f(cy - 4)}V{_f(cy + 4)}M{b2} {_f(cy - 4)}V{_f(cy + 4)}" '
                       f'stroke="{color}" class="errbar"/>')
        if p.yerr > 0:
            a, b2 = _f(sy(p.y - p.yerr)), _f(sy(p.y + p.yerr))
            out.append(f'<path d="M{_f(cx)} {a}V{b2}M{_f(cx - 4)} {a}H{_f(cx + 4)}M{_f(cx - 4)} {b2}H{_f(cx + 4)}" '
                       f'stroke="{color}" class="errbar"/>')

    if oracle is not None:
        ox, oy = sx(oracle.x), sy(oracle.y)
        errbars(oracle, ox, oy, ORACLE_COLOR)
        tip = f"oracle ({oracle.label}): {x_label} {fmt_num(oracle.x)}, {y_label} {fmt_num(oracle.y)}"
        d = 9.0
        out.append(f'<g class="oracle"><polygon points="{_f(ox)},{_f(oy - d)} {_f(ox + d)},{_f(oy)} '
                   f'{_f(ox)},{_f(oy + d)} {_f(ox - d)},{_f(oy)}" fill="{ORACLE_COLOR}">'
                   f"<title>{escape(tip)}</title></polygon>")
        anchor, dx = ("end", -11) if ox > ml + pw * 0.75 else ("start", 11)
        out.append(f'<text x="{_f(ox + dx)}" y="{_f(oy + 16)}" text-anchor="{anchor}" class="oracle-label">'
                   "oracle</text></g>")
    for p in points:
        cx, cy = sx(p.x), sy(p.y)
        errbars(p, cx, cy, p.color)
        tip = (f"{p.label}: {x_label} {fmt_num(p.x)} ± {fmt_num(p.xerr)}, {y_label} {fmt_num(p.y)} ± "
               f"{fmt_num(p.yerr)}")
        out.append(f'<g class="point"><circle cx="{_f(cx)}" cy="{_f(cy)}" r="5.5" fill="{p.color}">'
                   f"<title>{escape(tip)}</title></circle>")
        anchor, dx = ("end", -9) if cx > ml + pw * 0.75 else ("start", 9)
        out.append(f'<text x="{_f(cx + dx)}" y="{_f(cy - 7)}" text-anchor="{anchor}" class="point-label">'
                   f"{escape(_short(p.label))}</text></g>")
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Bar:
    """A horizontal bar: value (≥ 0 expected) with an optional ± err whisker (0 = none)."""

    label: str
    value: float
    err: float = 0.0
    color: str = PALETTE[0]


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def hbar_svg(
    bars: Sequence[Bar],
    *,
    title: str,
    unit: str,
    marker: tuple[float, str] | None = None,
    digits: int = 2,
    width: int = 680,
) -> str:
    """Horizontal bar chart, one bar per method, value printed at the bar's end.

    ``marker`` = (value, text) draws a dashed reference line (e.g. the oracle's retraining time) across all bars.
    An all-zero chart still has a unit-wide axis. Values print with :func:`~unlearnkit.report._common.fmt_num`
    (at least ``digits`` decimals, more where two different bars would print alike, scientific below 1e-3).
    """
    ml, mr, mt, mb = 190, 70, 34, 40
    row = 28
    n = max(len(bars), 1)
    ph = n * row
    height = mt + ph + mb + (16 if marker else 0)
    pw = width - ml - mr
    vals = [0.0] + [b.value + max(b.err, 0.0) for b in bars] + [b.value for b in bars]
    if marker is not None:
        vals.append(marker[0])
    lo = min(vals)
    _, x1, ticks = nice_domain([lo, max(vals)], lo_bound=0.0 if lo >= 0 else None)
    x0 = min(0.0, ticks[0]) if lo < 0 else 0.0
    ticks = [t for t in ticks if t >= x0 - 1e-12]
    if x1 <= x0:  # pragma: no cover - defensive
        x1 = x0 + 1.0

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    top = mt + (16 if marker else 0)
    out = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{ml}" y="{mt - 12}" class="chart-title">{escape(title)}</text>',
    ]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for t in ticks:
        X = _f(sx(t))
        out.append(f'<line x1="{X}" y1="{top}" x2="{X}" y2="{top + ph}" class="grid"/>')
        out.append(f'<text x="{X}" y="{top + ph + 16}" class="tick" text-anchor="middle">{_tick_label(t, step)}'
                   "</text>")
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{top + ph + 34}" class="axis-label" text-anchor="middle">'
               f"{escape(unit)}</text>")
    zero = sx(0.0)
    sig = column_sig([b.value for b in bars])

    def num(v: float) -> str:
        return fmt_num(v, digits, sig)

    for i, b in enumerate(bars):
        y = top + i * row
        bx, bw = (zero, sx(b.value) - zero) if b.value >= 0 else (sx(b.value), zero - sx(b.value))
        tip = f"{b.label}: {num(b.value)}" + (f" ± {num(b.err)}" if b.err > 0 else "") + f" {unit}"
        out.append(f'<g class="bar"><text x="{ml - 8}" y="{y + row / 2:.1f}" dy="0.32em" text-anchor="end" '
                   f'class="bar-label">{escape(_short(b.label))}</text>')
        out.append(f'<rect x="{_f(bx)}" y="{y + 5}" width="{_f(max(bw, 0.0))}" height="{row - 10}" '
                   f'fill="{b.color}"><title>{escape(tip)}</title></rect>')
        end = sx(b.value)
        if b.err > 0:
            a, c = sx(max(b.value - b.err, x0)), sx(b.value + b.err)
            cy = y + row / 2
            out.append(f'<path d="M{_f(a)} {cy:.1f}H{_f(c)}M{_f(c)} {cy - 5:.1f}V{cy + 5:.1f}" class="errbar" '
                       'stroke="#333"/>')
            end = max(end, c)
        out.append(f'<text x="{_f(end + 6)}" y="{y + row / 2:.1f}" dy="0.32em" class="bar-value">'
                   f"{num(b.value)}</text></g>")
    out.append(f'<line x1="{_f(zero)}" y1="{top}" x2="{_f(zero)}" y2="{top + ph}" class="axis"/>')
    if marker is not None:
        mx = sx(marker[0])
        out.append(f'<line x1="{_f(mx)}" y1="{top - 4}" x2="{_f(mx)}" y2="{top + ph}" class="marker"/>')
        anchor = "end" if mx > ml + pw * 0.6 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<text x="{_f(mx + dx)}" y="{top - 6}" text-anchor="{anchor}" class="marker-label">'
                   f"{escape(marker[1])}</text>")
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Series:
    """A polyline of a line chart: ``xs``/``ys`` finite floats of equal length, drawn with markers unless
    ``markers`` is False; ``dashed`` for reference curves (the oracle, chance)."""

    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = True


def line_svg(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_bounds: tuple[float | None, float | None] = (None, None),
    y_bounds: tuple[float | None, float | None] = (None, None),
    diagonal: bool = False,
    width: int = 680,
    height: int = 400,
) -> str:
    """Line chart with one polyline (+ circle markers with a tooltip) per series and a legend on the right.

    ``diagonal`` draws the dashed y = x chance line (ROC curves). Non-finite points are dropped; an empty chart
    still has axes. Bounds clip the axis padding as in :func:`nice_domain`.
    """
    legend_w = 170
    ml, mr, mt, mb = 62, 24 + legend_w, 34, 56
    pw, ph = width - ml - mr, height - mt - mb
    pts = [[(x, y) for x, y in zip(s.xs, s.ys) if math.isfinite(x) and math.isfinite(y)] for s in series]
    xs = [x for p in pts for x, _ in p] + ([0.0, 1.0] if diagonal else [])
    ys = [y for p in pts for _, y in p] + ([0.0, 1.0] if diagonal else [])
    x0, x1, xt = nice_domain(xs, lo_bound=x_bounds[0], hi_bound=x_bounds[1])
    y0, y1, yt = nice_domain(ys, lo_bound=y_bounds[0], hi_bound=y_bounds[1])

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    out = _axes(title, width, height, ml, mt, pw, ph, xt, yt, sx, sy, x_label, y_label)
    if diagonal:
        a, b = max(x0, y0), min(x1, y1)
        if b > a:
            out.append(f'<line x1="{_f(sx(a))}" y1="{_f(sy(a))}" x2="{_f(sx(b))}" y2="{_f(sy(b))}" '
                       'class="oracle-guide"/>')
    for s, p in zip(series, pts):
        if not p:
            continue
        d = " ".join(f"{_f(sx(x))},{_f(sy(y))}" for x, y in p)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<g class="series"><polyline points="{d}" fill="none" stroke="{s.color}" stroke-width="2"'
                   f"{dash}><title>{escape(s.label)}</title></polyline>")
        if s.markers:
            for x, y in p:
                tip = f"{s.label}: {x_label} {x:.4g}, {y_label} {y:.4g}"
                out.append(f'<circle cx="{_f(sx(x))}" cy="{_f(sy(y))}" r="3.5" fill="{s.color}">'
                           f"<title>{escape(tip)}</title></circle>")
        out.append("</g>")
    lx = width - legend_w + 6
    for i, s in enumerate(series):
        y = mt + 8 + i * 18
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<g class="legend"><line x1="{lx}" y1="{y}" x2="{lx + 22}" y2="{y}" stroke="{s.color}" '
                   f'stroke-width="2"{dash}/><text x="{lx + 28}" y="{y}" dy="0.32em" class="point-label">'
                   f"{escape(_short(s.label, 22))}</text></g>")
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["Bar", "PALETTE", "Point", "Series", "color_for", "hbar_svg", "line_svg", "nice_domain", "nice_step",
           "scatter_svg"]

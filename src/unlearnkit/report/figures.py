"""Evaluation figures of the HTML report, rebuilt from the run's files only (results.jsonl, per_sample/*.npz,
neurips.json): MIA ROC curves, the per-example ε histogram of the NeurIPS-2023 score, CKA bars, corrective curves
over the identified fraction p, sequential curves over deletion requests and (LLM track) scalability curves over
forget-set sizes.

Every section is inline SVG (:mod:`unlearnkit.report.charts`); a section whose data is absent from the run is left
out (ROC, CKA, ε) or not built at all (corrective, sequential), so classic runs keep their report unchanged.
Numpy and scikit-learn only (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.report.charts import ORACLE_COLOR, Bar, Series, color_for, hbar_svg, line_svg
from unlearnkit.report.summary import SummaryRow, as_number, latest_rows, row_status
from unlearnkit.results import row_dimensions

#: (npz member-score key, [non-member keys in order of preference], mask prefix, what) of the ROC sources
ROC_SOURCES: tuple[tuple[str, tuple[str, ...], str | None, str], ...] = (
    ("mia.loss_forget", ("mia.loss_test_forgotten", "mia.loss_test", "mia.loss_test_all"), "mia.kept_",
     "loss attack (−CE), D_f vs held-out test data"),
    ("lira.lr_forget", ("lira.lr_test",), None, "LiRA likelihood ratio, D_f vs test data"),
)
MAX_ROC_POINTS = 200
CORRECTIVE_KEYS: tuple[tuple[str, str, str], ...] = (
    ("attack_success_rate", "Attack success rate (%)", "lower is better"),
    ("confusion_rate", "Confusion rate (%)", "lower is better"),
    ("corrupted_acc", "Corrupted-domain accuracy (%)", "higher is better"),
    ("clean_acc", "Clean accuracy (%)", "higher is better"),
)
SEQUENTIAL_KEYS: tuple[tuple[str, str, str], ...] = (
    ("unlearn_acc", "UA (%) after each request", "closer to the oracle is better"),
    ("test_acc", "TA (%) after each request", "higher is better"),
    ("mia_efficacy", "MIA-Eff. (%) after each request", "closer to the oracle is better"),
)
#: LLM-track curves over requests / forget-set sizes: (key, title, direction, y label, y bounds); TOFU
#: (Maini et al. 2024) and MUSE (Shi et al. 2024) metrics, each plotted only when the rows have it
LLM_STAGE_KEYS: tuple[tuple[str, str, str, str, tuple[float | None, float | None]], ...] = (
    ("forget_quality", "Forget quality (KS p-value vs θ_r)", "higher is better", "p-value", (0.0, 1.0)),
    ("model_utility", "Model utility", "higher is better", "utility", (0.0, 1.0)),
    ("verbmem_f", "VerbMem on D_f (ROUGE-L F1)", "lower is better", "ROUGE-L", (0.0, 1.0)),
    ("knowmem_f", "KnowMem on D_f (ROUGE-L)", "lower is better", "ROUGE-L", (0.0, 1.0)),
    ("knowmem_r", "KnowMem on D_r (ROUGE-L)", "higher is better", "ROUGE-L", (0.0, 1.0)),
    ("privleak", "PrivLeak (%)", "closer to 0 is better", "%", (None, None)),
)


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _figure(fig_id: str, svg: str, caption: str) -> str:
    return f'<figure id="{_e(fig_id)}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def method_colors(summary: Sequence[SummaryRow]) -> dict[str, str]:
    """Method label → colour, the same assignment as the main charts (oracle black)."""
    out: dict[str, str] = {}
    i = 0
    for s in summary:
        if s.is_oracle:
            out.setdefault(s.method, ORACLE_COLOR)
        elif s.method not in out:
            out[s.method] = color_for(i)
            i += 1
    return out


# -- ROC curves ------------------------------------------------------------------------------------------------------
def _downsample(f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(f) <= MAX_ROC_POINTS:
        return f, t
    idx = np.unique(np.linspace(0, len(f) - 1, MAX_ROC_POINTS).astype(int))
    return f[idx], t[idx]


def roc_points(member: np.ndarray, nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(FPR, TPR, AUC) of "score > t ⇒ member" (sklearn ``roc_curve``), at most ``MAX_ROC_POINTS`` points."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    s = np.concatenate([member, nonmember])
    f, t, _ = roc_curve(y, s)
    f, t = _downsample(f, t)
    return f, t, float(roc_auc_score(y, s))


def _ok_seed_rows(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[bool, str], Mapping[str, Any]]:
    """The first ok row per (is_oracle, method) among rows without extra dimensions (p, request)."""
    out: dict[tuple[bool, str], Mapping[str, Any]] = {}
    for r in latest_rows(rows):
        if row_status(r) != "ok" or row_dimensions(r):
            continue
        out.setdefault((bool(r.get("is_oracle")), str(r["method"])), r)
    return out


def _roc_from_npz(path: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    try:
        z = np.load(path)
    except (OSError, ValueError):
        return None
    with z:
        for mkey, nkeys, mask, what in ROC_SOURCES:
            if mkey not in z.files:
                continue
            nkey = next((k for k in nkeys if k in z.files), None)
            if nkey is None:
                continue
            m, n = np.asarray(z[mkey], float), np.asarray(z[nkey], float)
            if mask is not None:
                km, kn = mask + mkey.split("_", 1)[1], mask + nkey.split("_", 1)[1]
                if km in z.files and len(z[km]) == len(m):
                    m = m[np.asarray(z[km], bool)]
                if kn in z.files and len(z[kn]) == len(n):
                    n = n[np.asarray(z[kn], bool)]
            m, n = m[np.isfinite(m)], n[np.isfinite(n)]
            if len(m) and len(n):
                return m, n, what
    return None


def roc_section(run_dir: Path, rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """MIA ROC curves, one per method (first successful seed), from ``per_sample/<method>-seed<s>.npz``."""
    series: list[Series] = []
    whats: set[str] = set()
    for (is_oracle, method), r in _ok_seed_rows(rows).items():
        got = _roc_from_npz(run_dir / "per_sample" / f"{method}-seed{r.get('seed')}.npz")
        if got is None:
            continue
        m, n, what = got
        f, t, auc = roc_points(m, n)
        whats.add(what)
        name = f"{method}{' (oracle)' if is_oracle else ''} AUC {auc:.3f}"
        series.append(Series(name, tuple(f.tolist()), tuple(t.tolist()), colors.get(method, ORACLE_COLOR),
                             dashed=is_oracle, markers=False))
    if not series:
        return ""
    svg = line_svg(series, title="Membership inference ROC (forget set vs unseen data)", x_label="FPR",
                   y_label="TPR", x_bounds=(0.0, 1.0), y_bounds=(0.0, 1.0), diagonal=True)
    cap = (f"ROC of the {'; '.join(sorted(whats))}, first successful seed of each method, from the per-sample "
           "scores. The dashed diagonal is chance (no membership signal); after good unlearning a method's curve "
           "lies on the oracle's (dashed black). Read low FPR for the strongest evidence (Carlini et al. 2022).")
    return f'<h2>Membership-inference ROC</h2>{_figure("mia-roc", svg, cap)}'


# -- NeurIPS ε histogram --------------------------------------------------------------------------------------------
def epsilon_section(neurips: Mapping[str, Any] | None, colors: Mapping[str, str]) -> str:
    """Histogram (0.5-wide bins, as the score's buckets) of the per-example ε of each scored method."""
    if not neurips:
        return ""
    series: list[Series] = []
    top = 0.0
    data: list[tuple[str, np.ndarray]] = []
    for method, s in (neurips.get("methods") or {}).items():
        eps = s.get("epsilons") if isinstance(s, Mapping) else None
        if not eps:
            continue
        e = np.asarray(eps, dtype=float)
        data.append((method, e))
        top = max(top, float(np.max(e[np.isfinite(e)])) if np.isfinite(e).any() else 0.0)
    if not data:
        return ""
    edges = np.arange(0.0, math.ceil(top / 0.5) * 0.5 + 0.5 + 1e-9, 0.5)
    for method, e in data:
        counts, _ = np.histogram(np.clip(e, 0, edges[-1] - 1e-9), bins=edges)
        frac = counts / max(len(e), 1)
        series.append(Series(method, tuple(edges[:-1].tolist()), tuple(frac.tolist()), colors.get(method, "#333")))
    svg = line_svg(series, title="Per-example ε (NeurIPS-2023 score)", x_label="ε (lower edge of 0.5-wide bin)",
                   y_label="share of forget examples", y_bounds=(0.0, 1.0))
    cap = ("Distribution of the per-example ε of the competition score (Triantafillou et al. 2024): small ε = the "
           "unlearned models' confidence on that example is hard to tell from the oracles'. The score gives 2/2^n "
           f"points to bin n; ε at the cap ({50:g}) scores 0.")
    return f'<h2>NeurIPS-2023 ε per example</h2>{_figure("eps-hist", svg, cap)}'


# -- CKA ----------------------------------------------------------------------------------------------------------
def cka_section(summary: Sequence[SummaryRow], colors: Mapping[str, str]) -> str:
    """Bars of linear CKA on D_f to θ_o and to θ_r (metric ``representation``), seed means ± std."""
    parts = []
    for key, title in (("cka_original_forget", "CKA(θ_u, θ_o) on D_f"), ("cka_oracle_forget", "CKA(θ_u, θ_r) on D_f")):
        bars = []
        for s in summary:
            v = s.mean.get(key, float("nan"))
            if not math.isfinite(v):
                continue
            err = s.std.get(key, 0.0)
            lab = s.method + (" (oracle)" if s.is_oracle else "")
            bars.append(Bar(lab, v, err if math.isfinite(err) else 0.0, colors.get(s.method, ORACLE_COLOR)))
        if bars:
            fig_id = "cka-" + key.split("_")[1]
            parts.append(_figure(fig_id, hbar_svg(bars, title=title, unit="linear CKA (0–1)", digits=3),
                                 f"{title}, penultimate features, mean ± std over seeds. Compare with the oracle's "
                                 "bar: a value near 1 to θ_o with a lower oracle value means the representation of "
                                 "D_f was kept (Kim et al. 2025)."))
    return "<h2>Representation similarity (CKA)</h2>" + "".join(parts) if parts else ""


# -- curves over p / over requests ---------------------------------------------------------------------------------
def _curves(rows: Sequence[Mapping[str, Any]], dim: str, key: str) -> dict[tuple[bool, str], dict[float, list[float]]]:
    out: dict[tuple[bool, str], dict[float, list[float]]] = {}
    for r in latest_rows(rows):
        if row_status(r) != "ok" or dim not in r:
            continue
        x = as_number(r.get(dim))
        y = as_number((r.get("metrics") or {}).get(key))
        if math.isfinite(x) and math.isfinite(y):
            out.setdefault((bool(r.get("is_oracle")), str(r["method"])), {}).setdefault(x, []).append(y)
    return out


def _curve_charts(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], dim: str, keys, x_label: str,
                  fig_prefix: str, scale_x: float = 1.0) -> list[str]:  # noqa: ANN001
    figs = []
    for key, title, direction, *axis in keys:  # axis: (y label, y bounds); default percent in [0, 100]
        y_label, y_bounds = axis if axis else ("%", (0.0, 100.0))
        cur = _curves(rows, dim, key)
        if not cur:
            continue
        series = []
        for (is_oracle, method), pts in cur.items():
            xs = sorted(pts)
            series.append(Series(method + (" (oracle)" if is_oracle else ""), tuple(x * scale_x for x in xs),
                                 tuple(float(np.mean(pts[x])) for x in xs), colors.get(method, ORACLE_COLOR),
                                 dashed=is_oracle))
        svg = line_svg(series, title=title, x_label=x_label, y_label=y_label, y_bounds=y_bounds)
        figs.append(_figure(f"{fig_prefix}-{key}", svg, f"{title} ({direction}); mean over seeds at each point."))
    return figs


def corrective_section(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """Curves over the identified fraction p of the manipulated samples (rows with ``identified_fraction``)."""
    figs = _curve_charts(rows, colors, "identified_fraction", CORRECTIVE_KEYS, "identified fraction p (%)",
                         "corrective", scale_x=100.0)
    if not figs:
        return ""
    note = ("Corrective unlearning (Goel et al., TMLR 2024): only a fraction p of the manipulated training samples "
            "is identified and forgotten. A method removes the manipulation when its attack success / confusion "
            "falls and its corrupted-domain accuracy rises already at small p; the oracle retrains without the "
            "identified samples only.")
    return f'<section id="corrective"><h2>Corrective unlearning</h2><p class="note">{_e(note)}</p>{"".join(figs)}</section>'


def sequential_section(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """Curves over deletion requests (rows with ``request``)."""
    figs = _curve_charts(rows, colors, "request", SEQUENTIAL_KEYS + LLM_STAGE_KEYS, "request", "sequential")
    if not figs:
        return ""
    note = ("Sequential deletion requests: each request is applied to the previous request's unlearned model; the "
            "oracle for request i is retrained without everything removed up to i. Metrics after every request.")
    return f'<section id="sequential"><h2>Sequential requests</h2><p class="note">{_e(note)}</p>{"".join(figs)}</section>'


def scalability_section(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """Curves over forget-set sizes (rows with ``forget_size``; LLM track, MUSE scalability)."""
    figs = _curve_charts(rows, colors, "forget_size", LLM_STAGE_KEYS, "forget-set size |D_f| (items)", "scalability")
    if not figs:
        return ""
    note = ("Scalability (MUSE, Shi et al. 2024): each forget-set size is an independent unlearning task from θ_o "
            "with its own oracle retrained without that forget set.")
    return f'<section id="scalability"><h2>Scalability</h2><p class="note">{_e(note)}</p>{"".join(figs)}</section>'


#: curve keys drawn from ``eval`` events (metric key, title, direction)
CURVE_KEYS: tuple[tuple[str, str, str], ...] = (
    ("unlearn_acc", "UA (%) during unlearning", "closer to the oracle is better"),
    ("retain_acc", "RA (%) during unlearning", "higher is better"),
    ("test_acc", "TA (%) during unlearning", "higher is better"),
)


def curves_section(run_dir: str | Path, colors: Mapping[str, str]) -> str:
    """Metrics every ``eval_every`` optimizer steps while each method unlearned (``events.jsonl``), one chart per
    metric: a line per method (mean over seeds at each step; the point of a staged run: its last), θ_r's and θ_o's
    values of the same point as dashed lines."""
    from unlearnkit.engine.events import read_events

    events = [e for e in read_events(Path(run_dir) / "events.jsonl") if e.get("kind") == "eval"]
    if not events:
        return ""
    last_point = sorted({str(e.get("point", "")) for e in events})[-1]
    events = [e for e in events if str(e.get("point", "")) == last_point]
    figs = []
    for key, title, direction in CURVE_KEYS:
        per: dict[str, dict[float, list[float]]] = {}
        refs: dict[str, list[float]] = {"oracle": [], "original": []}
        for e in events:
            v = as_number(e.get(key))
            if math.isfinite(v):
                per.setdefault(str(e.get("method")), {}).setdefault(float(e.get("step", 0)), []).append(v)
            for ref in refs:
                r = as_number(e.get(f"{ref}.{key}"))
                if math.isfinite(r):
                    refs[ref].append(r)
        if not per:
            continue
        steps = [x for pts in per.values() for x in pts]
        lo, hi = min(steps), max(steps)
        series = [Series(m, tuple(sorted(pts)), tuple(float(np.mean(pts[x])) for x in sorted(pts)),
                         colors.get(m, color_for(i)), markers=len(pts) < 40) for i, (m, pts) in enumerate(per.items())]
        for ref, label, color in (("oracle", "retrain (oracle)", ORACLE_COLOR), ("original", "θ_o", "#888888")):
            if refs[ref]:
                y = float(np.mean(refs[ref]))
                series.append(Series(label, (lo, hi), (y, y), color, dashed=True, markers=False))
        svg = line_svg(series, title=title, x_label="optimizer step", y_label="%", y_bounds=(0.0, 100.0))
        figs.append(_figure(f"curve-{key}", svg, f"{title} ({direction}); mean over seeds at each step; dashed: "
                                                 "θ_r's and θ_o's values at the same point."))
    if not figs:
        return ""
    note = ("Methods run with eval_every: N are evaluated every N optimizer steps while they unlearn (the time is "
            "not counted in RTE). A method that crosses the oracle's line and keeps going over-unlearns; one that "
            "stays on θ_o's line does nothing measurable.")
    return f'<section id="curves"><h2>During unlearning</h2><p class="note">{_e(note)}</p>{"".join(figs)}</section>'


def evaluation_sections(run_dir: str | Path, rows: Sequence[Mapping[str, Any]], summary: Sequence[SummaryRow],
                        neurips: Mapping[str, Any] | None = None) -> str:
    """All evaluation figures available for the run, as one HTML fragment ('' when there are none)."""
    d = Path(run_dir)
    colors = method_colors(summary)
    from unlearnkit.report.generative import generative_section

    parts = [curves_section(d, colors), sequential_section(rows, colors), scalability_section(rows, colors),
             corrective_section(rows, colors), generative_section(d, rows)]
    charts = [roc_section(d, rows, colors), epsilon_section(neurips, colors), cka_section(summary, colors)]
    if any(charts):
        parts.append('<section id="evaluation">' + "".join(charts) + "</section>")
    return "".join(p for p in parts if p)


__all__ = ["curves_section", "corrective_section", "cka_section", "epsilon_section", "evaluation_sections", "method_colors",
           "roc_points", "roc_section", "scalability_section", "sequential_section"]

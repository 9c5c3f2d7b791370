"""Evaluation figures of the HTML report, rebuilt from the run's files only (results.jsonl, per_sample/*.npz,
neurips.json): MIA ROC curves, the per-example ε histogram of the NeurIPS-2023 score, CKA bars, corrective curves
over the identified fraction p, sequential curves over deletion requests, (LLM track) scalability curves over
forget-set sizes and, for continual schedules, the accuracy matrix as heat maps, per-task curves and the continual
summaries (:func:`cl_summary`: ACC, BWT, forgetting, forgotten tasks, relapse; :func:`op_costs`).

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

from unlearnkit.errors import ConfigError
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


# -- continual schedules: accuracy matrix, per-task curves, summaries -------------------------------------------------
#: the summaries of :func:`cl_summary` as (key, column title, direction)
CONTINUAL_SUMMARY_KEYS: tuple[tuple[str, str, str], ...] = (
    ("acc", "ACC (%)", "average accuracy over the retained tasks at the end; higher is better"),
    ("bwt", "BWT (pp)", "backward transfer; higher (less negative) is better"),
    ("forgetting", "Forgetting (pp)", "lower is better"),
    ("acc_forgotten", "Forgotten tasks (%)", "closer to the oracle is better"),
    ("relapse", "Relapse (pp)", "largest rise of a forgotten task above its lowest accuracy since its request; 0 is "
     "best"),
)


def _ops(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[int]]]:
    for r in rows:
        sc = r.get("scenario") or {}
        if sc.get("kind") == "continual" and sc.get("sequence") and sc.get("tasks"):
            return str(sc["sequence"]).split(), [list(map(int, g)) for g in sc["tasks"]]
    raise ConfigError("these rows are not from a continual scenario (no scenario.sequence / tasks)")


def accuracy_matrix(rows: Sequence[Mapping[str, Any]], method: str, seed: int) -> tuple[list[int], np.ndarray]:
    """The accuracy matrix of ``method`` (a row label) for ``seed``: ``(steps, R)`` with R float (points, tasks)
    in percent, NaN where a task has no value or the method's row failed (diverged, error). Points before the
    method's first row are θ_o's (the method's model there is θ_o); the oracle label ``retrain`` has rows at every
    point.
    """
    ops, groups = _ops(rows)
    mine: dict[int, Mapping[str, Any]] = {}
    orig: dict[int, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("seed") != seed or "step" not in r:
            continue
        if r.get("method") == method:
            mine[int(r["step"])] = r  # failed rows too: their points stay NaN, never θ_o's
        if r.get("method") == "original" and r.get("role") == "original" and r.get("status") == "ok":
            orig[int(r["step"])] = r
    first = min(mine) if mine else None
    use = dict(mine)
    for s, r in orig.items():
        if first is None or s < first:
            use.setdefault(s, r)
    steps = sorted(use)
    mat = np.full((len(steps), len(groups)), np.nan)
    for i, s in enumerate(steps):
        if use[s].get("status") != "ok":
            continue
        m = use[s].get("metrics") or {}
        for t in range(len(groups)):
            v = m.get(f"acc_task{t + 1}")
            mat[i, t] = float(v) if isinstance(v, (int, float)) else np.nan
    return steps, mat


def cl_summary(rows: Sequence[Mapping[str, Any]], method: str, seed: int) -> dict[str, float]:
    """Continual-learning and continual-unlearning summaries of ``method`` / ``seed`` at the last point (see the
    module docstring for the definitions): ``acc``, ``bwt``, ``forgetting``, ``acc_forgotten``, ``relapse``
    (percentage points; NaN where undefined, e.g. BWT without a point right after an earlier task's Learn)."""
    ops, groups = _ops(rows)
    steps, mat = accuracy_matrix(rows, method, seed)
    nan = float("nan")
    if not steps:
        return {"acc": nan, "bwt": nan, "forgetting": nan, "acc_forgotten": nan, "relapse": nan}
    last = len(steps) - 1
    upto = ops[: steps[last] + 1]
    learned_at: dict[int, int] = {}
    gone_at: dict[int, int] = {}
    for pos, op in enumerate(upto):
        kind, rest = op[0], op[1:]
        k = int(rest.split(":")[0]) - 1
        if kind == "L":
            learned_at[k] = pos
        elif ":" not in rest:
            gone_at[k] = pos
    # a task forgotten in shares counts as forgotten once the shares reach the whole task (the rows record it)
    final_scenario = next((r.get("scenario") for r in rows if r.get("step") == steps[last]), {}) or {}
    removed = set(final_scenario.get("classes_removed", []))
    for k, g in enumerate(groups):
        if k in learned_at and set(g) <= removed and k not in gone_at:
            gone_at[k] = max(p for p, op in enumerate(upto) if op[0] == "U" and int(op[1:].split(":")[0]) - 1 == k)
    retained = [k for k in learned_at if k not in gone_at]
    forgotten = sorted(gone_at)
    row_of = {s: i for i, s in enumerate(steps)}
    final = mat[last]
    acc = _nanmean([final[k] for k in retained])
    last_learned = max(retained, key=lambda k: learned_at[k]) if retained else None
    bwt_terms, fgt_terms = [], []
    for k in retained:
        if k == last_learned:
            continue
        i = row_of.get(learned_at[k])
        if i is not None and math.isfinite(mat[i, k]):
            bwt_terms.append(final[k] - mat[i, k])
        later = [mat[row_of[s], k] for s in steps[:last] if s >= learned_at[k] and math.isfinite(mat[row_of[s], k])]
        if later:
            fgt_terms.append(max(later) - final[k])
    relapse_terms = []
    for k in forgotten:
        since = [mat[row_of[s], k] for s in steps if s >= gone_at[k] and math.isfinite(mat[row_of[s], k])]
        if gone_at[k] in row_of and len(since) > 1:
            low, rise = since[0], 0.0
            for v in since[1:]:  # the largest rise above the lowest accuracy reached since the request
                rise = max(rise, v - low)
                low = min(low, v)
            relapse_terms.append(rise)
    return {"acc": acc,
            "bwt": float(np.mean(bwt_terms)) if bwt_terms else nan,
            "forgetting": float(np.mean(fgt_terms)) if fgt_terms else nan,
            "acc_forgotten": _nanmean([final[k] for k in forgotten]),
            "relapse": float(np.mean(relapse_terms)) if relapse_terms else nan}


def op_costs(rows: Sequence[Mapping[str, Any]], method: str, seed: int) -> dict[int, tuple[str, float]]:
    """Seconds of each operation of ``method`` / ``seed`` by step: ``{step: (op, seconds)}`` — a Forget's
    ``unlearn_seconds``, a Learn's ``learn_seconds`` (steps where the method had a row)."""
    ops, _ = _ops(rows)
    out: dict[int, tuple[str, float]] = {}
    for r in rows:
        if r.get("method") != method or r.get("seed") != seed or r.get("status") != "ok" or "step" not in r:
            continue
        s = int(r["step"])
        m = r.get("metrics") or {}
        key = "unlearn_seconds" if ops[s].startswith("U") else "learn_seconds"
        v = m.get(key)
        if isinstance(v, (int, float)):
            out[s] = (ops[s], float(v))
    return out


def _nanmean(vals: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there are none; no warning)."""
    ok = [float(v) for v in vals if math.isfinite(v)]
    return float(np.mean(ok)) if ok else float("nan")


def _heatmap_svg(mat: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str) -> str:
    """An accuracy matrix (rows: points, columns: tasks; values in %) as an SVG heat map, white (0) to blue (100);
    NaN cells (a task not learned yet) are grey with a dash."""
    cw, ch, ml, mt = 46, 22, 96, 40
    w, h = ml + cw * mat.shape[1] + 12, mt + ch * mat.shape[0] + 12
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="{_e(title)}"><text x="{ml}" y="16" class="chart-title">{_e(title)}</text>']
    for j, c in enumerate(col_labels):
        out.append(f'<text x="{ml + cw * j + cw / 2}" y="{mt - 6}" text-anchor="middle" class="point-label">'
                   f"{_e(c)}</text>")
    for i, r in enumerate(row_labels):
        y = mt + ch * i
        out.append(f'<text x="{ml - 6}" y="{y + ch / 2}" dy="0.32em" text-anchor="end" class="point-label">'
                   f"{_e(r)}</text>")
        for j in range(mat.shape[1]):
            v = float(mat[i, j])
            x = ml + cw * j
            if math.isfinite(v):
                t = min(max(v / 100.0, 0.0), 1.0)
                fill = f"rgb({int(255 - 215 * t)},{int(255 - 155 * t)},{int(255 - 55 * t)})"
                txt, color = f"{v:.0f}", "#fff" if t > 0.6 else "#222"
            else:
                fill, txt, color = "#eeeeee", "–", "#888"
            out.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{fill}">'
                       f"<title>{_e(r)}, {_e(col_labels[j])}: {_e(txt)}</title></rect>"
                       f'<text x="{x + cw / 2 - 1}" y="{y + ch / 2}" dy="0.32em" text-anchor="middle" '
                       f'fill="{color}" class="point-label">{_e(txt)}</text>')
    out.append("</svg>")
    return "".join(out)


def _continual_methods(rows: Sequence[Mapping[str, Any]]) -> list[tuple[bool, str]]:
    methods: list[tuple[bool, str]] = []
    for r in rows:
        key = (bool(r.get("is_oracle")), str(r["method"]))
        if key not in methods:
            methods.append(key)
    return methods


def _continual_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The latest rows of a continual schedule ([] when the run is not one or has no ``acc_task<k>``)."""
    rows = [r for r in latest_rows(rows) if "step" in r]
    if not any("acc_task1" in (r.get("metrics") or {}) for r in rows):
        return []
    try:
        _ops(rows)
    except ConfigError:
        return []
    return rows


def continual_summary_table(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The continual summary table shared by report.html and report.md: one ``(label, cells)`` per method (θ_r
    first as it appears in the rows), cells = the :data:`CONTINUAL_SUMMARY_KEYS` as "mean ± std" over seeds (1
    decimal, population std; "—" where undefined) then the mean seconds per Forget request and per Learn (3
    significant digits). A method with failed rows has its label extended by "— <status> from step s (op) in k/n
    seeds". [] for rows that are not a continual schedule."""
    rows = _continual_rows(rows)
    if not rows:
        return []
    ops, _ = _ops(rows)
    seeds = sorted({r["seed"] for r in rows}, key=str)
    out: list[tuple[str, list[str]]] = []
    for is_oracle, m in _continual_methods(rows):
        sums = [cl_summary(rows, m, s) for s in seeds]
        cells = []
        for k, _, _ in CONTINUAL_SUMMARY_KEYS:
            vals = [x[k] for x in sums if math.isfinite(x[k])]
            cells.append(f"{np.mean(vals):.1f} ± {np.std(vals):.1f}" if vals else "—")
        costs = [c for s in seeds for c in op_costs(rows, m, s).values()]
        un = [sec for op, sec in costs if op.startswith("U")]
        le = [sec for op, sec in costs if op.startswith("L")]
        cells += [f"{np.mean(x):.3g}" if x else "—" for x in (un, le)]
        name = m + (" (oracle)" if is_oracle else "")
        failed = [r for r in rows if r["method"] == m and row_status(r) != "ok"]
        if failed:
            first = min(failed, key=lambda r: r["step"])
            name += (f" — {row_status(first)} from step {first['step']} ({ops[first['step']]}) in "
                     f"{len({r['seed'] for r in failed})}/{len(seeds)} seeds")
        out.append((name, cells))
    return out


def continual_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The continual summaries as a markdown section (the table of report.html's continual section, rows only;
    '' for runs that are not a continual schedule)."""
    table = continual_summary_table(rows)
    if not table:
        return ""
    from unlearnkit.report.markdown import md_escape

    ops, _ = _ops(_continual_rows(rows))
    heads = [t for _, t, _ in CONTINUAL_SUMMARY_KEYS] + ["Unlearn s / request", "Learn s / Learn"]
    out = ["", "## Continual learning and unlearning", "",
           f"Schedule {' '.join(ops)}; summaries at the last point, mean ± std over seeds. "
           + "; ".join(f"{t}: {d}" for _, t, d in CONTINUAL_SUMMARY_KEYS)
           + ". ACC, BWT (Lopez-Paz & Ranzato 2017), forgetting (Chaudhry et al. 2018) over the retained tasks. "
           "The accuracy matrices and per-task curves are in report.html.", "",
           "| Method | " + " | ".join(heads) + " |", "| :--- |" + " ---: |" * len(heads)]
    out += [f"| {md_escape(name)} | " + " | ".join(cells) + " |" for name, cells in table]
    return "\n".join(out) + "\n"


def continual_section(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """Continual schedules (rows with ``step`` and the ``continual`` metric's ``acc_task<k>``): the summaries per
    method (mean ± std over seeds), the accuracy matrix of each method as a heat map (mean over seeds) and one curve
    per task over the sequence ('' for other runs)."""
    rows = _continual_rows(rows)
    if not rows:
        return ""
    ops, groups = _ops(rows)
    methods = _continual_methods(rows)
    seeds = sorted({r["seed"] for r in rows}, key=str)
    tasks = [f"T{k + 1}" for k in range(len(groups))]
    head = "".join(f"<th>{_e(t)}</th>" for _, t, _ in CONTINUAL_SUMMARY_KEYS)
    table = [f"<table><thead><tr><th>Method</th>{head}<th>Unlearn s / request</th><th>Learn s / Learn</th>"
             "</tr></thead><tbody>"]
    maps, mats = [], {}
    for (is_oracle, m), (name, cells) in zip(methods, continual_summary_table(rows)):
        table.append(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        per_seed = [accuracy_matrix(rows, m, s) for s in seeds]
        steps = sorted({st for st_list, _ in per_seed for st in st_list})
        stack = np.full((len(per_seed), len(steps), len(groups)), np.nan)
        for i, (st_list, mat) in enumerate(per_seed):
            for a, st in enumerate(st_list):
                stack[i, steps.index(st)] = mat[a]
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, axis=0) if len(stack) else np.zeros((0, len(groups)))
        mats[(is_oracle, m)] = (steps, mean)
        labels = [f"{st}: {ops[st]}" for st in steps]
        maps.append(_figure(f"continual-matrix-{m}", _heatmap_svg(mean, labels, tasks, f"{name}: accuracy (%)"),
                            f"{name}: test accuracy of every task (columns) after each operation (rows), mean over "
                            "seeds; before a method's first request its model is θ_o."))
    table.append("</tbody></table>")
    curves = []
    for k in range(len(groups)):
        series = []
        for (is_oracle, m), (steps, mean) in mats.items():
            pts = [(float(st), float(mean[i, k])) for i, st in enumerate(steps) if math.isfinite(mean[i, k])]
            if pts:
                series.append(Series(m + (" (oracle)" if is_oracle else ""), tuple(p[0] for p in pts),
                                     tuple(p[1] for p in pts), colors.get(m, ORACLE_COLOR), dashed=is_oracle))
        if series:
            svg = line_svg(series, title=f"Task {k + 1} (classes {groups[k]})", x_label="step (operation)",
                           y_label="%", y_bounds=(0.0, 100.0))
            seq = ", ".join(f"{i}: {op}" for i, op in enumerate(ops))
            curves.append(_figure(f"continual-task{k + 1}", svg, f"Task {k + 1}'s test accuracy after each "
                                                                  f"operation ({seq}); mean over seeds."))
    note = ("Continual learning and unlearning: tasks are learned and forgotten in the order "
            f"{' '.join(ops)}. ACC, BWT (Lopez-Paz & Ranzato 2017) and forgetting (Chaudhry et al. 2018) over the "
            "retained tasks at the last point; a forgotten task should sit where the oracle (trained from scratch on "
            "what is kept) puts it, and stay there as later tasks are learned (relapse: its largest rise above the lowest accuracy it reached since its request; 0 = it never came back). Costs: seconds of each "
            "request and of each Learn after the method's first request (the oracle: retraining from scratch).")
    return (f'<section id="continual"><h2>Continual learning and unlearning</h2><p class="note">{_e(note)}</p>'
            + "".join(table) + "".join(maps) + "".join(curves) + "</section>")


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


# -- the LLM audit battery (issue 15) ----------------------------------------------------------------------------------
AUDIT_ROLE_COLORS = {"θ_u": "#0072B2", "θ_r": ORACLE_COLOR, "θ_o": "#999999"}


def _audit_points(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """(dimensions, seed) → {"oracle": metrics, "original": metrics, "methods": {label: metrics}} of ok rows, for the
    last evaluation point of each branch (rows of staged runs: every point)."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in latest_rows(rows):
        if row_status(r) != "ok" or not isinstance(r.get("metrics"), Mapping):
            continue
        dims = tuple(sorted((k, str(r.get(k))) for k in row_dimensions(r)))
        pt = out.setdefault((dims, r.get("seed")),
                            {"oracle": None, "original": None, "methods": {}, "row_verdicts": {}})
        role = r.get("role") or ("oracle" if r.get("is_oracle") else "method")
        if role in ("oracle", "original"):
            pt[role] = r["metrics"]
        else:
            pt["methods"][str(r["method"])] = r["metrics"]
            pt["row_verdicts"][str(r["method"])] = str(r.get("verdict") or "")
    return out


def audit_verdicts(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The removal-vs-suppression verdict (:func:`unlearnkit.metrics.audit.audit_verdict`) of every method row that
    has θ_r's and θ_o's rows at the same point: dicts with ``method``, ``seed``, ``dims`` and the verdict's JSON."""
    from unlearnkit.metrics.audit import audit_verdict, battery_keys

    out = []
    for (dims, seed), pt in _audit_points(rows).items():
        if pt["oracle"] is None or pt["original"] is None:
            continue
        for method, m in pt["methods"].items():
            if len(battery_keys(m)) < 2:  # no probe beyond the plain score: not an audit run
                continue
            v = audit_verdict(m, pt["oracle"], pt["original"])
            out.append({"method": method, "seed": seed, "dims": dict(dims),
                        "row_verdict": pt["row_verdicts"].get(method), **v.to_json()})
    return out


def audit_section(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    """One figure per method: the forget score of θ_u, θ_r and θ_o under every probe of the battery (mean over
    seeds, last point), with the removal-vs-suppression verdict per seed; the relearning curves of every method with
    θ_r's and θ_o's; and what in-context reintroduction does to θ_r. '' when the run has no audit probe."""
    from unlearnkit.report.charts import Bar

    verdicts = audit_verdicts(rows)
    if not verdicts:
        return ""
    last_dims = max((tuple(sorted(v["dims"].items())) for v in verdicts), default=())
    verdicts = [v for v in verdicts if tuple(sorted(v["dims"].items())) == last_dims]
    figs, table = [], []
    by_method: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts:
        by_method.setdefault(v["method"], []).append(v)
    for method, vs in by_method.items():
        probes: dict[str, dict[str, list[float]]] = {}
        for v in vs:
            for p in v["probes"]:  # short probe ids keep the bar labels readable (the caption names them)
                d = probes.setdefault(p["probe"], {"θ_u": [], "θ_r": [], "θ_o": []})
                for role, key in (("θ_u", "u"), ("θ_r", "r"), ("θ_o", "o")):
                    if math.isfinite(as_number(p[key])):
                        d[role].append(float(p[key]))
        bars = []
        for label, d in probes.items():
            for role in ("θ_u", "θ_r", "θ_o"):
                if d[role]:
                    bars.append(Bar(f"{label} · {role}", float(np.mean(d[role])),
                                    float(np.std(d[role])) if len(d[role]) > 1 else 0.0,
                                    colors.get(method, AUDIT_ROLE_COLORS["θ_u"]) if role == "θ_u"
                                    else AUDIT_ROLE_COLORS[role]))
        labels = ", ".join(f"seed {v['seed']}: {v['verdict']}" + (f" (row verdict {v['row_verdict']})"
                                                                  if v.get("row_verdict") not in (None, "", "ok")
                                                                  else "") for v in vs)
        svg = hbar_svg(bars, title=f"{method}: forget score under each probe", unit="score (0–1; higher = knows D_f)",
                       digits=3)
        reasons = "; ".join(r for v in vs[:1] for r in v["reasons"])
        traces = "; ".join(t for v in vs[:1] for t in v.get("traces", []))
        if traces:
            reasons += f". Traces (reported, not deciding): {traces}"
        legend = "; ".join(f"{p['probe']} = {p['label']} ({p['key']})" for p in vs[0]["probes"])
        figs.append(_figure(f"audit-{method}", svg, f"{method} — {labels}. {reasons} Bars: θ_u ({method}), θ_r "
                                                    "(retrained without D_f) and θ_o (before unlearning) under the "
                                                    f"same probe. Probes: {legend}."))
        table.append(f"<tr><td>{_e(method)}</td><td>{_e(labels)}</td><td>{_e(reasons)}</td></tr>")
    parts = [f'<table class="audit"><thead><tr><th>method</th><th>verdict</th><th>why</th></tr></thead><tbody>'
             f'{"".join(table)}</tbody></table>', *figs]
    curve = _relearn_chart(rows, colors, last_dims)
    if curve:
        parts.append(curve)
    pts = [pt for (dims, _), pt in _audit_points(rows).items() if dims == last_dims]
    gains = [as_number((pt["oracle"] or {}).get("icl.gain")) for pt in pts]
    gains = [g for g in gains if math.isfinite(g)]
    note = ("Removal or suppression (unlearnkit.metrics.audit): a probe exposes suppression when it brings θ_u's "
            "forget score back towards θ_o's clearly more than it brings θ_r's under the same probe; probes whose "
            "θ_o and θ_r scores coincide are uninformative. Thresholds are heuristics; read the bars.")
    if gains and float(np.mean(gains)) > 0.02:
        note += (f" In-context reintroduction works on θ_r too: with the fact in the prompt θ_r's forget score rises "
                 f"by {np.mean(gains):+.3f} — exact unlearning alone does not control what a model says when the "
                 "knowledge is handed back to it (UnUnlearning, arXiv:2407.00106).")
    elif gains:
        note += (f" In-context reintroduction does not move θ_r here (gain {np.mean(gains):+.3f}): this model does "
                 "not use facts put in its prompt (e.g. a small model trained from scratch on QA pairs only), so the "
                 "probe cannot show what UnUnlearning (arXiv:2407.00106) shows on pretrained models.")
    return (f'<section id="audit"><h2>Audit: removed or suppressed?</h2><p class="note">{_e(note)}</p>'
            f'{"".join(parts)}</section>')


def audit_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The report.md view of the audit (the HTML section draws it): per method and seed the removal-vs-suppression
    verdict with its reasons, then one table of the forget score of θ_u / θ_r / θ_o under every probe, and the
    relearning curves. '' when the run has no audit probe."""
    from unlearnkit.report._common import fmt_num

    verdicts = audit_verdicts(rows)
    if not verdicts:
        return ""
    last_dims = max((tuple(sorted(v["dims"].items())) for v in verdicts), default=())
    verdicts = [v for v in verdicts if tuple(sorted(v["dims"].items())) == last_dims]

    def esc(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["", "## Audit: removed or suppressed?", "",
             "Removal or suppression (unlearnkit.metrics.audit): a probe exposes suppression when it brings θ_u's "
             "forget score back towards θ_o's clearly more than it brings θ_r's under the same probe; traces are "
             "reported, not deciding. Thresholds are heuristics: read the scores (0–1, higher = knows D_f).", "",
             "| Method | seed | verdict | why |", "| :--- | ---: | :--- | :--- |"]
    for v in verdicts:
        why = "; ".join(v.get("reasons", []))
        if v.get("traces"):
            why += f". Traces: {'; '.join(v['traces'])}"
        row_v = v.get("row_verdict")
        verdict = v["verdict"] + (f" (row: {row_v})" if row_v not in (None, "", "ok") else "")
        lines.append(f"| {esc(v['method'])} | {v['seed']} | {esc(verdict)} | {esc(why)} |")
    probes: list[tuple[str, str]] = []
    for v in verdicts:
        for pr in v["probes"]:
            if (pr["probe"], pr["label"]) not in probes:
                probes.append((pr["probe"], pr["label"]))
    if probes:
        first = next((v for v in verdicts), None)
        anchors = {pr["probe"]: (pr["r"], pr["o"]) for pr in (first or {}).get("probes", [])}
        lines += ["", "Forget score under each probe (θ_u; the first rows are θ_r's and θ_o's under the same probe; "
                  "seed " + str(first["seed"] if first else "") + " for the anchors):", "",
                  "| Model | " + " | ".join(esc(lbl) for _, lbl in probes) + " |",
                  "| :--- |" + " ---: |" * len(probes)]
        for name, idx in (("θ_r (retrain)", 0), ("θ_o (original)", 1)):
            lines.append(f"| {name} | " + " | ".join(fmt_num(as_number(anchors.get(pid, (None, None))[idx]), 3)
                                                     for pid, _ in probes) + " |")
        for v in verdicts:
            got = {pr["probe"]: pr["u"] for pr in v["probes"]}
            lines.append(f"| {esc(v['method'])} (seed {v['seed']}) | "
                         + " | ".join(fmt_num(as_number(got.get(pid)), 3) for pid, _ in probes) + " |")
    refs = {"θ_r": 0, "θ_o": 1}
    curves = [(f"{who} (seed {seed})", sorted(pts), m)
              for who, seed, pts, m in sorted(_relearn_curves(rows, last_dims),
                                              key=lambda c: (refs.get(c[0], 2), c[0] if c[0] not in refs else "",
                                                             str(c[1])))
              if len(pts) > 1]
    if curves:
        steps = sorted({s for _, st, _ in curves for s in st})
        lines += ["", "Relearning attack: forget score of the held-out items after s attack steps, and the area "
                  "(mean over the attack; higher = relearns more):", "",
                  "| Model | " + " | ".join(f"@{s}" for s in steps) + " | area |",
                  "| :--- |" + " ---: |" * (len(steps) + 1)]
        for name, _, m in curves:
            lines.append(f"| {esc(name)} | " + " | ".join(fmt_num(as_number(m.get(f"relearn.prob@{s}")), 3)
                                                        for s in steps)
                         + f" | {fmt_num(as_number(m.get('relearn.auc')), 3)} |")
    return "\n".join(lines) + "\n"


def _relearn_curves(rows: Sequence[Mapping[str, Any]], dims: tuple
                    ) -> list[tuple[str, Any, dict[int, float], Mapping[str, Any]]]:
    """The relearning curves at the evaluation point ``dims``: ``(who, seed, {step: finite score}, metrics)`` with
    who = ``θ_r``, ``θ_o`` or the method, in that order per seed (rows without ``relearn.prob@s`` keys: no entry)."""
    import re

    out = []
    for (d, seed), pt in _audit_points(rows).items():
        if d != dims:
            continue
        for who, m in [("θ_r", pt["oracle"]), ("θ_o", pt["original"]), *pt["methods"].items()]:
            pts = {}
            for k, v in (m or {}).items():
                hit = re.fullmatch(r"relearn\.prob@(\d+)", k)
                if hit and math.isfinite(as_number(v)):
                    pts[int(hit.group(1))] = float(v)
            if pts:
                out.append((who, seed, pts, m))
    return out


def _relearn_chart(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], dims: tuple) -> str:
    curves: dict[str, dict[int, list[float]]] = {}
    for who, _, pts, _ in _relearn_curves(rows, dims):
        label = "θ_r (oracle)" if who == "θ_r" else who
        for step, v in pts.items():
            curves.setdefault(label, {}).setdefault(step, []).append(v)
    if len(curves) < 2:
        return ""
    series = []
    for i, (label, pts) in enumerate(curves.items()):
        xs = sorted(pts)
        ref = label.startswith("θ_")
        color = ORACLE_COLOR if label.startswith("θ_r") else "#999999" if ref else colors.get(label, color_for(i))
        series.append(Series(label, tuple(float(x) for x in xs), tuple(float(np.mean(pts[x])) for x in xs), color,
                             dashed=ref))
    svg = line_svg(series, title="Relearning attack: forget score of the held-out D_f", x_label="attack step",
                   y_label="score", y_bounds=(0.0, 1.0))
    return _figure("audit-relearn", svg, "Fine-tuning a copy on a part of D_f: how fast the rest comes back "
                                         "(llm_relearn). θ_r's dashed curve is a model that never saw D_f under the "
                                         "same attack; a method whose curve climbs to θ_o's was suppressing.")


def evaluation_sections(run_dir: str | Path, rows: Sequence[Mapping[str, Any]], summary: Sequence[SummaryRow],
                        neurips: Mapping[str, Any] | None = None) -> str:
    """All evaluation figures available for the run, as one HTML fragment ('' when there are none)."""
    d = Path(run_dir)
    colors = method_colors(summary)
    from unlearnkit.report.order_section import html_section as order_section

    from unlearnkit.report.generative import generative_section

    parts = [curves_section(d, colors), sequential_section(rows, colors), scalability_section(rows, colors),
             corrective_section(rows, colors), order_section(rows, colors), continual_section(rows, colors),
             audit_section(rows, colors), generative_section(d, rows)]
    charts = [roc_section(d, rows, colors), epsilon_section(neurips, colors), cka_section(summary, colors)]
    if any(charts):
        parts.append('<section id="evaluation">' + "".join(charts) + "</section>")
    return "".join(p for p in parts if p)


__all__ = ["accuracy_matrix", "audit_section", "audit_verdicts", "cl_summary", "continual_markdown", "continual_section",
           "continual_summary_table", "curves_section",
           "corrective_section", "cka_section", "epsilon_section", "evaluation_sections", "method_colors", "op_costs",
           "roc_points", "roc_section", "scalability_section", "sequential_section"]

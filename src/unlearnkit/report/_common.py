"""Shared pieces of the report views: the summary columns, number formatting, the run header (meta)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unlearnkit.report.summary import SummaryRow

ORACLE_SUFFIX = " (oracle)"
MISSING = "—"


@dataclass(frozen=True)
class Column:
    """A metric column of the summary table.

    ``key`` is the metric key of a result row (``"gap_of_means"`` and ``"seeds"`` are computed), ``unit`` is ``"%"``,
    ``"pp"`` (percentage points) or ``"s"``, ``direction`` is the sentence printed under the table.
    """

    key: str
    header: str
    unit: str
    direction: str


UA = Column("unlearn_acc", "UA", "%", "100 − accuracy on the forget set D_f (%). Closer to the oracle is better: "
            "forgetting less *or more* than the retrained model both show the data's influence.")
RA = Column("retain_acc", "RA", "%", "accuracy on the retain set D_r (%). Higher is better; ideally the oracle's.")
TA = Column("test_acc", "TA", "%", "accuracy on the test set D_t (%). Higher is better; ideally the oracle's.")
MIA = Column("mia_efficacy", "MIA-Eff.", "%", "share of D_f that a membership-inference attack classifies as "
             "non-members (%). Closer to the oracle is better.")
GAP = Column("gap_of_means", "Avg. Gap", "pp", "mean |mean metric − oracle's mean metric| over UA, RA, TA and "
             "MIA-Eff. (percentage points; the gap of the seed means, as in SalUn's tables). Lower is better; the "
             "oracle's is 0.")
RTE = Column("unlearn_seconds", "RTE (s)", "s", "run-time of the unlearning step in seconds, mean over seeds "
             "(the oracle's: retraining from scratch on D_r). Lower is better.")
FTA = Column("forgotten_test_acc", "Forgotten-class TA", "%", "test accuracy on the forgotten classes (%). "
             "Closer to the oracle (which never saw them) is better.")
CELL_NOTE = ("Cells are mean ± sample std (ddof = 1) over the successful seeds; a single value when only one seed "
             "contributed; — when missing; (n=k) when only k seeds had the value; an Avg. Gap marked (k of K metrics) "
             "covers fewer metrics than the oracle has and is not comparable with the others. Numbers show at least "
             "2 decimals and 2 significant digits (below 0.001 in scientific notation, e.g. 1.0e-11), and a column "
             "gets more digits where two different means would otherwise print alike: equal cells are equal to 6 "
             "significant digits.")
SEEDS_DIRECTION = "successful seeds; `k/n` when n − k seeds failed (listed below the table)."


# LLM track (metrics tofu / mia_text / muse): fractions in [0, 1] except PrivLeak (%)
FQ = Column("forget_quality", "Forget quality", "", "TOFU forget quality: KS-test p-value between θ_u's and θ_r's "
            "truth ratios on D_f. Higher is better (closer to θ_r; θ_r's own is 1.0).")
MU = Column("model_utility", "Model utility", "", "TOFU model utility: harmonic mean of the 9 retain / real-authors / "
            "world-facts numbers. Higher is better.")
FROUGE = Column("forget.rouge", "Forget ROUGE-L", "", "ROUGE-L recall of greedy answers on D_f. Closer to the oracle "
                "is better.")
MIA_AUC = Column("mia.min_k.auc", "MIA AUC (Min-K%)", "", "AUC of the Min-K% attack, D_f vs never-trained holdout. "
                 "Closer to the oracle (≈ 0.5) is better.")
VERBMEM = Column("verbmem_f", "VerbMem", "", "MUSE VerbMem on D_f (ROUGE-L F1). Lower is better (oracle's level).")
KNOW_F = Column("knowmem_f", "KnowMem D_f", "", "MUSE KnowMem on forget QA. Lower is better (oracle's level).")
KNOW_R = Column("knowmem_r", "KnowMem D_r", "", "MUSE KnowMem on retain QA. Higher is better.")
PRIVLEAK = Column("privleak", "PrivLeak", "%", "MUSE PrivLeak = (AUC_u − AUC_r)/AUC_r × 100. Closest to 0 is best.")
# RWKU (metrics rwku / rwku_utility): ROUGE-L recall and accuracies in [0, 1], fluency in bits
RW_FB = Column("rwku.forget.fb", "Forget FB", "", "RWKU fill-in-the-blank on the targets: ROUGE-L recall of greedy "
               "answers. Lower is more forgotten (θ_r's level when it is measurable).")
RW_QA = Column("rwku.forget.qa", "Forget QA", "", "RWKU question answering on the targets (ROUGE-L recall). Lower is "
               "more forgotten.")
RW_ADV = Column("rwku.forget.adv", "Forget Adv.", "", "RWKU adversarial probes on the targets (ROUGE-L recall). "
                "Lower is more forgotten.")
RW_NB = Column("rwku.neighbor.all", "Neighbour", "", "RWKU neighbour knowledge (fill-in-the-blank and QA on related "
               "facts to keep). Higher is better.")
RW_MMLU = Column("rwku_utility.mmlu.acc", "MMLU", "", "RWKU utility: MMLU accuracy (answer-letter likelihood). "
                 "Higher is better.")
RW_TQA = Column("rwku_utility.triviaqa.f1", "TriviaQA F1", "", "RWKU utility: TriviaQA F1 against the aliases. "
                "Higher is better.")
RW_FLU = Column("rwku_utility.fluency.entropy", "Fluency", "bits", "RWKU utility: n-gram entropy of generations on "
                "instructions. Higher is better (a collapsed model repeats itself).")


# Graph track (metrics graph_utility / graph_forget_auroc / graph_mia / graph_oracle_distance): percentages
G_TA = Column("test_acc", "Test acc.", "%", "node-classification accuracy on the test nodes (%). Higher is better; "
              "ideally the oracle's.")
G_TAUC = Column("test_auroc", "Test AUROC", "%", "link-prediction AUROC on the test edges (%). Higher is better.")
G_FACC = Column("forget_acc", "Forget acc.", "%", "accuracy on the deleted nodes (%). Closer to the oracle is better.")
G_FAUC = Column("forget_auroc", "Forget AUROC", "%", "AUROC separating deleted from retained edges (%). Closer to "
                "the oracle is better.")
G_MIA = Column("mi_member_prob", "MI member prob.", "%", "membership-inference probability that the deleted "
               "elements are members (%). Closer to the oracle is better.")
G_TV = Column("oracle_tv", "TV to oracle", "%", "total-variation distance of θ_u's and θ_r's output distributions "
              "(%). Lower is better.")
# Recommendation track (metrics rec_rank / rec_forget): fractions in [0, 1]; K from the run (keys recall@K ...)
R_AUC = Column("forget_auc", "Forget AUC", "", "AUC of D_f interactions against unobserved items (0–1). Closer to "
               "the oracle is better.")
# Generative track (metrics gen_target / gen_fid / gen_clip / entangled): percentages, digits-FID, γ, Entangled
GEN_SHARE = Column("target_share", "Target share", "%", "share of generations the judge classifier assigns to the "
                   "forgotten target (%). Closer to the oracle (which never saw it) is better.")
GEN_COVER = Column("nontarget_coverage", "Coverage", "%", "class coverage of the other generations against θ_o's "
                   "(100 · (1 − TV), %). Higher is better; ≈ 100/K' is a collapse onto one class.")
GEN_FID = Column("fid_to_original", "FID→θ_o", "", "digits-FID (judge features) of the non-target generations to "
                 "θ_o's. Lower is better (the oracle's shows what retraining changes).")
GEN_GAMMA = Column("degree_of_unlearning", "γ", "", "Text-to-Unlearn's degree of unlearning: W₁ between θ_o's and "
                   "the model's CLIP scores with the target text. Closer to the oracle is better.")
GEN_ENT = Column("entangled_d", "Entangled-D", "", "ForgetMe's Entangled-D on the latents whose θ_o sample is the "
                 "target (0–1). Higher = the target removed cleanly, the rest kept.")
ROW_GAP = Column("avg_gap", "Avg. Gap", "", "mean over seeds of |metric − oracle's metric| averaged over the "
                 "track's gap keys (units of those metrics). Lower is better; the oracle's is 0.")


def _recsys_columns(keys: set[str]) -> list[Column]:
    cols = []
    for prefix, header, direction in (
            ("recall@", "Recall", "Recall@K on retained test interactions (0–1). Higher is better."),
            ("ndcg@", "NDCG", "NDCG@K on retained test interactions (0–1). Higher is better."),
            ("forget_recall@", "Forget Recall", "Recall@K of the D_f interactions (0–1). Closer to the oracle is "
                                                "better."),
            ("forget_ndcg@", "Forget NDCG", "NDCG@K of the D_f interactions (0–1). Closer to the oracle is better.")):
        for k in sorted(k for k in keys if k.startswith(prefix)):
            cols.append(Column(k, f"{header}@{k[len(prefix):]}", "", direction))
    return cols


def columns_for(summary: Sequence[SummaryRow]) -> list[Column]:
    """The metric columns of the summary table, by the keys the rows carry.

    Classifiers: UA RA TA MIA-Eff. Avg. Gap RTE, plus Forgotten-class TA if present. LLM: Forget quality, Model
    utility, Forget ROUGE-L, MIA AUC (TOFU) and/or the MUSE numbers. Graph: test accuracy / AUROC, forget accuracy /
    AUROC, MI member probability, TV to the oracle. Recommendation: Recall@K, NDCG@K and their forget-set versions.
    Every track ends with Avg. Gap (when its rows have one) and RTE.
    """
    keys = set().union(*(s.mean for s in summary)) if summary else set()
    return [*_columns(summary, keys), *([EXACT] if EXACT.key in keys else [])]


#: exact methods only: the distance to the method's own retrain on D_r (its exactness), beside the gap to θ_r
EXACT = Column("exactness_gap", "Exactness gap", "", "exact methods: max |Δw| between the method's model and its own "
               "retrain from scratch on D_r (same partition and seeds); must be 0 (and 1 if its model saw a forgotten "
               "sample). The gap to the oracle is then the price of the method's model family, not a bug.")


def _columns(summary: Sequence[SummaryRow], keys: set[str]) -> list[Column]:
    gap = [ROW_GAP] if ROW_GAP.key in keys else []
    if not keys & {UA.key, RA.key}:
        llm = [c for c in (FQ, MU, FROUGE, MIA_AUC, VERBMEM, KNOW_F, KNOW_R, PRIVLEAK,
                           RW_FB, RW_QA, RW_ADV, RW_NB, RW_MMLU, RW_TQA, RW_FLU) if c.key in keys]
        if llm:
            return [*llm, *gap, RTE]
        if keys & {G_FAUC.key, G_MIA.key, G_TAUC.key, G_TV.key}:
            return [*(c for c in (G_TA, G_TAUC, G_FACC, G_FAUC, G_MIA, G_TV) if c.key in keys), *gap, RTE]
        gen = [c for c in (GEN_SHARE, GEN_COVER, GEN_FID, GEN_GAMMA, GEN_ENT) if c.key in keys]
        if GEN_SHARE.key in keys:
            return [*gen, *gap, RTE]
        rec = _recsys_columns(keys)
        if rec:
            return [*rec, *(c for c in (R_AUC,) if c.key in keys), *gap, RTE]
        if keys and not keys & {TA.key, MIA.key}:
            # metrics this table has no columns for (their own report sections show them): no column of "—"s
            return [*gap, RTE]
    # a metric the run did not compute gets no column (MIA-Eff. needs the mia_efficacy metric)
    cols = [UA, RA, TA, *([MIA] if MIA.key in keys or not keys else []), GAP, RTE]
    if any(FTA.key in s.mean for s in summary):
        cols.insert(3, FTA)
    return cols


#: magnitudes below this print in scientific notation (p-values: 1e-11 must not print as 0.00)
SCI_BELOW = 1e-3
#: the most significant digits :func:`column_sig` adds to tell different means apart
MAX_SIG = 6


def fmt_num(x: Any, digits: int = 2, sig: int = 2) -> str:
    """``x`` with at least ``digits`` decimals and at least ``sig`` significant digits; "—" when missing / NaN / inf.

    0 prints as ``0.00`` (``digits`` decimals); 0 < |x| < ``SCI_BELOW`` (1e-3) in scientific notation with ``sig``
    significant digits (``1.0e-11``); otherwise fixed-point with max(digits, sig − 1 − ⌊log10|x|⌋) decimals:
    98.07, 0.53, 0.014, 0.0068, 0.0030 (``sig`` = 2). Booleans and non-numbers are missing.
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return MISSING
    a = abs(float(x))
    if a == 0.0:
        return f"{0.0:.{digits}f}"
    if a < SCI_BELOW:
        return f"{x:.{max(sig - 1, 0)}e}"
    decimals = max(digits, sig - 1 - math.floor(math.log10(a)))
    return f"{x:.{decimals}f}"


def column_sig(values: Sequence[Any], sig: int = 2) -> int:
    """The fewest significant digits (from ``sig`` up to ``MAX_SIG``) with which the different finite ``values``
    all print differently under :func:`fmt_num`: a printed tie is then a real one (equal to ``MAX_SIG`` digits)."""
    finite = [float(v) for v in values
              if not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)]
    distinct = {float(f"{v:.{MAX_SIG - 1}e}") for v in finite}
    for k in range(sig, MAX_SIG + 1):
        if len({fmt_num(v, sig=k) for v in distinct}) == len(distinct):
            return k
    return MAX_SIG


def column_sigs(summary: Sequence[SummaryRow], cols: Sequence[Column]) -> dict[str, int]:
    """:func:`column_sig` of every column's means over the summary rows (the Avg. Gap column: the gaps)."""
    out = {}
    for c in cols:
        vals = [s.gap_of_means if c.key == "gap_of_means" else s.mean.get(c.key, float("nan")) for s in summary]
        out[c.key] = column_sig(vals)
    return out


def cell(s: SummaryRow, col: Column, sig: int = 2) -> str:
    """A summary cell: "mean ± std" (:func:`fmt_num`, ``sig`` significant digits at least — pass the column's
    :func:`column_sigs`); only the mean when one seed contributed; "—" when missing.

    When fewer ok seeds than ``n_seeds`` had a finite value, "(n=k)" is appended; an Avg. Gap computed over fewer
    metrics than the oracle has gets "(k of K metrics)".
    """
    if col.key == "gap_of_means":
        text = fmt_num(s.gap_of_means, sig=sig)
        if text != MISSING and s.gap_n < s.gap_n_oracle:
            text += f" ({s.gap_n} of {s.gap_n_oracle} metrics)"
        return text
    m = s.mean.get(col.key, float("nan"))
    if not math.isfinite(m):
        return MISSING
    k = s.n.get(col.key, s.n_seeds)
    sd = s.std.get(col.key, float("nan"))
    text = fmt_num(m, sig=sig)
    if k > 1 and math.isfinite(sd):
        text += f" ± {fmt_num(sd, sig=sig)}"
    if k < s.n_seeds:
        text += f" (n={k})"
    return text


def verdict_cell(s: SummaryRow) -> str:
    """The verdict over seeds, with the per-seed verdicts when they disagree (``inert (2/3)``)."""
    if not s.verdict:
        return ""
    n = sum(s.seed_verdicts.values())
    agree = s.seed_verdicts.get(s.verdict, 0)
    return s.verdict if not n or agree == n or s.role == "oracle" else f"{s.verdict} ({agree}/{n} seeds)"


VERDICT_NOTE = ("Verdict (unlearnkit.verdict): against θ_r and θ_o of the same point, with a tolerance from the seed "
                "spread and the binomial noise of each percentage — ok; inert (θ_o's weights, or forget metrics within "
                "noise of θ_o's while θ_o is away from θ_r); under-unlearned (closed < half of θ_o's distance to θ_r "
                "on the forget metrics); over-unlearned (a forget metric past θ_r's, away from θ_o: forgets more than "
                "retraining); utility-collapse (a utility metric lost over half of θ_r's margin above chance); "
                "unconverged (a solver stopped before its tolerance); inexact (an exact method differs from its own "
                "retrain on D_r); diverged; error.")


def seeds_cell(s: SummaryRow) -> str:
    """``"3"`` when every seed succeeded, else ``"ok/total"`` (e.g. ``"2/3"``)."""
    return str(s.n_seeds) if s.n_failed == 0 else f"{s.n_seeds}/{s.n_total}"


def label(s: SummaryRow) -> str:
    """The row label shown in tables: the method label, ``"retrain (oracle)"`` for the oracle."""
    return s.method + ORACLE_SUFFIX if s.is_oracle else s.method


def failures(summary: Sequence[SummaryRow]) -> list[SummaryRow]:
    """Summary rows with at least one failed seed."""
    return [s for s in summary if s.n_failed > 0]


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace/newlines; cut at ``limit`` characters with an ellipsis."""
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def _pct(x: Any) -> str:
    v = float(x) * 100
    return f"{v:g}%"


def scenario_text(scenario: Mapping[str, Any] | None) -> str:
    """One line describing how D_f was chosen, e.g. ``"random: 10% of the training set (n_forget = 135)"``."""
    if not scenario:
        return "unknown (no scenario in the results or config)"
    sc = dict(scenario)
    kind = str(sc.get("kind", "?"))
    n = sc.get("n_forget")
    tail = f" (n_forget = {n})" if n is not None else ""
    try:
        if kind == "random":
            if sc.get("fraction") is not None:
                return f"random: {_pct(sc['fraction'])} of the training set{tail}"
            if sc.get("count") is not None:
                return f"random: {sc['count']} samples of the training set{tail}"
        elif kind in ("class", "subclass") and sc.get("classes") is not None:
            classes = ", ".join(str(c) for c in sc["classes"])
            return f"{kind}: forget {'classes' if len(sc['classes']) > 1 else 'class'} {classes}{tail}"
        elif kind == "ids" and sc.get("ids") is not None:
            return f"ids: {len(sc['ids'])} given sample ids{tail}"
        elif kind == "corrective" and sc.get("identified_fractions"):
            ps = [float(p) for p in sc["identified_fractions"]]
            what = f"{sc.get('manipulated', '?')} training samples manipulated ({sc.get('manipulation', '?')})"
            return (f"corrective: {what}; identified and forgotten p = {', '.join(_pct(p) for p in ps)} of them "
                    f"(table: p = {_pct(max(ps))}; curves: every p)")
        elif kind == "sequential" and sc.get("n_requests") is not None:
            return (f"sequential: {sc['n_requests']} deletion requests applied one after another (table: after the "
                    "last one; curves: after every request)")
        elif kind == "continual" and sc.get("sequence"):
            ops = str(sc["sequence"]).split()
            n_tasks = len(sc["tasks"]) if isinstance(sc.get("tasks"), list) else sc.get("tasks", "?")
            learner = f"learner {sc['learner']}; " if sc.get("learner") else ""
            return (f"continual: {n_tasks} tasks learned and forgotten in the order {' '.join(ops)} ({learner}table: "
                    f"after the last operation, {ops[-1]}; report.html's continual section: after every operation)")
        elif kind == "muse":
            corpus = sc.get("corpus") or (str(sc["root"]).rstrip("/").split("/")[-1] if sc.get("root") else "?")
            derived = sc.get("derived") or []
            return (f"muse: corpus {corpus}, D_f = raw/forget ({sc.get('n_forget', '?')} chunks), D_r = "
                    f"{'raw/retain2 (derived)' if any('retain1' in str(d) for d in derived) else 'raw/retain1'} "
                    f"({sc.get('n_retain', '?')} chunks)" + (f"; derived: {'; '.join(map(str, derived))}"
                                                               if derived else ""))
        elif kind == "scalability" and sc.get("forget_fractions"):
            fr = ", ".join(_pct(float(f)) for f in sc["forget_fractions"])
            return (f"scalability: forget {fr} of the forget split, each from θ_o with its own oracle (table: the "
                    "largest; curves: every size)")
    except (TypeError, ValueError):
        pass
    rest = ", ".join(
        f"{k}={v}" for k, v in sc.items() if k not in ("kind", "n_forget") and not isinstance(v, (list, dict))
    )
    return f"{kind}" + (f": {rest}" if rest else "") + tail


def meta_lines(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The header facts of a report as (name, value) pairs, in display order (values are plain, unescaped text)."""
    out: list[tuple[str, str]] = []
    h = meta.get("config_sha256")
    out.append(("config", str(h)[:8] if h else "unknown"))
    if len(meta.get("config_hashes") or []) > 1:
        out.append((
            "warning",
            f"rows come from {len(meta['config_hashes'])} different configs "
            f"({', '.join(x[:8] for x in meta['config_hashes'])}); compare with care",
        ))
    if meta.get("track") and meta["track"] != "classifier":
        out.append(("track", str(meta["track"])))
    if meta.get("data"):
        out.append(("data", str(meta["data"])))
    if meta.get("model"):
        out.append(("model", str(meta["model"])))
    out.append(("scenario", scenario_text(meta.get("scenario"))))
    versions = meta.get("versions")
    if isinstance(versions, Mapping) and versions:
        out.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    if meta.get("skipped_lines"):
        out.append(("skipped", f"{meta['skipped_lines']} line(s) of results.jsonl were not valid result rows"))
    for w in meta.get("preflight") or []:
        out.append(("pre-flight warning", str(w)))
    if meta.get("superseded"):
        out.append(("retries", f"{meta['superseded']} row(s) replaced by a later row for the same (method, seed)"))
    return out

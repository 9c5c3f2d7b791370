"""TOFU metrics (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv:2401.06121).

Pure functions on log-probabilities and strings (no model) plus the ``tofu`` metric of the LLM track.

Per evaluation split s ∈ {forget, retain, real_authors, world_facts} three numbers, each a mean over the split's items:

* **Prob.** (higher = the model assigns more probability to the true answer). Forget / retain: the
  length-normalised conditional probability P(a|q)^{1/|a|} = exp(mean token log-prob of the answer).
  Real authors / world facts: the normalised probability P(a|q)^{1/|a|} / (P(a|q)^{1/|a|} + Σ_j P(ã_j|q)^{1/|ã_j|})
  over the true and the perturbed answers (TOFU's ``normalize_gt``).
* **ROUGE** (higher = the greedy answer reproduces more of the true answer): ROUGE-L *recall* of the greedy
  generation against the true answer, ``rouge-score`` with the Porter stemmer (``use_stemmer=True``, as TOFU's
  ``eval_rouge_recall``; the flag is recorded: KNOWN_FAULTS C22).
* **Truth ratio**: per item R = P̃_pert / P̃_para with P̃ the length-normalised probabilities and the perturbed side
  the *geometric* mean over the perturbed answers, i.e. R = exp(mean_j log P̃(ã_j) − log P̃(â)) where â is the
  paraphrased answer (the true answer on real authors / world facts). Aggregates (TOFU's reference code,
  ``aggregate_eval_stat.py``): forget mean(min(R, 1/R)) (1 = the model cannot tell true from false: the retain
  model's behaviour; lower = still knows, or over-corrected), others mean(max(0, 1 − R)) (higher = prefers the
  true answer). Named variants (C03): ``tofu`` (default), ``arith_prob`` (paper's printed arithmetic mean of
  probabilities: R = mean_j P̃(ã_j) / P̃(â)), ``normalised`` (P̃(â) / (P̃(â) + geometric P̃(ã)), open-unlearning's
  optional form, aggregated as a plain mean on every split: higher = prefers the true answer).

Forget quality = p-value of the two-sample Kolmogorov–Smirnov test (``scipy.stats.ks_2samp``, two-sided) between the
per-item truth ratios R of the unlearned model and of the retain model θ_r on the forget set (higher = closer to
θ_r; θ_r against itself gives 1.0). Model utility = harmonic mean of the 9 non-forget numbers (retain, real authors,
world facts × Prob., ROUGE, truth ratio); any zero gives 0 (higher = better utility).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics._dtype import to_numpy64

TruthRatioVariant = Literal["tofu", "arith_prob", "normalised"]
TRUTH_RATIO_VARIANTS: tuple[str, ...] = ("tofu", "arith_prob", "normalised")
#: evaluation splits of the TOFU protocol (the forget split is not part of model utility)
TOFU_SPLITS: tuple[str, ...] = ("forget", "retain", "real_authors", "world_facts")
UTILITY_SPLITS: tuple[str, ...] = ("retain", "real_authors", "world_facts")
UTILITY_PARTS: tuple[str, ...] = ("prob", "rouge", "truth_ratio")
#: the 9 keys of model utility, in TOFU's order
UTILITY_KEYS: tuple[str, ...] = tuple(f"{s}.{p}" for s in UTILITY_SPLITS for p in UTILITY_PARTS)
#: TOFU's ROUGE profile: ROUGE-L recall with the Porter stemmer (locuslab/tofu ``evaluate_util.eval_rouge_recall``)
TOFU_ROUGE_STEMMER = True


# -- probabilities -------------------------------------------------------------------------------------------------
def _vec(x: Any, name: str) -> np.ndarray:
    a = to_numpy64(x)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-d array (n_items,), got shape {a.shape}")
    return a


def _pert(x: Any, n: int) -> np.ndarray:
    a = to_numpy64(x)
    if a.ndim != 2 or a.shape[0] != n or a.shape[1] < 1:
        raise DataError(f"perturbed log-probs must be (n_items={n}, n_perturbed ≥ 1), got shape {a.shape}; every "
                        "item needs at least one perturbed answer")
    return a


def mean_logprob(sum_logprob: Any, n_tokens: Any) -> np.ndarray:
    """Length-normalised log-probability sum / n_tokens, float64 (n,) (nats per token).

    Raises:
        DataError: shapes differ or an answer has 0 tokens (its probability is undefined).
    """
    s = to_numpy64(sum_logprob)
    t = to_numpy64(n_tokens)
    if s.shape != t.shape:
        raise DataError(f"sum_logprob {s.shape} and n_tokens {t.shape} must have the same shape")
    if (t <= 0).any():
        raise DataError(f"{int((t <= 0).sum())} answer(s) have 0 tokens; every answer needs ≥ 1 token "
                        "(empty answer strings in the data?)")
    return s / t


def conditional_probability(mean_lp: Any) -> np.ndarray:
    """TOFU's Prob. on forget / retain: P(a|q)^{1/|a|} = exp(mean token log-prob), float64 (n,) in [0, 1]."""
    return np.exp(_vec(mean_lp, "mean_lp"))


def normalised_probability(true_mean_lp: Any, pert_mean_lp: Any) -> np.ndarray:
    """TOFU's Prob. on real authors / world facts: P̃(a) / (P̃(a) + Σ_j P̃(ã_j)), float64 (n,) in (0, 1).

    Args:
        true_mean_lp: float (n,) length-normalised log-prob of the true answer.
        pert_mean_lp: float (n, P) the same for each perturbed answer.
    """
    t = _vec(true_mean_lp, "true_mean_lp")
    p = _pert(pert_mean_lp, len(t))
    # in log space: 1 / (1 + Σ exp(p_j − t)); stable for very negative log-probs
    return 1.0 / (1.0 + np.exp(p - t[:, None]).sum(axis=1))


# -- truth ratio ---------------------------------------------------------------------------------------------------
def truth_ratio(para_mean_lp: Any, pert_mean_lp: Any, variant: str = "tofu") -> np.ndarray:
    """Per-item truth ratio, float64 (n,) (KNOWN_FAULTS C03).

    Args:
        para_mean_lp: float (n,) length-normalised log-prob of the paraphrased answer (the true answer on real
            authors / world facts).
        pert_mean_lp: float (n, P) length-normalised log-prob of each perturbed answer.
        variant: ``tofu`` R = exp(mean_j pert_j − para) (geometric mean of P̃_pert over P̃_para: TOFU's code and
            default); ``arith_prob`` R = mean_j exp(pert_j) / exp(para); ``normalised`` P̃_para / (P̃_para + exp(mean_j
            pert_j)) (a probability of the true answer, not a ratio).

    Golden (C03: para −1, pert −2, −3): tofu 0.22313, arith_prob 0.25161, normalised 0.81757.

    Raises:
        ConfigError: unknown variant.  DataError: bad shapes.
    """
    para = _vec(para_mean_lp, "para_mean_lp")
    pert = _pert(pert_mean_lp, len(para))
    if variant == "tofu":
        return np.exp(pert.mean(axis=1) - para)
    if variant == "arith_prob":
        return np.exp(pert - para[:, None]).mean(axis=1)
    if variant == "normalised":
        return 1.0 / (1.0 + np.exp(pert.mean(axis=1) - para))
    raise ConfigError(f"unknown truth-ratio variant {variant!r}; valid: {', '.join(TRUTH_RATIO_VARIANTS)}")


def truth_ratio_score(ratios: Any, *, forget: bool, variant: str = "tofu") -> float:
    """Aggregate per-item truth ratios of one split into TOFU's "Truth Ratio" number (float in [0, 1]).

    ``tofu`` / ``arith_prob``: forget mean(min(R, 1/R)); other splits mean(max(0, 1 − R)). ``normalised``: mean of the
    per-item values on every split. Golden (C03): forget 0.22313, retain 0.77687.

    Raises:
        DataError: empty input or non-finite ratios.  ConfigError: unknown variant.
    """
    r = _vec(ratios, "ratios")
    if len(r) == 0:
        raise DataError("truth ratio of an empty split is undefined; the split has no items")
    if not np.isfinite(r).all():
        raise DataError("truth ratios contain NaN/inf (non-finite log-probabilities: a diverged model?)")
    if variant == "normalised":
        return float(r.mean())
    if variant not in TRUTH_RATIO_VARIANTS:
        raise ConfigError(f"unknown truth-ratio variant {variant!r}; valid: {', '.join(TRUTH_RATIO_VARIANTS)}")
    if forget:
        with np.errstate(divide="ignore"):
            return float(np.minimum(r, 1.0 / r).mean())
    return float(np.maximum(0.0, 1.0 - r).mean())


# -- forget quality and model utility ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgetQuality:
    """KS test between unlearned and oracle truth ratios on D_f: ``pvalue`` (forget quality, higher = closer to θ_r)
    and ``statistic`` (sup distance of the two empirical CDFs, lower = closer)."""

    pvalue: float
    statistic: float


def forget_quality(unlearned_ratios: Any, oracle_ratios: Any | None) -> ForgetQuality:
    """TOFU forget quality: ``scipy.stats.ks_2samp(unlearned, oracle)`` (two-sided, default method).

    Args:
        unlearned_ratios: float (n,) per-item truth ratios R of θ_u on the forget set.
        oracle_ratios: the same for the retain model θ_r (KNOWN_FAULTS C07: required).

    Raises:
        ConfigError: ``oracle_ratios`` is None (no retain reference): forget quality cannot be computed.
        DataError: an empty or non-finite sample.
    """
    if oracle_ratios is None:
        raise ConfigError(
            "forget quality unavailable: no retain (oracle) reference. It compares θ_u's forget-set truth ratios with "
            "those of θ_r, the model trained on D_r only; run the experiment through the runner (it trains θ_r and "
            "passes references['oracle_model']) or pass the oracle's truth ratios"
        )
    from scipy.stats import ks_2samp

    u = _vec(unlearned_ratios, "unlearned_ratios")
    o = _vec(oracle_ratios, "oracle_ratios")
    if len(u) == 0 or len(o) == 0:
        raise DataError(f"forget quality needs non-empty samples, got {len(u)} and {len(o)} truth ratios")
    if not (np.isfinite(u).all() and np.isfinite(o).all()):
        raise DataError("truth ratios contain NaN/inf; forget quality is undefined (a diverged model?)")
    res = ks_2samp(u, o)
    return ForgetQuality(pvalue=float(res.pvalue), statistic=float(res.statistic))


def model_utility(values: Mapping[str, float], keys: Sequence[str] = UTILITY_KEYS) -> float:
    """Harmonic mean of the 9 utility numbers (``scipy.stats.hmean``); a zero among them gives 0.0.

    Raises:
        DataError: a key is missing, or a value is negative / NaN / inf (no aggregate from missing numbers, C07).
    """
    from scipy.stats import hmean

    missing = [k for k in keys if k not in values or values[k] is None]
    if missing:
        raise DataError(f"model utility needs {len(keys)} numbers; missing: {', '.join(missing)}")
    v = np.array([float(values[k]) for k in keys], dtype=np.float64)
    bad = [k for k, x in zip(keys, v) if not math.isfinite(x) or x < 0]
    if bad:
        raise DataError(f"model utility inputs must be finite and ≥ 0; bad: {', '.join(bad)}")
    if (v == 0).any():
        return 0.0
    return float(hmean(v))


# -- ROUGE -----------------------------------------------------------------------------------------------------------
RougeKind = Literal["recall", "f1", "precision"]


def rouge_l(references: Sequence[str], hypotheses: Sequence[str], *, stemmer: bool, kind: str = "recall"
            ) -> np.ndarray:
    """ROUGE-L of each (reference, hypothesis) pair with ``rouge-score``, float64 (n,) in [0, 1].

    Args:
        references: ground-truth strings.  hypotheses: generated strings.
        stemmer: Porter stemming (TOFU: True; MUSE: False — KNOWN_FAULTS C22: "The cats were running" vs
            "the cat was run" gives 0.25 without and 0.75 with stemming).
        kind: ``recall`` (TOFU), ``f1`` (MUSE's ``rougeL`` = fmeasure) or ``precision``.

    Raises:
        DataError: the two lists differ in length.  ConfigError: unknown kind or rouge-score missing.
    """
    if len(references) != len(hypotheses):
        raise DataError(f"ROUGE needs one hypothesis per reference: {len(references)} vs {len(hypotheses)}")
    attr = {"recall": "recall", "f1": "fmeasure", "precision": "precision"}.get(kind)
    if attr is None:
        raise ConfigError(f"unknown ROUGE-L kind {kind!r}; valid: recall, f1, precision")
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:  # pragma: no cover - installed with the [llm] extra
        raise ConfigError("ROUGE needs rouge-score: pip install 'unlearnkit[llm]'") from err
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)
    return np.array([getattr(scorer.score(r, h)["rougeL"], attr) for r, h in zip(references, hypotheses)],
                    dtype=np.float64)


# -- generation logs (KNOWN_FAULTS C46) ------------------------------------------------------------------------------
GENERATION_LOG_KEYS: tuple[str, ...] = ("id", "question", "generation", "reference", "score")


def generation_log(ids: Sequence[int], questions: Sequence[str], generations: Sequence[str],
                   references: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    """One mapping per item with named keys ``id, question, generation, reference, score`` (never positional lists).

    Raises:
        DataError: the sequences differ in length.
    """
    n = len(questions)
    if not (len(ids) == len(generations) == len(references) == len(scores) == n):
        raise DataError(f"generation log fields differ in length: ids {len(ids)}, questions {n}, generations "
                        f"{len(generations)}, references {len(references)}, scores {len(scores)}")
    return [{"id": int(i), "question": q, "generation": g, "reference": r, "score": float(s)}
            for i, q, g, r, s in zip(ids, questions, generations, references, scores)]


# -- one split's statistics ------------------------------------------------------------------------------------------
@dataclass
class SplitStats:
    """Per-item TOFU statistics of one model on one evaluation split (all float64 (n,) unless said).

    Attributes:
        ids: int64 (n,) item ids.  answer_mean_lp: length-normalised log-prob of the true answer.
        para_mean_lp: of the paraphrased answer (= answer_mean_lp where the split has no paraphrase).
        pert_mean_lp: float64 (n, P) of each perturbed answer.  rouge: ROUGE-L recall of the greedy answer.
        log: generation log (C46 mappings).
    """

    ids: np.ndarray
    answer_mean_lp: np.ndarray
    para_mean_lp: np.ndarray
    pert_mean_lp: np.ndarray
    rouge: np.ndarray
    log: list[dict[str, Any]] = field(default_factory=list)

    def ratios(self, variant: str = "tofu") -> np.ndarray:
        return truth_ratio(self.para_mean_lp, self.pert_mean_lp, variant)


def split_scores(name: str, st: SplitStats, variant: str = "tofu") -> dict[str, float]:
    """TOFU's three numbers of one split: ``{split}.prob``, ``{split}.rouge``, ``{split}.truth_ratio``."""
    forget = name == "forget"
    if name in ("forget", "retain"):
        prob = conditional_probability(st.answer_mean_lp)
    else:
        prob = normalised_probability(st.answer_mean_lp, st.pert_mean_lp)
    return {f"{name}.prob": float(prob.mean()), f"{name}.rouge": float(np.mean(st.rouge)),
            f"{name}.truth_ratio": truth_ratio_score(st.ratios(variant), forget=forget, variant=variant)}


def tofu_summary(stats: Mapping[str, SplitStats], oracle_forget: SplitStats | None, *,
                 variant: str = "tofu") -> dict[str, float]:
    """All TOFU numbers of one model: the 12 split numbers, ``model_utility``, ``forget_quality`` (KS p-value,
    always on the default ``tofu`` ratios, as the reference code), ``forget_ks_stat``.

    Raises:
        ConfigError: ``oracle_forget`` is None (C07: no silent None; the message says how to produce θ_r).
        DataError: a split is missing.
    """
    missing = [s for s in TOFU_SPLITS if s not in stats]
    if missing:
        raise DataError(f"TOFU summary needs the splits {', '.join(TOFU_SPLITS)}; missing: {', '.join(missing)}")
    out: dict[str, float] = {}
    for name in TOFU_SPLITS:
        out.update(split_scores(name, stats[name], variant))
    out["model_utility"] = model_utility(out)
    fq = forget_quality(stats["forget"].ratios("tofu"),
                        oracle_forget.ratios("tofu") if oracle_forget is not None else None)
    out["forget_quality"] = fq.pvalue
    out["forget_ks_stat"] = fq.statistic
    return out


# -- the registered metric ---------------------------------------------------------------------------------------------
def split_stats(ctx: Any, name: str) -> SplitStats:
    """Per-item TOFU statistics of ``ctx.model`` on evaluation split ``name`` (see :class:`LLMEvalContext`).

    Log-probs are length-normalised over the answer tokens (incl. EOS) given the formatted question; the greedy answer
    (``max_new_tokens``) is scored by ROUGE-L recall with stemming against the true answer.

    Raises:
        DataError: items without perturbed answers, a paraphrase on only some items, or unequal perturbed counts.
    """
    qs = ctx.eval_set(name)
    qs.require("perturbed_answers", who=f"the tofu metric (truth ratio on '{name}')")
    counts = sorted({len(it.perturbed_answers) for it in qs})
    if len(counts) != 1:
        raise DataError(f"evaluation split '{name}' ({qs.source or 'in memory'}) has items with different numbers of "
                        f"perturbed answers {counts}; the truth ratio needs the same number for every item")
    n_pert = counts[0]
    ans = ctx.mean_logprobs(qs.pairs("answer"), (name, "answer"))
    if any(it.paraphrased_answer is not None for it in qs):
        qs.require("paraphrased_answer", who=f"the tofu metric (truth ratio on '{name}')")
        para = ctx.mean_logprobs(qs.pairs("paraphrased_answer"), (name, "paraphrased"))
    else:  # real authors / world facts: the true answer is the "paraphrased" side (TOFU's base_answer_key)
        para = ans
    flat = [(it.question, a) for it in qs for a in it.perturbed_answers]
    pert = ctx.mean_logprobs(flat, (name, "perturbed")).reshape(len(qs), n_pert)
    questions, answers = list(qs.questions), list(qs.answers)
    gens = ctx.generations(questions, (name,))
    rouge = rouge_l(answers, gens, stemmer=TOFU_ROUGE_STEMMER, kind="recall")
    return SplitStats(qs.ids, ans, para, pert, rouge, generation_log(qs.ids, questions, gens, answers, rouge))


def _register() -> None:
    from unlearnkit.metrics.base import Metric, MetricOutput
    from unlearnkit.registry import METRICS

    @METRICS.register("tofu")
    class TOFUMetric(Metric):
        """TOFU (Maini et al. 2024, arXiv:2401.06121): forget quality, model utility and the 12 split numbers.

        Needs ``references['oracle_model']`` (θ_r) for forget quality (C07: a ConfigError otherwise).
        """

        track = "llm"
        reads = frozenset({"logits", "generations"})  # truth ratios / probabilities / FQ: logits; ROUGE: generations
        source = "Maini et al., TOFU, arXiv:2401.06121 (reference code locuslab/tofu)"
        keys = {
            "forget_quality": "KS-test p-value of θ_u vs θ_r forget-set truth ratios (higher = closer to θ_r; "
                              "θ_r: 1.0)",
            "forget_ks_stat": "KS statistic of the same test (lower = closer to θ_r)",
            "model_utility": "harmonic mean of the 9 retain / real-authors / world-facts numbers (higher = better)",
            "<split>.prob": "mean length-normalised P(answer) (normalised over options on real authors / world facts)",
            "<split>.rouge": "mean ROUGE-L recall (stemmed) of greedy answers (forget: lower = forgotten)",
            "<split>.truth_ratio": "forget: mean min(R, 1/R) (θ_r-like ≈ high); others: mean max(0, 1 − R) (higher "
                                   "= prefers true answers)",
            "tofu.truncated": "QA inputs (scored pairs and generation prompts) cut to fit the model's context: "
                              "answers lose their tails, prompts their heads (0 when all fit)",
        }

        def compute(self, ctx: Any) -> MetricOutput:
            variant = ctx.settings.truth_ratio_variant
            stats = {s: ctx.cached(("tofu", s), lambda s=s: split_stats(ctx, s)) for s in TOFU_SPLITS}
            oracle = ctx.reference("oracle_model", "TOFU forget quality")
            oracle_forget = ctx.for_reference(oracle, "tofu.forget", lambda c: split_stats(c, "forget"))
            values = tofu_summary(stats, oracle_forget, variant=variant)
            truncated = getattr(ctx, "truncated_inputs", None)
            if truncated is not None:  # inputs cut to the model's context (issue 13); 0 when all fit
                values["tofu.truncated"] = float(truncated(*TOFU_SPLITS))
            per: dict[str, np.ndarray] = {"forget.oracle_truth_ratio": oracle_forget.ratios("tofu")}
            for s, st in stats.items():
                per[f"{s}.ids"] = np.asarray(st.ids, dtype=np.int64)
                per[f"{s}.truth_ratio"] = st.ratios("tofu")
                per[f"{s}.answer_mean_logprob"] = st.answer_mean_lp
                per[f"{s}.rouge"] = st.rouge
                for k in ("question", "generation", "reference"):
                    per[f"{s}.{k}"] = np.array([d[k] for d in st.log], dtype=str)
            return MetricOutput(values, per)


_register()

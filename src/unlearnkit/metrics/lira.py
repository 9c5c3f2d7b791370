"""LiRA and U-LiRA: likelihood-ratio membership / unlearning attacks with shadow models.

**LiRA** (Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022, arXiv:2112.03570,
Alg. 1). K shadow models are trained on random halves of a pool of examples (each example is IN for exactly K/2
models, as in the reference ``train.py``: ``keep = rand(K, n).argsort(0) < K/2``). For each example x the
**logit-scaled confidence** φ = ln p_y − ln(1 − p_y) (:func:`unlearnkit.metrics.neurips.logit_confidence`, exact in
log space) under the IN models and under the OUT models are fitted by Gaussians N(μ_in, σ²_in), N(μ_out, σ²_out)
(means and population standard deviations, ddof = 0, as ``np.std``). A target model's φ(x) is scored by the
per-example log likelihood ratio (online attack, paper Eq. 4 / Alg. 1 line 13)::

    Λ(x) = ln N(φ; μ_in, σ²_in) − ln N(φ; μ_out, σ²_out)          (nats; higher = more member-like)

and by the one-sided **offline** score ln Pr[Z ≤ φ], Z ~ N(μ_out, σ²_out) (paper §VI-C "offline": 1 − Pr[Z > φ]).
The reference code scores the two-sided −ln N(φ; μ_out, σ_out) offline; we follow the paper's one-sided test.

**Fixed (global) variance**: with few shadow models a per-example σ is a poor estimate (its relative standard
error is ≈ 1/√(2m) with m samples per side: ±35 % at K = 8, m = 4), so the paper uses one global variance when
K < 64 ("fixed variance", §VI-A). ``fixed_variance="auto"`` does so. The global σ here is pooled over the
*within-example* residuals (x − μ_example); the reference's ``np.std(dat_in)`` over the whole (n, m) array also
counts the spread of the per-example means between examples, which inflates σ — a deviation on purpose.
Means are sample means (paper Alg. 1); the reference code uses medians.

**U-LiRA** (Hayes, Shumailov, Triantafillou, Khalifa & Papernot, "Inexact Unlearning Needs More Careful
Evaluations to Avoid a False Sense of Privacy", 2024, arXiv:2403.01218, §4): the question is no longer "was x
trained on?" but "was x trained on and then *unlearned* (by method M), or never trained on?". Shadow model k is
trained on a random half ``in_k`` of the pool, then the targets it trained on, F_k = T ∩ in_k, are unlearned with
the same method M (retain set in_k \\ F_k). For target x the IN sample is φ(x) under the unlearned shadows with
x ∈ F_k, the OUT sample φ(x) under shadows that never saw x (K/2 each); the per-example Gaussians and Λ are as in
LiRA. A perfect unlearner makes the two distributions equal (AUC 0.5); Hayes et al. find inexact methods far
from it. Each target is forgotten by K/2 shadows, each shadow forgets |T|/2 targets.

Evaluation of the attack itself (:func:`leave_one_out`): each shadow model in turn plays the target model, with
the Gaussians fitted on the other K − 1; every (model, example) pair with a known IN/OUT label is one attack
instance. Reported: ROC AUC, TPR at 1 % / 0.1 % FPR (:mod:`unlearnkit.metrics.mia_family`) and the best balanced
accuracy over thresholds (Hayes et al. report attack accuracy on balanced IN/OUT sets). With few shadows the
leave-one-out AUC is biased below 0.5 when there is no signal (the target's own sample is missing from its side's
fit, which pulls that side's mean away from it: exact retraining on digits with K = 8 gives AUC ≈ 0.42 at balanced
accuracy 0.50), so compare a method's AUC with exact retraining's under the same K, or use separate target models.

Training shadow models is *evaluation* work done with the :class:`~unlearnkit.engine.loop.Engine`
(:func:`train_shadows`); the registered metrics ``lira`` and ``ulira`` never train: they read a
:class:`ShadowScores` from ``ctx.references["lira_shadows"]`` (built by a benchmark or by the user beforehand).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen, TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics._dtype import to_numpy64
from unlearnkit.metrics._refs import ORACLE_KEY, full_test_split, require_reference
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.metrics.mia_family import FPR_LEVELS, roc_auc, tpr_at_fpr
from unlearnkit.metrics.neurips import logit_confidence
from unlearnkit.registry import METRICS

SHADOW_KEY = "lira_shadows"
#: below this many shadow models the paper uses a global variance (§VI-A)
FIXED_VARIANCE_BELOW = 64
MIN_STD = 1e-30  # the reference adds 1e-30 to σ; here σ is floored at it (a constant sample has σ = 0)
FixedVariance = Literal["auto", "on", "off"]


# -- data ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShadowScores:
    """Logit-scaled confidences of K shadow models on n examples, with who is IN and OUT for each model.

    Attributes:
        ids: int64 (n,) sample ids of the examples (stable source ids).
        labels: int64 (n,) their labels (the φ was computed for these).
        confidences: float64 (K, n) φ = ln p_y − ln(1 − p_y) of example j under shadow model k.
        in_mask: bool (K, n) example j is IN for model k (LiRA: trained on; U-LiRA: trained on, then unlearned).
        out_mask: bool (K, n) example j is OUT for model k (never trained on). IN and OUT never overlap; a pair
            in neither (U-LiRA: trained on and kept) is not used.
        kind: ``"lira"`` or ``"ulira"``.
        method: the unlearning method of U-LiRA shadows ('' for LiRA).

    Raises:
        DataError: shapes disagree, masks overlap, or confidences are not finite.
    """

    ids: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray
    in_mask: np.ndarray
    out_mask: np.ndarray
    kind: Literal["lira", "ulira"] = "lira"
    method: str = ""

    def __post_init__(self) -> None:
        c = to_numpy64(self.confidences)
        object.__setattr__(self, "confidences", c)
        object.__setattr__(self, "ids", np.asarray(self.ids, dtype=np.int64))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "in_mask", np.asarray(self.in_mask, dtype=bool))
        object.__setattr__(self, "out_mask", np.asarray(self.out_mask, dtype=bool))
        if c.ndim != 2:
            raise DataError(f"confidences must be (K models, n examples), got shape {c.shape}")
        if self.in_mask.shape != c.shape or self.out_mask.shape != c.shape:
            raise DataError(f"in_mask {self.in_mask.shape} and out_mask {self.out_mask.shape} must match confidences "
                            f"{c.shape}")
        if self.ids.shape != (c.shape[1],) or self.labels.shape != (c.shape[1],):
            raise DataError(f"ids {self.ids.shape} and labels {self.labels.shape} must be ({c.shape[1]},)")
        if (self.in_mask & self.out_mask).any():
            raise DataError("an (model, example) pair is both IN and OUT; the masks must be disjoint")
        if not np.isfinite(c).all():
            raise DataError("shadow confidences contain NaN/inf: a shadow model diverged; retrain the shadows")

    @property
    def n_models(self) -> int:
        return int(self.confidences.shape[0])

    def index_of(self, ids: np.ndarray) -> np.ndarray:
        """Column index of each id in ``ids`` (int64), −1 where the id is not among the shadows' examples."""
        lookup = {int(s): j for j, s in enumerate(self.ids)}
        return np.asarray([lookup.get(int(s), -1) for s in np.asarray(ids)], dtype=np.int64)


@dataclass(frozen=True)
class GaussianFits:
    """Per-example Gaussians of φ: float64 (n,) means and standard deviations, int (n,) sample counts per side."""

    mu_in: np.ndarray
    sd_in: np.ndarray
    mu_out: np.ndarray
    sd_out: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    fixed_variance: bool

    @property
    def valid(self) -> np.ndarray:
        """bool (n,): both sides have enough samples (≥ 1 with a fixed variance, ≥ 2 otherwise)."""
        need = 1 if self.fixed_variance else 2
        return (self.n_in >= need) & (self.n_out >= need)


def _use_fixed(fixed_variance: FixedVariance | bool, n_models: int) -> bool:
    if isinstance(fixed_variance, bool):
        return fixed_variance
    if fixed_variance == "auto":
        return n_models < FIXED_VARIANCE_BELOW
    if fixed_variance not in ("on", "off"):
        raise ConfigError(f"fixed_variance must be 'auto', 'on' or 'off', got {fixed_variance!r}")
    return fixed_variance == "on"


def _side(conf: np.ndarray, mask: np.ndarray, fixed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = mask.sum(axis=0)
    s = np.where(mask, conf, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = s / n
        resid2 = np.where(mask, (conf - mu[None, :]) ** 2, 0.0)
        if fixed:
            tot = int(n.sum())
            sd_all = float(np.sqrt(resid2.sum() / tot)) if tot else float("nan")
            sd = np.full(mu.shape, sd_all)
        else:
            sd = np.sqrt(resid2.sum(axis=0) / n)
    return mu, np.maximum(sd, MIN_STD), n


def fit_gaussians(confidences: np.ndarray, in_mask: np.ndarray, out_mask: np.ndarray, *,
                  fixed_variance: FixedVariance | bool = "auto") -> GaussianFits:
    """Per-example Gaussian fits of φ on the IN and on the OUT side (Carlini et al. 2022, Alg. 1 lines 9–11).

    Args:
        confidences: float (K, n) φ of n examples under K models.
        in_mask, out_mask: bool (K, n).
        fixed_variance: ``"auto"`` (global σ when K < 64, the paper's rule), ``"on"``/True, ``"off"``/False.

    Returns:
        :class:`GaussianFits`: μ = sample mean, σ = population std (ddof 0) per example, or with a fixed variance
        σ pooled over all examples' within-example residuals (one σ per side); σ floored at 1e-30. Examples
        with too few samples get NaN (see :attr:`GaussianFits.valid`).
    """
    c = to_numpy64(confidences)
    fixed = _use_fixed(fixed_variance, c.shape[0])
    mi, si, ni = _side(c, np.asarray(in_mask, bool), fixed)
    mo, so, no = _side(c, np.asarray(out_mask, bool), fixed)
    return GaussianFits(mi, si, mo, so, ni, no, fixed)


def likelihood_ratio(phi: np.ndarray, fits: GaussianFits) -> np.ndarray:
    """Online LiRA score Λ = ln N(φ; μ_in, σ_in²) − ln N(φ; μ_out, σ_out²), float64 (n,), nats.

    Higher = more IN-like (member / unlearned). ``phi``: float (n,) or (m, n) the target models' φ, columns
    aligned with ``fits``. NaN where a fit is invalid.
    """
    from scipy.stats import norm

    p = to_numpy64(phi)
    out = norm.logpdf(p, fits.mu_in, fits.sd_in) - norm.logpdf(p, fits.mu_out, fits.sd_out)
    return np.where(fits.valid, out, np.nan)


def offline_score(phi: np.ndarray, fits: GaussianFits) -> np.ndarray:
    """Offline (one-sided) LiRA score ln Pr[Z ≤ φ], Z ~ N(μ_out, σ_out²), float64; higher = more member-like.

    Paper §VI-C: Λ = 1 − Pr[Z > φ]; only OUT models are needed. NaN where the OUT fit is invalid.
    """
    from scipy.stats import norm

    p = to_numpy64(phi)
    need = 1 if fits.fixed_variance else 2
    return np.where(fits.n_out >= need, norm.logcdf(p, fits.mu_out, fits.sd_out), np.nan)


def best_balanced_accuracy(member: np.ndarray, nonmember: np.ndarray) -> float:
    """max over thresholds of ½(TPR + TNR) of "score > t ⇒ IN" (fraction in [0.5, 1])."""
    from sklearn.metrics import roc_curve

    m, n = to_numpy64(member), to_numpy64(nonmember)
    y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    f, t, _ = roc_curve(y, np.concatenate([m, n]))
    return float(np.max(0.5 * (t + 1.0 - f)))


@dataclass(frozen=True)
class AttackResult:
    """Scores of attack instances with their truth, and the ROC summaries.

    ``scores`` float64 (m,), ``is_in`` bool (m,), ``model`` int (m,) the target model of each instance, ``example``
    int (m,) its column; ``auc``, ``tpr`` ({"1%": …, "0.1%": …}; NaN when fewer than 1/α OUT instances),
    ``accuracy`` (best balanced), ``n_in``, ``n_out``, ``skipped`` (instances without a valid fit).
    """

    scores: np.ndarray
    is_in: np.ndarray
    model: np.ndarray
    example: np.ndarray
    auc: float
    tpr: dict[str, float]
    accuracy: float
    n_in: int
    n_out: int
    skipped: int

    def to_dict(self, prefix: str) -> dict[str, float]:
        d = {f"{prefix}_auc": self.auc, f"{prefix}_accuracy": self.accuracy, f"{prefix}_n_in": float(self.n_in),
             f"{prefix}_n_out": float(self.n_out), f"{prefix}_skipped": float(self.skipped)}
        d.update({f"{prefix}_tpr@{k}fpr": v for k, v in self.tpr.items()})
        return d


def summarize_attack(member: np.ndarray, nonmember: np.ndarray) -> tuple[float, dict[str, float], float]:
    """(AUC, {TPR@1%, TPR@0.1%} (NaN when not resolvable), best balanced accuracy) of IN vs OUT scores."""
    auc = roc_auc(member, nonmember)
    tpr = {label: (tpr_at_fpr(member, nonmember, 1.0 / inv) if len(nonmember) >= inv else float("nan"))
           for label, inv in FPR_LEVELS}
    return auc, tpr, best_balanced_accuracy(member, nonmember)


def leave_one_out(shadows: ShadowScores, *, fixed_variance: FixedVariance | bool = "auto",
                  online: bool = True) -> AttackResult:
    """Evaluate the attack with each shadow model as the target in turn (Gaussians fitted on the other K − 1).

    Args:
        shadows: the K shadow models' confidences and masks (K ≥ 3).
        fixed_variance: as in :func:`fit_gaussians` (the rule uses K − 1, the models the fit sees).
        online: Λ of :func:`likelihood_ratio` (True) or the one-sided :func:`offline_score`.

    Raises:
        ConfigError: fewer than 3 shadow models.
        DataError: no IN or no OUT instance with a valid fit (too few shadow models for the examples).
    """
    k = shadows.n_models
    if k < 3:
        raise ConfigError(f"leave-one-out needs at least 3 shadow models (one target, two to fit), got {k}; "
                          "train more shadows (n_shadow ≥ 8 recommended on CPU, the paper uses 64–256)")
    c = shadows.confidences
    scores, truth, models, examples = [], [], [], []
    skipped = 0
    for t in range(k):
        rest = np.arange(k) != t
        fits = fit_gaussians(c[rest], shadows.in_mask[rest], shadows.out_mask[rest],
                             fixed_variance=fixed_variance)
        s = likelihood_ratio(c[t], fits) if online else offline_score(c[t], fits)
        labelled = shadows.in_mask[t] | shadows.out_mask[t]
        ok = labelled & np.isfinite(s)
        skipped += int((labelled & ~ok).sum())
        idx = np.flatnonzero(ok)
        scores.append(s[idx])
        truth.append(shadows.in_mask[t, idx])
        models.append(np.full(len(idx), t))
        examples.append(idx)
    sc, tr = np.concatenate(scores), np.concatenate(truth)
    if not tr.any() or tr.all():
        raise DataError(f"leave-one-out found {int(tr.sum())} IN and {int((~tr).sum())} OUT instances with a valid "
                        "Gaussian fit; every example needs IN and OUT samples among the other shadows: train more "
                        "shadow models or use fixed_variance='on'")
    auc, tpr, acc = summarize_attack(sc[tr], sc[~tr])
    return AttackResult(sc, tr, np.concatenate(models), np.concatenate(examples), auc, tpr, acc,
                        int(tr.sum()), int((~tr).sum()), skipped)


# -- shadow training (evaluation work, with the engine) ----------------------------------------------------------
def balanced_membership(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """bool (K, n): each example IN for exactly ⌊K/2⌋ models, chosen at random (reference ``train.py`` keep rule)."""
    rng = np.random.default_rng(seed)
    order = rng.uniform(size=(n_models, n_examples)).argsort(axis=0).argsort(axis=0)
    return order < n_models // 2


def train_shadows(
    pool: SampleSet,
    *,
    model_factory: Callable[[int], nn.Module],
    recipe: TrainConfig,
    engine: Engine,
    n_shadow: int = 8,
    seed: int = 0,
    unlearner: Any | None = None,
    targets: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ShadowScores:
    """Train K shadow models (LiRA) or train-then-unlearn them (U-LiRA) and record φ on every pool example.

    This trains models: it is evaluation work done with the engine (seeded, on the engine's device), never called
    by a registered metric. Cost: ``n_shadow`` trainings (+ ``n_shadow`` unlearning runs for U-LiRA).

    Args:
        pool: the examples (D ∪ D_t for LiRA against a run; for U-LiRA at least the targets); n = |pool|.
        model_factory: ``f(init_seed) -> nn.Module`` fresh model of the target architecture.
        recipe: training recipe of the shadows (the target model's recipe).
        engine: runs training and prediction.
        n_shadow: K ≥ 2 (even is best: each example is IN for exactly ⌊K/2⌋ models). The variance of the
            per-example fits falls as 1/K; with K < 64 a global variance is used by default.
        seed: membership draw and shadow seeds derive from it.
        unlearner: None (LiRA) or an :class:`~unlearnkit.methods.base.Unlearner` (U-LiRA): each shadow forgets the
            targets it trained on (F_k = T ∩ in_k) with retain set in_k \\ F_k.
        targets: U-LiRA target ids (default: every pool id); ignored for LiRA.
        progress: optional callback ``progress(k, n_shadow)`` after each shadow.

    Returns:
        :class:`ShadowScores` with ``kind`` "lira" (IN = trained on) or "ulira" (IN = unlearned, OUT = never seen).

    Raises:
        ConfigError: n_shadow < 2.  DataError: targets not in the pool, or a shadow forget set is empty.
    """
    from unlearnkit.methods.base import UnlearnContext, derive_seed

    if n_shadow < 2:
        raise ConfigError(f"n_shadow must be ≥ 2 (each example needs IN and OUT models), got {n_shadow}")
    n = len(pool)
    keep = balanced_membership(n_shadow, n, seed)
    is_target = np.ones(n, dtype=bool)
    if unlearner is not None and targets is not None:
        is_target = np.isin(pool.ids, np.asarray(targets, dtype=np.int64))
        missing = np.setdiff1d(np.asarray(targets, dtype=np.int64), pool.ids)
        if len(missing):
            raise DataError(f"{len(missing)} U-LiRA target ids are not in the shadow pool (e.g. "
                            f"{missing[:5].tolist()}); the pool must contain every target")
    conf = np.empty((n_shadow, n))
    in_mask = np.zeros((n_shadow, n), dtype=bool)
    for k in range(n_shadow):
        init = derive_seed(seed, f"shadow-init-{k}")
        model = model_factory(init)
        engine.seed_everything(init)
        engine.fit(model, pool.take(keep[k], "shadow-train"), recipe, seed=derive_seed(seed, f"shadow-order-{k}"),
                   desc=f"shadow {k + 1}/{n_shadow}")
        if unlearner is None:
            in_mask[k] = keep[k]
        else:
            f_mask = keep[k] & is_target
            if not f_mask.any():
                raise DataError(f"shadow {k} trained on no target, so it has nothing to unlearn; use more targets")
            ctx = UnlearnContext(seed=derive_seed(seed, f"shadow-unlearn-{k}"), train_recipe=recipe,
                                 init_seed=derive_seed(seed, f"shadow-reinit-{k}"), model_factory=model_factory)
            res = unlearner.unlearn(model, pool.take(f_mask, "forget"), pool.take(keep[k] & ~f_mask, "retain"),
                                    engine, ctx)
            model = res.model
            in_mask[k] = f_mask
        pred = engine.predict(model, pool)
        conf[k] = logit_confidence(to_numpy64(pred.logits), pred.labels.numpy())
        if progress is not None:
            progress(k + 1, n_shadow)
    out_mask = ~keep
    if unlearner is not None:
        out_mask &= is_target[None, :]
    name = type(unlearner).__name__ if unlearner is not None else ""
    return ShadowScores(pool.ids.copy(), pool.labels.copy(), conf, in_mask, out_mask,
                        "lira" if unlearner is None else "ulira", name)


# -- registered metrics (read shadows, never train) ---------------------------------------------------------------
def _shadows(ctx: EvalContext, kind: str, metric: str) -> ShadowScores:
    sh = ctx.references.get(SHADOW_KEY)
    how = (f"build them with unlearnkit.metrics.lira.train_shadows(pool, ...){' with unlearner=<the method>' if kind == 'ulira' else ''} "
           f"and pass EvalContext(..., references={{'{SHADOW_KEY}': shadows, ...}})")
    if sh is None:
        raise ConfigError(f"metric '{metric}' needs shadow-model scores in references['{SHADOW_KEY}'] (metrics never "
                          f"train): {how}")
    if not isinstance(sh, ShadowScores) or sh.kind != kind:
        got = sh.kind if isinstance(sh, ShadowScores) else type(sh).__name__
        raise ConfigError(f"metric '{metric}' needs ShadowScores of kind {kind!r}, got {got!r}: {how}")
    return sh


def _columns(sh: ShadowScores, ids: np.ndarray, what: str, metric: str) -> np.ndarray:
    col = sh.index_of(ids)
    if (col < 0).any():
        raise DataError(f"metric '{metric}': {int((col < 0).sum())} of {len(ids)} {what} ids have no shadow scores "
                        f"(e.g. {np.asarray(ids)[col < 0][:5].tolist()}); the shadow pool must contain them")
    return col


class LiRAConfig(Frozen):
    """Settings of the LiRA / U-LiRA metrics (Carlini et al. 2022; Hayes et al. 2024)."""

    fixed_variance: FixedVariance = Field("auto", description="one global σ per side: auto = when K < 64 "
                                                               "(paper's rule), on, off (per-example σ)")
    online: bool = Field(True, description="online Λ (IN and OUT Gaussians) or the one-sided offline score")


def _phi(pred: Any) -> np.ndarray:
    """φ of a :class:`~unlearnkit.engine.loop.Predictions`: float64 (n,)."""
    return logit_confidence(to_numpy64(pred.logits), pred.labels.numpy())


@METRICS.register("lira", config=LiRAConfig)
class LiRA(Metric):
    """LiRA against the evaluated model: does the likelihood-ratio attack still call D_f members?

    Members = D_f (θ_o trained on them), non-members = the test samples D_t (only those in the shadow pool), scored
    by Λ with per-example Gaussians from ``references["lira_shadows"]`` (kind "lira", pool ⊇ D_f ∪ D_t; build with
    :func:`train_shadows` on ``task.train.concat(task.test)``). After good unlearning the AUC approaches the
    oracle's value (≈ 0.5 for random forgetting). Per-sample: ``lr_forget``, ``lr_test`` float64, ``ids_*``.

    Raises:
        ConfigError: no shadow scores of kind "lira" in the references.  DataError: D_f/test ids not in the pool.
    """

    keys = {"lira_auc_forget": "ROC AUC of LiRA's Λ, D_f (members) vs D_t (non-members); 0.5 = no leakage",
            "lira_accuracy_forget": "best balanced accuracy of the LiRA threshold attack, fraction",
            "lira_tpr@1%fpr_forget": "TPR at 1 % FPR (NaN with < 100 non-members)",
            "lira_tpr@0.1%fpr_forget": "TPR at 0.1 % FPR (NaN with < 1000 non-members)",
            "lira_n_shadow": "shadow models the Gaussians were fitted on",
            "lira_fixed_variance": "1 if one global σ per side was used, else 0"}
    source = "Carlini et al., IEEE S&P 2022, arXiv:2112.03570"

    def __init__(self, config: LiRAConfig | None = None) -> None:
        self.config = config or LiRAConfig()

    def compute(self, ctx: EvalContext) -> MetricOutput:
        sh = _shadows(ctx, "lira", "lira")
        fits = fit_gaussians(sh.confidences, sh.in_mask, sh.out_mask, fixed_variance=self.config.fixed_variance)
        score = likelihood_ratio if self.config.online else offline_score
        tsplit = full_test_split(ctx)
        out: dict[str, np.ndarray] = {}
        for split in ("forget", tsplit):
            pred = ctx.predictions(split)
            col = _columns(sh, pred.ids.numpy(), split, "lira")
            sub = GaussianFits(*(getattr(fits, f)[col] for f in ("mu_in", "sd_in", "mu_out", "sd_out", "n_in",
                                                                 "n_out")), fits.fixed_variance)
            out[split] = score(_phi(pred), sub)
        m, n = out["forget"], out[tsplit]
        m, n = m[np.isfinite(m)], n[np.isfinite(n)]
        auc, tpr, acc = summarize_attack(m, n)
        values = {"lira_auc_forget": auc, "lira_accuracy_forget": acc, "lira_n_shadow": float(sh.n_models),
                  "lira_fixed_variance": float(fits.fixed_variance)}
        values.update({f"lira_tpr@{k}fpr_forget": v for k, v in tpr.items()})
        per = {"lr_forget": out["forget"], "lr_test": out[tsplit], "ids_forget": ctx.predictions("forget").ids.numpy(),
               "ids_test": ctx.predictions(tsplit).ids.numpy()}
        return MetricOutput(values, per)


@METRICS.register("ulira", config=LiRAConfig)
class ULiRA(Metric):
    """U-LiRA on this run: can the attack tell θ_u (trained on D_f, then unlearned) from θ_r (never saw D_f)?

    For every x ∈ D_f, Λ(x) from the U-LiRA shadows (``references["lira_shadows"]``, kind "ulira", built with the
    same method, targets ⊇ D_f) is computed under θ_u (IN instances) and under the oracle θ_r
    (``references["oracle_model"]``, OUT instances); the AUC of IN vs OUT is the attack's success (0.5 = the
    unlearned model is indistinguishable from retraining on D_f; Hayes et al. 2024, arXiv:2403.01218).
    Per-sample: ``lr_unlearned``, ``lr_oracle`` float64 (|D_f|,), ``ids_forget``.

    Raises:
        ConfigError: no U-LiRA shadow scores or no oracle in the references.  DataError: D_f ids not in the pool.
    """

    keys = {"ulira_auc": "ROC AUC of U-LiRA's Λ on D_f, θ_u (IN) vs θ_r (OUT); 0.5 = indistinguishable from "
                         "retraining (lower is better, ≥ 0.5 expected)",
            "ulira_accuracy": "best balanced accuracy of the U-LiRA threshold attack, fraction (0.5 = chance)",
            "ulira_mean_lr_unlearned": "mean Λ of D_f under θ_u, nats (> 0 leans to 'unlearned')",
            "ulira_n_shadow": "shadow models the Gaussians were fitted on"}
    source = "Hayes et al., 2024, arXiv:2403.01218 (U-LiRA); Carlini et al., IEEE S&P 2022, arXiv:2112.03570"

    def __init__(self, config: LiRAConfig | None = None) -> None:
        self.config = config or LiRAConfig()

    def compute(self, ctx: EvalContext) -> MetricOutput:
        sh = _shadows(ctx, "ulira", "ulira")
        oracle = require_reference(ctx, ORACLE_KEY, "ulira")
        fits = fit_gaussians(sh.confidences, sh.in_mask, sh.out_mask, fixed_variance=self.config.fixed_variance)
        score = likelihood_ratio if self.config.online else offline_score
        pred_u = ctx.predictions("forget")
        pred_r = (ctx.reference_predictions(ORACLE_KEY, "forget") if hasattr(ctx, "reference_predictions")
                  else ctx.engine.predict(oracle, ctx.dataset("forget")))
        col = _columns(sh, pred_u.ids.numpy(), "forget", "ulira")
        sub = GaussianFits(*(getattr(fits, f)[col] for f in ("mu_in", "sd_in", "mu_out", "sd_out", "n_in", "n_out")),
                           fits.fixed_variance)
        lr_u, lr_r = score(_phi(pred_u), sub), score(_phi(pred_r), sub)
        ok = np.isfinite(lr_u) & np.isfinite(lr_r)
        if not ok.any():
            raise DataError("no forget sample has a valid U-LiRA fit (each needs IN and OUT shadow samples); train "
                            "more shadow models")
        auc, _, acc = summarize_attack(lr_u[ok], lr_r[ok])
        values = {"ulira_auc": auc, "ulira_accuracy": acc, "ulira_mean_lr_unlearned": float(np.mean(lr_u[ok])),
                  "ulira_n_shadow": float(sh.n_models)}
        return MetricOutput(values, {"lr_unlearned": lr_u, "lr_oracle": lr_r, "ids_forget": pred_u.ids.numpy()})


def shadow_pool(task: Any) -> SampleSet:
    """D ∪ D_t of a task as one pool (LiRA shadows against a run): ``task.train.concat(task.test)``."""
    return task.train.concat(task.test, "shadow_pool")


__all__ = ["SHADOW_KEY", "AttackResult", "GaussianFits", "LiRA", "LiRAConfig", "ShadowScores", "ULiRA",
           "balanced_membership", "best_balanced_accuracy", "fit_gaussians", "leave_one_out", "likelihood_ratio",
           "offline_score", "shadow_pool", "summarize_attack", "train_shadows"]

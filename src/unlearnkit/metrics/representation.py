"""Representation-level forgetting: CKA to the original/oracle models and k-NN / linear-probe separability of D_f.

Logit-based metrics (accuracy, MIA) can be satisfied by changing only the classifier head while the features still
encode the forgotten data. Following Kim, Cha & Kim, "Are We Truly Forgetting? A Critical Re-examination of
Machine Unlearning Evaluation Protocols", 2025, arXiv:2503.06991 (k-NN with k = 5 and cosine distance, and CKA
between unlearned and original/retrained features), this metric reads the **penultimate features** (the input of
the last ``nn.Linear``, :func:`unlearnkit.models.parts.forward_with_features`, eval mode, no gradients):

* **Linear CKA** (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019,
  arXiv:1905.00414, Eq. 4 / 5): with column-centred feature matrices X (n, d1), Y (n, d2) of the same n samples,
  CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = XXᵀ, L = YYᵀ.
  Unitless in [0, 1]; 1 for identical features, invariant to orthogonal transforms and isotropic scaling of
  either side (not to anisotropic scaling). Computed on the whole set at once (not averaged over batches), in
  float64. Convention: if either side is constant over the set (centred features all zero) CKA is reported as 0.
  High CKA(θ_u, θ_o) on D_f with low CKA(θ_r, θ_o) means the unlearner kept the original representation of D_f.
* **k-NN accuracy** and **linear-probe accuracy** of D_f (%): a ``sklearn`` k-NN classifier (k = 5, cosine
  distance, as in the paper's code) and a logistic-regression probe (standardised features, lbfgs, fixed seed) are
  fitted on θ_u's features of D_r with D_r's labels and predict D_f's labels from θ_u's features of D_f: does the
  representation still separate the forgotten data? Compare with the oracle's value (its row in the same run):
  an absolute value alone is not meaningful (for random forgetting the oracle generalises to D_f too).
  When some label of D_f never occurs in the fit set (class / sub-class forgetting), the test samples of those
  labels are added to the fit set (``repr_fit_extra_test`` counts them), since a classifier cannot predict a label
  it never saw; if the test set has none either, a ``DataError`` is raised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.data.base import SampleSet
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import DataError
from unlearnkit.metrics._dtype import to_numpy64
from unlearnkit.metrics._refs import ORACLE_KEY, ORIGINAL_KEY, full_test_split, require_reference
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.models.parts import find_head, forward_with_features
from unlearnkit.registry import METRICS


# -- CKA ------------------------------------------------------------------------------------------------------------
def _centred_unit(a: np.ndarray) -> np.ndarray | None:
    a = a - a.mean(axis=0, keepdims=True)
    norm = float(np.linalg.norm(a))
    return a / norm if norm > 0 else None  # CKA is invariant to isotropic scaling: normalise against overflow


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019, arXiv:1905.00414) between features x (n, d1) and y (n, d2) of the same
    n samples (rows aligned); unitless in [0, 1]. Higher-rank inputs are flattened per row.

    Uses the feature-space form ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) or the equivalent Gram form
    ⟨K, L⟩_F / (‖K‖_F ‖L‖_F), K = XXᵀ, L = YYᵀ, whichever is cheaper; float64. Returns 0.0 when either side is
    constant over the samples (no variation to compare).

    Raises:
        DataError: different numbers of rows, fewer than 2 rows, or non-finite features.
    """
    xa = to_numpy64(x)
    ya = to_numpy64(y)
    if xa.shape[0] != ya.shape[0]:
        raise DataError(f"CKA needs the same samples on both sides: x has {xa.shape[0]} rows, y has {ya.shape[0]}")
    n = xa.shape[0]
    if n < 2:
        raise DataError(f"CKA needs at least 2 samples, got {n}")
    xa, ya = xa.reshape(n, -1), ya.reshape(n, -1)
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise DataError("CKA features contain NaN/inf; the model has diverged")
    xc, yc = _centred_unit(xa), _centred_unit(ya)
    if xc is None or yc is None:
        return 0.0
    d1, d2 = xc.shape[1], yc.shape[1]
    if d1 * d2 + d1 * d1 + d2 * d2 <= n * (d1 + d2 + 1):
        num = np.linalg.norm(yc.T @ xc) ** 2
        den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    else:
        k, l_ = xc @ xc.T, yc @ yc.T
        num = float((k * l_).sum())
        den = np.linalg.norm(k) * np.linalg.norm(l_)
    return float(min(max(num / den, 0.0), 1.0))


# -- features -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def penultimate_features(model: nn.Module, data: SampleSet, engine: Engine) -> np.ndarray:
    """The input of ``model``'s head (last ``nn.Linear``) for every sample of ``data``, in order: float32 (n, d).

    Eval mode, no gradients, batches of ``engine.config.eval_batch_size`` on the engine's device; the model's
    training flag is restored afterwards.

    Raises:
        MethodError: the model has no ``nn.Linear`` head, or the head does not produce the logits.
    """
    _, head = find_head(model, who="the representation metric")
    was_training = model.training
    model.to(engine.device).eval()
    feats: list[np.ndarray] = []
    try:
        for x, _, _ in engine.batches(data, engine.config.eval_batch_size, shuffle=False):
            _, f = forward_with_features(model, head, x)
            feats.append(f.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not feats:
        return np.zeros((0, head.in_features), dtype=np.float32)
    return np.concatenate(feats)


# -- separability probes ------------------------------------------------------------------------------------------
def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *, k: int = 5,
                 metric: str = "cosine") -> tuple[float, np.ndarray]:
    """k-NN (``sklearn.neighbors.KNeighborsClassifier``, uniform votes) fitted on (train_x, train_y), scored on
    (test_x, test_y): (accuracy in %, predictions int64 (n_test,)).

    Raises:
        DataError: k larger than the fit set, or an empty set.
    """
    from sklearn.neighbors import KNeighborsClassifier

    if len(train_y) < k or len(test_y) == 0:
        raise DataError(f"k-NN needs ≥ k = {k} fit samples and a non-empty evaluation set, got {len(train_y)} and "
                        f"{len(test_y)}; lower k")
    clf = KNeighborsClassifier(n_neighbors=k, metric=metric)
    clf.fit(to_numpy64(train_x), np.asarray(train_y))
    pred = clf.predict(np.asarray(test_x, dtype=np.float64)).astype(np.int64)
    return float(100.0 * (pred == np.asarray(test_y)).mean()), pred


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> tuple[float, np.ndarray]:
    """Linear probe: ``StandardScaler`` + ``LogisticRegression(C, lbfgs, random_state=seed)`` fitted on the train
    features, scored on the test features: (accuracy in %, predictions int64 (n_test,)).

    Raises:
        DataError: fewer than 2 classes in the fit set, or an empty set.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2 or len(test_y) == 0:
        raise DataError(f"a linear probe needs ≥ 2 classes in its fit set and a non-empty evaluation set, got "
                        f"{len(np.unique(train_y))} class(es) and {len(test_y)} samples")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    clf.fit(to_numpy64(train_x), np.asarray(train_y))
    pred = clf.predict(np.asarray(test_x, dtype=np.float64)).astype(np.int64)
    return float(100.0 * (pred == np.asarray(test_y)).mean()), pred


# -- the metric -----------------------------------------------------------------------------------------------------
class RepresentationConfig(Frozen):
    """Settings of :class:`Representation` (defaults: the paper's k-NN, k = 5 with cosine distance)."""

    compare: tuple[Literal["original", "oracle"], ...] = Field(
        ("original", "oracle"), description="reference models for CKA: original (θ_o, references['original_model']) "
                                            "and/or oracle (θ_r, references['oracle_model']); () = no CKA")
    k: int = Field(5, ge=1, description="neighbours of the k-NN classifier (paper: 5)")
    knn_metric: Literal["cosine", "euclidean"] = Field("cosine", description="k-NN distance (paper: cosine)")
    probe_C: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic-regression probe")
    probe_max_iter: int = Field(1000, ge=1, description="lbfgs iterations of the probe")
    max_fit_samples: int | None = Field(
        10000, ge=1, description="D_r samples the k-NN/probe are fitted on (seeded random subset; null = all of D_r)")
    seed: int = Field(0, description="seed of the D_r subset and of the probe (fixed, independent of the run seed)")

    @field_validator("compare")
    @classmethod
    def _compare(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"compare has duplicates: {list(v)}")
        return v


_REF_KEYS = {"original": ORIGINAL_KEY, "oracle": ORACLE_KEY}


@METRICS.register("representation", config=RepresentationConfig)
class Representation(Metric):
    """CKA of θ_u's penultimate features to θ_o's and θ_r's on D_f and D_t; k-NN and linear-probe accuracy of D_f.

    Needs ``ctx.references["original_model"]`` (θ_o) and ``ctx.references["oracle_model"]`` (θ_r) for the CKA
    keys (``compare`` chooses which; both by default). Formulas, units and conventions in the module docstring.
    Directions: CKA to θ_o — higher = representation unchanged by unlearning (for a good unlearner on D_f it should
    approach CKA(θ_r, θ_o)); CKA to θ_r — higher = closer to the oracle. k-NN/probe accuracy on D_f — higher = the
    features still separate the forgotten data; compare with the oracle's row.

    Per-sample arrays: ``knn_pred_forget``, ``probe_pred_forget`` int64 (|D_f|,), ``ids_forget``.

    Raises:
        ConfigError: a required reference model is missing or not an ``nn.Module``.
        DataError: a D_f label absent from both the fit set and the test set, k larger than the fit set, fewer than
            2 samples for CKA, non-finite features.
        MethodError: a model without an ``nn.Linear`` head producing its logits.
    """

    keys = {
        "cka_original_forget": "linear CKA(θ_u, θ_o) of penultimate features on D_f, [0, 1] (higher = the original "
                               "representation of D_f is kept)",
        "cka_original_test": "linear CKA(θ_u, θ_o) on the whole test set D_t, [0, 1] (higher = representation "
                             "unchanged)",
        "cka_oracle_forget": "linear CKA(θ_u, θ_r) on D_f, [0, 1] (higher = closer to the retrained oracle)",
        "cka_oracle_test": "linear CKA(θ_u, θ_r) on the whole test set D_t, [0, 1] (higher = closer to the oracle)",
        "knn_acc_forget": "k-NN accuracy (%) of D_f from θ_u's features, fitted on D_r (higher = D_f still "
                          "separable; compare with the oracle)",
        "probe_acc_forget": "linear-probe accuracy (%) of D_f from θ_u's features, fitted on D_r (higher = D_f "
                            "still separable; compare with the oracle)",
        "repr_fit_samples": "samples the k-NN/probe were fitted on (D_r subset + repr_fit_extra_test)",
        "repr_fit_extra_test": "test samples added to the fit set because their labels (D_f's) are absent from D_r",
    }
    source = ("Kim, Cha & Kim, 'Are We Truly Forgetting?', 2025, arXiv:2503.06991; linear CKA: Kornblith et al., "
              "ICML 2019, arXiv:1905.00414")

    def __init__(self, config: RepresentationConfig | None = None) -> None:
        self.config = config or RepresentationConfig()

    def _fit_set(self, ctx: EvalContext) -> tuple[SampleSet, SampleSet | None]:
        cfg = self.config
        retain = ctx.task.retain
        if cfg.max_fit_samples is not None and len(retain) > cfg.max_fit_samples:
            idx = np.sort(np.random.default_rng(cfg.seed).choice(len(retain), cfg.max_fit_samples, replace=False))
            retain = retain.take(idx, "retain")
        missing = np.setdiff1d(np.unique(ctx.task.forget.labels), np.unique(retain.labels))
        if not len(missing):
            return retain, None
        test = ctx.task.test
        extra = test.take(np.isin(test.labels, missing), "test_forgotten_labels")
        absent = np.setdiff1d(missing, np.unique(extra.labels))
        if len(absent):
            raise DataError(f"labels {absent.tolist()} of the forget set occur neither in the retain set nor in the "
                            "test set, so no k-NN/probe can predict them; add test samples of those classes")
        return retain, extra

    def compute(self, ctx: EvalContext) -> MetricOutput:
        cfg = self.config
        refs = {name: require_reference(ctx, _REF_KEYS[name], "representation") for name in cfg.compare}
        eng = ctx.engine
        forget = ctx.task.forget
        f_u = penultimate_features(ctx.model, forget, eng)
        values: dict[str, float] = {}

        if refs:
            test = ctx.dataset(full_test_split(ctx))
            t_u = penultimate_features(ctx.model, test, eng)
            for name, ref in refs.items():
                # the references' features: computed once per evaluation point, shared by every row there
                def feats(which, data, ref=ref):  # noqa: ANN001, ANN202
                    if hasattr(ctx, "for_reference"):
                        return ctx.for_reference(ref, ("penultimate", which), lambda sub: penultimate_features(
                            ref, data, eng))
                    return penultimate_features(ref, data, eng)

                values[f"cka_{name}_forget"] = linear_cka(f_u, feats("forget", forget))
                values[f"cka_{name}_test"] = linear_cka(t_u, feats("test", test))

        retain, extra = self._fit_set(ctx)
        fit_x = penultimate_features(ctx.model, retain, eng)
        fit_y = retain.labels
        if extra is not None:
            fit_x = np.concatenate([fit_x, penultimate_features(ctx.model, extra, eng)])
            fit_y = np.concatenate([fit_y, extra.labels])
        if not (np.isfinite(fit_x).all() and np.isfinite(f_u).all()):
            raise DataError("penultimate features contain NaN/inf; the model has diverged")
        values["knn_acc_forget"], knn_pred = knn_accuracy(fit_x, fit_y, f_u, forget.labels, k=cfg.k,
                                                          metric=cfg.knn_metric)
        values["probe_acc_forget"], probe_pred = probe_accuracy(fit_x, fit_y, f_u, forget.labels, C=cfg.probe_C,
                                                                max_iter=cfg.probe_max_iter, seed=cfg.seed)
        values["repr_fit_samples"] = float(len(fit_y))
        values["repr_fit_extra_test"] = float(0 if extra is None else len(extra))
        per = {"knn_pred_forget": knn_pred, "probe_pred_forget": probe_pred, "ids_forget": forget.ids.copy()}
        return MetricOutput(values, per)


__all__ = ["Representation", "RepresentationConfig", "knn_accuracy", "linear_cka", "penultimate_features",
           "probe_accuracy"]

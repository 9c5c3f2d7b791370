"""Distance of the unlearned model θ_u to the retrained oracle θ_r: output divergences and parameter distance.

* KL(θ_r‖θ_u) on a set S = (1/|S|) Σ_{x∈S} Σ_c p_r(c|x) [ln p_r(c|x) − ln p_u(c|x)], nats (Kullback & Leibler 1951),
  the per-sample KL of the oracle's softmax from the unlearned model's, averaged over samples. Not symmetric: the
  oracle is the reference distribution (first argument).
* JS(θ_u, θ_r) = (1/|S|) Σ_x [½ KL(p_u‖m) + ½ KL(p_r‖m)], m = ½(p_u + p_r), nats, symmetric, in [0, ln 2]
  (Lin, IEEE Trans. Inf. Theory 1991). This is the per-sample JS of ZRF (Chundawat et al., AAAI 2023,
  arXiv:2205.08096) computed correctly: KNOWN_FAULTS C33 golden values JS([1,0],[0,1]) = ln 2 = 0.693147,
  JS(p,p) = 0, batch of those two rows = 0.346574.
* ‖θ_u − θ_r‖₂ and ‖θ_u − θ_o‖₂: one global L2 norm over all parameters (``named_parameters``, buffers such as
  BatchNorm running statistics excluded) = sqrt(Σ_tensors Σ_elements Δ²), never a mean of per-tensor norms
  (KNOWN_FAULTS C21: tensors Δ1 = [3, 4], Δ2 = [12] give 13, not 8.5). Same units as the weights.

Divergences are computed in float64 from the logits in log space (``log_softmax``), so saturated softmax outputs
give exact finite values instead of 0·ln 0 or ln 0 artefacts. Direction: **lower = closer to the oracle**; the
oracle evaluated against itself scores 0 everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics._dtype import input_eps, to_numpy64, to_tensor64
from unlearnkit.metrics._refs import ORACLE_KEY, ORIGINAL_KEY, full_test_split, require_reference
from unlearnkit.metrics.base import EvalContext, Metric, MetricOutput
from unlearnkit.registry import METRICS

LN2 = math.log(2.0)


# -- divergences -----------------------------------------------------------------------------------------------------
def _kl_log(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(p‖q) from log-probabilities (float64 (n, C)); terms with p = 0 contribute 0."""
    p = lp.exp()
    terms = torch.where(p > 0, p * (lp - lq), torch.zeros((), dtype=lp.dtype))
    return terms.sum(dim=1).clamp_min(0.0)  # KL ≥ 0: drop −1e-17 rounding residues


def _js_log(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    lm = torch.where(lp == lq, lp, torch.logaddexp(lp, lq) - LN2)  # ln ½(p + q), exact where p = q
    return (0.5 * _kl_log(lp, lm) + 0.5 * _kl_log(lq, lm)).clamp_min(0.0)  # no −1e-17 from rounding


def _log_softmax64(logits: torch.Tensor, what: str) -> torch.Tensor:
    lg = to_tensor64(logits)
    if lg.ndim != 2:
        raise DataError(f"{what} must be (n, C) logits, got shape {tuple(lg.shape)}")
    if not bool(torch.isfinite(lg).all()):
        raise DataError(f"{what} contain NaN/inf: the model has diverged; no output divergence is defined")
    return torch.log_softmax(lg, dim=1)


def _log_probs(p: np.ndarray, what: str) -> torch.Tensor:
    arr = to_numpy64(p)
    # rows rounded to a low-precision dtype (float16 / bfloat16) sum to 1 only within C·eps of that dtype
    tol = max(1e-6, 2.0 * input_eps(p) * (arr.shape[1] if arr.ndim == 2 else 1))
    if arr.ndim != 2 or (arr < 0).any() or not np.allclose(arr.sum(axis=1), 1.0, atol=tol):
        raise DataError(f"{what} must be (n, C) probabilities (non-negative rows summing to 1)")
    if tol > 1e-6:  # renormalise the upcast rows so that KL/JS are those of probability vectors
        arr = arr / arr.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(arr))


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise DataError(f"the two output arrays must have the same shape (n, C), got {tuple(a.shape)} and "
                        f"{tuple(b.shape)}; are the models built for the same number of classes?")


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p‖q) = Σ_c p_c ln(p_c / q_c), nats, float64 (n,), from probabilities (n, C) (0 ln 0 = 0;
    +inf where q_c = 0 < p_c).  Raises DataError on bad shapes or rows that are not probabilities."""
    lp, lq = _log_probs(p, "p"), _log_probs(q, "q")
    _same_shape(lp, lq)
    return _kl_log(lp, lq).numpy()


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen–Shannon divergence ½KL(p‖m) + ½KL(q‖m), m = ½(p + q), nats in [0, ln 2], float64 (n,);
    symmetric.  Raises DataError on bad shapes or rows that are not probabilities."""
    lp, lq = _log_probs(p, "p"), _log_probs(q, "q")
    _same_shape(lp, lq)
    return _js_log(lp, lq).numpy()


def kl_from_logits(logits_p: torch.Tensor, logits_q: torch.Tensor) -> np.ndarray:
    """Row-wise KL(softmax(logits_p) ‖ softmax(logits_q)), nats, float64 (n,).  Raises DataError (shapes, NaN)."""
    lp, lq = _log_softmax64(logits_p, "logits_p"), _log_softmax64(logits_q, "logits_q")
    _same_shape(lp, lq)
    return _kl_log(lp, lq).numpy()


def js_from_logits(logits_p: torch.Tensor, logits_q: torch.Tensor) -> np.ndarray:
    """Row-wise JS(softmax(logits_p), softmax(logits_q)), nats in [0, ln 2], float64 (n,).  Raises DataError."""
    lp, lq = _log_softmax64(logits_p, "logits_p"), _log_softmax64(logits_q, "logits_q")
    _same_shape(lp, lq)
    return _js_log(lp, lq).numpy()


# -- parameters ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def parameter_distance(a: nn.Module, b: nn.Module) -> float:
    """Global L2 distance sqrt(Σ_name ‖a.name − b.name‖²) over all parameters (float64, on CPU; buffers excluded).

    Raises:
        ConfigError: the two models do not have the same parameter names and shapes (different architectures).
    """
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys():
        only_a, only_b = sorted(pa.keys() - pb.keys()), sorted(pb.keys() - pa.keys())
        raise ConfigError(f"parameter distance needs two models of the same architecture; parameters only in the "
                          f"first: {only_a[:5]}, only in the second: {only_b[:5]}")
    total = 0.0
    for name, ta in pa.items():
        tb = pb[name]
        if ta.shape != tb.shape:
            raise ConfigError(f"parameter '{name}' has shape {tuple(ta.shape)} in one model and {tuple(tb.shape)} in "
                              "the other; the models must share the architecture")
        total += float(((ta.detach().cpu().double() - tb.detach().cpu().double()) ** 2).sum())
    return math.sqrt(total)


# -- the metric -----------------------------------------------------------------------------------------------------
class RetrainDistanceConfig(Frozen):
    """Settings of :class:`RetrainDistance`."""

    original: bool = Field(
        True, description="also report ‖θ_u − θ_o‖₂ (needs references['original_model']); false = oracle only")


@METRICS.register("retrain_distance", config=RetrainDistanceConfig)
class RetrainDistance(Metric):
    """Output and parameter distance of θ_u to the retrained oracle θ_r (and parameter distance to θ_o).

    Needs ``ctx.references["oracle_model"]`` (θ_r) and, with ``original: true`` (default),
    ``ctx.references["original_model"]`` (θ_o): ``nn.Module`` s of the evaluated model's architecture. θ_r is run in
    eval mode on D_f and on the whole test set D_t (training flag restored). Formulas, units and golden values in
    the module docstring. Direction: **lower = closer** (0 for the oracle itself).

    Per-sample arrays: ``kl_forget``, ``js_forget``, ``kl_test``, ``js_test`` float64 (n,), in split order, and
    ``ids_forget``, ``ids_test``.

    Raises:
        ConfigError: a required reference is missing or not an ``nn.Module``; architectures differ.
        DataError: NaN/inf outputs, an empty D_f or D_t, or the two models output different numbers of classes.
    """

    keys = {
        "kl_oracle_forget": "mean per-sample KL(θ_r‖θ_u) of the softmax outputs on D_f, nats (lower = closer to "
                            "the oracle)",
        "js_oracle_forget": "mean per-sample Jensen–Shannon divergence between θ_u and θ_r on D_f, nats in "
                            "[0, ln 2] (lower = closer)",
        "kl_oracle_test": "mean per-sample KL(θ_r‖θ_u) on the whole test set D_t, nats (lower = closer)",
        "js_oracle_test": "mean per-sample JS(θ_u, θ_r) on the whole test set D_t, nats (lower = closer)",
        "l2_to_oracle": "global L2 norm ‖θ_u − θ_r‖₂ over all parameters (lower = closer; weight units)",
        "l2_to_original": "global L2 norm ‖θ_u − θ_o‖₂ over all parameters (how far unlearning moved the weights)",
    }
    source = ("KL/JS to the retrained model: Chundawat et al. (ZRF), AAAI 2023, arXiv:2205.08096; parameter "
              "distance: Golatkar et al., CVPR 2020, arXiv:1911.04933")

    def __init__(self, config: RetrainDistanceConfig | None = None) -> None:
        self.config = config or RetrainDistanceConfig()

    def compute(self, ctx: EvalContext) -> MetricOutput:
        oracle = require_reference(ctx, ORACLE_KEY, "retrain_distance")
        original = require_reference(ctx, ORIGINAL_KEY, "retrain_distance") if self.config.original else None
        values: dict[str, float] = {}
        per: dict[str, np.ndarray] = {}
        for name, split in (("forget", "forget"), ("test", full_test_split(ctx))):
            u = ctx.predictions(split)
            if len(u.labels) == 0:
                raise DataError(f"the {name} set is empty, so the output distance to the oracle on it is undefined")
            # θ_r's outputs: computed once per evaluation point and shared by every row there
            r = (ctx.reference_predictions(ORACLE_KEY, split) if hasattr(ctx, "reference_predictions")
                 else ctx.engine.predict(oracle, ctx.dataset(split)))
            if not torch.equal(u.ids, r.ids):  # pragma: no cover - same set, same order by construction
                raise DataError(f"oracle and unlearned predictions on '{split}' are not aligned by sample id")
            kl = kl_from_logits(r.logits, u.logits)
            js = js_from_logits(u.logits, r.logits)
            values[f"kl_oracle_{name}"] = float(kl.mean())
            values[f"js_oracle_{name}"] = float(js.mean())
            per[f"kl_{name}"], per[f"js_{name}"], per[f"ids_{name}"] = kl, js, u.ids.numpy()
        values["l2_to_oracle"] = parameter_distance(ctx.model, oracle)
        if original is not None:
            values["l2_to_original"] = parameter_distance(ctx.model, original)
        return MetricOutput(values, per)


__all__ = ["RetrainDistance", "RetrainDistanceConfig", "js_divergence", "js_from_logits", "kl_divergence",
           "kl_from_logits", "parameter_distance"]

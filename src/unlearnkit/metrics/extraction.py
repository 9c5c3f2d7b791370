"""Extraction strength and exact memorization of answers (teacher-forced, greedy predictions).

Given the answer tokens y_1..y_L of a question and the model's teacher-forced arg-max predictions ŷ_1..ŷ_L (ŷ_t is
the arg-max of p(· | prompt, y_<t)):

* **Exact memorization** EM = (1/L) Σ_t [ŷ_t = y_t] (Tirumala et al., NeurIPS 2022, arXiv:2205.10770; open-unlearning's
  ``exact_memorization``); in [0, 1], higher = more memorised.
* **Extraction strength** ES = 1 − k*/L with k* the smallest prefix length such that the model, given y_<k*, reproduces
  the whole suffix y_≥k* (Carlini et al., "Quantifying Memorization", ICLR 2023, arXiv:2202.07646; open-unlearning's
  ``extraction_strength``); k* = L (ES = 0) when not even the last token is reproduced. The reference code stops its
  search one short and reports 1/L instead of 0 there (KNOWN_FAULTS C20); here the loop runs over k = 0..L.
  Golden: y = [11,12,13,14]; ŷ = y → 1.0, [99,12,13,14] → 0.75, [99,99,99,99] → 0.0 (EM 1.0, 0.75, 0.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unlearnkit.errors import DataError


def _pair(pred: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise DataError(f"predictions {p.shape} and answer tokens {y.shape} must have the same length")
    if len(y) == 0:
        raise DataError("an answer with 0 tokens has no extraction strength / exact memorization")
    return p, y


def exact_memorization(pred: Any, labels: Any) -> float:
    """Fraction of answer tokens whose teacher-forced arg-max prediction is right, float in [0, 1]."""
    p, y = _pair(pred, labels)
    return float((p == y).mean())


def extraction_strength(pred: Any, labels: Any) -> float:
    """1 − k*/L, k* = min{k ∈ 0..L : ŷ_≥k = y_≥k} (the empty suffix k = L always matches), float in [0, 1]."""
    p, y = _pair(pred, labels)
    L = len(y)
    eq = p == y
    # k* = first k such that eq[k:] is all True = L − (length of the all-True tail of eq)
    tail = 0
    for ok in eq[::-1]:
        if not ok:
            break
        tail += 1
    return 1.0 - (L - tail) / L


def answer_predictions(logits: Any, labels: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Teacher-forced arg-max predictions of the answer tokens of each row of a batch.

    Args:
        logits: float (b, T, V) outputs of a causal LM on ``input_ids`` (b, T).
        labels: int64 (b, T), −100 on the prompt and padding (the answer positions hold the answer tokens).

    Returns:
        per row ``(pred, target)`` int64 arrays (L_i,): the prediction at position t−1 for each answer token at t.
        Masked positions are never used as indices (C19).
    """
    import torch

    lg = torch.as_tensor(logits)
    lab = torch.as_tensor(labels)
    if lg.ndim != 3 or lab.shape != lg.shape[:2]:
        raise DataError(f"logits must be (b, T, V) and labels (b, T); got {tuple(lg.shape)} and {tuple(lab.shape)}")
    pred = lg[:, :-1].argmax(-1)
    tgt = lab[:, 1:]
    out = []
    for i in range(lg.shape[0]):
        keep = tgt[i] != -100
        out.append((pred[i][keep].cpu().numpy().astype(np.int64), tgt[i][keep].cpu().numpy().astype(np.int64)))
    return out


def extraction_scores(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{"es": float64 (n,), "em": float64 (n,)}`` of each (pred, target) pair."""
    return {"es": np.array([extraction_strength(p, y) for p, y in pairs], dtype=np.float64),
            "em": np.array([exact_memorization(p, y) for p, y in pairs], dtype=np.float64)}


# -- the registered metric ---------------------------------------------------------------------------------------------
def _register() -> None:
    from unlearnkit.metrics.base import Metric, MetricOutput
    from unlearnkit.registry import METRICS

    @METRICS.register("extraction")
    class Extraction(Metric):
        """Extraction strength and exact memorization of the answers of D_f and D_r (teacher-forced arg-max)."""

        track = "llm"
        source = "Carlini et al. 2023 (arXiv:2202.07646); Tirumala et al. 2022 (arXiv:2205.10770); open-unlearning"
        keys = {
            "forget.es": "mean extraction strength on D_f (lower = forgotten; θ_r's value is the target)",
            "forget.em": "mean exact memorization on D_f (lower = forgotten)",
            "retain.es": "mean extraction strength on D_r (higher = kept)",
            "retain.em": "mean exact memorization on D_r (higher = kept)",
        }

        def compute(self, ctx: Any) -> MetricOutput:
            values: dict[str, float] = {}
            per: dict[str, np.ndarray] = {}
            for split in ("forget", "retain"):
                qs = ctx.eval_set(split)
                toks = ctx.token_scores(qs.pairs("answer"), (split, "answer"))
                sc = extraction_scores([(t.argmax, t.target) for t in toks])
                for k, v in sc.items():
                    values[f"{split}.{k}"] = float(v.mean())
                    per[f"{split}.{k}"] = v
            return MetricOutput(values, per)


_register()

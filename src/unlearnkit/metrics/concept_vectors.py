"""Parametric knowledge traces (ConceptVectors, Hong et al. 2024, arXiv:2406.11614): do the MLP value vectors that
carried a forget subject in θ_o still carry it in the evaluated model?

The concept vectors of each forget subject are found once per evaluation point in θ_o
(:func:`unlearnkit.methods.llm.needle.find_concept_vectors`: down-projection columns whose logit-lens top-k tokens
are the subject's characteristic tokens). For the evaluated model the same (layer, column) vectors are compared with
θ_o's: cosine similarity, relative L2 distance ‖v − v_o‖ / ‖v_o‖, and the Jaccard index of their top-k logit-lens
tokens (each through its own model's unembedding). The paper's finding: output-level unlearning (GA, NPO, DPO) leaves
these vectors almost unchanged — Jaccard ≈ 1 while the forget metrics fall — so the knowledge is still in the
parameters; Needle, which replaces them by noise, drops the Jaccard to the *ablation value* ``cv.jaccard_ablated``
(θ_o's top-k against the top-k of a random vector of the same norm). θ_o's row is 1 / 0 / 1 by construction; θ_r's row
(another initialisation, no neuron correspondence) shows what an unrelated model scores.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from unlearnkit.config.schema import Frozen
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS


class ConceptVectorsConfig(Frozen):
    """Vector search in θ_o (see :class:`unlearnkit.methods.llm.needle.NeedleConfig`) and the ablation seed."""

    top_k: int = Field(20, ge=1)
    per_concept: int = Field(3, ge=1, le=1000)
    layers: list[int] | None = None
    min_ratio: float = Field(2.0, ge=1.0)
    seed: int = Field(0, description="seed of the ablation reference vectors (with layer and column)")


def _select(ctx: Any, cfg: ConceptVectorsConfig) -> list[Any]:
    from unlearnkit.methods.llm.needle import find_concept_vectors, subject_texts

    def run(sub: Any) -> list[Any]:
        concepts, others = subject_texts(sub.task.forget, sub.task.retain)
        return find_concept_vectors(sub.model, sub.tokenizer, concepts, others, top_k=cfg.top_k,
                                    per_concept=cfg.per_concept, layers=cfg.layers, min_ratio=cfg.min_ratio)

    key = ("cv.select", cfg.top_k, cfg.per_concept, tuple(cfg.layers or ()), cfg.min_ratio)
    return ctx.for_reference("original", key, run)


def trace_scores(model: Any, theta_o: Any, vectors: list[Any], top_k: int, seed: int) -> dict[str, np.ndarray]:
    """Per concept vector: ``cosine``, ``l2`` (relative), ``jaccard`` of the evaluated model's vector against θ_o's,
    and ``ablated`` — the Jaccard of θ_o's top-k against a same-norm random vector
    (:func:`~unlearnkit.methods.llm.needle.ablation_vector` with seed (seed, layer, column)) through θ_o's unembedding.
    """
    from unlearnkit.methods.llm.needle import (
        ablation_vector,
        down_proj_weights,
        jaccard,
        logit_lens_topk,
        unembedding,
    )

    layers = sorted({v.layer for v in vectors})
    wo, wx = down_proj_weights(theta_o, layers), down_proj_weights(model, layers)
    eo, ex = unembedding(theta_o), unembedding(model)
    cos, l2, jac, abl = [], [], [], []
    for v in vectors:
        vo, vx = wo[v.layer][:, v.index], wx[v.layer][:, v.index]
        no = vo.double().norm()
        cos.append(float(torch.dot(vo.double(), vx.double()) / (no * vx.double().norm()).clamp_min(1e-30)))
        l2.append(float((vx.double() - vo.double()).norm() / no.clamp_min(1e-30)))
        to = logit_lens_topk(eo, vo[:, None], top_k)[0]
        jac.append(jaccard(to.tolist(), logit_lens_topk(ex, vx[:, None], top_k)[0].tolist()))
        a = ablation_vector(vo, (seed, v.layer, v.index))
        abl.append(jaccard(to.tolist(), logit_lens_topk(eo, a[:, None], top_k)[0].tolist()))
    return {"cosine": np.asarray(cos), "l2": np.asarray(l2), "jaccard": np.asarray(jac), "ablated": np.asarray(abl)}


@METRICS.register("concept_vectors", config=ConceptVectorsConfig)
class ConceptVectors(Metric):
    """Concept-vector traces of the forget subjects (see the module docstring). Needs θ_o
    (``references['original_model']``) to find the vectors; they are found once per evaluation point."""

    track = "llm"
    reads = frozenset({"weights"})
    source = "Hong et al. 2024, 'Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces' " \
             "(ConceptVectors), arXiv:2406.11614"
    keys = {"cv.jaccard": "mean top-k logit-lens Jaccard vs θ_o's vectors (1 = trace intact; removal → "
                          "cv.jaccard_ablated)",
            "cv.cosine": "mean cosine similarity to θ_o's vectors", "cv.l2": "mean ‖v − v_o‖ / ‖v_o‖",
            "cv.jaccard_ablated": "the Jaccard of an ablated (random same-norm) vector: the removal floor",
            "cv.coherence": "mean |top-k ∩ concept tokens| / k of the vectors in θ_o (how concept-specific they are)",
            "cv.n_vectors": "concept vectors found (per_concept × subjects with characteristic tokens)"}
    smoke_params: ClassVar[dict[str, Any]] = {"per_concept": 2, "top_k": 10}

    def __init__(self, config: ConceptVectorsConfig | None = None) -> None:
        self.config = config or ConceptVectorsConfig()

    def compute(self, ctx: Any) -> MetricOutput:
        cfg = self.config
        theta_o = ctx.reference("original", "the concept_vectors probe (vectors are found in θ_o)")
        vectors = _select(ctx, cfg)
        if not vectors:
            nan = float("nan")
            return MetricOutput({"cv.jaccard": nan, "cv.cosine": nan, "cv.l2": nan, "cv.jaccard_ablated": nan,
                                 "cv.coherence": nan, "cv.n_vectors": 0.0})
        s = trace_scores(ctx.model, theta_o, vectors, cfg.top_k, cfg.seed)
        values = {"cv.jaccard": float(s["jaccard"].mean()), "cv.cosine": float(s["cosine"].mean()),
                  "cv.l2": float(s["l2"].mean()), "cv.jaccard_ablated": float(s["ablated"].mean()),
                  "cv.coherence": float(np.mean([v.coherence for v in vectors])),
                  "cv.n_vectors": float(len(vectors))}
        per = {f"cv.{k}": v for k, v in s.items()}
        per["cv.layer"] = np.array([v.layer for v in vectors], dtype=np.int64)
        per["cv.index"] = np.array([v.index for v in vectors], dtype=np.int64)
        return MetricOutput(values, per)


__all__ = ["ConceptVectors", "ConceptVectorsConfig", "trace_scores"]

"""Concept vectors (Hong et al. 2024, "Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces",
ConceptVectors, arXiv:2406.11614) and their "Needle" baseline, which edits them directly.

A *concept vector* is a column v = W_down[:, j] of an MLP down-projection (d,): the value the MLP writes into the
residual stream when neuron j fires. Its logit lens E·v (E = the unembedding, V × d; no final norm, as Geva et al.
2022 and ConceptVectors project value vectors) ranks vocabulary tokens; a column whose top-k tokens are tokens of a
concept (here: a forget subject) carries that concept's parametric knowledge. ConceptVectors picked them by hand and
GPT-4; unlearnkit picks them automatically (:func:`find_concept_vectors`): per concept c, the token set T_c = tokens of
c's D_f answers at least ``min_ratio`` times more frequent there than in D_r's answers (add-one smoothed), and each
column's *coherence* = |top-k(E·v) ∩ T_c| / k; the ``per_concept`` most coherent columns over the chosen layers
(ties: the larger mean z-score of T_c's logits) are c's concept vectors.

Needle (ConceptVectors §5, the baseline that unlearns by editing the vectors themselves): each concept vector is
replaced by :func:`ablation_vector` — Gaussian noise of the same norm, seeded per (seed, layer, column) — so its
logit lens no longer points at the concept. It is the upper bound of *parametric* removal for these vectors; the
``concept_vectors`` metric reports the Jaccard an ablated vector gets (``cv.jaccard_ablated``). On a peft LoRA model
the *effective* column (base + sBA, what the merged model writes) becomes the ablation vector: the base column is set
to it minus the adapters' delta.

Cost: E·W_down for every chosen layer is V × d × d_ff multiply-adds per layer (SmolLM2-135M: 49 152 × 576 × 1 536 ≈
43 GFLOP per layer); restrict ``layers`` on real models.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.config.schema import Frozen
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.methods.base import UnlearnContext, Unlearned, Unlearner
from unlearnkit.methods.llm.base import decoder_layers, down_projection, lora_delta
from unlearnkit.models.llm import is_peft_model
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Float, Int


@dataclass(frozen=True)
class ConceptVector:
    """One concept vector: ``concept`` name, ``layer`` (block index), ``index`` (column j of down_proj),
    ``coherence`` (|top-k ∩ T_c| / k in the model it was found in) and ``top`` (its top-k token ids there)."""

    concept: str
    layer: int
    index: int
    coherence: float
    top: tuple[int, ...]


def down_proj_weights(model: nn.Module, layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """Effective ``mlp.down_proj`` weights (d, d_ff) of the chosen blocks (LoRA adapters merged, on a copy), detached.

    Raises:
        MethodError: the model has no ``mlp.down_proj`` (a Llama-style MLP) in its blocks.
        ConfigError: a layer index out of range.
    """
    m = model
    if is_peft_model(m):
        m = copy.deepcopy(m).merge_and_unload()
    blocks = decoder_layers(m)
    idx = list(range(len(blocks))) if layers is None else list(layers)
    bad = [i for i in idx if not 0 <= i < len(blocks)]
    if bad or not idx:
        raise ConfigError(f"concept-vector layers {idx} must be non-empty block indices in 0..{len(blocks) - 1}")
    out = {}
    for i in idx:
        mlp = getattr(blocks[i], "mlp", None)
        proj = getattr(mlp, "down_proj", None)
        if not isinstance(proj, nn.Linear):
            raise MethodError(f"concept vectors need Llama-style MLPs (blocks[i].mlp.down_proj, an nn.Linear); block "
                              f"{i} of {type(m).__name__} has none")
        out[i] = proj.weight.detach().float().clone()
    return out


def unembedding(model: nn.Module) -> torch.Tensor:
    """The output embedding E (V, d), detached float32.

    Raises:
        MethodError: the model has no output embeddings.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not hasattr(head, "weight"):
        raise MethodError(f"{type(model).__name__} has no output embeddings (get_output_embeddings()); the logit lens "
                          "of concept vectors needs one")
    return head.weight.detach().float()


def logit_lens_topk(E: torch.Tensor, vectors: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k token ids of E·v for each column v of ``vectors`` (d, n): int64 (n, k), highest logit first."""
    return torch.topk(E @ vectors, k, dim=0).indices.T.contiguous()


def jaccard(a: Any, b: Any) -> float:
    """|A ∩ B| / |A ∪ B| of two token-id collections (1.0 for two empty sets)."""
    sa, sb = set(int(x) for x in a), set(int(x) for x in b)
    return 1.0 if not sa and not sb else len(sa & sb) / len(sa | sb)


def ablation_vector(v: torch.Tensor, seed: int | tuple[int, ...]) -> torch.Tensor:
    """Gaussian noise of the same norm as ``v`` (float, like ``v``), from a generator seeded with ``seed``: Needle's
    replacement of a concept vector and the metric's ablation reference."""
    key = [int(s) for s in (seed if isinstance(seed, tuple) else (seed,))]
    g = torch.Generator().manual_seed(int(np.random.default_rng(key).integers(2**62)))
    z = torch.randn(v.shape, generator=g, dtype=torch.float64)
    return (z * (v.double().norm() / z.norm().clamp_min(1e-30))).to(v.dtype)


def concept_tokens(tokenizer: Any, concept_texts: list[str], other_texts: list[str],
                   min_ratio: float = 2.0) -> set[int]:
    """Token ids that characterise a concept: in ``concept_texts`` with (count + 1) / (count in others + 1) ≥
    ``min_ratio``, special tokens and one-character tokens left out."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def count(texts: list[str]) -> Counter:
        c: Counter = Counter()
        for t in texts:
            c.update(tokenizer(" " + t, add_special_tokens=False)["input_ids"])
        return c

    cf, co = count(concept_texts), count(other_texts)
    out = set()
    for t, n in cf.items():
        if t in special or len(tokenizer.decode([t]).strip()) < 2:
            continue
        if (n + 1) / (co.get(t, 0) + 1) >= min_ratio:
            out.add(int(t))
    return out


def find_concept_vectors(model: nn.Module, tokenizer: Any, concepts: dict[str, list[str]], others: list[str], *,
                         top_k: int = 20, per_concept: int = 3, layers: list[int] | None = None,
                         min_ratio: float = 2.0) -> list[ConceptVector]:
    """The concept vectors of each concept in ``model`` (see the module docstring).

    Args:
        concepts: concept name → its texts (e.g. a forget subject's answers).  others: texts of the rest (D_r).
        top_k: logit-lens tokens per vector.  per_concept: vectors kept per concept.  layers: blocks searched
            (None = all).  min_ratio: token specificity of :func:`concept_tokens`.

    Returns:
        ``per_concept`` vectors per concept (a concept without characteristic tokens gets none), by concept order.

    Raises:
        ConfigError: ``top_k`` larger than the vocabulary, bad layers.  MethodError: no down_proj / unembedding.
    """
    E = unembedding(model)
    if not 1 <= top_k <= E.shape[0]:
        raise ConfigError(f"top_k must be in [1, vocabulary size {E.shape[0]}], got {top_k}")
    W = down_proj_weights(model, layers)
    token_sets = {c: concept_tokens(tokenizer, t, others, min_ratio) for c, t in concepts.items()}
    cands: dict[str, list[tuple[float, float, int, int, tuple[int, ...]]]] = {c: [] for c in concepts}
    for layer, w in W.items():
        logits = E @ w  # (V, d_ff)
        top = torch.topk(logits, top_k, dim=0).indices.T  # (d_ff, k)
        mu, sd = logits.mean(0), logits.std(0).clamp_min(1e-12)
        for c, toks in token_sets.items():
            if not toks:
                continue
            tt = torch.tensor(sorted(toks), dtype=torch.long)
            hit = torch.isin(top, tt).sum(1).double() / top_k  # (d_ff,)
            z = ((logits[tt] - mu) / sd).mean(0).double()
            best = torch.argsort(hit * 1e6 + z, descending=True)[:per_concept]
            for j in best.tolist():
                cands[c].append((float(hit[j]), float(z[j]), layer, j, tuple(int(x) for x in top[j].tolist())))
    out = []
    for c, lst in cands.items():
        for coh, _, layer, j, top in sorted(lst, key=lambda r: (r[0], r[1]), reverse=True)[:per_concept]:
            out.append(ConceptVector(c, layer, j, coh, top))
    return out


def subject_texts(forget: Any, retain: Any, max_other: int = 2000) -> tuple[dict[str, list[str]], list[str]]:
    """Concepts = the subjects of ``forget`` (their answers and paraphrased answers); others = ``retain``'s answers."""
    concepts: dict[str, list[str]] = {}
    for it in forget:
        if it.subject:
            concepts.setdefault(str(it.subject), []).extend(x for x in (it.answer, it.paraphrased_answer) if x)
    others = [it.answer for it in list(retain)[:max_other]] if retain is not None else []
    return concepts, others


class NeedleConfig(Frozen):
    """Concept-vector search (ConceptVectors-style, automatic) and the edit."""

    top_k: int = Field(20, ge=1, description="logit-lens tokens per vector")
    per_concept: int = Field(3, ge=1, le=1000, description="vectors ablated per forget subject")
    layers: list[int] | None = Field(None, description="blocks searched (None = all)")
    min_ratio: float = Field(2.0, ge=1.0, description="token specificity (D_f vs D_r counts)")
    seed: int = Field(0, description="seed of the replacement noise (with layer and column)")


@METHODS.register("needle", config=NeedleConfig)
class Needle(Unlearner):
    """Needle (ConceptVectors, arXiv:2406.11614): find each forget subject's concept vectors (MLP down-projection
    columns whose logit lens names the subject) and replace them with Gaussian noise of equal norm. Closed form, no
    gradient step; a parametric-removal baseline for the ``concept_vectors`` probe."""

    track: ClassVar[str] = "llm"
    needs_labels: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = True
    intent: ClassVar[str] = "removal"
    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"top_k": Int(5, 50), "per_concept": Int(1, 10), "min_ratio": Float(1.0, 5.0)}
    source = "Hong et al. 2024, ConceptVectors, arXiv:2406.11614 (Needle baseline); automatic vector search"
    smoke_params: ClassVar[dict[str, Any]] = {"per_concept": 2, "top_k": 10}

    def _unlearn(self, model: nn.Module, forget: Any, retain: Any, engine: Any,
                 context: UnlearnContext) -> Unlearned:
        tok = getattr(context, "tokenizer", None)
        if tok is None:
            raise MethodError("needle needs an LLMContext with the tokenizer")
        cfg: NeedleConfig = self.config
        concepts, others = subject_texts(forget, retain)
        if not concepts:
            raise MethodError("needle needs forget items with a subject (the concepts to ablate)")
        vecs = find_concept_vectors(model, tok, concepts, others, top_k=cfg.top_k, per_concept=cfg.per_concept,
                                    layers=cfg.layers, min_ratio=cfg.min_ratio)
        blocks = decoder_layers(model)
        with torch.no_grad():
            for v in vecs:
                module, base = down_projection(blocks, v.layer, "needle")
                w, delta = base.weight, lora_delta(module)
                d = delta[:, v.index] if delta is not None else 0.0
                target = ablation_vector((w[:, v.index].float() + d).detach().float(), (cfg.seed, v.layer, v.index))
                w[:, v.index] = (target - d).to(w.dtype)
        notes = {"vectors": [{"concept": v.concept, "layer": v.layer, "index": v.index,
                              "coherence": v.coherence} for v in vecs],
                 "mean_coherence": float(np.mean([v.coherence for v in vecs])) if vecs else float("nan")}
        return Unlearned(model, steps=0, notes=notes)


__all__ = ["ConceptVector", "Needle", "NeedleConfig", "ablation_vector", "concept_tokens", "down_proj_weights",
           "find_concept_vectors", "jaccard", "logit_lens_topk", "subject_texts", "unembedding"]

"""Mixture-of-experts metrics (LLM track, metric ``moe``): how unlearning moved the routers, how much of the model it
touched, and how evenly the experts are used.

UOE (arXiv:2411.18797, §3 pilot study, Fig. 2) shows that GA / NPO on a whole MoE shift the routers' expert
selection ("expert selection shift") on the forget set and beyond; these numbers make that measurable per row:

- ``moe.routing_shift`` / ``moe.routing_shift_forget``: mean over routed blocks and tokens of the total-variation
  distance ½‖g_θ − g_θo‖₁ between the model's router distribution and θ_o's on the same token (retain evaluation set /
  forget set; 0 = routing unchanged, 1 = disjoint);
- ``moe.topk_changed`` / ``moe.topk_changed_forget``: share of (token, block) pairs whose top-k expert *set* differs
  from θ_o's (the paper's selection shift);
- ``moe.params_updated``: share of the model's parameter elements whose value differs from θ_o's (UOE: one expert +
  one router; GA: every element);
- ``moe.util_entropy``: expert-utilisation entropy on the retain set — per block, the entropy of the share of top-k
  slots each expert receives, divided by log E (1 = all experts used equally, 0 = one expert takes every token),
  averaged over blocks.

Tokens: every non-padding token of the formatted question + answer of the evaluation split's items (the first
``eval.max_items``), cut to the model's context.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unlearnkit.errors import ConfigError
from unlearnkit.metrics.base import Metric, MetricOutput
from unlearnkit.registry import METRICS


def router_distributions(ctx: Any, split: str) -> list[np.ndarray]:
    """Router softmax distributions of ``ctx.model`` on the tokens of evaluation split ``split``.

    Returns:
        one float64 array (n_tokens, E) per routed block, tokens in item order (each item's non-padding tokens).

    Raises:
        ConfigError: the model has no routed block (a dense model).
    """
    from unlearnkit.llm.lm import _to, eval_mode
    from unlearnkit.llm.tokenize import collate, encode_qa, pad_id_of
    from unlearnkit.models.moe import moe_layers, record_routers

    def run() -> list[np.ndarray]:
        layers = moe_layers(ctx.model)
        if not layers:
            raise ConfigError(f"metric 'moe' needs a mixture-of-experts model; {type(ctx.model).__name__} has no "
                              "routed block (use llm.model.kind: tiny_moe or an MoE checkpoint)")
        qs = ctx.eval_set(split)
        enc = [encode_qa(ctx.tokenizer, q, a, ctx.settings.fmt, ctx.max_context) for q, a in qs.pairs()]
        pad = pad_id_of(ctx.tokenizer)
        out: list[list[np.ndarray]] = [[] for _ in layers]
        bs = ctx.settings.batch_size
        dev = ctx.engine.device if ctx.engine is not None else torch.device("cpu")
        with eval_mode(ctx.model):
            for i in range(0, len(enc), bs):
                b = _to(collate(enc[i:i + bs], pad), dev)
                mask = b["attention_mask"].reshape(-1).bool().cpu()
                with record_routers(ctx.model) as rec:
                    ctx.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                for layer in layers:
                    p = torch.softmax(rec.logits[layer.index][-1].double().cpu(), -1)
                    out[layer.index].append(p[mask].numpy())
        return [np.concatenate(x) for x in out]

    return ctx.cached(("moe.router", split), run)


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """½‖p − q‖₁ per row of two (n, E) distribution arrays, float64 (n,)."""
    return 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(-1)


def topk_sets(p: np.ndarray, k: int) -> np.ndarray:
    """Boolean (n, E) membership of each row's top-k experts (ties broken by the lower index, as ``torch.topk``)."""
    idx = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    out = np.zeros_like(p, dtype=bool)
    np.put_along_axis(out, idx, True, axis=-1)
    return out


def utilisation_entropy(p: np.ndarray, k: int) -> float:
    """Normalised entropy of the top-k slot shares of each expert over the tokens of ``p`` (n, E): in [0, 1]."""
    counts = topk_sets(p, k).sum(0).astype(np.float64)
    share = counts / max(counts.sum(), 1.0)
    nz = share[share > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(p.shape[1]))


def params_changed_share(model: torch.nn.Module, reference: torch.nn.Module) -> float:
    """Share of floating-point parameter elements of ``model`` that differ from ``reference``'s (same keys)."""
    a, b = dict(model.named_parameters()), dict(reference.named_parameters())
    changed = total = 0
    for k, v in a.items():
        if k not in b or not v.is_floating_point():
            continue
        total += v.numel()
        changed += int((v.detach() != b[k].detach().to(v.device)).sum())
    return changed / max(total, 1)


@METRICS.register("moe")
class MoEMetric(Metric):
    """Routing shift vs θ_o (retain and forget tokens), share of parameters updated, expert-utilisation entropy
    (UOE, arXiv:2411.18797 §3)."""

    track = "llm"
    reads = frozenset({"hidden_states", "weights"})
    source = "Zhuang, Zhang et al., UOE, arXiv:2411.18797 (expert selection shift, §3 / Fig. 2)"
    keys = {
        "moe.routing_shift": "mean total-variation distance of router distributions to θ_o's on retain tokens "
                             "(0 = unchanged; lower = routing kept)",
        "moe.routing_shift_forget": "the same on forget-set tokens",
        "moe.topk_changed": "share of retain (token, block) pairs whose top-k expert set differs from θ_o's "
                            "(lower = routing kept)",
        "moe.topk_changed_forget": "the same on forget-set tokens",
        "moe.params_updated": "share of parameter elements that differ from θ_o's (lower = more local)",
        "moe.util_entropy": "expert-utilisation entropy on retain tokens, normalised by log E (1 = uniform use)",
    }
    #: the conformance kit evaluates it on a tiny MoE
    conformance = {"llm": {"model": {"kind": "tiny_moe", "vocab_size": 320, "hidden_size": 16, "layers": 2,
                                     "heads": 2, "max_len": 64, "moe": {"experts": 4, "top_k": 2}}}}

    def compute(self, ctx: Any) -> MetricOutput:
        from unlearnkit.models.moe import moe_layers

        original = ctx.reference("original", "metric 'moe' (routing shift against θ_o)")
        k = moe_layers(ctx.model)[0].top_k if moe_layers(ctx.model) else 1
        values: dict[str, float] = {}
        per: dict[str, np.ndarray] = {}
        for split, suffix in (("retain", ""), ("forget", "_forget")):
            mine = router_distributions(ctx, split)
            ref = ctx.for_reference(original, ("moe.router", split), lambda c, s=split: router_distributions(c, s))
            tv = np.concatenate([total_variation(a, b) for a, b in zip(mine, ref)])
            changed = np.concatenate([(topk_sets(a, k) != topk_sets(b, k)).any(-1) for a, b in zip(mine, ref)])
            values[f"moe.routing_shift{suffix}"] = float(tv.mean())
            values[f"moe.topk_changed{suffix}"] = float(changed.mean())
            per[f"routing_shift{suffix}"] = tv
            if split == "retain":
                values["moe.util_entropy"] = float(np.mean([utilisation_entropy(a, k) for a in mine]))
        values["moe.params_updated"] = float(params_changed_share(ctx.model, original))
        return MetricOutput(values, per)


__all__ = ["MoEMetric", "params_changed_share", "router_distributions", "topk_sets", "total_variation",
           "utilisation_entropy"]

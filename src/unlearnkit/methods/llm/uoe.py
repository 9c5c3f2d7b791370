"""UOE — Unlearning One Expert (Zhuang, Zhang et al., "UOE: Unlearning One Expert Is Enough for Mixture-of-experts
LLMs", arXiv:2411.18797 v1; v2 / ACL 2025 as "SEUF: Is Unlearning One Expert Enough for Mixture-of-Experts LLMs?").

Unlearning a whole MoE with GA / NPO moves the routers: the forget tokens are sent to other experts (the
"shortcut"), the knowledge stays in the bypassed experts and the innocent experts that now receive the tokens are
damaged. UOE instead

1. **expert attribution**: runs θ_o on the forget set and scores every routed expert of every routed block by its
   affinity — the mean router probability (softmax gate) it gets over the forget tokens (every non-padding token of
   the formatted question + answer); the block is the one whose top expert has the largest affinity (or the
   configured ``layer``), the expert e* its top one;
2. **router anchor**: adds α · mean_t ‖g_t − onehot(e*)‖² over the forget tokens, g_t = that block's router softmax,
   so that the forget tokens keep being routed to e* while it forgets (no shortcut);
3. updates only e*'s weights and that block's router (every other parameter keeps θ_o's bits) with the base
   unlearning loss: GA (mean answer log-prob, as ``ga``) or NPO (Zhang et al. 2024, Eq. 3, as ``npo``), optionally
   with the usual retain regulariser.

Fused expert tensors (transformers ≥ 5 stores all experts of a block in ``gate_up_proj`` (E, 2I, H) and ``down_proj``
(E, H, I)): the whole tensor is handed to the optimizer, its gradient is masked to e*'s slice, and weight decay must
be 0 (decoupled decay would shrink the frozen experts' slices); the other slices are then bit-identical (Adam's
update of an exactly zero gradient with zero moments is exactly zero), which ``finish`` verifies.

Defaults: α = 1 (the anchor and the forget loss are of the same order on this scale; the paper tunes α per
model), the block chosen by affinity (the paper's Fig. 4 selects one layer), base GA. Reference code: none public at
the time of writing (the ACL version lists "Code: None"); written from the paper's description.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from unlearnkit.llm.lm import _to, eval_mode, sequence_logprobs
from unlearnkit.llm.tokenize import collate
from unlearnkit.methods.llm.base import LLMUnlearner, RetainRegConfig, reference_logprobs
from unlearnkit.methods.llm.ga import ga_loss
from unlearnkit.methods.llm.npo import npo_loss
from unlearnkit.models.moe import expert_parameters, record_routers, require_moe, router_parameters
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class UOEConfig(RetainRegConfig):
    """UOE: the base loss, the anchor weight α and the block; optimisation fields as every LLM method."""

    base: Literal["ga", "npo"] = Field("ga", description="base unlearning loss on the chosen expert: ga | npo")
    beta: float = Field(0.1, gt=0, description="NPO's β when base = npo (arXiv:2404.05868: 0.1)")
    anchor_weight: float = Field(1.0, ge=0, description="α of the router anchor α‖g − onehot(e*)‖² (0 = no anchor)")
    layer: int | None = Field(None, ge=0, description="routed block to unlearn (0-based among routed blocks); None = "
                              "the block whose top expert has the highest forget-set affinity")
    expert: int | None = Field(None, ge=0, description="expert to unlearn; None = the top-affinity expert of the block")

    @model_validator(mode="after")
    def _no_decay(self) -> UOEConfig:
        if self.weight_decay != 0:
            raise ValueError("uoe updates one expert stored inside fused expert tensors; decoupled weight decay would "
                             "shrink the frozen experts too: set weight_decay: 0")
        return self


def expert_affinity(model: nn.Module, encoded: list[Any], pad: int, engine: Any, batch_size: int = 16) -> np.ndarray:
    """Mean router probability of every expert over the non-padding tokens of ``encoded`` examples.

    Returns:
        float64 (n_routed_blocks, n_experts): row l is the mean softmax gate of block l (rows sum to 1).

    Raises:
        MethodError: a dense model.
    """
    layers = require_moe(model, "expert affinity (UOE)")
    sums = [torch.zeros(layer.n_experts, dtype=torch.float64) for layer in layers]
    count = 0
    order = np.argsort([len(e) for e in encoded], kind="stable")
    with eval_mode(model):
        for i in range(0, len(order), batch_size):
            b = _to(collate([encoded[j] for j in order[i:i + batch_size]], pad), engine.device)
            mask = b["attention_mask"].reshape(-1).bool().cpu()
            with record_routers(model) as rec:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            for layer in layers:
                probs = torch.softmax(rec.logits[layer.index][-1].double().cpu(), -1)
                sums[layer.index] += probs[mask].sum(0)
            count += int(mask.sum())
    return torch.stack(sums).numpy() / max(count, 1)


def anchor_loss(router_logits: torch.Tensor, mask: torch.Tensor, expert: int) -> torch.Tensor:
    """Per-example router anchor mean_t ‖softmax(l_t) − onehot(expert)‖² over the example's non-padding tokens.

    Args:
        router_logits: (b·T, E) logits of one routed block for a (b, T) batch (row-major).
        mask: (b, T) attention mask (1 = token).  expert: the anchored expert.

    Returns:
        float32 (b,) ≥ 0; exactly 0 where the router puts all mass on ``expert``.
    """
    b, t = mask.shape
    g = torch.softmax(router_logits.float(), -1).view(b, t, -1)
    target = F.one_hot(torch.tensor(expert, device=g.device), g.shape[-1]).to(g.dtype)
    sq = ((g - target) ** 2).sum(-1)
    m = mask.to(g.dtype)
    return (sq * m).sum(1) / m.sum(1).clamp_min(1)


@METHODS.register("uoe", config=UOEConfig)
class UOE(LLMUnlearner):
    """Unlearning One Expert (arXiv:2411.18797): attribute the forget set to one expert by router affinity, unlearn
    only that expert and its block's router with GA / NPO plus the router anchor α‖g − onehot(e*)‖²; every other
    parameter stays θ_o's (bit-identical)."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-5, 1e-2), "epochs": Int(1, 10), "anchor_weight": LogFloat(0.1, 10.0)}
    source = ("Zhuang, Zhang et al. 2024, 'UOE: Unlearning One Expert Is Enough for Mixture-of-experts LLMs', "
              "arXiv:2411.18797 (v2: SEUF, ACL 2025); expert attribution §4, router anchor loss Eq. 3")
    smoke_params = {"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}
    #: the conformance kit runs it on a tiny MoE (the default conformance model is dense)
    conformance = {"llm": {"model": {"kind": "tiny_moe", "vocab_size": 320, "hidden_size": 16, "layers": 2,
                                     "heads": 2, "max_len": 64, "moe": {"experts": 4, "top_k": 2}}}}
    needs_moe = True

    def prepare(self, model: nn.Module, forget: Any, ctx: Any, engine: Any) -> dict[str, Any]:
        layers = require_moe(model, "uoe")
        state = super().prepare(model, forget, ctx, engine)
        cfg = self.config
        aff = expert_affinity(model, state["forget"], state["pad"], engine)
        if cfg.layer is not None:
            if cfg.layer >= len(layers):
                from unlearnkit.errors import MethodError

                raise MethodError(f"uoe layer {cfg.layer} does not exist: the model has {len(layers)} routed blocks "
                                  f"(0 … {len(layers) - 1})")
            li = int(cfg.layer)
        else:
            li = int(np.argmax(aff.max(1)))
        layer = layers[li]
        ei = int(np.argmax(aff[li])) if cfg.expert is None else int(cfg.expert)
        expert = expert_parameters(model, layer, ei)  # MethodError when out of range
        router = router_parameters(model, layer)
        if cfg.base == "npo":
            state["ref"] = reference_logprobs(model, state["forget"], state["pad"], engine)
        # freeze everything but the router and the expert tensors; mask fused tensors to the expert's slice
        self._flags = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        self._trainable = [(n, p) for n, p in router] + [(n, p) for n, p, _ in expert]
        for _, p in self._trainable:
            p.requires_grad_(True)
        self._hooks = []
        self._frozen_slices: list[tuple[str, nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for n, p, sl in expert:
            if sl is None:
                continue
            keep = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
            keep[sl] = True
            mask = keep.view(-1, *([1] * (p.dim() - 1))).to(p.dtype)
            self._hooks.append(p.register_hook(lambda g, m=mask: g * m))
            self._frozen_slices.append((n, p, ~keep, p.detach()[~keep].clone()))
        total = sum(p.numel() for p in model.parameters())
        updated = sum(p.numel() for _, p in router) + sum(
            (p.numel() // p.shape[0]) if sl is not None else p.numel() for _, p, sl in expert)
        state.update(layer=li, expert=ei)
        state["_notes"] = {"uoe_layer": li, "uoe_expert": ei, "uoe_block": layer.name,
                           "expert_affinity": np.round(aff, 6).tolist(), "params_updated_share": updated / total,
                           "reference": "θ_o log-probs precomputed (no copy)" if cfg.base == "npo" else "none"}
        return state

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return list(self._trainable)

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        li, ei = state["layer"], state["expert"]
        with record_routers(model, [li], detach=False) as rec:
            if self.config.base == "ga":
                base = ga_loss(model, batch)
            else:
                lp, _ = sequence_logprobs(model, batch)
                base = npo_loss(lp, state["ref"][torch.as_tensor(pos)].to(lp.device), self.config.beta)
        loss = base
        if self.config.anchor_weight > 0:
            loss = loss + self.config.anchor_weight * anchor_loss(rec.logits[li][-1], batch["attention_mask"], ei)
        return loss.sum()

    def finish(self, model: nn.Module, state: dict[str, Any]) -> None:
        for h in getattr(self, "_hooks", []):
            h.remove()
        flags = getattr(self, "_flags", {})
        for n, p in model.named_parameters():
            if n in flags:
                p.requires_grad_(flags[n])
        for n, p, frozen, before in getattr(self, "_frozen_slices", []):
            if not torch.equal(p.detach()[frozen], before):  # pragma: no cover - guarded by the config validator
                from unlearnkit.errors import MethodError

                raise MethodError(f"uoe: the frozen experts of {n} changed during unlearning (weight decay or an "
                                  "optimizer that moves parameters without gradient)")
        self._hooks, self._flags, self._frozen_slices, self._trainable = [], {}, [], []


__all__ = ["UOE", "UOEConfig", "anchor_loss", "expert_affinity"]

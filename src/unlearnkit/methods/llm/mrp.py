"""MRP — Metamorphosis Representation Projection (Wu et al. 2025, "Reliable Unlearning Harmful Information in LLMs
with Metamorphosis Representation Projection", arXiv:2508.15449; code github.com/ChengcanWu/MRP).

MRP removes information by *projecting it out* of the hidden states written by chosen MLP layers, instead of
training the weights: after block l's MLP, h ← P_l h with P_l = I − U_l U_lᵀ (U_l: d × k orthonormal). A projection is
irreversible — what P_l discards cannot be reconstructed from P_l h by any later layer or request — so sequential
requests accumulate (P₂P₁ …) and an earlier request is never undone. This implementation (written for unlearnkit after
the paper's description; the authors' code was not at hand):

* per request and layer, U_l = QR((I − U_prev U_prevᵀ) A_l) with A_l ∈ ℝ^{d×k} initialised ("carefully", as the paper says) with the top-k
  principal directions of the MLP outputs on D_f's answer tokens after removing the top-``retain_rank`` principal
  directions of the MLP outputs on D_r (so the retained knowledge's main directions are spared), and orthogonalised
  against the directions earlier requests already removed (the left null space of W_down, σ < 10⁻⁶ σ_max);
* only the A_l are trained (the model's weights are frozen) with the forget loss through the projected forward —
  NPO (β, θ_o's log-probabilities precomputed) or gradient ascent — plus α × the retain NLL, in the shared loop
  (:func:`unlearnkit.llm.lm.optimize`; accelerate, smoothing options);
* the trained projection is folded into the weights, W_down ← P_l W_down (exact: the MLP output is W_down·a, so
  P_l(W_down a) = (P_l W_down) a), so the model keeps its architecture and state-dict keys; on a peft LoRA model
  into the frozen base weight and every adapter's B (P(W + sBA) = PW + s(PB)A, also exact).

Run it on the LLM track's ``sequential`` scenario: each request's projection composes with the previous ones;
``notes["removed_dims"]`` counts the directions removed so far per layer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.llm.lm import _to, eval_mode, sequence_logprobs
from unlearnkit.llm.tokenize import IGNORE_INDEX, collate
from unlearnkit.methods.llm.base import (LLMUnlearner, RetainRegConfig, decoder_layers, down_projection,
                                        reference_logprobs)
from unlearnkit.methods.llm.npo import npo_loss
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


def orthonormal(a: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (d, k) of the columns of ``a`` (d, k) by reduced QR (differentiable)."""
    q, r = torch.linalg.qr(a, mode="reduced")
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(1, dtype=a.dtype))[None, :]


def removed_directions(w: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis (d, m) of the output directions a down-projection W (d, d_ff) can no longer write (left
    singular vectors with σ < ``tol`` × σ_max): what earlier projections removed."""
    u, s, _ = torch.linalg.svd(w.detach().double(), full_matrices=True)
    full = torch.zeros(u.shape[0], dtype=s.dtype)
    full[:len(s)] = s
    return u[:, full < tol * s.max().clamp_min(1e-30)]


def project_out(a: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``a`` with its components along the orthonormal ``basis`` columns removed."""
    return a - basis @ (basis.T @ a) if basis.numel() else a


def init_directions(f_out: torch.Tensor, r_out: torch.Tensor, k: int, retain_rank: int,
                    removed: torch.Tensor) -> torch.Tensor:
    """MRP's initial directions (d, k): the top-k principal directions of the forget outputs ``f_out`` (N_f, d)
    after projecting out the top-``retain_rank`` directions of the retain outputs ``r_out`` (N_r, d) and the
    ``removed`` ones."""
    x = f_out.double()
    if retain_rank > 0 and r_out.numel():
        _, _, vr = torch.linalg.svd(r_out.double(), full_matrices=False)
        vr = vr[:retain_rank].T
        x = x - (x @ vr) @ vr.T
    if removed.numel():
        x = x - (x @ removed) @ removed.T
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    out = v[:k].T
    if out.shape[1] < k:
        raise MethodError(f"mrp: only {out.shape[1]} forget directions for rank {k}; lower rank")
    return out


class MRPConfig(RetainRegConfig):
    """MRP: projected layers, rank per request, initialisation and the forget objective."""

    layers: list[int] | None = Field(None, description="blocks whose MLP output is projected; None = the block at "
                                     "half the depth")
    rank: int = Field(4, ge=1, description="directions removed per layer and request (k)")
    retain_rank: int = Field(8, ge=0, description="retain principal directions spared by the initialisation")
    init: Literal["pca", "random"] = "pca"
    forget_objective: Literal["npo", "ga"] = "npo"
    beta: float = Field(0.1, gt=0, description="NPO β")
    retain_loss: Literal["none", "nll"] = "nll"
    lr: float = Field(1e-2, gt=0, description="lr of the projection parameters")
    epochs: int = Field(5, ge=1)


@METHODS.register("mrp", config=MRPConfig)
class MRP(LLMUnlearner):
    """Metamorphosis Representation Projection (arXiv:2508.15449): trained, accumulating orthogonal projections of
    the hidden states written by chosen MLP layers, folded into their down-projections; irreversible across
    sequential requests."""

    #: unlearnkit tune: what to search (ranges around the paper's / reference defaults)
    search_space = {"lr": LogFloat(1e-4, 0.1), "epochs": Int(1, 10), "rank": Int(1, 32), "beta": LogFloat(0.01, 1.0)}
    source = "Wu et al. 2025, MRP, arXiv:2508.15449 (github.com/ChengcanWu/MRP); implementation after the paper"
    intent: ClassVar[str] = "removal"
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 2, "grad_accum": 1, "rank": 1,
                                              "retain_rank": 1}

    def __init__(self, config: MRPConfig) -> None:
        super().__init__(config)
        self._retain_for_init: Any = None
        self._params: dict[int, nn.Parameter] = {}
        self._handles: list[Any] = []
        self._fold_notes: dict[str, Any] = {}

    def _layers(self, model: nn.Module) -> list[int]:
        n = len(decoder_layers(model))
        layers = self.config.layers if self.config.layers is not None else [max(0, n // 2 - 1)]
        if not layers or any(not 0 <= i < n for i in layers):
            raise ConfigError(f"mrp layers {layers} must be block indices in 0..{n - 1}")
        return sorted(set(layers))

    def _mlp_outputs(self, model: nn.Module, enc: list[Any], pad: int, layer: int, engine: Any) -> torch.Tensor:
        proj = decoder_layers(model)[layer].mlp.down_proj
        out = []
        box: list[torch.Tensor] = []
        h = proj.register_forward_hook(lambda _m, _i, o: box.append(o.detach()))
        try:
            with eval_mode(model):
                for i in range(0, len(enc), 16):
                    b = _to(collate(enc[i:i + 16], pad), engine.device)
                    box.clear()
                    model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                    m = b["labels"] != IGNORE_INDEX
                    out.append(box[0][m].double().cpu())
        finally:
            h.remove()
        return torch.cat(out) if out else torch.zeros(0)

    def prepare(self, model, forget, ctx, engine) -> dict[str, Any]:
        state = super().prepare(model, forget, ctx, engine)
        cfg: MRPConfig = self.config
        layers = self._layers(model)
        blocks = decoder_layers(model)
        from unlearnkit.llm.lm import encode_pairs

        r_items = list(self._retain_for_init)[:200] if self._retain_for_init is not None else []
        r_enc = encode_pairs(ctx.tokenizer, [(it.question, it.answer) for it in r_items], ctx.fmt, ctx.max_len)
        gen = torch.Generator().manual_seed(int(ctx.seed) * 7919 + 17)
        params, removed_dims, bases = {}, {}, {}
        for layer in layers:
            proj = down_projection(blocks, layer, "mrp")[1]
            removed = removed_directions(proj.weight)
            removed_dims[layer] = int(removed.shape[1])
            if cfg.init == "pca":
                f_out = self._mlp_outputs(model, state["forget"], state["pad"], layer, engine)
                r_out = self._mlp_outputs(model, r_enc, state["pad"], layer, engine) if r_enc else torch.zeros(0)
                a0 = init_directions(f_out, r_out, cfg.rank, cfg.retain_rank, removed)
            else:
                a0 = project_out(torch.randn(proj.weight.shape[0], cfg.rank, generator=gen, dtype=torch.float64),
                                 removed)
            params[layer] = nn.Parameter(a0.to(proj.weight.dtype).to(proj.weight.device))
            bases[layer] = removed.to(proj.weight.dtype).to(proj.weight.device)
        state["mrp"] = params
        state["removed_basis"] = bases
        state["removed_before"] = removed_dims
        if cfg.forget_objective == "npo":
            state["ref"] = reference_logprobs(model, state["forget"], state["pad"], engine)
        # freeze the weights: only the projection parameters train
        state["flags"] = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        handles = []
        for layer, a in params.items():
            def hook(_m, _i, out, a=a, prev=bases[layer]):
                u = orthonormal(project_out(a, prev))  # stays orthogonal to what earlier requests removed
                return out - (out @ u) @ u.T
            handles.append(blocks[layer].mlp.down_proj.register_forward_hook(hook))
        state["handles"] = handles
        self._params, self._handles = params, handles
        state["_notes"] = {"reference": "θ_o log-probs precomputed (no copy)" if cfg.forget_objective == "npo"
                           else "none"}
        return state

    def _unlearn(self, model, forget, retain, engine, context):
        self._retain_for_init = retain
        try:
            result = super()._unlearn(model, forget, retain, engine, context)
        finally:
            self._retain_for_init = None
            for h in self._handles:  # a failed run leaves no hook behind
                h.remove()
            self._handles = []
        result.notes.update(self._fold_notes)
        return result

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(f"mrp.layer{layer}.A", a) for layer, a in self._params.items()]

    def forget_loss(self, model: nn.Module, state: dict[str, Any], pos: np.ndarray, engine: Any) -> torch.Tensor:
        batch = self.batch(state, "forget", pos, engine)
        lp, n = sequence_logprobs(model, batch)
        if self.config.forget_objective == "npo":
            ref = state["ref"][torch.as_tensor(pos)].to(lp.device)
            return npo_loss(lp, ref, self.config.beta).sum()
        return (lp / n.clamp_min(1)).sum()

    def finish(self, model: nn.Module, state: dict[str, Any]) -> None:
        for h in state.get("handles", []):
            h.remove()
        blocks = decoder_layers(model)
        dims = {}
        with torch.no_grad():
            for layer, a in state.get("mrp", {}).items():
                module, base = down_projection(blocks, layer, "mrp")
                # P(W + sBA) = PW + s(PB)A: under LoRA every adapter's B is folded too, so the fold stays exact
                out_weights = [m.weight for m in getattr(module, "lora_B", {}).values()] if module is not base else []
                w = base.weight
                prev = state["removed_basis"][layer].double()
                u = orthonormal(project_out(a.detach().double(), prev)).to(w.device)
                for t in [w, *out_weights] + ([base.bias] if base.bias is not None else []):
                    t.copy_((t.double() - u @ (u.T @ t.double())).to(t.dtype))
                dims[layer] = int(removed_directions(w).shape[1])
        for n, p in model.named_parameters():
            p.requires_grad_(state.get("flags", {}).get(n, True))
        self._fold_notes = {"layers": sorted(dims), "rank": self.config.rank,
                            "removed_dims": {str(k): v for k, v in dims.items()},
                            "removed_before": {str(k): v for k, v in state.get("removed_before", {}).items()}}

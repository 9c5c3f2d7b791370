"""RMU — Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP benchmark", arXiv:2403.03218, §5):

    L_forget = E_{x∈D_f} 1/L_x Σ_{t∈x} ‖ M_θ(t) − c·u ‖²₂ / d
    L_retain = E_{x∈D_r} 1/L_x Σ_{t∈x} ‖ M_θ(t) − M_θo(t) ‖²₂ / d
    L = L_forget + α · L_retain

M(t) = the output of transformer block ``layer`` at token t (read with a forward hook on that block: it equals HF's
``hidden_states[layer + 1]``, never ``hidden_states[layer]``, which is the previous block's output — KNOWN_FAULTS C59),
u = a vector with i.i.d. U[0, 1) entries, normalised to unit length and fixed for the run, c = ``steering_coeff``.
Only the ``mlp.down_proj`` weights of blocks ``update_layers`` (default layer−2 … layer) are trained.

Normalisation: ``masked_token`` (default) averages the per-token squared error over the d hidden units and then over
the *labelled* tokens of each sequence (``labels != -100``: the answer tokens of a QA item, every token after BOS of a
raw text with an empty prompt; prompt and padding never count), as open-unlearning's ``RMU.compute_activation_loss``
(mask = ``labels != -100``, per-sequence token mean, then batch mean); ``all_elements`` reproduces the WMDP reference
code's ``F.mse_loss`` over the whole padded batch tensor (prompt and padding included; parity profile). For activations
h = [1, 1] on a labelled token and [5, 5] on a padding position with c·u = [2, 0]: masked_token = 1.0,
all_elements = 9.0 (KNOWN_FAULTS C59 a). ``all_elements`` depends on which sequences share a micro-batch (their
padding), so unlike ``masked_token`` it is not invariant to the number of processes (C15): use it for parity with the
reference on one process.

Frozen activations M_θo: with LoRA adapters still at init (all lora_B = 0) the adapter-disabled base; otherwise (no
adapters, or a LoRA-fine-tuned θ_o whose adapters RMU keeps training) the run keeps only the original values of the
trained ``down_proj`` weights and evaluates θ_o with ``torch.func.functional_call`` (no full copy). The forward pass
stops after block ``layer`` (later blocks do not influence the loss).

Defaults from the WMDP reference run on zephyr-7b (README of centerforaisafety/wmdp): layer 7, update layers 5–7,
c = 6.5, α = 1200, lr 5e-5, AdamW, batch 4, one epoch. c and α depend on the model's activation scale: tune them for
other models (open-unlearning uses c = 300, α = 1000 on TOFU).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unlearnkit.data.text.qa import QASet
from unlearnkit.errors import ConfigError, MethodError
from unlearnkit.llm.lm import _to, encode_pairs, optimize, place_model
from unlearnkit.llm.tokenize import IGNORE_INDEX, collate, pad_id_of
from unlearnkit.methods.base import UnlearnContext, UnlearnResult, derive_seed
from unlearnkit.methods.llm.base import (
    LLMOptimConfig,
    LLMUnlearner,
    decoder_layers,
    reference_mode,
    retain_pairing,
    with_retain_seen,
)
from unlearnkit.models.llm import is_peft_model, lora_is_identity
from unlearnkit.registry import METHODS
from unlearnkit.methods.search import Int, LogFloat


class _Stop(Exception):
    """Raised by the capture hook to skip the blocks after the RMU layer."""


def capture_block_output(model: nn.Module, batch: dict[str, torch.Tensor], layer: int,
                         *, stop: bool = True) -> torch.Tensor:
    """Output of transformer block ``layer`` (0-based), float (b, T, d), via a forward hook (KNOWN_FAULTS C59 b)."""
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise ConfigError(f"RMU layer {layer} is out of range: the model has blocks 0..{len(blocks) - 1}")
    box: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        box.append(out[0] if isinstance(out, tuple) else out)
        if stop:
            raise _Stop

    h = blocks[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Stop:
        pass
    finally:
        h.remove()
    return box[0]


def rmu_token_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Tokens the ``masked_token`` RMU loss averages over: bool (b, T), ``labels != -100`` (answer tokens; never the
    prompt or padding), as open-unlearning's RMU (``mask = inputs["labels"] != -100``)."""
    return batch["labels"] != IGNORE_INDEX


def rmu_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
            normalization: Literal["masked_token", "all_elements"] = "masked_token") -> torch.Tensor:
    """Per-example RMU activation loss, float (b,).

    Args:
        h: float (b, T, d) activations.  target: (d,) or (b, T, d).  mask: (b, T), 1 on the scored tokens
            (:func:`rmu_token_mask`: the labelled answer tokens).
        normalization: ``masked_token`` — mean over d, then over each sequence's scored tokens; ``all_elements`` — the
            mean over the whole (b, T, d) tensor including padding, repeated for each example (reference code).
    """
    se = (h.float() - target.float()).pow(2).mean(-1)  # (b, T): per-token MSE over the hidden units
    if normalization == "all_elements":
        return se.mean().expand(h.shape[0])
    m = mask.to(se.dtype)
    return (se * m).sum(1) / m.sum(1).clamp_min(1)


class RMUConfig(LLMOptimConfig):
    """RMU settings (WMDP reference defaults; tune ``steering_coeff`` and ``alpha`` per model)."""

    layer: int = Field(7, ge=0, description="block whose output is steered (0-based; = hidden_states[layer+1])")
    update_layers: list[int] | None = Field(None, description="blocks whose mlp.down_proj is trained; "
                                                              "default [layer-2, layer-1, layer] (≥ 0)")
    steering_coeff: float = Field(6.5, gt=0, description="c: norm of the random control vector c·u")
    alpha: float = Field(1200.0, ge=0, description="α: weight of the retain activation-matching loss")
    normalization: Literal["masked_token", "all_elements"] = "masked_token"
    epochs: int = Field(1, ge=1)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["none", "linear", "cosine"] = "none"


@METHODS.register("rmu", config=RMUConfig)
class RMU(LLMUnlearner):
    """Representation Misdirection for Unlearning (arXiv:2403.03218)."""

    source = "Li et al. 2024, arXiv:2403.03218 (WMDP), §5 RMU"
    #: unlearnkit tune: lr, epochs, α (WMDP: 1200 for 7B) and the steering coefficient c
    search_space = {
        "lr": LogFloat(1e-5, 1e-2),
        "epochs": Int(1, 12),
        "alpha": LogFloat(1.0, 1e4),
        "steering_coeff": LogFloat(1.0, 100.0),
    }
    needs_retain: ClassVar[bool] = True
    smoke_params: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 2, "layer": 1, "lr": 1e-3,
                                              "steering_coeff": 2.0, "alpha": 10.0}

    def __init__(self, config: RMUConfig) -> None:
        super().__init__(config)
        self.needs_retain = config.alpha > 0

    def check_data(self, forget: QASet, retain: QASet | None = None) -> None:
        super().check_data(forget, retain)
        if self.needs_retain and (retain is None or len(retain) == 0):
            raise MethodError("RMU with alpha > 0 needs a non-empty retain set")

    def target_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The trained tensors: ``mlp.down_proj`` weights (or their LoRA adapters) of ``update_layers``.

        Raises:
            ConfigError: a layer out of range, or no tensor matched (C55: an empty selection is an error).
        """
        cfg: RMUConfig = self.config
        n = len(decoder_layers(model))
        if cfg.layer >= n:
            raise ConfigError(f"RMU layer {cfg.layer} is out of range: the model has blocks 0..{n - 1}")
        layers = cfg.update_layers if cfg.update_layers is not None else [i for i in range(cfg.layer - 2, cfg.layer + 1)
                                                                          if i >= 0]
        bad = [i for i in layers if not 0 <= i < n]
        if bad or not layers:
            raise ConfigError(f"RMU update_layers {layers} must be non-empty block indices in 0..{n - 1}")
        keys = tuple(f"layers.{i}.mlp.down_proj." for i in layers)
        peft = is_peft_model(model)
        out = []
        for name, p in model.named_parameters():
            if any(k in name for k in keys) and (("lora_" in name) if peft else name.endswith("down_proj.weight")):
                out.append((name, p))
        if not out:
            raise ConfigError(f"RMU selected no parameter for blocks {layers} (looked for mlp.down_proj"
                              f"{' LoRA adapters' if peft else ' weights'}); check the model architecture / LoRA "
                              "target_modules (down_proj must carry adapters)")
        return out

    def _unlearn(self, model: nn.Module, forget: QASet, retain: QASet, engine: Any,
                 context: UnlearnContext) -> UnlearnResult:
        ctx = self.context_of(context)
        self.check_data(forget, retain)
        cfg: RMUConfig = self.config
        place_model(model, engine.device)
        dev = engine.device
        targets = self.target_parameters(model)
        saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
        for _, p in model.named_parameters():
            p.requires_grad_(False)
        for _, p in targets:
            p.requires_grad_(True)
        # adapter-disabled base = θ_o only while the adapters are at init; a LoRA-fine-tuned θ_o keeps the original
        # values of the updated adapter weights instead (as without adapters)
        peft = lora_is_identity(model)
        if not peft and cfg.sharding is not None:
            raise ConfigError("RMU with sharding needs LoRA adapters still at their initialisation (its frozen "
                              "activations then come from the adapter-disabled base): its other reference, a "
                              "functional_call with the original down_proj weights, cannot run on a sharded model")
        originals = {} if peft else {n: p.detach().clone() for n, p in targets}
        pad = pad_id_of(ctx.tokenizer)
        f_enc = encode_pairs(ctx.tokenizer, forget.pairs(), ctx.fmt, ctx.max_len)
        r_enc = encode_pairs(ctx.tokenizer, retain.pairs(), ctx.fmt, ctx.max_len) if len(retain) else []
        d = model.config.hidden_size
        gen = torch.Generator().manual_seed(derive_seed(context.seed, "rmu-control-vector"))
        u = torch.rand(d, generator=gen)
        control = (cfg.steering_coeff * u / u.norm()).to(dev)
        used_retain: set[int] = set()
        n_r = len(r_enc)

        def frozen_acts(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            if peft:
                with reference_mode(module):
                    return capture_block_output(module, batch, cfg.layer)
            with torch.no_grad():
                from torch.func import functional_call

                was = module.training
                module.eval()
                try:
                    box: list[torch.Tensor] = []
                    blocks = decoder_layers(module)

                    def hook(_m, _i, out):
                        box.append(out[0] if isinstance(out, tuple) else out)
                        raise _Stop

                    h = blocks[cfg.layer].register_forward_hook(hook)
                    try:
                        functional_call(module, originals, args=(),
                                        kwargs={"input_ids": batch["input_ids"],
                                                "attention_mask": batch["attention_mask"]}, strict=False)
                    except _Stop:
                        pass
                    finally:
                        h.remove()
                    return box[0]
                finally:
                    module.train(was)

        def micro(module: nn.Module, pos: np.ndarray, gpos: np.ndarray, epoch: int) -> torch.Tensor:
            fb = _to(collate([f_enc[i] for i in pos], pad), dev)
            hf = capture_block_output(module, fb, cfg.layer)
            loss = rmu_mse(hf, control, rmu_token_mask(fb), cfg.normalization).sum()
            if cfg.alpha > 0:
                ridx = retain_pairing(n_r, context.seed, epoch, gpos)
                used_retain.update(ridx.tolist())
                rb = _to(collate([r_enc[i] for i in ridx], pad), dev)
                hr = capture_block_output(module, rb, cfg.layer)
                loss = loss + cfg.alpha * rmu_mse(hr, frozen_acts(module, rb), rmu_token_mask(rb),
                                                  cfg.normalization).sum()
            return loss

        t0 = time.perf_counter()
        try:
            fit = optimize(model, n_items=len(f_enc), micro_loss=micro, recipe=cfg.recipe(ctx.max_len), engine=engine,
                           seed=context.seed, ids=forget.ids, lengths=[len(e) for e in f_enc], params=targets,
                           desc="RMU")
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(saved_flags[n])
        seen = with_retain_seen(fit.seen_ids, used_retain, retain, engine)
        notes = {"layer": cfg.layer, "hidden_state_index": cfg.layer + 1, "normalization": cfg.normalization,
                 "scored_tokens": ("labelled answer tokens (labels != -100)" if cfg.normalization == "masked_token"
                                   else "every position of the padded batch"),
                 "trained": [n for n, _ in targets], "steering_coeff": cfg.steering_coeff, "alpha": cfg.alpha,
                 "reference": "adapter-disabled base (no copy)" if peft else "original values of the updated weights only",
                 "reference_extra_bytes": sum(v.numel() * v.element_size() for v in originals.values()),
                 "effective_batch": fit.effective_batch, "epochs": fit.epochs, "losses": fit.losses,
                 "mixed_precision": fit.mixed_precision, "seconds_loop": time.perf_counter() - t0}
        return UnlearnResult(model, steps=fit.steps, notes=notes, seen_ids=seen)
